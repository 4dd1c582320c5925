//! Talking to IPFS.

pub mod gateway;

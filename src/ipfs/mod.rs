//! Talking to IPFS.

pub mod car;
pub mod gateway;
pub mod unixfs;
pub mod verify;
pub mod walk;

//! Talking to IPFS.

pub mod car;
pub mod gateway;
pub mod health;
pub mod multicodec;
pub mod part;
pub mod pool;
pub mod trustless;
pub mod unixfs;
pub mod verify;
pub mod walk;

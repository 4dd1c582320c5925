//! The multicodec codes this crate knows (the multiformats table,
//! <https://github.com/multiformats/multicodec/blob/master/table.csv>): the two block codecs a
//! UnixFS file is made of, and the multihash functions [`super::verify`] accepts.

/// Codec of raw blocks (single-block files and raw leaves).
pub const RAW: u64 = 0x55;
/// Codec of dag-pb nodes.
pub const DAG_PB: u64 = 0x70;

/// Multihash code of the identity "hash" (the digest is the data).
pub const IDENTITY: u64 = 0x00;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;
/// Multihash code of blake3.
pub const BLAKE3: u64 = 0x1e;

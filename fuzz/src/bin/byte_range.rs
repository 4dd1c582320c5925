//! Fuzz target `byte_range`: see `ipfs_media_proxy::fuzzing::byte_range` for the input and what it asserts,
//! and `ipfs_media_proxy_fuzz::target` for how it is built and replayed.

ipfs_media_proxy_fuzz::target!(byte_range);

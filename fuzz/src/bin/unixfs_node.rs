//! Fuzz target `unixfs_node`: see `ipfs_media_proxy::fuzzing::unixfs_node` for the input and what it asserts,
//! and `ipfs_media_proxy_fuzz::target` for how it is built and replayed.

ipfs_media_proxy_fuzz::target!(unixfs_node);

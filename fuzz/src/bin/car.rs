//! Fuzz target `car`: see `ipfs_media_proxy::fuzzing::car` for the input and what it asserts,
//! and `ipfs_media_proxy_fuzz::target` for how it is built and replayed.

ipfs_media_proxy_fuzz::target!(car);

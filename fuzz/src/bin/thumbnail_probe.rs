//! Fuzz target `thumbnail_probe`: see `ipfs_media_proxy::fuzzing::thumbnail_probe` for the input and what it asserts,
//! and `ipfs_media_proxy_fuzz::target` for how it is built and replayed.

ipfs_media_proxy_fuzz::target!(thumbnail_probe);

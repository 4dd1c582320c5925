//! Fuzz target `route_and_media_id`: see `ipfs_media_proxy::fuzzing::route_and_media_id` for the input and what it asserts,
//! and `ipfs_media_proxy_fuzz::target` for how it is built and replayed.

ipfs_media_proxy_fuzz::target!(route_and_media_id);

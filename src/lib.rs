//! ipfs-media-proxy: a reverse-proxy sidecar that serves MSC2706 `ipfs:` media for any Matrix
//! homeserver and passes every other request through untouched.
//!
//! Data flows one way: `server` accepts -> `app` routes (`router`) -> `auth` checks tokens ->
//! `resolve` finds bytes (`cache`, then one shared `ipfs::gateway` fetch) -> `media` answers.
//! Everything that is not ours goes to `homeserver`.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod auth;
pub mod body;
pub mod byte_range;
pub mod cache;
pub mod capabilities;
pub mod config;
pub mod denylist;
pub mod error;
pub mod forwarding;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod homeserver;
pub mod ipfs;
pub mod media;
pub mod metrics;
pub mod reload;
pub mod resolve;
pub mod router;
pub mod server;
pub mod worker;

pub use config::Config;
pub use server::Server;

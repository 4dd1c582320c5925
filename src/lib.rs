//! ipfs-media-proxy: a reverse-proxy sidecar that serves MSC2706 `ipfs:` media for any Matrix
//! homeserver and passes every other request through untouched.
//!
//! Data flows one way: `server` accepts -> `layers` (catch-panic, access log) -> `app` routes
//! (`router::classify`) -> `auth` checks callers -> `resolve` finds bytes (`cache`, then one
//! shared `ipfs` fetch) -> `respond` answers; failures become Matrix JSON in `error`, once.
//! Everything that is not ours goes to `homeserver`. Each module uses only lower layers
//! (`tests/architecture.rs` checks):
//!
//! ```text
//! server > layers > app > respond > error > resolve, auth, upload
//!        > ipfs, cache, homeserver, access_log, reload
//!        > config, denylist, router, capabilities, admin > media
//!        > body, byte_range, metrics, forwarding, worker, chain
//! ```
//!
//! Modules are crate-private unless a test, a benchmark or `main` needs them.

pub(crate) mod access_log;
pub(crate) mod admin;
pub mod app;
pub mod auth;
pub(crate) mod body;
pub(crate) mod byte_range;
pub mod cache;
pub(crate) mod capabilities;
pub mod chain;
pub mod config;
pub(crate) mod connection;
pub mod denylist;
pub mod error;
pub(crate) mod forwarding;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod homeserver;
pub mod ipfs;
pub(crate) mod layers;
pub mod media;
pub mod metrics;
pub(crate) mod reload;
pub(crate) mod resolve;
pub(crate) mod respond;
pub(crate) mod router;
pub mod server;
pub(crate) mod upload;
pub(crate) mod worker;

pub use config::Config;
pub use server::Server;

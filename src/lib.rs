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
//!        > config, denylist, router, capabilities, admin > media, budget
//!        > allocator, body, byte_range, metrics, forwarding, worker, chain
//! ```
//!
//! Modules are crate-private unless a test, a benchmark or `main` needs them.

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod allocator;
pub mod app;
pub mod auth;
pub(crate) mod body;
pub(crate) mod budget;
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

/// mimalloc rather than glibc malloc: glibc hands freed read buffers back to the kernel and
/// the next gateway read faults them in again (seen as page faults inside `recvfrom` in the
/// cold-media benchmark), and small-request churn is cheaper too. Declared in the library,
/// not in `main.rs`, so that the tests run on the allocator the binary runs on (memory
/// given back after a spike is the allocator's doing: `tests/memory_returned.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use config::Config;
pub use server::Server;

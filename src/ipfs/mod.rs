//! Talking to IPFS.

pub mod car;
pub mod fetch_error;
pub mod gateway;
pub mod health;
pub mod import;
pub mod multicodec;
pub mod part;
pub mod pool;
pub mod trustless;
pub mod unixfs;
pub mod verify;
pub mod walk;

#[cfg(any(test, feature = "fuzzing"))]
use unixfs::FileLink;
/// The test-only encoders, shared with the integration tests.
#[cfg(any(test, feature = "fuzzing"))]
#[path = "../../tests/support/encode.rs"]
pub(crate) mod test_encode;

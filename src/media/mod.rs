//! Serving ipfs media the way a homeserver's media repository does.

pub mod content;
pub mod download;
pub mod federation;
pub mod headers;
pub mod media_id;
pub mod range;
pub mod sniff;
pub mod thumbnail;
pub mod thumbnail_answer;

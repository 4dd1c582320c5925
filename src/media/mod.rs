//! What a media repository knows about media, with no I/O: media IDs, content types, the
//! headers and ranges of an answer, thumbnailing. The answers themselves are in `respond`.

pub mod headers;
pub mod media_id;
pub mod query;
pub mod range;
pub mod sniff;
pub mod thumbnail;

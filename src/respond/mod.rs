//! Answers to ipfs media requests, as a homeserver's media repository gives them: each
//! takes a resolved request and the bytes `resolve` finds, and builds the response.
//! Failures are typed (`error::RequestError`) and turned into Matrix JSON in one place.

pub mod content;
pub mod download;
pub mod federation;
pub mod thumbnail;

use http::{HeaderValue, Response, StatusCode};

use crate::access_log::CacheOutcome;
use crate::body::{self, Body};
use crate::media::headers;

/// `304 Not Modified` for an `If-None-Match` that names our ETag: answered before anything
/// is fetched, the same for downloads and thumbnails.
pub fn not_modified(etag: HeaderValue) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    headers::not_modified(response.headers_mut(), etag);
    response.extensions_mut().insert(CacheOutcome::NotNeeded);
    response
}

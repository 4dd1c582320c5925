//! Answering a download of ipfs media, as a homeserver's media repository would.
//!
//! # GET/HEAD `/_matrix/media/{r0,v1,v3}/download/{server}/ipfs:{cid}[/{fileName}]`
//! # GET/HEAD `/_matrix/client/v1/media/download/{server}/ipfs:{cid}[/{fileName}]`
//!
//! The ETag is derived from the CID, so `If-None-Match` is answered before anything is fetched;
//! cached bytes are sliced without copying; uncached bytes stream as the gateway sends them.

use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use crate::body::{self, Body, BoxError};
use crate::error::MatrixError;
use crate::media::headers::{self as media_headers, IMMUTABLE};
use crate::media::media_id::IpfsMedia;
use crate::media::range::{self, Ranged};
use crate::media::sniff;
use crate::resolve::{Resolved, Resolver, Subscription};

/// Where a download's bytes came from; read by the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    /// A fetch this request started.
    Miss,
    /// A fetch another request had started.
    Joined,
    /// Answered without bytes (304).
    NotNeeded,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Joined => "joined",
            CacheOutcome::NotNeeded => "none",
        }
    }
}

/// Time limits on waiting for content (`timeout_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    pub default: Duration,
    pub max: Duration,
}

/// What one response describes.
struct Item<'a> {
    content_type: String,
    file_name: Option<&'a str>,
    etag: HeaderValue,
}

pub async fn download(
    resolver: &Resolver,
    waits: Waits,
    request: &Parts,
    media: &IpfsMedia,
    file_name: Option<&str>,
) -> Result<Response<Body>, MatrixError> {
    let wait = requested_wait(request.uri.query(), waits)?;
    let etag = media_headers::etag_for(&media.canonical.to_string());
    if media_headers::if_none_match_hits(&request.headers, &etag) {
        return Ok(not_modified(etag));
    }
    let head_only = request.method == Method::HEAD;
    match resolver.resolve(media) {
        Resolved::Cached(item) => {
            let described = Item {
                content_type: sniff::resolve(item.sniffed, file_name),
                file_name,
                etag,
            };
            let mut response =
                respond_bytes(&request.headers, item.bytes.clone(), &described, head_only);
            response.extensions_mut().insert(CacheOutcome::Hit);
            Ok(response)
        }
        Resolved::Fetching {
            subscription,
            joined,
        } => {
            let head = match tokio::time::timeout(wait, subscription.head()).await {
                Ok(head) => head.map_err(|e| e.to_matrix())?,
                Err(_) => {
                    return Err(MatrixError::not_yet_uploaded(format!(
                        "the content did not arrive from IPFS within {} ms",
                        wait.as_millis()
                    )))
                }
            };
            let described = Item {
                content_type: sniff::resolve(head.sniffed, file_name),
                file_name,
                etag,
            };
            let mut response = respond_stream(
                &request.headers,
                subscription,
                head.content_length,
                &described,
                head_only,
            );
            let outcome = if joined {
                CacheOutcome::Joined
            } else {
                CacheOutcome::Miss
            };
            response.extensions_mut().insert(outcome);
            Ok(response)
        }
    }
}

/// `timeout_ms` (Synapse's default 20 s, capped); a value that is not a number is a 400 as in
/// Synapse.
fn requested_wait(query: Option<&str>, waits: Waits) -> Result<Duration, MatrixError> {
    let raw = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("timeout_ms="));
    let Some(raw) = raw else {
        return Ok(waits.default);
    };
    let ms: u64 = raw.parse().map_err(|_| {
        MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "timeout_ms must be a non-negative integer",
        )
    })?;
    Ok(Duration::from_millis(ms).min(waits.max))
}

fn headers_for(headers: &mut HeaderMap, item: &Item<'_>) {
    media_headers::media_security(headers);
    headers.insert(
        header::CONTENT_TYPE,
        media_headers::content_type_value(&item.content_type),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        media_headers::content_disposition(&item.content_type, item.file_name, false),
    );
    headers.insert(header::CACHE_CONTROL, IMMUTABLE);
    headers.insert(header::ETAG, item.etag.clone());
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

fn not_modified(etag: HeaderValue) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    media_headers::cors(headers);
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, IMMUTABLE);
    response.extensions_mut().insert(CacheOutcome::NotNeeded);
    response
}

fn range_not_satisfiable(total: u64) -> Response<Body> {
    let mut response = MatrixError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "M_UNKNOWN",
        format!("the requested range is outside the content's {total} bytes"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_RANGE, range::unsatisfied_range(total));
    response
}

fn respond_bytes(
    request: &HeaderMap,
    bytes: Bytes,
    item: &Item<'_>,
    head_only: bool,
) -> Response<Body> {
    let total = bytes.len() as u64;
    let ranged = range::select(request, total, &item.etag);
    let (status, bytes) = match &ranged {
        Ranged::Whole => (StatusCode::OK, bytes),
        Ranged::Part(part) => {
            let slice = bytes.slice(*part.start() as usize..=*part.end() as usize);
            (StatusCode::PARTIAL_CONTENT, slice)
        }
        Ranged::Unsatisfiable => return range_not_satisfiable(total),
    };
    let length = bytes.len() as u64;
    let body = if head_only {
        body::empty()
    } else {
        body::full(bytes)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    finish_headers(response.headers_mut(), item, length);
    if let Ranged::Part(part) = ranged {
        response
            .headers_mut()
            .insert(header::CONTENT_RANGE, range::content_range(&part, total));
    }
    response
}

fn respond_stream(
    request: &HeaderMap,
    subscription: Subscription,
    total: Option<u64>,
    item: &Item<'_>,
    head_only: bool,
) -> Response<Body> {
    // Without a known length we cannot say `Content-Range`, so a range is ignored (allowed).
    let ranged = total.map_or(Ranged::Whole, |t| range::select(request, t, &item.etag));
    let (status, skip, take) = match &ranged {
        Ranged::Whole => (StatusCode::OK, 0, None),
        Ranged::Part(part) => (
            StatusCode::PARTIAL_CONTENT,
            *part.start(),
            Some(part.end() - part.start() + 1),
        ),
        Ranged::Unsatisfiable => return range_not_satisfiable(total.unwrap_or(0)),
    };
    let body = if head_only {
        body::empty()
    } else {
        let frames = subscription
            .into_stream(skip, take)
            .map_ok(Frame::data)
            .map_err(|e| Box::new(e) as BoxError);
        StreamBody::new(frames).boxed()
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    match total {
        Some(t) => finish_headers(headers, item, take.unwrap_or(t)),
        None => headers_for(headers, item),
    }
    if let (Ranged::Part(part), Some(t)) = (ranged, total) {
        headers.insert(header::CONTENT_RANGE, range::content_range(&part, t));
    }
    response
}

fn finish_headers(headers: &mut HeaderMap, item: &Item<'_>, length: u64) {
    headers_for(headers, item);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
}

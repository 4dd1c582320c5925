//! Answering a download of ipfs media, as a homeserver's media repository would.
//!
//! # GET/HEAD `/_matrix/media/{r0,v1,v3}/download/{server}/ipfs:{cid}[/{fileName}]`
//! # GET/HEAD `/_matrix/client/v1/media/download/{server}/ipfs:{cid}[/{fileName}]`
//!
//! The ETag is derived from the CID, so `If-None-Match` is answered before anything is fetched;
//! cached bytes are sliced without copying; uncached bytes stream as the gateway sends them; a
//! range far into uncached content is fetched on its own (`resolve::part`) and answered with
//! the very headers the cached item would get. A cached item keeps its ETag and the headers of
//! a whole answer ready-made (`cache::Prepared`), so the common hit builds nothing.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::access_log::CacheOutcome;
use crate::body::{self, Body};
use crate::byte_range::ByteRange;
use crate::cache::{CacheKey, CachedMedia, Prepared};
use crate::error::RequestError;
use crate::media::headers::{self as media_headers, MediaHeaders};
use crate::media::media_id::IpfsMedia;
use crate::media::query::MediaQuery;
use crate::media::range::{self, Ranged};
use crate::media::sniff;
use crate::resolve::{Part, Resolver};
use crate::respond::content::{Content, RangeSource as Source, Waits};

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
    query: &MediaQuery,
    media: &IpfsMedia,
    file_name: Option<&str>,
) -> Result<Response<Body>, RequestError> {
    let wait = waits.requested(query)?;
    let cached = resolver.cache().get(&CacheKey::Media(media.canonical));
    let etag = match &cached {
        Some(item) => prepared(item, media).etag.clone(),
        None => media_headers::etag_for(&media.canonical.to_string()),
    };
    if media_headers::if_none_match_hits(&request.headers, &etag) {
        return Ok(super::not_modified(etag));
    }
    let head_only = request.method == Method::HEAD;
    let item = |sniffed| Item {
        content_type: sniff::resolve(sniffed, file_name),
        file_name,
        etag: etag.clone(),
    };
    let wanted = range::requested(&request.headers, &etag);
    let (mut response, outcome) = match (wanted, cached) {
        (None, Some(cached)) => (
            respond_cached(cached, media, file_name, head_only),
            CacheOutcome::Hit,
        ),
        (None, None) => {
            let (content, outcome) = Content::get(resolver, media, wait).await?;
            let item = item(content.sniffed());
            (respond(content, None, &item, head_only), outcome)
        }
        (Some(wanted), _) => match Content::get_range(resolver, media, wait, wanted).await? {
            Source::Content(content, outcome) => {
                let item = item(content.sniffed());
                (respond(content, Some(wanted), &item, head_only), outcome)
            }
            Source::Part(part) => {
                let item = item(part.sniffed);
                (respond_part(part, &item, head_only), CacheOutcome::Miss)
            }
        },
    };
    response.extensions_mut().insert(outcome);
    Ok(response)
}

fn headers_for(headers: &mut HeaderMap, item: &Item<'_>) {
    MediaHeaders {
        content_type: &item.content_type,
        file_name: item.file_name,
        force_inline: false,
        etag: &item.etag,
        ranges: true,
    }
    .apply(headers);
}

/// The prepared headers of a cached item: those [`respond`] gives for all of it without a
/// file name, made on its first download.
fn prepared<'a>(item: &'a CachedMedia, media: &IpfsMedia) -> &'a Prepared {
    item.prepared(|| {
        let etag = media_headers::etag_for(&media.canonical.to_string());
        let whole = Item {
            content_type: sniff::resolve(item.sniffed, None),
            file_name: None,
            etag: etag.clone(),
        };
        let mut headers = HeaderMap::new();
        headers_for(&mut headers, &whole);
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(item.bytes.len() as u64),
        );
        Prepared { etag, headers }
    })
}

/// All of a cached item: its prepared headers, with the type and disposition made for the
/// file name when there is one, as [`respond`] makes them.
fn respond_cached(
    item: Arc<CachedMedia>,
    media: &IpfsMedia,
    file_name: Option<&str>,
    head_only: bool,
) -> Response<Body> {
    let mut headers = prepared(&item, media).headers.clone();
    if file_name.is_some() {
        let content_type = sniff::resolve(item.sniffed, file_name);
        headers.insert(
            header::CONTENT_TYPE,
            media_headers::content_type_value(&content_type),
        );
        headers.insert(
            header::CONTENT_DISPOSITION,
            media_headers::content_disposition(&content_type, file_name, false),
        );
    }
    let body = if head_only {
        body::empty()
    } else {
        body::full(item.bytes.clone())
    };
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    response
}

/// A 416, answered like any other response (it counts as a cache lookup), not as a failure.
fn range_not_satisfiable(total: u64) -> Response<Body> {
    RequestError::RangeNotSatisfiable { total }.into_response()
}

/// The answer from the item (cached or arriving), cut to `wanted` when its length is known.
fn respond(
    content: Content,
    wanted: Option<ByteRange>,
    item: &Item<'_>,
    head_only: bool,
) -> Response<Body> {
    // Without a known length we cannot say `Content-Range`, so a range is ignored (allowed).
    let total = content.length();
    let ranged = match (wanted, total) {
        (Some(wanted), Some(total)) => range::of(&wanted, total),
        _ => Ranged::Whole,
    };
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
        content.into_body(skip, take)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers_for(headers, item);
    if let Some(total) = total {
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(take.unwrap_or(total)),
        );
        if let Ranged::Part(part) = &ranged {
            headers.insert(header::CONTENT_RANGE, range::content_range(part, total));
        }
    }
    response
}

/// The answer from a range fetched on its own: the same status and headers as [`respond`]
/// gives for that range of the cached item.
fn respond_part(part: Part, item: &Item<'_>, head_only: bool) -> Response<Body> {
    let Some(range) = part.range else {
        return range_not_satisfiable(part.total);
    };
    let len = range.end() - range.start() + 1;
    let body = if head_only {
        // Dropping the stream cancels the fetch.
        body::empty()
    } else {
        body::from_stream(part.body)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    let headers = response.headers_mut();
    headers_for(headers, item);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::CONTENT_RANGE,
        range::content_range(&range, part.total),
    );
    response
}

//! Answering a thumbnail request for ipfs media: parameters, cache, one render per key under
//! concurrent requests, rendering off the async threads with a concurrency limit.
//!
//! # GET/HEAD `/_matrix/media/{r0,v1,v3}/thumbnail/{server}/ipfs:{cid}?width=&height=[&method=][&animated=]`
//! # GET/HEAD `/_matrix/client/v1/media/thumbnail/{server}/ipfs:{cid}?...`
//! # GET `/_matrix/federation/v1/media/thumbnail/ipfs:{cid}?...` (multipart, see `federation`)
//!
//! Thumbnails are cached in the media cache under (CID, requested width, height, method,
//! animated): a hit needs neither the source nor a render. Requests that map to the same
//! configured size may each hold an entry; all entries count against `cache.max_bytes`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use tokio::sync::{OnceCell, Semaphore};

use crate::body::{self, Body};
use crate::cache::{CacheKey, CachedMedia, MediaCache};
use crate::error::MatrixError;
use crate::media::content::{CacheOutcome, Content, Waits};
use crate::media::headers::{self as media_headers, IMMUTABLE};
use crate::media::media_id::IpfsMedia;
use crate::media::sniff;
use crate::media::thumbnail::{
    self, dynamic_size, parse_query, render, Limits, ThumbnailRequest, ThumbnailSize,
};
use crate::resolve::Resolver;

type Rendered = Result<Arc<CachedMedia>, MatrixError>;

pub struct Thumbnailer {
    cache: MediaCache,
    sizes: Vec<ThumbnailSize>,
    dynamic: bool,
    limits: Limits,
    /// Decoding is CPU- and memory-heavy: at most this many at once.
    permits: Semaphore,
    /// Renders under way, so concurrent requests for one key share one.
    rendering: Mutex<HashMap<CacheKey, Arc<OnceCell<Rendered>>>>,
}

impl Thumbnailer {
    pub fn new(
        cache: MediaCache,
        sizes: Vec<ThumbnailSize>,
        dynamic: bool,
        limits: Limits,
        concurrency: usize,
    ) -> Self {
        Self {
            cache,
            sizes,
            dynamic,
            limits,
            permits: Semaphore::new(concurrency.max(1)),
            rendering: Mutex::new(HashMap::new()),
        }
    }

    /// The thumbnail `wanted` (see [`requested`]) as cached bytes (`sniffed` holds its
    /// content type), and where the source came from.
    pub async fn get(
        &self,
        resolver: &Resolver,
        waits: Waits,
        request: &Parts,
        media: &IpfsMedia,
        wanted: ThumbnailRequest,
    ) -> Result<(Arc<CachedMedia>, CacheOutcome), MatrixError> {
        let key = CacheKey::Thumbnail(media.canonical, wanted);
        if let Some(hit) = self.cache.get(&key) {
            return Ok((hit, CacheOutcome::Hit));
        }
        let wait = waits.requested(request.uri.query())?;
        let cell = {
            let mut rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(rendering.entry(key).or_default())
        };
        let started_here = !cell.initialized();
        let result = cell
            .get_or_init(|| self.make(resolver, media, wanted, wait, key))
            .await
            .clone();
        {
            let mut rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
            if rendering.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                rendering.remove(&key);
            }
        }
        let outcome = if started_here {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Joined
        };
        result.map(|item| (item, outcome))
    }

    async fn make(
        &self,
        resolver: &Resolver,
        media: &IpfsMedia,
        wanted: ThumbnailRequest,
        wait: std::time::Duration,
        key: CacheKey,
    ) -> Rendered {
        let (content, _) = Content::get(resolver, media, wait).await?;
        let source_type = sniff::resolve(content.sniffed(), None);
        let source = content
            .collect(self.limits.max_source_bytes as u64)
            .await
            .map_err(|e| match e {
                crate::ipfs::gateway::FetchError::TooLarge { .. } => MatrixError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "M_TOO_LARGE",
                    "Content is too large to thumbnail",
                ),
                other => other.to_matrix(),
            })?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| MatrixError::bad_gateway("shutting down"))?;
        let (sizes, dynamic, limits) = (self.sizes.clone(), self.dynamic, self.limits);
        let made = tokio::task::spawn_blocking(move || {
            if dynamic {
                thumbnail::probe(&source, &source_type, &limits)?;
                render(
                    &source,
                    &source_type,
                    dynamic_size(&wanted),
                    wanted.animated,
                    &limits,
                )
                .map(Some)
            } else {
                thumbnail::thumbnail(&source, &source_type, &wanted, &sizes, &limits)
            }
        })
        .await
        .map_err(|_| MatrixError::bad_gateway("thumbnailing failed"))?;
        match made {
            Ok(Some(t)) => {
                crate::metrics::METRICS.thumbnails_rendered.inc();
                let item = Arc::new(CachedMedia::new(t.bytes.into(), Some(t.content_type)));
                self.cache.insert(key, Arc::clone(&item));
                Ok(item)
            }
            // Synapse's answers for media it has no such thumbnail of.
            Ok(None) => Err(MatrixError::not_found(
                "no thumbnail of that kind is configured",
            )),
            Err(error) => {
                let (status, errcode) = error.errcode();
                tracing::debug!(%error, "no thumbnail");
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "Content is too large to thumbnail"
                } else {
                    "Cannot find any thumbnails for the requested media"
                };
                Err(MatrixError::new(status, errcode, message))
            }
        }
    }
}

/// The request's thumbnail parameters; a bad one is a 400 with the spec's errcode.
pub fn requested(request: &Parts) -> Result<ThumbnailRequest, MatrixError> {
    parse_query(request.uri.query().unwrap_or(""))
        .map_err(|e| MatrixError::new(StatusCode::BAD_REQUEST, e.errcode(), e.to_string()))
}

/// A thumbnail's ETag differs from the original's and names the request it answers.
pub fn etag(media: &IpfsMedia, wanted: &ThumbnailRequest) -> HeaderValue {
    let animated = if wanted.animated { "-animated" } else { "" };
    HeaderValue::from_str(&format!(
        "\"{}-{}x{}-{}{animated}\"",
        media.canonical, wanted.width, wanted.height, wanted.method
    ))
    .expect("ASCII")
}

/// The client answer: always `inline`, the download headers that apply, no ranges.
pub async fn respond(
    thumbnailer: &Thumbnailer,
    resolver: &Resolver,
    waits: Waits,
    request: &Parts,
    media: &IpfsMedia,
) -> Result<Response<Body>, MatrixError> {
    let wanted = requested(request)?;
    let etag = etag(media, &wanted);
    if media_headers::if_none_match_hits(&request.headers, &etag) {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        media_headers::cors(response.headers_mut());
        response.headers_mut().insert(header::ETAG, etag);
        response.extensions_mut().insert(CacheOutcome::NotNeeded);
        return Ok(response);
    }
    let (item, outcome) = thumbnailer
        .get(resolver, waits, request, media, wanted)
        .await?;
    let content_type = item.sniffed.unwrap_or("application/octet-stream");
    let length = item.bytes.len();
    let body = if request.method == Method::HEAD {
        body::empty()
    } else {
        body::full(item.bytes.clone())
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    media_headers::media_security(h);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_DISPOSITION,
        media_headers::content_disposition(content_type, None, true),
    );
    h.insert(header::CACHE_CONTROL, IMMUTABLE);
    h.insert(header::ETAG, etag);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response.extensions_mut().insert(outcome);
    Ok(response)
}

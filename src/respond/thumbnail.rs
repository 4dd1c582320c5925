//! Answering a thumbnail request for ipfs media: parameters, cache, one render per key under
//! concurrent requests, rendering off the async threads with a concurrency limit.
//!
//! # GET/HEAD `/_matrix/media/{r0,v1,v3}/thumbnail/{server}/ipfs:{cid}?width=&height=[&method=][&animated=]`
//! # GET/HEAD `/_matrix/client/v1/media/thumbnail/{server}/ipfs:{cid}?...`
//! # GET `/_matrix/federation/v1/media/thumbnail/ipfs:{cid}?...` (multipart, see `federation`)
//!
//! Thumbnails are cached in the media cache under (CID, the size they were made for, animated):
//! requests that map to the same configured size share one entry and one render. The size
//! depends on the source's dimensions, which are remembered per CID once seen, so a later
//! request finds its entry without the source or a decode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cid::Cid;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response};
use tokio::sync::{OnceCell, Semaphore};

use crate::access_log::CacheOutcome;
use crate::body::{self, Body};
use crate::cache::{CacheKey, CachedMedia, MediaCache};
use crate::error::RequestError;
use crate::media::headers::{self as media_headers, MediaHeaders};
use crate::media::media_id::IpfsMedia;
use crate::media::query::MediaQuery;
use crate::media::sniff;
use crate::media::thumbnail::{
    self, dynamic_size, from_query, render, select_size, Limits, ThumbnailRequest, ThumbnailSize,
};
use crate::resolve::Resolver;
use crate::respond::content::{Content, Waits};

type Rendered = Result<Arc<CachedMedia>, RequestError>;
/// One render under way (or done), shared by the requests waiting for it.
type Render = OnceCell<Rendered>;

/// How many sources' dimensions are remembered (a few dozen bytes each).
const KNOWN_DIMENSIONS: u64 = 16_384;

pub struct Thumbnailer {
    cache: MediaCache,
    sizes: Vec<ThumbnailSize>,
    dynamic: bool,
    limits: Limits,
    /// Decoding is CPU- and memory-heavy: at most this many at once.
    permits: Semaphore,
    /// Renders under way, so concurrent requests for one thumbnail share one.
    rendering: Mutex<HashMap<(Cid, ThumbnailRequest), Arc<Render>>>,
    /// Sources' dimensions as displayed, by CID: the size a request maps to, without the source.
    dimensions: moka::sync::Cache<Cid, (u32, u32)>,
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
            dimensions: moka::sync::Cache::new(KNOWN_DIMENSIONS),
        }
    }

    /// The thumbnail `wanted` (see [`requested`]) as cached bytes (`sniffed` holds its
    /// content type), and where the source came from.
    pub async fn get(
        &self,
        resolver: &Resolver,
        waits: Waits,
        query: &MediaQuery,
        media: &IpfsMedia,
        wanted: ThumbnailRequest,
    ) -> Result<(Arc<CachedMedia>, CacheOutcome), RequestError> {
        // Every parameter is checked first: a bad one is a 400 even when the answer is cached.
        let wait = waits.requested(query)?;
        let cid = media.canonical;
        if let Some(dimensions) = self.dimensions.get(&cid) {
            let size = size_for(self.dynamic, &self.sizes, &wanted, dimensions)
                .ok_or(RequestError::NoSuchThumbnailSize)?;
            if let Some(hit) = self
                .cache
                .get(&CacheKey::Thumbnail(cid, size, wanted.animated))
            {
                return Ok((hit, CacheOutcome::Hit));
            }
        }
        let key = (cid, wanted);
        let cell = {
            let mut rendering = self.rendering.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(rendering.entry(key).or_default())
        };
        let started_here = !cell.initialized();
        let result = cell
            .get_or_init(|| self.make(resolver, media, wanted, wait))
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
    ) -> Rendered {
        let (content, _) = Content::get(resolver, media, wait).await?;
        let source_type = sniff::resolve(content.sniffed(), None);
        let source = content
            .collect(self.limits.max_source_bytes as u64)
            .await
            .map_err(|e| match e {
                crate::ipfs::gateway::FetchError::TooLarge { .. } => {
                    RequestError::ThumbnailSourceTooLarge
                }
                other => other.into(),
            })?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| RequestError::RenderFailed("shutting down"))?;
        let (sizes, dynamic, limits) = (self.sizes.clone(), self.dynamic, self.limits);
        let (cache, dimensions, cid) =
            (self.cache.clone(), self.dimensions.clone(), media.canonical);
        let made = tokio::task::spawn_blocking(move || -> Result<_, thumbnail::ThumbnailError> {
            let info = thumbnail::probe(&source, &source_type, &limits)?;
            dimensions.insert(cid, (info.width, info.height));
            let Some(size) = size_for(dynamic, &sizes, &wanted, (info.width, info.height)) else {
                return Ok(None);
            };
            let key = CacheKey::Thumbnail(cid, size, wanted.animated);
            // Made meanwhile for another request that maps to the same size.
            if let Some(item) = cache.get(&key) {
                return Ok(Some(item));
            }
            let t = render(&source, &source_type, size, wanted.animated, &limits)?;
            crate::metrics::METRICS.thumbnails_rendered.inc();
            let item = Arc::new(CachedMedia::new(t.bytes.into(), Some(t.content_type)));
            cache.insert(key, Arc::clone(&item));
            Ok(Some(item))
        })
        .await
        .map_err(|_| RequestError::RenderFailed("thumbnailing failed"))?;
        match made {
            Ok(Some(item)) => Ok(item),
            // Synapse's answers for media it has no such thumbnail of.
            Ok(None) => Err(RequestError::NoSuchThumbnailSize),
            Err(error) => {
                tracing::debug!(%error, "no thumbnail");
                Err(error.into())
            }
        }
    }
}

/// The size a thumbnail request maps to: its own box in dynamic mode, else the configured
/// size Synapse would pick for a source of these dimensions (`None`: none of that method).
fn size_for(
    dynamic: bool,
    sizes: &[ThumbnailSize],
    wanted: &ThumbnailRequest,
    (width, height): (u32, u32),
) -> Option<ThumbnailSize> {
    if dynamic {
        Some(dynamic_size(wanted))
    } else {
        select_size(wanted, sizes, width, height)
    }
}

/// The request's thumbnail parameters; a bad one is a 400 with the spec's errcode.
pub fn requested(query: &MediaQuery) -> Result<ThumbnailRequest, RequestError> {
    Ok(from_query(query)?)
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
    query: &MediaQuery,
    media: &IpfsMedia,
) -> Result<Response<Body>, RequestError> {
    let wanted = requested(query)?;
    let etag = etag(media, &wanted);
    if media_headers::if_none_match_hits(&request.headers, &etag) {
        return Ok(super::not_modified(etag));
    }
    let (item, outcome) = thumbnailer
        .get(resolver, waits, query, media, wanted)
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
    MediaHeaders {
        content_type,
        file_name: None,
        force_inline: true,
        etag: &etag,
        ranges: false,
    }
    .apply(h);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response.extensions_mut().insert(outcome);
    Ok(response)
}

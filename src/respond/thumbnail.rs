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
//! request finds its entry without the source or a decode. With `thumbnails.all_sizes` a
//! source's first still render makes every configured size from its one decode: the
//! requester is answered as soon as its own is made (a oneshot), the rest are cached as the
//! same thread makes them, stopped by the deadline rather than by the requester leaving.
//!
//! Bounds on rendering (README, Limits and security):
//! - at most `max_concurrent` renders run, each on a blocking thread holding a slot until
//!   that thread really ends, so runaway decoders never outnumber the slots;
//! - at most `max_queued` renders (each holding its source) wait for a slot; past that, 503;
//! - `render_timeout` bounds the wait for a slot plus the render: the client is answered at
//!   the deadline and the thread stops at its next checkpoint;
//! - a render whose requests have all gone (the future dropped) leaves the queue at once, and
//!   a running one stops at its next checkpoint;
//! - its source (from when it is collected, so in the queue too) and then its decoded image
//!   count in the fetches' memory budget (`cache.max_fetch_bytes`): past it, 503.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cid::Cid;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::access_log::CacheOutcome;
use crate::body::{self, Body};
use crate::budget::MemoryBudget;
use crate::cache::{CacheKey, CachedMedia, MediaCache};
use crate::error::RequestError;
use crate::media::headers::{self as media_headers, MediaHeaders};
use crate::media::media_id::IpfsMedia;
use crate::media::query::MediaQuery;
use crate::media::sniff;
use crate::media::thumbnail::{
    self, dynamic_size, from_query, render_each_until, render_until, select_size, Limits,
    ThumbnailRequest, ThumbnailSize,
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
    /// A source's first still thumbnail also makes its other configured sizes, from the same
    /// decode (`thumbnails.all_sizes`).
    all_sizes: bool,
    limits: Limits,
    /// Decoding is CPU- and memory-heavy: at most this many at once.
    permits: Arc<Semaphore>,
    /// Renders waiting for a slot (each holding its source), at most `max_queued`.
    queued: AtomicUsize,
    max_queued: usize,
    /// The longest a render may take, its wait for a slot included.
    render_timeout: Duration,
    /// The fetches' budget (`cache.max_fetch_bytes`): a render's source, from when it is
    /// collected (the queue included), and its decoded image count against it.
    budget: Arc<MemoryBudget>,

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
        bounds: RenderBounds,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        Self {
            cache,
            sizes,
            dynamic,
            all_sizes: bounds.all_sizes,
            limits,
            permits: Arc::new(Semaphore::new(bounds.concurrency.max(1))),
            queued: AtomicUsize::new(0),
            max_queued: bounds.max_queued,
            render_timeout: bounds.render_timeout,
            budget,

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
        // Held until the render ends or is abandoned, the wait for a slot included.
        let source_held = self.hold(source.len() as u64)?;
        let timeout = self.render_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let permit = match tokio::time::timeout_at(deadline, self.slot()).await {
            Ok(slot) => slot?,
            Err(_) => {
                refused("timeout");
                return Err(RequestError::RenderTimedOut(timeout));
            }
        };
        let (sizes, dynamic, limits) = (self.sizes.clone(), self.dynamic, self.limits);
        let all_sizes = self.all_sizes && !dynamic && !wanted.animated;
        let (cache, dimensions, cid) =
            (self.cache.clone(), self.dimensions.clone(), media.canonical);
        // Set when this future is dropped (every waiter gone) or the deadline passes.
        let abandon = AbandonOnDrop(Arc::new(AtomicBool::new(false)));
        let abandoned = Arc::clone(&abandon.0);
        // The requested thumbnail is answered as soon as it is made; the other sizes made
        // from the same decode follow in the same thread.
        let (answer, answered) = tokio::sync::oneshot::channel();
        // The same deadline as the requester's (set before the wait for a slot), so the sizes
        // made after the answer still end within render_timeout of the request.
        let ends_at = deadline.into_std();
        tokio::task::spawn_blocking(move || {
            let mut answer = Some(answer);
            let mut give = |made: Result<Option<Arc<CachedMedia>>, RequestError>| {
                if let Some(answer) = answer.take() {
                    let _ = answer.send(made);
                }
            };
            // The slot goes with this thread: it is free again only when the thread ends, so
            // at most `max_concurrent` renders ever run, abandoned ones included. So does
            // the source's charge: the thread holds the source until it ends.
            let _permit = permit;
            let mut held = source_held;
            let go_on = || !abandoned.load(Ordering::Relaxed);
            // Queued on the blocking pool after its client left: never start.
            if !go_on() {
                return give(Err(thumbnail::ThumbnailError::Abandoned.into()));
            }
            let info = match thumbnail::probe(&source, &source_type, &limits) {
                Ok(info) => info,
                Err(e) => return give(Err(e.into())),
            };
            // The decoded image (and the resizer's copy, at most as large) is what a render
            // really holds; the probe read its size from the header.
            if !held.grow(info.decoded_bytes) {
                refused("budget");
                return give(Err(RequestError::RenderBusy));
            }
            let displayed = (info.width, info.height);
            dimensions.insert(cid, displayed);
            let Some(size) = size_for(dynamic, &sizes, &wanted, displayed) else {
                return give(Ok(None));
            };
            let key = |size| CacheKey::Thumbnail(cid, size, wanted.animated);
            // Made meanwhile for another request that maps to the same size.
            if let Some(item) = cache.get(&key(size)) {
                return give(Ok(Some(item)));
            }
            let keep = |t: thumbnail::Thumbnail, size| {
                let item = Arc::new(CachedMedia::new(t.bytes.into(), Some(t.content_type)));
                cache.insert(key(size), Arc::clone(&item));
                item
            };
            if !all_sizes {
                let made = render_until(
                    &source,
                    &source_type,
                    size,
                    wanted.animated,
                    &limits,
                    &go_on,
                );
                crate::metrics::METRICS
                    .thumbnails_rendered
                    .inc_by(u64::from(made.is_ok()));
                return give(made.map(|t| Some(keep(t, size))).map_err(Into::into));
            }
            // The requested size first, then every other configured size, cached or not: the
            // decode's scale follows from all of them, so a size made again after an eviction
            // has the same bytes (and ETag) as before. Once the requester is answered its
            // going away no longer stops the rest; the deadline still does.
            let targets: Vec<ThumbnailSize> = std::iter::once(size)
                .chain(sizes.iter().copied().filter(|&s| s != size))
                .collect();
            let answered = std::cell::Cell::new(false);
            let go_on = || {
                if answered.get() {
                    std::time::Instant::now() < ends_at
                } else {
                    go_on()
                }
            };
            let made = render_each_until(
                &source,
                &source_type,
                &targets,
                &limits,
                &go_on,
                &mut |made_size, t| {
                    let item = keep(t, made_size);
                    if answered.replace(true) {
                        crate::metrics::METRICS.thumbnails_made_ahead.inc();
                    } else {
                        crate::metrics::METRICS.thumbnails_rendered.inc();
                        give(Ok(Some(item)));
                    }
                },
            );
            if let Err(error) = made {
                if answered.get() {
                    tracing::debug!(%error, "the other thumbnail sizes were not all made");
                }
                give(Err(error.into()));
            }
        });
        crate::metrics::METRICS.thumbnail_renders_started.inc();
        // At the deadline the client is answered; `abandon` drops and the thread stops at its
        // next checkpoint (a decode in progress finishes first: its work is bounded by the
        // limits checked in the probe), keeping its slot until then.
        let made = match tokio::time::timeout_at(deadline, answered).await {
            // The thread ended without an answer: it panicked (outside the thumbnailer's
            // own catch) or the runtime is shutting down.
            Ok(answer) => answer.map_err(|_| RequestError::RenderFailed("thumbnailing failed"))?,
            Err(_) => {
                refused("timeout");
                return Err(RequestError::RenderTimedOut(timeout));
            }
        };
        drop(abandon);
        match made {
            Ok(Some(item)) => Ok(item),
            // Synapse's answers for media it has no such thumbnail of.
            Ok(None) => Err(RequestError::NoSuchThumbnailSize),
            Err(error) => {
                tracing::debug!(%error, "no thumbnail");
                Err(error)
            }
        }
    }
}

impl Thumbnailer {
    /// Counts `bytes` in the fetches' budget, or refuses the render (503) past it.
    fn hold(&self, bytes: u64) -> Result<crate::budget::Held, RequestError> {
        self.budget.try_hold(bytes).ok_or_else(|| {
            refused("budget");
            RequestError::RenderBusy
        })
    }

    /// A render slot: at once when one is free, else after waiting in the bounded queue.
    /// Dropping the future leaves the queue (the source it holds is freed with it).
    async fn slot(&self) -> Result<OwnedSemaphorePermit, RequestError> {
        let closed = || RequestError::RenderFailed("shutting down");
        match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(closed()),
            Err(TryAcquireError::NoPermits) => {}
        }
        let Some(_spot) = QueueSpot::take(&self.queued, self.max_queued) else {
            refused("queue_full");
            return Err(RequestError::RenderQueueFull);
        };
        Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| closed())
    }
}

/// How renders are bounded (the `thumbnails` keys of the same names).
#[derive(Debug, Clone, Copy)]
pub struct RenderBounds {
    pub concurrency: usize,
    /// Make every configured size from a source's first decode (`thumbnails.all_sizes`):
    /// the extra sizes are made after the requested one is answered, in the same slot,
    /// within the same `render_timeout`.
    pub all_sizes: bool,
    pub max_queued: usize,
    pub render_timeout: Duration,
}

/// One place in the queue for a render slot, given back when dropped.
struct QueueSpot<'a>(&'a AtomicUsize);

impl<'a> QueueSpot<'a> {
    fn take(queued: &'a AtomicUsize, max: usize) -> Option<Self> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| QueueSpot(queued))
    }
}

impl Drop for QueueSpot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tells a running render to stop at its next checkpoint when dropped.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn refused(reason: &'static str) {
    crate::metrics::METRICS
        .thumbnail_refusals
        .get_or_create(&crate::metrics::Outcome { outcome: reason })
        .inc();
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

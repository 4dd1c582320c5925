//! From a CID to bytes: the cache first, then a fetch shared by every request for that CID;
//! or, for a range far into uncached content, that range alone (`part`).
//!
//! The cache lookup and the flight table are consulted under one lock, and a finished fetch
//! fills the cache and leaves the table under that same lock, so a request arriving at the
//! moment a fetch completes finds one or the other, never neither (which would fetch twice).

mod flight;
mod part;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use cid::Cid;
use futures_util::Stream;
use tokio::task::AbortHandle;

use crate::budget::MemoryBudget;
use crate::byte_range::ByteRange;
use crate::cache::{CacheKey, CachedMedia, MediaCache};
use crate::ipfs::gateway::FetchError;
use crate::ipfs::part::slice_stream;
use crate::ipfs::pool::Gateways;
use crate::media::media_id::IpfsMedia;
use crate::metrics::{Outcome, METRICS};

use flight::{Complete, Shared};
pub use flight::{FetchLimits, Head};
use part::KnownHeads;
pub use part::{Known, Part};

pub enum Resolved {
    Cached(Arc<CachedMedia>),
    /// A fetch is under way; `joined` says whether this request started it.
    Fetching {
        subscription: Subscription,
        joined: bool,
    },
}

/// How one request for a range is best served.
pub enum RangePlan {
    /// From the cache or the shared fetch, like any request.
    Shared(Resolved),
    /// Fetched on its own ([`Resolver::fetch_part`]), with what is known of the content.
    Apart(Known),
}

pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    cache: MediaCache,
    gateways: Arc<Gateways>,
    limits: FetchLimits,
    /// Bytes held by every running fetch (`cache.max_fetch_bytes`).
    budget: Arc<MemoryBudget>,
    flights: Mutex<HashMap<Cid, Entry>>,
    /// Length and sniffed type of content seen but not cached, so that a seek need not ask
    /// for the first bytes again (see `part`).
    heads: KnownHeads,
    /// Where fetches run: the runtime the resolver was made on (the binary's control
    /// runtime, not a connection worker's), so that a fetch's gateway reads and its clients'
    /// writes on a worker go on side by side on separate threads. `None` outside a runtime.
    runtime: Option<tokio::runtime::Handle>,
}

struct Entry {
    shared: Arc<Shared>,
    flight: Weak<Flight>,
}

impl Inner {
    fn flights(&self) -> MutexGuard<'_, HashMap<Cid, Entry>> {
        self.flights.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Resolver {
    pub fn new(
        cache: MediaCache,
        gateways: Arc<Gateways>,
        limits: FetchLimits,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache,
                gateways,
                limits,
                budget,
                flights: Mutex::new(HashMap::new()),
                heads: KnownHeads::new(),
                runtime: tokio::runtime::Handle::try_current().ok(),
            }),
        }
    }

    pub fn gateways(&self) -> &Gateways {
        &self.inner.gateways
    }

    pub fn cache(&self) -> &MediaCache {
        &self.inner.cache
    }

    /// The cached item, or a subscription to the (possibly new) fetch of it.
    pub fn resolve(&self, media: &IpfsMedia) -> Resolved {
        let key = media.canonical;
        if let Some(hit) = self.inner.cache.get(&CacheKey::Media(key)) {
            return Resolved::Cached(hit);
        }
        let mut flights = self.inner.flights();
        if let Some(hit) = self.inner.cache.get(&CacheKey::Media(key)) {
            return Resolved::Cached(hit);
        }
        // Strong references taken under the lock are dropped only after it is released:
        // dropping the last one runs `Flight::drop`, which takes the lock.
        let existing = flights.get(&key).and_then(|e| e.flight.upgrade());
        let resolved = self.join_or_start(&mut flights, existing.as_ref(), media);
        drop(flights);
        drop(existing);
        resolved
    }

    /// Whether the range `wanted` of uncached content should wait for the shared fetch or be
    /// fetched on its own.
    ///
    /// The shared fetch reads the content from byte 0, so a client seeking far into a large
    /// item would wait for everything before its range. A range is fetched on its own when it
    /// starts more than `range_fetch_threshold` beyond what the shared fetch has delivered
    /// (beyond byte 0 when none runs, or when the running one can no longer be joined); a
    /// nearer range costs little extra waiting, saves a second gateway request, and the
    /// shared fetch can fill the cache. A suffix range starts where the length says; with no
    /// length known yet it is taken as far.
    pub fn resolve_range(&self, media: &IpfsMedia, wanted: &ByteRange) -> RangePlan {
        let key = media.canonical;
        if let Some(hit) = self.inner.cache.get(&CacheKey::Media(key)) {
            return RangePlan::Shared(Resolved::Cached(hit));
        }
        let remembered = self.inner.heads.get(&key);
        let mut flights = self.inner.flights();
        if let Some(hit) = self.inner.cache.get(&CacheKey::Media(key)) {
            return RangePlan::Shared(Resolved::Cached(hit));
        }
        let existing = flights.get(&key).and_then(|e| e.flight.upgrade());
        let (delivered, head) = existing
            .as_ref()
            .filter(|f| f.shared.joinable())
            .map_or((0, None), |f| f.shared.progress());
        let known = Known {
            total: remembered
                .map(|k| k.total)
                .or_else(|| head.as_ref().and_then(|h| h.content_length)),
            sniffed: remembered.map(|k| k.sniffed).or(head.map(|h| h.sniffed)),
        };
        let start = wanted.start().or_else(|| {
            let total = known.total?;
            Some(wanted.resolve(total).map_or(total, |r| *r.start()))
        });
        let near = start.is_some_and(|s| {
            s <= delivered.saturating_add(self.inner.limits.range_fetch_threshold)
        });
        let plan = if near {
            RangePlan::Shared(self.join_or_start(&mut flights, existing.as_ref(), media))
        } else {
            RangePlan::Apart(known)
        };
        drop(flights);
        drop(existing);
        plan
    }

    /// Joins the running fetch when it still holds byte 0, else starts one (under the lock).
    fn join_or_start(
        &self,
        flights: &mut HashMap<Cid, Entry>,
        existing: Option<&Arc<Flight>>,
        media: &IpfsMedia,
    ) -> Resolved {
        let key = media.canonical;
        if let Some(flight) = existing.filter(|f| f.shared.joinable()) {
            let id = flight.shared.add_reader();
            let subscription = Subscription {
                flight: Arc::clone(flight),
                id,
            };
            return Resolved::Fetching {
                subscription,
                joined: true,
            };
        }
        let (flight, id) = self.start(key, media.cid);
        flights.insert(
            key,
            Entry {
                shared: Arc::clone(&flight.shared),
                flight: Arc::downgrade(&flight),
            },
        );
        Resolved::Fetching {
            subscription: Subscription { flight, id },
            joined: false,
        }
    }

    /// Spawns the fetch with its first reader already registered, so that no chunk can be
    /// released before that reader sees it. Past the memory budget the fetch fails at once
    /// with [`FetchError::Busy`] (its readers see that failure; nothing is asked of a
    /// gateway).
    fn start(&self, key: Cid, cid: Cid) -> (Arc<Flight>, u64) {
        let shared = Shared::new(Arc::clone(&self.inner.budget));
        let id = shared.add_reader();
        let inner = Arc::clone(&self.inner);
        let task_shared = Arc::clone(&shared);
        let refused = self.inner.budget.exhausted();
        if refused {
            METRICS
                .fetch_budget_events
                .get_or_create(&Outcome { outcome: "refused" })
                .inc();
        }
        let fetch = async move {
            let gateways = Arc::clone(&inner.gateways);
            let source = async move {
                if refused {
                    return Err(FetchError::Busy);
                }
                gateways.fetch(&cid).await
            };
            // The item is cached before its readers see the end, and while this flight is
            // still in `flights`, so a resolver finds one or the other.
            let cache = &inner.cache;
            let keep = |complete: Complete| {
                let item = CachedMedia::new(complete.bytes, complete.sniffed);
                cache.insert(CacheKey::Media(key), Arc::new(item));
            };
            if task_shared.produce(source, inner.limits, keep).await {
                // A completed fetch proves its length: a later seek needs no first bytes.
                if let Some(head) = task_shared.completed_head() {
                    inner.heads.remember(key, &head);
                }
            }
            let mut flights = inner.flights();
            if flights
                .get(&key)
                .is_some_and(|e| Arc::ptr_eq(&e.shared, &task_shared))
            {
                flights.remove(&key);
            }
        };
        let task = match &self.inner.runtime {
            Some(runtime) => runtime.spawn(fetch),
            None => tokio::spawn(fetch),
        };
        let flight = Arc::new(Flight {
            key,
            shared,
            inner: Arc::downgrade(&self.inner),
            task: task.abort_handle(),
        });
        (flight, id)
    }

    /// Fetches under way (tests and metrics).
    pub fn in_flight(&self) -> usize {
        self.inner.flights().len()
    }
}

/// A running fetch; cancelled when the last subscriber lets go of it.
struct Flight {
    key: Cid,
    shared: Arc<Shared>,
    inner: Weak<Inner>,
    task: AbortHandle,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(inner) = self.inner.upgrade() {
            let mut flights = inner.flights();
            if flights
                .get(&self.key)
                .is_some_and(|e| Arc::ptr_eq(&e.shared, &self.shared))
            {
                flights.remove(&self.key);
            }
        }
    }
}

/// One request's place in a shared fetch.
pub struct Subscription {
    flight: Arc<Flight>,
    id: u64,
}

impl Subscription {
    /// Waits for the first bytes (or the failure).
    pub async fn head(&self) -> Result<Head, FetchError> {
        self.flight.shared.head().await
    }

    /// The bytes `[skip, skip + take)`, as they arrive.
    pub fn into_stream(
        self,
        skip: u64,
        take: Option<u64>,
    ) -> impl Stream<Item = Result<Bytes, FetchError>> + Send + 'static {
        let chunks = futures_util::stream::unfold(self, |subscription| async move {
            let next = subscription
                .flight
                .shared
                .next_chunk(subscription.id)
                .await?;
            Some((next, subscription))
        });
        slice_stream(chunks, skip, take)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.flight.shared.remove_reader(self.id);
    }
}

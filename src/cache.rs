//! The in-memory media cache: whole items, weighed by their bytes, bounded by
//! `cache.max_bytes`. Content-addressed items never go stale, so nothing expires by time;
//! moka's TinyLFU policy decides what stays when space runs out.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use cid::Cid;
use http::{HeaderMap, HeaderValue};

use crate::media::thumbnail::ThumbnailSize;

/// What an entry holds: an item's bytes, or one thumbnail of it (one cache, one byte bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheKey {
    Media(Cid),
    /// The thumbnail made for a size (the configured one a request maps to, or the request's
    /// own box in dynamic mode), animated or not: every request that maps to it shares it.
    Thumbnail(Cid, ThumbnailSize, bool),
}

/// One fully fetched item (or rendered thumbnail).
#[derive(Debug)]
pub struct CachedMedia {
    pub bytes: Bytes,
    /// What the bytes sniffed as (see `media::sniff`); a thumbnail's own type.
    pub sniffed: Option<&'static str>,
    /// Made on the first download of the item and kept with it (`respond::download`).
    prepared: OnceLock<Prepared>,
}

/// The ETag and the headers of a download answer of the whole item without a file name: the
/// same for every such request, so a cache hit clones them instead of building them (hashing
/// and inserting a dozen headers, formatting the CID and the type each time).
#[derive(Debug)]
pub struct Prepared {
    pub etag: HeaderValue,
    pub headers: HeaderMap,
}

impl CachedMedia {
    pub fn new(bytes: Bytes, sniffed: Option<&'static str>) -> Self {
        Self {
            bytes,
            sniffed,
            prepared: OnceLock::new(),
        }
    }

    /// The item's prepared download headers, made by `make` the first time.
    pub fn prepared(&self, make: impl FnOnce() -> Prepared) -> &Prepared {
        self.prepared.get_or_init(make)
    }
}

#[derive(Clone)]
pub struct MediaCache {
    items: moka::sync::Cache<CacheKey, Arc<CachedMedia>>,
}

impl MediaCache {
    pub fn new(max_bytes: u64) -> Self {
        let items = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            // Items are capped below 4 GiB by config validation.
            .weigher(|_, item: &Arc<CachedMedia>| {
                u32::try_from(item.bytes.len()).unwrap_or(u32::MAX)
            })
            .eviction_listener(|_, _, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    crate::metrics::METRICS.cache_evictions.inc();
                }
            })
            .build();
        Self { items }
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedMedia>> {
        self.items.get(key)
    }

    /// Inserts and applies evictions at once: moka otherwise batches them, and until then an
    /// item over the bound stays readable, so memory could overshoot by many large items.
    /// Inserts happen once per completed fetch, so the cost is off the hit path.
    pub fn insert(&self, key: CacheKey, item: Arc<CachedMedia>) {
        self.items.insert(key, item);
        self.items.run_pending_tasks();
    }

    /// Drops every item (and thumbnail) of a CID the denylist now blocks: requests are refused
    /// before the cache anyway, and blocked content should not stay in memory.
    pub fn remove_blocked(&self, denylist: &crate::denylist::Denylist) {
        if denylist.is_empty() {
            return;
        }
        for (key, _) in self.items.iter() {
            let (CacheKey::Media(cid) | CacheKey::Thumbnail(cid, _, _)) = *key;
            if denylist.blocks(&cid) {
                self.items.invalidate(&*key);
            }
        }
        self.items.run_pending_tasks();
    }

    /// Bytes held, after pending evictions are applied.
    pub fn weighted_size(&self) -> u64 {
        self.items.run_pending_tasks();
        self.items.weighted_size()
    }

    /// Publishes what the cache holds to the metrics (at scrape time).
    pub fn report(&self) {
        let m = &crate::metrics::METRICS;
        m.cache_entries.set(self.entry_count() as i64);
        m.cache_bytes.set(self.weighted_size() as i64);
    }

    pub fn entry_count(&self) -> u64 {
        self.items.run_pending_tasks();
        self.items.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey::Media(Cid::new_v1(0x55, multihash_of(n)))
    }

    fn multihash_of(n: u8) -> cid::multihash::Multihash<64> {
        cid::multihash::Multihash::wrap(0x00, &[n]).unwrap()
    }

    #[test]
    fn bounded_by_bytes() {
        let cache = MediaCache::new(10_000);
        for n in 0..20u8 {
            let item = Arc::new(CachedMedia::new(Bytes::from(vec![n; 1_000]), None));
            cache.insert(key(n), item);
            assert!(cache.weighted_size() <= 10_000);
            let readable = (0..=n).filter(|m| cache.get(&key(*m)).is_some()).count();
            assert!(readable <= 10, "{readable} items of 1000 bytes readable");
        }
        assert!(cache.entry_count() <= 10);
        assert!(cache.entry_count() >= 1);
    }
}

//! One count of the bytes held by running fetches across the process, against one limit
//! (`cache.max_fetch_bytes`). The cache has its own bound; this one covers what is on its
//! way to clients and not yet in the cache, so that many slow or stalled fetches cannot grow
//! memory without end.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

use crate::metrics::METRICS;

pub struct MemoryBudget {
    limit: u64,
    held: AtomicU64,
    /// Woken whenever bytes are given back, for producers waiting for room.
    freed: Notify,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            held: AtomicU64::new(0),
            freed: Notify::new(),
        }
    }

    /// At or past the limit: new fetches are refused and running ones wait.
    pub fn exhausted(&self) -> bool {
        self.held.load(Ordering::Relaxed) >= self.limit
    }

    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    pub fn take(&self, bytes: usize) {
        let held = self.held.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        METRICS.fetch_bytes_held.set(held as i64);
    }

    pub fn give(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let held = self.held.fetch_sub(bytes as u64, Ordering::Relaxed) - bytes as u64;
        METRICS.fetch_bytes_held.set(held as i64);
        crate::allocator::freed(bytes as u64, held);
        self.freed.notify_waiters();
    }

    /// Resolves at the next [`Self::give`]; create it before checking, as with any `Notify`.
    pub fn freed(&self) -> Notified<'_> {
        self.freed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_its_limit() {
        let budget = MemoryBudget::new(10);
        budget.take(6);
        assert!(!budget.exhausted());
        budget.take(4);
        assert!(budget.exhausted());
        budget.give(1);
        assert!(!budget.exhausted());
        assert_eq!(budget.held(), 9);
    }
}

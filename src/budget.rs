//! One count of the bytes held by running fetches across the process, against one limit
//! (`cache.max_fetch_bytes`). The cache has its own bound; this one covers what is on its
//! way to clients and not yet in the cache, so that many slow or stalled fetches cannot grow
//! memory without end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

    /// Counts `bytes` until the returned guard drops, unless they would take the count past
    /// the limit while something else is held (a lone holder is always let in: its size is
    /// bounded by its own limits). `None`: refused, nothing counted.
    pub fn try_hold(self: &Arc<Self>, bytes: u64) -> Option<Held> {
        let mut held = Held {
            budget: Arc::clone(self),
            bytes: 0,
        };
        held.grow(bytes).then_some(held)
    }

    /// Resolves at the next [`Self::give`]; create it before checking, as with any `Notify`.
    pub fn freed(&self) -> Notified<'_> {
        self.freed.notified()
    }
}

/// Bytes counted by [`MemoryBudget::try_hold`], given back when dropped.
pub struct Held {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Held {
    /// Counts `more` bytes in this hold, on the same terms as [`MemoryBudget::try_hold`] (a
    /// hold that is all the budget counts may grow past the limit). `false`: unchanged.
    pub fn grow(&mut self, more: u64) -> bool {
        let (mine, limit) = (self.bytes, self.budget.limit);
        let grown = self
            .budget
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == mine || held.saturating_add(more) <= limit).then(|| held + more)
            });
        match grown {
            Ok(before) => {
                self.bytes += more;
                METRICS.fetch_bytes_held.set((before + more) as i64);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget
            .give(usize::try_from(self.bytes).unwrap_or(usize::MAX));
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

    #[test]
    fn holds_are_given_back_and_refused_past_the_limit() {
        let budget = Arc::new(MemoryBudget::new(10));
        // Alone, a hold larger than the limit is let in.
        let big = budget.try_hold(30).expect("a lone holder");
        assert!(budget.try_hold(1).is_none(), "nothing more past the limit");
        drop(big);
        assert_eq!(budget.held(), 0);
        let a = budget.try_hold(6).unwrap();
        assert!(budget.try_hold(5).is_none(), "6 + 5 > 10");
        let mut b = budget.try_hold(4).unwrap();
        assert_eq!(budget.held(), 10);
        assert!(!b.grow(1), "past the limit, with another holder");
        drop(a);
        assert!(b.grow(20), "alone, a hold may grow past the limit");
        assert_eq!(budget.held(), 24);
        drop(b);
        assert_eq!(budget.held(), 0);
    }
}

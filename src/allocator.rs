//! Giving memory back to the system after a spike.
//!
//! mimalloc (the global allocator, see `lib.rs`) purges freed pages lazily, from the
//! allocation paths of the threads that own them: after a burst of fetches ends and the
//! process goes quiet, nothing allocates, so the freed pages stay resident (RSS stayed
//! ~150 MiB above its start in `tests/memory_returned.rs`). A forced `mi_collect` purges
//! them at once (also those freed less than the purge delay ago); it is asked for when the
//! running fetches (`budget`) or closed connections (`connection`) have given back a lot
//! and hold little, at most once a second, so it costs nothing in steady traffic (where the
//! allocator's own purging keeps up).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes given back since the last collection.
static FREED: AtomicU64 = AtomicU64::new(0);

/// What the last caller said was still held.
static HELD: AtomicU64 = AtomicU64::new(0);

/// Collect after this much has been given back and little is still held.
const COLLECT_AFTER: u64 = 32 * 1024 * 1024;

/// Right after a collection, the tail of the same burst (the last connections or fetches
/// to end) is collected once this much more is back, so it is not left resident.
const TAIL_AFTER: u64 = COLLECT_AFTER / 8;

/// How long after a collection its burst's tail is still looked for.
const TAIL_WINDOW: Duration = Duration::from_secs(10);

/// At most one collection this often: many short connections closing in a row must not
/// turn into a collection every few milliseconds.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// When the last collection ran.
static LAST: Mutex<Option<Instant>> = Mutex::new(None);

/// A collection deferred to the end of [`MIN_INTERVAL`] is already on its way.
static DEFERRED: AtomicBool = AtomicBool::new(false);

/// Notes `bytes` given back, with `still_held` bytes held; collects when due.
pub fn freed(bytes: u64, still_held: u64) {
    FREED.fetch_add(bytes, Ordering::Relaxed);
    HELD.store(still_held, Ordering::Relaxed);
    collect_when_due();
}

fn last() -> Option<Instant> {
    *LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn collect_when_due() {
    if HELD.load(Ordering::Relaxed) > COLLECT_AFTER / 4 {
        return;
    }
    let last = last();
    let threshold = match last {
        Some(at) if at.elapsed() < TAIL_WINDOW => TAIL_AFTER,
        _ => COLLECT_AFTER,
    };
    if FREED.load(Ordering::Relaxed) < threshold {
        return;
    }
    let wait = last.map_or(Duration::ZERO, |at| {
        MIN_INTERVAL.saturating_sub(at.elapsed())
    });
    if !wait.is_zero() {
        defer(wait);
        return;
    }
    {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| at.elapsed() < MIN_INTERVAL) {
            return; // another thread has just collected
        }
        *last = Some(Instant::now());
    }
    FREED.store(0, Ordering::Relaxed);
    match tokio::runtime::Handle::try_current() {
        // Off the caller's thread: a collection walks the allocator's arenas.
        Ok(runtime) => drop(runtime.spawn_blocking(collect)),
        Err(_) => collect(),
    }
    // The rest of this burst may end in the next second with nothing freed after it.
    defer(MIN_INTERVAL);
}

/// Looks again once `wait` has passed, so the end of a burst is not missed because the
/// collection before it was too recent and nothing is freed after it to ask again.
fn defer(wait: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if DEFERRED.swap(true, Ordering::AcqRel) {
        return;
    }
    runtime.spawn(async move {
        // Cleared also when the runtime drops this task unfinished (a worker shutting down),
        // so later bursts can still defer.
        let pending = Pending;
        tokio::time::sleep(wait).await;
        drop(pending);
        collect_when_due();
    });
}

struct Pending;

impl Drop for Pending {
    fn drop(&mut self) {
        DEFERRED.store(false, Ordering::Release);
    }
}

fn collect() {
    // SAFETY: `mi_collect` takes no pointers and may be called from any thread.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

//! Giving memory back to the system after a spike.
//!
//! mimalloc (the global allocator, see `lib.rs`) purges freed pages lazily, from the
//! allocation paths of the threads that own them: after a burst of fetches ends and the
//! process goes quiet, nothing allocates, so the freed pages stay resident (RSS stayed
//! ~150 MiB above its start in `tests/memory_returned.rs`). A forced `mi_collect` purges
//! them at once (also those freed less than the purge delay ago); it is asked for when the
//! running fetches have given back a lot and hold little, so it costs nothing in steady
//! traffic (where the allocator's own purging keeps up).

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes given back since the last collection.
static FREED: AtomicU64 = AtomicU64::new(0);

/// Collect after this much has been given back and little is still held.
const COLLECT_AFTER: u64 = 32 * 1024 * 1024;

/// Notes `bytes` given back, with `still_held` bytes held; collects when due.
pub fn freed(bytes: u64, still_held: u64) {
    let total = FREED.fetch_add(bytes, Ordering::Relaxed) + bytes;
    if total < COLLECT_AFTER || still_held > COLLECT_AFTER / 4 {
        return;
    }
    if FREED.swap(0, Ordering::Relaxed) < COLLECT_AFTER {
        return;
    }
    let collect = || {
        // SAFETY: `mi_collect` takes no pointers and may be called from any thread.
        unsafe { libmimalloc_sys::mi_collect(true) }
    };
    match tokio::runtime::Handle::try_current() {
        // Off the caller's thread: a collection walks the allocator's arenas.
        Ok(runtime) => drop(runtime.spawn_blocking(collect)),
        Err(_) => collect(),
    }
}

//! Which connection worker this thread is (see `server`), for state that must stay with one
//! worker's runtime: a socket is registered with the reactor of the runtime that opened it,
//! and is only served promptly by that runtime's thread.

use std::cell::Cell;

/// Workers at most; per-worker state is kept in `SLOTS` slots, one per worker and slot 0 for
/// every other thread, so no two runtimes share one.
pub const MAX: usize = 63;
pub const SLOTS: usize = MAX + 1;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as worker `index` (1-based; 0 is every other thread).
pub fn enter(index: usize) {
    INDEX.with(|i| i.set(index));
}

/// This thread's worker index (below [`SLOTS`]); 0 outside the workers (tests, the control
/// runtime).
pub fn current() -> usize {
    INDEX.with(Cell::get).min(MAX)
}

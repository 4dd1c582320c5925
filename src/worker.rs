//! Which connection worker this thread is (see `server`), for state that must stay with one
//! worker's runtime: a socket is registered with the reactor of the runtime that opened it,
//! and is only served promptly by that runtime's thread.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Marks this thread as worker `index` (1-based; 0 is every other thread).
pub fn enter(index: usize) {
    INDEX.with(|i| i.set(index));
}

/// This thread's worker index; 0 outside the workers (tests, the control runtime).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

//! Polling a homeserver connection and the future or body it feeds together, in one task,
//! without that task waking itself.
//!
//! When the connection delivers the response head or a body chunk, hyper wakes whoever waits
//! for it; when a request is queued or the body asks for more, hyper wakes the connection. Both
//! waiters are this same task, already running. Tokio treats such a self-wake as a yield: the
//! task is queued again and an idle worker thread is woken (a futex call and a context switch)
//! to come and steal it; measured with one connection, about two futex calls and one context
//! switch per pass-through. The gate hands the parts a waker of its own: a wake that comes
//! while the task is polling them is only noted, and they are simply polled again; any other
//! wake (the socket, from the I/O driver) goes to the task.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

const POLLING: u8 = 1;
const WOKEN: u8 = 2;
/// Rounds of polling per call before yielding for real: a bound on work between yields.
const ROUNDS: usize = 8;

/// Off (`IMP_PASSTHROUGH_CLIENT=bespoke-no-gate`, for the benchmark): the parts are polled
/// with the task's own waker, as if there were no gate.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the gate off for the process (before any connection is made).
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub struct WakeGate {
    task: AtomicWaker,
    state: AtomicU8,
}

/// A gate with the waker its parts are polled with (kept, so that the I/O registrations see
/// the same waker every time and need not replace it).
pub struct Gated {
    gate: Arc<WakeGate>,
    waker: Waker,
}

impl Wake for WakeGate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.state.fetch_or(WOKEN, Ordering::AcqRel) & POLLING == 0 {
            self.task.wake();
        }
    }
}

impl Gated {
    pub fn new() -> Self {
        let gate = Arc::new(WakeGate {
            task: AtomicWaker::new(),
            state: AtomicU8::new(0),
        });
        let waker = Waker::from(Arc::clone(&gate));
        Self { gate, waker }
    }

    /// From now until the next [`Self::poll`], wakes are only noted: for a connection that
    /// nobody waits on (idle, or its body being dropped), whose wakes would only make the task
    /// that last polled it run again for nothing.
    pub fn mute(&self) {
        if !enabled() {
            return;
        }
        self.gate.state.store(POLLING, Ordering::Release);
    }

    /// Polls `step` once and leaves the gate muted (see [`Self::mute`]): for a look at an idle
    /// connection right before this task sends it a request, which would otherwise wake it.
    pub fn poll_muted<R>(&self, step: impl FnOnce(&mut Context<'_>) -> R) -> R {
        if !enabled() {
            return step(&mut Context::from_waker(Waker::noop()));
        }
        self.mute();
        step(&mut Context::from_waker(&self.waker))
    }

    /// Polls `step` until it is ready or nothing it polled woke it again. Wakes that arrive
    /// after that go to the task of `cx`.
    pub fn poll<R>(
        &self,
        cx: &mut Context<'_>,
        mut step: impl FnMut(&mut Context<'_>) -> Poll<R>,
    ) -> Poll<R> {
        if !enabled() {
            return step(cx);
        }
        self.gate.task.register(cx.waker());
        self.gate.state.store(POLLING, Ordering::Release);
        let mut inner = Context::from_waker(&self.waker);
        let mut rounds = 0;
        loop {
            if let Poll::Ready(value) = step(&mut inner) {
                // The caller polls again for whatever comes next; a wake noted now is moot.
                self.gate.state.store(0, Ordering::Release);
                return Poll::Ready(value);
            }
            rounds += 1;
            let woken = self.gate.state.swap(POLLING, Ordering::AcqRel) & WOKEN != 0;
            if !woken || rounds == ROUNDS {
                // A wake between the swap above and this one must not be lost.
                let late = self.gate.state.swap(0, Ordering::AcqRel) & WOKEN != 0;
                if woken || late {
                    cx.waker().wake_by_ref();
                }
                return Poll::Pending;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn task() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counter));
        (counter, waker)
    }

    #[test]
    fn a_wake_while_polling_means_poll_again_not_wake_the_task() {
        let (counter, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let gated = Gated::new();
        let mut calls = 0;
        let result = gated.poll(&mut cx, |inner| {
            calls += 1;
            if calls < 3 {
                inner.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(calls)
            }
        });
        assert_eq!(result, Poll::Ready(3));
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_wake_after_polling_reaches_the_task() {
        let (counter, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let gated = Gated::new();
        let mut kept = None;
        let result: Poll<()> = gated.poll(&mut cx, |inner| {
            kept = Some(inner.waker().clone());
            Poll::Pending
        });
        assert!(result.is_pending());
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        kept.unwrap().wake();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_muted_gate_wakes_nobody_until_polled_again() {
        let (counter, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let gated = Gated::new();
        let mut kept = None;
        let _: Poll<()> = gated.poll(&mut cx, |inner| {
            kept = Some(inner.waker().clone());
            Poll::Pending
        });
        gated.mute();
        kept.as_ref().unwrap().wake_by_ref();
        assert_eq!(counter.0.load(Ordering::SeqCst), 0);
        let _: Poll<()> = gated.poll(&mut cx, |_| Poll::Pending);
        kept.unwrap().wake();
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn endless_self_wakes_yield_for_real() {
        let (counter, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let gated = Gated::new();
        let mut calls = 0;
        let result: Poll<()> = gated.poll(&mut cx, |inner| {
            calls += 1;
            inner.waker().wake_by_ref();
            Poll::Pending
        });
        assert!(result.is_pending());
        assert_eq!(calls, ROUNDS);
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "the task must run again"
        );
    }
}

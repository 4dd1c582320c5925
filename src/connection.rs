//! Bounds on client connections, below HTTP: how many may be open at once, how long one may
//! stay silent after it is accepted, and how long one may sit with no byte moving either way.
//!
//! hyper's `header_read_timeout` only runs once a request has begun, and HTTP/2 has no idle
//! bound at all, so a connection that sends nothing, half a preface, or a preface and then
//! nothing, would hold a file descriptor for ever; so would a client that asks for a large
//! answer and never reads it. The watch is on the socket: any byte read or written counts.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Descriptors kept back from the ceiling: listeners, the admin listener, gateway
/// connections, denylist files, logs.
const RESERVED_FDS: u64 = 64;

/// How many client connections may be open at once.
#[derive(Debug, Clone)]
pub struct Ceiling {
    slots: Arc<Semaphore>,
    max: usize,
    /// About what one connection holds while it is open (its buffers, both ways).
    per_connection: u64,
}

/// One open connection's slot; the connection's task holds it until the socket is closed.
/// Given back, it tells the allocator what the connection held (see `allocator`): after a
/// crowd of connections is closed at once (an idle timeout ending hundreds of stalled
/// readers) their buffers would otherwise stay resident.
#[derive(Debug)]
pub struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    ceiling: Ceiling,
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.permit.take());
        let open = self.ceiling.max - self.ceiling.slots.available_permits().min(self.ceiling.max);
        let per_connection = self.ceiling.per_connection;
        crate::allocator::freed(per_connection, open as u64 * per_connection);
    }
}

impl Ceiling {
    /// `configured` connections, or (0) what the open-file limit allows: each client
    /// connection may need a homeserver connection too, so half of what is left after
    /// [`RESERVED_FDS`]. `per_connection` is about what one holds while open.
    pub fn new(configured: usize, per_connection: u64) -> Self {
        let max = match configured {
            0 => derived_from_fd_limit(),
            n => n,
        };
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            per_connection,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot, or `None` when every one is taken (the connection is then closed at once).
    pub fn try_enter(&self) -> Option<Slot> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        Some(Slot {
            permit: Some(permit),
            ceiling: self.clone(),
        })
    }
}

fn derived_from_fd_limit() -> usize {
    let limit = open_file_limit().unwrap_or(1024);
    (limit.saturating_sub(RESERVED_FDS) / 2).clamp(16, 1 << 20) as usize
}

/// The soft `RLIMIT_NOFILE`.
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct it is given, which lives here.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (status == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// When a connection last moved a byte, shared by its socket and its watchdog.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte read or written.
    last: AtomicU64,
    read_any: AtomicBool,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last: AtomicU64::new(0),
            read_any: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Resolves when the connection should be closed: no byte within `first_byte` of being
    /// accepted, or no byte either way for `idle`.
    pub async fn expired(&self, first_byte: Duration, idle: Duration) -> Expired {
        tokio::time::sleep_until(self.start + first_byte).await;
        if !self.read_any.load(Ordering::Relaxed) {
            return Expired::Silent;
        }
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return Expired::Idle;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Why a connection was closed by its watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Nothing was sent within `server.first_byte_timeout`.
    Silent,
    /// No byte moved for `server.idle_timeout`.
    Idle,
}

impl Expired {
    pub fn as_str(self) -> &'static str {
        match self {
            Expired::Silent => "silent",
            Expired::Idle => "idle",
        }
    }
}

/// A socket that notes every byte it moves in its [`Activity`].
#[derive(Debug)]
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_any.store(true, Ordering::Relaxed);
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_and_idleness_expire() {
        let activity = Activity::new();
        let expired = activity.expired(Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(expired.await, Expired::Silent);

        let activity = Activity::new();
        activity.read_any.store(true, Ordering::Relaxed);
        activity.touch();
        let started = Instant::now();
        let expired = activity.expired(Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(expired.await, Expired::Idle);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[test]
    fn the_ceiling_refuses_past_its_slots() {
        let ceiling = Ceiling::new(2, 0);
        let a = ceiling.try_enter().unwrap();
        let _b = ceiling.try_enter().unwrap();
        assert!(ceiling.try_enter().is_none());
        drop(a);
        assert!(ceiling.try_enter().is_some());
        assert!(Ceiling::new(0, 0).max() >= 16);
    }
}

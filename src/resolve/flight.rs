//! One gateway fetch shared by every request for the same content.
//!
//! A spawned task reads the gateway's bytes into a chunk list; each request holds a
//! [`Subscription`] with its own cursor into that list, so the first byte reaches every client
//! as soon as it arrives. Items small enough to cache keep every chunk (late joiners start at
//! byte 0, and the whole item goes to the cache at the end). Larger items keep only what the
//! slowest reader has not read yet, and the task waits when that exceeds [`WINDOW`] bytes, so
//! a 1 GiB item costs a few MiB of memory however slow the client.
//!
//! Every flight's held chunks count against one process-wide [`MemoryBudget`]. Past it, a
//! fetch that was keeping every chunk for the cache stops doing so (it is streamed, not
//! cached, and late joiners start their own fetch), a producer whose readers still have
//! unread chunks waits for them, and new fetches are refused (`FetchError::Busy`). A producer
//! whose readers have taken everything may always add one chunk, so every fetch progresses.
//!
//! The task lives exactly as long as some request holds a subscription: when the last one is
//! dropped (client gone, timeout), the fetch is cancelled.
//!
//! No crate does this: broadcast channels drop messages for slow receivers, and moka's
//! `get_with` coalesces only whole values, which would make every client wait for the last byte.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::Notify;

use crate::budget::MemoryBudget;
use crate::ipfs::gateway::{FetchError, GatewayResponse};
use crate::media::sniff;
use crate::metrics::{Outcome, METRICS};

/// Bytes a non-cacheable fetch may run ahead of its slowest reader.
pub const WINDOW: usize = 4 * 1024 * 1024;

/// What a request needs to answer before the bytes: known once the first bytes are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Length the gateway announced; the fetch fails if the bytes disagree.
    pub content_length: Option<u64>,
    pub sniffed: Option<&'static str>,
}

#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Larger content is refused (`media.max_bytes`).
    pub max_bytes: u64,
    /// Content up to this size is kept whole for the cache (`cache.max_item_bytes`).
    pub max_cached_bytes: u64,
    /// How far past the shared fetch a range may start and still wait for it
    /// (`media.range_fetch_threshold`, see `Resolver::resolve_range`).
    pub range_fetch_threshold: u64,
}

/// A completed fetch, handed to whoever caches it.
pub struct Complete {
    pub bytes: Bytes,
    pub sniffed: Option<&'static str>,
}

enum HeadState {
    Pending,
    Ready(Head),
    Failed(FetchError),
}

struct State {
    head: HeadState,
    chunks: VecDeque<Bytes>,
    /// Absolute index of `chunks[0]`: how many chunks were released.
    first: usize,
    /// Bytes held in `chunks`.
    held: usize,
    /// Bytes received from the gateway so far.
    received: u64,
    end: Option<Result<(), FetchError>>,
    /// Every chunk is kept (the item may still be cached).
    retain: bool,
    /// Each subscriber's next chunk index.
    cursors: HashMap<u64, usize>,
    next_id: u64,
    budget: Arc<MemoryBudget>,
}

impl State {
    /// Drops chunks every reader has passed (only once the item can no longer be cached).
    fn release(&mut self) {
        if self.retain {
            return;
        }
        let min = self
            .cursors
            .values()
            .copied()
            .min()
            .unwrap_or(self.first + self.chunks.len());
        while self.first < min {
            match self.chunks.pop_front() {
                Some(chunk) => {
                    self.held -= chunk.len();
                    self.budget.give(chunk.len());
                    self.first += 1;
                }
                None => break,
            }
        }
    }

    fn hold(&mut self, chunk: Bytes) {
        self.held += chunk.len();
        self.budget.take(chunk.len());
        self.chunks.push_back(chunk);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        self.budget.give(self.held);
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Notify,
}

impl Shared {
    pub(crate) fn new(budget: Arc<MemoryBudget>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                head: HeadState::Pending,
                chunks: VecDeque::new(),
                first: 0,
                held: 0,
                received: 0,
                end: None,
                retain: true,
                cursors: HashMap::new(),
                next_id: 0,
                budget,
            }),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves consistent data (every update is a single
        // step), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New readers can join only while chunk 0 is still held.
    pub(crate) fn joinable(&self) -> bool {
        let s = self.lock();
        s.first == 0 && !matches!(s.head, HeadState::Failed(_)) && !matches!(s.end, Some(Err(_)))
    }

    /// How far the fetch has got: the bytes received, and the head once known.
    pub(crate) fn progress(&self) -> (u64, Option<Head>) {
        let s = self.lock();
        let head = match &s.head {
            HeadState::Ready(head) => Some(head.clone()),
            _ => None,
        };
        (s.received, head)
    }

    /// The head of a fetch that delivered every byte (its length is then proven).
    pub(crate) fn completed_head(&self) -> Option<Head> {
        let s = self.lock();
        match (&s.head, &s.end) {
            (HeadState::Ready(head), Some(Ok(()))) => Some(Head {
                content_length: Some(s.received),
                sniffed: head.sniffed,
            }),
            _ => None,
        }
    }

    pub(crate) fn add_reader(&self) -> u64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.cursors.insert(id, 0);
        id
    }

    pub(crate) fn remove_reader(&self, id: u64) {
        let mut s = self.lock();
        s.cursors.remove(&id);
        s.release();
        drop(s);
        self.changed.notify_waiters();
    }

    /// Reads the gateway's body into the chunk list, and hands the whole item to `keep` when
    /// it may be cached. Returns whether the fetch completed.
    ///
    /// `keep` runs before the last bytes and the end are published: a reader cannot finish
    /// its response (and its client ask again) before the item is in the cache, and the
    /// fetch cannot be cancelled by its last reader leaving once the bytes are in.
    pub(crate) async fn produce(
        &self,
        fetch: impl std::future::Future<Output = Result<GatewayResponse, FetchError>>,
        limits: FetchLimits,
        keep: impl FnOnce(Complete),
    ) -> bool {
        let result = self.produce_inner(fetch, limits).await;
        let completed = result.is_ok();
        match result {
            Ok((sniffed, withheld)) => {
                let complete = {
                    let s = self.lock();
                    s.retain.then(|| Complete {
                        bytes: concat(&s.chunks, withheld.as_ref(), s.held),
                        sniffed,
                    })
                };
                if let Some(complete) = complete {
                    keep(complete);
                }
                let mut s = self.lock();
                if let Some(chunk) = withheld {
                    s.hold(chunk);
                }
                s.end = Some(Ok(()));
            }
            Err(error) => {
                let mut s = self.lock();
                if let HeadState::Pending = s.head {
                    s.head = HeadState::Failed(error.clone());
                }
                s.end = Some(Err(error));
            }
        }
        self.changed.notify_waiters();
        completed
    }

    async fn produce_inner(
        &self,
        fetch: impl std::future::Future<Output = Result<GatewayResponse, FetchError>>,
        limits: FetchLimits,
    ) -> Result<(Option<&'static str>, Option<Bytes>), FetchError> {
        let GatewayResponse {
            content_length,
            mut body,
        } = fetch.await?;
        if content_length.is_some_and(|len| len > limits.max_bytes) {
            return Err(FetchError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        self.lock().retain = content_length.is_none_or(|len| len <= limits.max_cached_bytes);
        let mut prefix = Vec::new();
        let mut received: u64 = 0;
        let mut head_sent = false;
        // The chunk that completes an announced length: published with the end (see `produce`).
        let mut withheld = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            if chunk.is_empty() {
                continue;
            }
            received += chunk.len() as u64;
            if received > limits.max_bytes {
                return Err(FetchError::TooLarge {
                    limit: limits.max_bytes,
                });
            }
            if content_length.is_some_and(|len| received > len) {
                return Err(FetchError::Upstream(
                    "the gateway sent more bytes than it announced".into(),
                ));
            }
            if prefix.len() < sniff::SNIFF_LEN {
                let take = (sniff::SNIFF_LEN - prefix.len()).min(chunk.len());
                prefix.extend_from_slice(&chunk[..take]);
            }
            if content_length == Some(received) {
                self.lock().received = received;
                withheld = Some(chunk);
                continue;
            }
            self.wait_for_room().await;
            let mut s = self.lock();
            s.received = received;
            s.hold(chunk);
            if s.retain && received > limits.max_cached_bytes {
                s.retain = false;
            }
            s.release();
            if !head_sent && prefix.len() >= sniff::SNIFF_LEN {
                head_sent = true;
                s.head = HeadState::Ready(Head {
                    content_length,
                    sniffed: sniff::sniff(&prefix),
                });
            }
            drop(s);
            self.changed.notify_waiters();
        }
        if content_length.is_some_and(|len| received != len) {
            return Err(FetchError::Upstream(
                "the gateway's response ended before the announced length".into(),
            ));
        }
        let sniffed = sniff::sniff(&prefix);
        if !head_sent {
            self.lock().head = HeadState::Ready(Head {
                content_length: Some(received),
                sniffed,
            });
        }
        Ok((sniffed, withheld))
    }

    /// Backpressure: for non-cacheable items, wait while the slowest reader is a window
    /// behind; past the memory budget, stop keeping chunks for the cache and wait while this
    /// fetch's readers have chunks left to take.
    async fn wait_for_room(&self) {
        let budget = Arc::clone(&self.lock().budget);
        loop {
            let notified = self.changed.notified();
            let freed = budget.freed();
            {
                let mut s = self.lock();
                let exhausted = s.budget.exhausted();
                if exhausted && s.retain {
                    s.retain = false;
                    s.release();
                    METRICS
                        .fetch_budget_events
                        .get_or_create(&Outcome {
                            outcome: "degraded",
                        })
                        .inc();
                }
                let window = s.retain || s.held < WINDOW;
                if window && (!exhausted || s.held == 0) {
                    return;
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = freed => {}
            }
        }
    }

    pub(crate) async fn head(&self) -> Result<Head, FetchError> {
        loop {
            let notified = self.changed.notified();
            match &self.lock().head {
                HeadState::Ready(head) => return Ok(head.clone()),
                HeadState::Failed(error) => return Err(error.clone()),
                HeadState::Pending => {}
            }
            notified.await;
        }
    }

    /// The next chunk for reader `id`, `None` at a clean end.
    pub(crate) async fn next_chunk(&self, id: u64) -> Option<Result<Bytes, FetchError>> {
        loop {
            let notified = self.changed.notified();
            {
                let mut s = self.lock();
                let cursor = *s.cursors.get(&id)?;
                if let Some(chunk) = s.chunks.get(cursor - s.first).cloned() {
                    s.cursors.insert(id, cursor + 1);
                    if !s.retain {
                        s.release();
                        drop(s);
                        // The producer may be waiting for room.
                        self.changed.notify_waiters();
                    }
                    return Some(Ok(chunk));
                }
                match &s.end {
                    Some(Ok(())) => return None,
                    Some(Err(error)) => return Some(Err(error.clone())),
                    None => {}
                }
            }
            notified.await;
        }
    }
}

/// The held chunks of `len` bytes, then `last`, as one buffer.
fn concat(chunks: &VecDeque<Bytes>, last: Option<&Bytes>, len: usize) -> Bytes {
    match (chunks.len(), last) {
        (0, Some(last)) => return last.clone(),
        (1, None) => return chunks[0].clone(),
        _ => {}
    }
    let mut all = BytesMut::with_capacity(len + last.map_or(0, Bytes::len));
    for chunk in chunks.iter().chain(last) {
        all.extend_from_slice(chunk);
    }
    all.freeze()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use futures_util::stream;

    use super::*;

    const LIMITS: FetchLimits = FetchLimits {
        max_bytes: 1 << 20,
        max_cached_bytes: 1 << 20,
        range_fetch_threshold: 0,
    };

    /// A body of `parts` announcing their total length, whose end comes only when `end` fires
    /// (as a gateway whose framing ends after its last byte).
    fn late_ending(
        parts: &'static [&'static [u8]],
        end: tokio::sync::oneshot::Receiver<()>,
    ) -> GatewayResponse {
        let chunks = stream::iter(parts.iter().map(|p| Ok(Bytes::from_static(p))));
        let end = stream::once(async move {
            let _ = end.await;
        })
        .filter_map(|()| async { None });
        GatewayResponse {
            content_length: Some(parts.iter().map(|p| p.len() as u64).sum()),
            body: chunks.chain(end).boxed(),
        }
    }

    #[tokio::test]
    async fn the_last_bytes_go_out_only_once_the_item_is_kept() {
        let shared = Shared::new(Arc::new(MemoryBudget::new(1 << 20)));
        let reader = shared.add_reader();
        let (end, ended) = tokio::sync::oneshot::channel();
        let kept = Arc::new(AtomicBool::new(false));
        let producer = {
            let (shared, kept) = (Arc::clone(&shared), Arc::clone(&kept));
            tokio::spawn(async move {
                let keep = |complete: Complete| {
                    assert_eq!(complete.bytes.as_ref(), b"abcdef");
                    kept.store(true, Ordering::SeqCst);
                };
                shared
                    .produce(
                        async { Ok(late_ending(&[b"abc", b"def"], ended)) },
                        LIMITS,
                        keep,
                    )
                    .await
            })
        };
        let first = shared.next_chunk(reader).await.unwrap().unwrap();
        assert_eq!(first.as_ref(), b"abc");
        // Every byte is in, but the body has not ended: the last chunk is not out yet, so a
        // reader cannot finish (and cancel the fetch) before the item is cached.
        let early = tokio::time::timeout(Duration::from_millis(100), shared.next_chunk(reader));
        assert!(
            early.await.is_err(),
            "the last chunk went out before the end"
        );
        assert!(!kept.load(Ordering::SeqCst));
        end.send(()).unwrap();
        let last = shared.next_chunk(reader).await.unwrap().unwrap();
        assert_eq!(last.as_ref(), b"def");
        assert!(
            kept.load(Ordering::SeqCst),
            "the reader had every byte before the cache"
        );
        assert!(shared.next_chunk(reader).await.is_none());
        assert!(producer.await.unwrap());
    }

    #[tokio::test]
    async fn an_item_in_one_chunk_is_kept_whole() {
        let shared = Shared::new(Arc::new(MemoryBudget::new(1 << 20)));
        let reader = shared.add_reader();
        let (end, ended) = tokio::sync::oneshot::channel();
        end.send(()).unwrap();
        let kept = std::sync::Mutex::new(None);
        let keep = |complete: Complete| *kept.lock().unwrap() = Some(complete.bytes);
        let fetch = async { Ok(late_ending(&[b"only"], ended)) };
        assert!(shared.produce(fetch, LIMITS, keep).await);
        assert_eq!(kept.lock().unwrap().as_deref(), Some(&b"only"[..]));
        assert_eq!(
            shared.next_chunk(reader).await.unwrap().unwrap().as_ref(),
            b"only"
        );
        assert!(shared.next_chunk(reader).await.is_none());
        assert_eq!(
            shared.lock().held,
            4,
            "the withheld chunk is held (and charged) at the end"
        );
    }
}

//! Keep-alive HTTP/1.1 connections to the homeserver, each driven by the request using it.
//!
//! Written here rather than using hyper-util's pooled client (used before), which runs every
//! connection as a task of its own reached through channels, from a pool keyed (and hashed, per
//! request) by scheme and authority: with one upstream that bookkeeping and the task hops were
//! most of the client's cost. Measured against it in one run (`benches/`, scenario 8, where
//! `IMP_PASSTHROUGH_CLIENT` picks the client): 1.2-1.4x the small pass-throughs per second at
//! 32 connections and 1.6-2x at 1, with less CPU per request. hyper's own HTTP/1 codec
//! (`client::conn::http1`) is kept; only the pooling is ours. A connection is polled by the request that holds it, while it waits for the answer
//! and then from the response body as the client reads it, so the whole exchange runs in the
//! client connection's task. (A task that wakes itself that way, the connection waking the
//! response or the other way round, is only queued again on its own current-thread worker:
//! scenario 8 of `benches/` measured a gate against such wakes, `wake_gate.rs`, and found it
//! earned nothing once the workers stopped stealing work.)
//!
//! - A connection goes back to its worker's idle stack only once its response body has ended; one whose
//!   body was abandoned (client gone, error) is closed, as is one the homeserver closes.
//! - An idle connection is not polled while it waits, so the homeserver closing it is noticed
//!   when it is taken: it is polled once then, and replaced if it has ended or is not ready.
//! - A request that a reused connection failed before sending any of it (hyper hands it back) is
//!   sent again on the next connection; nothing that may have reached the homeserver is retried.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::Body;

/// Idle connections kept at most per worker; more are closed (oldest first).
const MAX_IDLE: usize = 256;
/// Idle stacks: one per connection worker (`crate::worker`), so that a connection is taken
/// again on the thread whose runtime watches its socket.
const IDLE_STACKS: usize = crate::worker::SLOTS;
/// An idle connection older than this is closed rather than reused (hyper-util's default was
/// the same 60 s we configured there).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect to {address} timed out after {timeout:?}")]
    ConnectTimeout { address: String, timeout: Duration },
    #[error("connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("HTTP/1.1 exchange with the homeserver: {0}")]
    Http(#[from] hyper::Error),
}

pub struct Pool {
    /// `host:port`, resolved at each connect (a name can move).
    address: String,
    connect_timeout: Duration,
    /// hyper's read buffer bound per connection (`server.connection_buffer`).
    max_buffer: usize,
    /// Per worker, most recently used at the back: taken first, while its socket is warm.
    idle: Vec<Mutex<VecDeque<Idle>>>,
}

/// Boxed wherever it is kept or passed: hyper's connection state is large, and moving it by
/// value cost about 2,000 instructions per request.
struct Conn {
    sender: http1::SendRequest<Body>,
    connection: http1::Connection<TokioIo<TcpStream>, Body>,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

impl Pool {
    pub fn new(address: String, connect_timeout: Duration, max_buffer: usize) -> Arc<Self> {
        Arc::new(Self {
            address,
            connect_timeout,
            max_buffer,
            idle: (0..IDLE_STACKS)
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
        })
    }

    /// Sends `request` (origin-form URI, `Host` set) on an idle connection or a new one.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<Body>,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut request = request;
        loop {
            let (conn, reused) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            match conn.exchange(request).await {
                Ok((response, conn)) => return Ok(self.respond(response, conn)),
                // Not sent at all: the connection had ended under us. Another one will do.
                Err(mut failed) if reused && failed.message().is_some() => {
                    tracing::debug!(error = %failed.error(), "idle homeserver connection had closed; retrying");
                    request = failed.take_message().expect("checked just above");
                }
                Err(failed) => return Err(SendError::Http(failed.into_error())),
            }
        }
    }

    fn respond(
        self: &Arc<Self>,
        response: Response<Incoming>,
        conn: Option<Box<Conn>>,
    ) -> Response<PooledBody> {
        let (parts, body) = response.into_parts();
        let mut conn = conn;
        // No body to read (HEAD, 204, 304, length 0): the exchange is over already.
        if body.is_end_stream() {
            if let Some(conn) = conn.take() {
                self.put(conn);
            }
        }
        Response::from_parts(
            parts,
            PooledBody {
                body,
                conn,
                pool: Arc::clone(self),
                ended: false,
            },
        )
    }

    async fn connect(&self) -> Result<Box<Conn>, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&*self.address))
            .await
            .map_err(|_| SendError::ConnectTimeout {
                address: self.address.clone(),
                timeout: self.connect_timeout,
            })?
            .map_err(|source| SendError::Connect {
                address: self.address.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .max_buf_size(self.max_buffer)
            .handshake(TokioIo::new(stream))
            .await?;
        Ok(Box::new(Conn { sender, connection }))
    }

    /// This worker's idle stack.
    fn idle(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle[crate::worker::current()]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that is still open and ready.
    fn take_idle(&self) -> Option<Box<Conn>> {
        loop {
            let mut idle = {
                let mut stack = self.idle();
                let newest = stack.pop_back()?;
                if newest.since.elapsed() >= IDLE_TIMEOUT {
                    // The rest are older still.
                    let stale = std::mem::take(&mut *stack);
                    drop(stack);
                    drop(stale);
                    return None;
                }
                newest
            };
            if idle.conn.usable() {
                return Some(idle.conn);
            }
        }
    }

    fn put(&self, conn: Box<Conn>) {
        if conn.sender.is_closed() {
            return;
        }
        let evicted = {
            let mut stack = self.idle();
            let evicted = if stack.len() >= MAX_IDLE {
                stack.pop_front()
            } else {
                None
            };
            stack.push_back(Idle {
                conn,
                since: Instant::now(),
            });
            evicted
        };
        // Closing a socket is a system call: not under the lock.
        drop(evicted);
    }

    /// Idle connections held (tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.idle
            .iter()
            .map(|stack| stack.lock().unwrap().len())
            .sum()
    }
}

impl Conn {
    /// Polls the idle connection once (reading an end or error the homeserver sent meanwhile)
    /// and says whether it can take a request now. Nobody waits on it yet, so nobody is woken:
    /// the request that takes it polls it next.
    fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut self.connection).poll(&mut cx) {
            Poll::Ready(_) => false,
            Poll::Pending => self.sender.is_ready(),
        }
    }

    /// Sends the request and drives the connection until the response head is in. Returns the
    /// connection too, unless it ended on the way.
    async fn exchange(
        self: Box<Self>,
        request: Request<Body>,
    ) -> Result<
        (Response<Incoming>, Option<Box<Conn>>),
        hyper::client::conn::TrySendError<Request<Body>>,
    > {
        let mut conn = Some(self);
        let mut response = {
            let conn = conn.as_mut().expect("just set");
            std::pin::pin!(conn.sender.try_send_request(request))
        };
        let response = poll_fn(|cx| {
            // The connection first: it writes the request and reads the answer that `response`
            // then finds ready.
            if let Some(c) = conn.as_mut() {
                if let Poll::Ready(result) = Pin::new(&mut c.connection).poll(cx) {
                    if let Err(error) = result {
                        tracing::debug!(%error, "homeserver connection ended");
                    }
                    // Dropping it fails a request it never took, handing it back.
                    conn = None;
                }
            }
            response.as_mut().poll(cx)
        })
        .await?;
        Ok((response, conn))
    }
}

/// The homeserver's response body; it drives its connection and returns it to the pool at
/// the end.
pub struct PooledBody {
    body: Incoming,
    conn: Option<Box<Conn>>,
    pool: Arc<Pool>,
    ended: bool,
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match this.conn.as_deref_mut() {
            None => Pin::new(&mut this.body).poll_frame(cx),
            Some(conn) => {
                // The connection first: it reads what the body then yields. Its end or error
                // reaches the body through hyper.
                if let Poll::Ready(result) = Pin::new(&mut conn.connection).poll(cx) {
                    if let Err(error) = result {
                        tracing::debug!(%error, "homeserver connection ended");
                    }
                    this.conn = None;
                }
                Pin::new(&mut this.body).poll_frame(cx)
            }
        };
        if let Poll::Ready(None) = polled {
            this.ended = true;
            if let Some(conn) = this.conn.take() {
                this.pool.put(conn);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // hyper stops polling a body once it has sent the announced length, so a body that has
        // all its bytes counts as ended. Anything less: the connection closes with us.
        if let Some(conn) = self.conn.take() {
            if self.ended || self.body.is_end_stream() {
                self.pool.put(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;

    use http::header;
    use http_body_util::BodyExt;

    use super::*;

    use crate::homeserver::test_server::server;

    use crate::homeserver::test_server::{get, request, text};

    fn pool_for(addr: SocketAddr) -> Arc<Pool> {
        Pool::new(addr.to_string(), Duration::from_secs(5), 64 * 1024)
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (addr, accepted) = server().await;
        let pool = pool_for(addr);
        for _ in 0..5 {
            let response = pool.send(get("/small")).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(text(response).await, "/small");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_get_their_own_connections() {
        let (addr, accepted) = server().await;
        let pool = pool_for(addr);
        let a = pool.send(get("/big")).await.unwrap();
        let b = pool.send(get("/big")).await.unwrap();
        assert_eq!(pool.idle_count(), 0, "busy connections are not idle");
        let (a, b) = tokio::join!(text(a), text(b));
        assert_eq!((a.len(), b.len()), (4 << 20, 4 << 20));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn an_abandoned_body_closes_its_connection() {
        let (addr, accepted) = server().await;
        let pool = pool_for(addr);
        let mut body = pool.send(get("/big")).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(
            text(pool.send(get("/small")).await.unwrap()).await,
            "/small"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connection_close_is_honoured() {
        let (addr, accepted) = server().await;
        let pool = pool_for(addr);
        assert_eq!(
            text(pool.send(get("/close")).await.unwrap()).await,
            "/close"
        );
        assert_eq!(
            text(pool.send(get("/small")).await.unwrap()).await,
            "/small"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn bodiless_answers_free_the_connection_at_once() {
        let (addr, accepted) = server().await;
        let pool = pool_for(addr);
        let head = pool
            .send(request(http::Method::HEAD, "/small"))
            .await
            .unwrap();
        assert_eq!(head.headers()[header::CONTENT_LENGTH], "6");
        assert_eq!(pool.idle_count(), 1, "nothing to read: back in the pool");
        drop(head);
        assert_eq!(
            text(pool.send(get("/small")).await.unwrap()).await,
            "/small"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    /// The homeserver closes a keep-alive connection while it sits idle here: the next request
    /// notices and uses a new one, without an error.
    #[tokio::test]
    async fn an_idle_connection_the_homeserver_closed_is_replaced() {
        let (addr, accepted) = crate::homeserver::test_server::closing_server().await;
        let pool = pool_for(addr);
        for n in 1..=3 {
            assert_eq!(text(pool.send(get("/x")).await.unwrap()).await, "ok");
            // Let the close arrive before the next request takes the connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(accepted.load(Ordering::SeqCst), n);
        }
    }

    #[tokio::test]
    async fn an_unreachable_homeserver_is_an_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let pool = pool_for(closed);
        let Err(error) = pool.send(get("/x")).await else {
            panic!("a closed port answered");
        };
        assert!(matches!(error, SendError::Connect { .. }), "{error}");
    }
}

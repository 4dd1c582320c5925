//! The HTTP client under the pass-through, behind one small trait so that clients can be
//! measured against each other (`benches/`, scenario 8) and swapped without touching the
//! request rules in `homeserver`.
//!
//! `IMP_PASSTHROUGH_CLIENT` (read once, when the homeserver is set up) picks one:
//!
//! - `bespoke` (default): `pool`, keep-alive connections driven by the request using them;
//! - `hyper-util`: hyper-util's pooled client (`client::legacy::Client`), one for the process;
//! - `hyper-util-per-worker`: one such client per connection worker, so a connection is only
//!   used by the thread whose runtime drives it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Body, BoxError};
use crate::forwarding;

use super::pool::Pool;

/// Sends a request (origin-form URI, `Host` set) to the homeserver and returns its response
/// head, the body still streaming. An error means no response head came.
pub trait Upstream: Send + Sync {
    fn send(
        &self,
        request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, BoxError>> + Send;
}

/// Idle connections kept at most (per worker for the bespoke pool and the per-worker clients).
pub const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The configured client.
pub enum Passthrough {
    Bespoke(Arc<Pool>),
    HyperUtil(HyperUtil),
}

impl Passthrough {
    /// The client `IMP_PASSTHROUGH_CLIENT` names, for `address` (`host:port`).
    pub fn from_env(address: &str, connect_timeout: Duration, max_buffer: usize) -> Self {
        let choice = std::env::var("IMP_PASSTHROUGH_CLIENT").unwrap_or_default();
        let choice = match choice.as_str() {
            "" | "bespoke" | "hyper-util" | "hyper-util-per-worker" => choice,
            other => {
                tracing::warn!(
                    value = other,
                    "IMP_PASSTHROUGH_CLIENT: unknown client, using the default"
                );
                String::new()
            }
        };
        if !choice.is_empty() {
            tracing::info!(client = %choice, "pass-through client");
        }
        match choice.as_str() {
            "hyper-util" => {
                Self::HyperUtil(HyperUtil::new(address, connect_timeout, max_buffer, false))
            }
            "hyper-util-per-worker" => {
                Self::HyperUtil(HyperUtil::new(address, connect_timeout, max_buffer, true))
            }
            _ => Self::Bespoke(Pool::new(address.to_owned(), connect_timeout, max_buffer)),
        }
    }
}

impl Upstream for Passthrough {
    async fn send(&self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        match self {
            Self::Bespoke(pool) => Upstream::send(pool, request).await,
            Self::HyperUtil(client) => Upstream::send(client, request).await,
        }
    }
}

impl Upstream for Arc<Pool> {
    async fn send(&self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let response = Pool::send(self, request).await?;
        Ok(response.map(|body| body.map_err(super::response_broke_off).boxed()))
    }
}

/// hyper-util's pooled client, which wants absolute-form URIs (it sends origin form).
pub struct HyperUtil {
    /// One, or one per worker slot (`crate::worker`).
    clients: Vec<Client<HttpConnector, Body>>,
    authority: Authority,
}

impl HyperUtil {
    fn new(address: &str, connect_timeout: Duration, max_buffer: usize, per_worker: bool) -> Self {
        let count = if per_worker { crate::worker::SLOTS } else { 1 };
        let clients = (0..count)
            .map(|_| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(connect_timeout));
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(IDLE_TIMEOUT)
                    .pool_max_idle_per_host(MAX_IDLE)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .http1_max_buf_size(max_buffer)
                    .build(connector)
            })
            .collect();
        Self {
            clients,
            authority: Authority::try_from(address).expect("host:port is an authority"),
        }
    }
}

impl Upstream for HyperUtil {
    async fn send(&self, request: Request<Body>) -> Result<Response<Body>, BoxError> {
        let (mut parts, body) = request.into_parts();
        let path_and_query = forwarding::origin_form(&parts.uri);
        parts.uri = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()?;
        let client = match self.clients.len() {
            1 => &self.clients[0],
            _ => &self.clients[crate::worker::current()],
        };
        let response = client.request(Request::from_parts(parts, body)).await?;
        Ok(response.map(|body| body.map_err(super::response_broke_off).boxed()))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;

    use super::*;

    /// Every client, as `IMP_PASSTHROUGH_CLIENT` would make it.
    fn clients(addr: SocketAddr) -> Vec<(&'static str, Passthrough)> {
        let address = addr.to_string();
        let timeout = Duration::from_secs(5);
        vec![
            (
                "bespoke",
                Passthrough::Bespoke(Pool::new(address.clone(), timeout, 64 * 1024)),
            ),
            (
                "hyper-util",
                Passthrough::HyperUtil(HyperUtil::new(&address, timeout, 64 * 1024, false)),
            ),
            (
                "hyper-util-per-worker",
                Passthrough::HyperUtil(HyperUtil::new(&address, timeout, 64 * 1024, true)),
            ),
        ]
    }

    use crate::homeserver::test_server::server;

    use crate::homeserver::test_server::{get, text};

    #[tokio::test]
    async fn raw_targets_and_keep_alive_for_every_client() {
        for name in ["bespoke", "hyper-util", "hyper-util-per-worker"] {
            let (addr, accepted) = server().await;
            let client = clients(addr).into_iter().find(|c| c.0 == name).unwrap().1;
            for _ in 0..3 {
                let response = client.send(get("/a%2Fb?x=%41&&y")).await.unwrap();
                assert_eq!(text(response).await, "/a%2Fb?x=%41&&y", "{name}");
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1, "{name}: one connection");
            // A body left unread closes its connection; `Connection: close` is honoured.
            let mut body = client.send(get("/big")).await.unwrap().into_body();
            assert!(body.frame().await.unwrap().unwrap().is_data());
            drop(body);
            assert_eq!(
                text(client.send(get("/close")).await.unwrap()).await,
                "/close"
            );
            assert_eq!(text(client.send(get("/x")).await.unwrap()).await, "/x");
            assert!(accepted.load(Ordering::SeqCst) >= 3, "{name}");
        }
    }

    /// The homeserver closes a keep-alive connection while it is idle: the next request uses a
    /// new one, without an error.
    #[tokio::test]
    async fn an_idle_connection_the_homeserver_closed_is_replaced() {
        let (addr, _) = crate::homeserver::test_server::closing_server().await;
        for (name, client) in clients(addr) {
            for _ in 0..3 {
                let response = client.send(get("/x")).await.unwrap();
                assert_eq!(text(response).await, "ok", "{name}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    #[tokio::test]
    async fn an_unreachable_homeserver_is_an_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        for (name, client) in clients(closed) {
            assert!(client.send(get("/x")).await.is_err(), "{name}");
        }
    }
}

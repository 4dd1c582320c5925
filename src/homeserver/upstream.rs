//! The HTTP client under the pass-through, behind one small trait so that clients can be
//! measured against each other (`benches/`, scenario 8) and swapped without touching the
//! request rules in `homeserver`.
//!
//! `IMP_PASSTHROUGH_CLIENT` (read once, when the homeserver is set up) picks one:
//!
//! - `bespoke` (default): `pool`, keep-alive connections driven by the request using them,
//!   polled through `wake_gate`;
//! - `bespoke-no-gate`: the same without the wake gate;
//! - `hyper-util`: hyper-util's pooled client (`client::legacy::Client`), one for the process;
//! - `hyper-util-per-worker`: one such client per connection worker, so a connection is only
//!   used by the thread whose runtime drives it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Body, BoxError};

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
    pub fn from_env(address: &str, connect_timeout: Duration) -> Self {
        let choice = std::env::var("IMP_PASSTHROUGH_CLIENT").unwrap_or_default();
        let choice = match choice.as_str() {
            "" | "bespoke" | "bespoke-no-gate" | "hyper-util" | "hyper-util-per-worker" => choice,
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
            "hyper-util" => Self::HyperUtil(HyperUtil::new(address, connect_timeout, false)),
            "hyper-util-per-worker" => {
                Self::HyperUtil(HyperUtil::new(address, connect_timeout, true))
            }
            other => {
                if other == "bespoke-no-gate" {
                    super::wake_gate::disable();
                }
                Self::Bespoke(Pool::new(address.to_owned(), connect_timeout))
            }
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
    fn new(address: &str, connect_timeout: Duration, per_worker: bool) -> Self {
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
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
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

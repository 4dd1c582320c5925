//! The admin listener (`[admin] listen`, off by default; keep it on loopback):
//!
//! - `GET /metrics`: Prometheus metrics (OpenMetrics text format);
//! - `GET /health`: 200 while the process serves;
//! - `GET /ready`: 200 when the homeserver answers and at least one gateway passes its probe,
//!   else 503 with a JSON reason.
//!
//! It knows nothing of the app: it is handed a readiness check and a hook that brings the
//! gauges up to date before a scrape, as linkerd2-proxy's admin is handed a latch and a
//! renderer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::body::{self, Body};

/// What `/ready` asks: `Err(reason)` when not ready.
pub type ReadyFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// What the admin listener is handed.
#[derive(Clone)]
pub struct Admin {
    /// Runs before `/metrics` renders (gauges that are read, not pushed: the cache's size).
    pub before_scrape: Arc<dyn Fn() + Send + Sync>,
    pub readiness: Arc<dyn Fn() -> ReadyFuture + Send + Sync>,
}

pub async fn handle<B>(admin: Admin, request: Request<B>) -> Response<Body> {
    if request.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match request.uri().path() {
        "/metrics" => {
            (admin.before_scrape)();
            let mut response = Response::new(body::full(crate::metrics::render()));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        "/health" => json(StatusCode::OK, serde_json::json!({ "status": "ok" })),
        "/ready" => match (admin.readiness)().await {
            Ok(()) => json(StatusCode::OK, serde_json::json!({ "status": "ready" })),
            Err(reason) => json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "status": "not ready", "reason": reason }),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    response
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(body::full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

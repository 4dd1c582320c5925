//! A stub homeserver: records every request byte for byte and answers by path.
//!
//! - `/_matrix/client/v3/account/whoami`: `Bearer good` (or `access_token=good`) is alice,
//!   `Bearer gone` is 403, no token is 401 `M_MISSING_TOKEN`, any other 401 `M_UNKNOWN_TOKEN`.
//!   Given both, the query token wins (a homeserver may do that; Synapse and Dendrite refuse
//!   mixed credentials). [`HomeserverStub::answer_whoami`] replaces all that with one answer.
//! - `/stream/{n}`: `n` pattern bytes, generated as they are sent.
//! - `/count`: reads the request body as a stream and answers its length and checksum.
//! - `/broken`: announces 1000 bytes, sends 10, closes.
//! - anything else: 200, echoing the body, with a few headers to check on the way back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;

use super::StubBody;

#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query exactly as received.
    pub target: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A fixed whoami answer: status, `Content-Type`, body.
pub type WhoamiOverride = (StatusCode, &'static str, &'static str);

#[derive(Clone, Default)]
pub struct HomeserverStub {
    recorded: Arc<Mutex<Vec<Recorded>>>,
    whoami_calls: Arc<AtomicUsize>,
    whoami_override: Arc<Mutex<Option<WhoamiOverride>>>,
}

impl HomeserverStub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every whoami gets this answer from now on (`None`: the usual answers again).
    pub fn answer_whoami(&self, answer: Option<WhoamiOverride>) {
        *self.whoami_override.lock().unwrap() = answer;
    }

    pub fn whoami_calls(&self) -> usize {
        self.whoami_calls.load(Ordering::SeqCst)
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    pub fn last(&self) -> Recorded {
        self.recorded()
            .pop()
            .expect("the homeserver received nothing")
    }

    pub async fn start(&self) -> SocketAddr {
        super::serve_stub(self, |stub, req| async move { stub.answer(req).await }).await
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<StubBody> {
        let path = req.uri().path().to_owned();
        if path == "/count" {
            return count(req).await;
        }
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let target = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default();
        self.recorded.lock().unwrap().push(Recorded {
            method: parts.method.clone(),
            target: target.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        if path == "/_matrix/client/v3/account/whoami" {
            self.whoami_calls.fetch_add(1, Ordering::SeqCst);
            let fixed = *self.whoami_override.lock().unwrap();
            if let Some((status, content_type, body)) = fixed {
                let mut r = Response::new(full(body));
                *r.status_mut() = status;
                r.headers_mut()
                    .insert("content-type", content_type.parse().unwrap());
                return r;
            }
            return whoami(&parts.headers, parts.uri.query());
        }
        if path.starts_with("/_matrix/federation/")
            && path.contains("/media/")
            && path.contains("ipfs")
        {
            return federation(&parts.headers);
        }
        if path == "/_matrix/client/v3/capabilities" || path == "/_matrix/client/r0/capabilities" {
            let mut r = Response::new(full(CAPABILITIES));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            return r;
        }
        if let Some(n) = path.strip_prefix("/stream/") {
            return generated(n.parse().unwrap());
        }
        if path == "/broken" {
            return broken();
        }
        if path == "/slow" {
            // Long enough for a test to give up on the request while it waits.
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        }
        let mut r = Response::new(full(body));
        r.headers_mut()
            .insert("x-upstream", "stub".parse().unwrap());
        r.headers_mut().append("set-cookie", "a=1".parse().unwrap());
        r.headers_mut().append("set-cookie", "b=2".parse().unwrap());
        r.headers_mut()
            .insert("connection", "x-hop".parse().unwrap());
        r.headers_mut()
            .insert("x-hop", "hop-by-hop".parse().unwrap());
        r.headers_mut()
            .insert("keep-alive", "timeout=5".parse().unwrap());
        *r.status_mut() = StatusCode::CREATED;
        r
    }
}

fn full(bytes: impl Into<Bytes>) -> StubBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<StubBody> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r.headers_mut()
        .insert("x-homeserver", "said-so".parse().unwrap());
    r
}

/// Formatted on purpose (spaces, key order) to show that an edit leaves it alone.
pub const CAPABILITIES: &str = "{\"capabilities\": {\"m.change_password\": {\"enabled\": false},  \"m.room_versions\": {\"default\": \"10\", \"available\": {\"10\": \"stable\"}}}}";

/// Stands in for a homeserver's X-Matrix check: `sig="good"` is a valid signature for media
/// the homeserver does not have, `sig="mine"` for media it has, `sig="old"` a server without
/// federation media; anything else is refused.
fn federation(headers: &HeaderMap) -> Response<StubBody> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth.starts_with("X-Matrix ") {
        return json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"errcode": "M_UNAUTHORIZED", "error": "Missing Authorization headers"}),
        );
    }
    if auth.contains("sig=\"good\"") {
        json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"errcode": "M_NOT_FOUND", "error": "Not found"}),
        )
    } else if auth.contains("sig=\"mine\"") {
        let mut r = Response::new(full("the homeserver's own answer"));
        r.headers_mut().insert(
            "content-type",
            "multipart/mixed; boundary=hs".parse().unwrap(),
        );
        r
    } else if auth.contains("sig=\"old\"") {
        json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
        )
    } else {
        json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"errcode": "M_UNAUTHORIZED", "error": "Invalid signature"}),
        )
    }
}

fn whoami(headers: &HeaderMap, query: Option<&str>) -> Response<StubBody> {
    let from_header = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let from_query = query.and_then(|q| {
        q.split('&')
            .find_map(|p| p.strip_prefix("access_token="))
            .map(str::to_owned)
    });
    match from_query.or(from_header).as_deref() {
        Some("good") => json(
            StatusCode::OK,
            serde_json::json!({"user_id": "@alice:test", "is_guest": false}),
        ),
        Some("gone") => json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"errcode": "M_FORBIDDEN", "error": "account expired"}),
        ),
        Some(_) => json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Unknown access token", "soft_logout": false}),
        ),
        None => json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"errcode": "M_MISSING_TOKEN", "error": "Missing access token"}),
        ),
    }
}

/// `n` bytes of `super::pattern`, generated 64 KiB at a time.
fn generated(n: usize) -> Response<StubBody> {
    const CHUNK: usize = 64 * 1024;
    let chunk = Bytes::from(super::pattern(CHUNK, 7));
    let frames = stream::iter((0..n).step_by(CHUNK)).map(move |start| {
        let len = CHUNK.min(n - start);
        Ok::<_, std::io::Error>(Frame::data(chunk.slice(..len)))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    r.headers_mut().insert("content-length", n.into());
    r
}

/// Reads the body frame by frame, never holding it whole.
async fn count(req: Request<Incoming>) -> Response<StubBody> {
    let mut body = req.into_body();
    let mut len: u64 = 0;
    let mut sum: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": "body broke"}),
            );
        };
        if let Some(data) = frame.data_ref() {
            len += data.len() as u64;
            sum = data
                .iter()
                .fold(sum, |s, b| s.wrapping_mul(31).wrapping_add(*b as u64));
        }
    }
    json(StatusCode::OK, serde_json::json!({"len": len, "sum": sum}))
}

/// The same checksum `count` computes.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |s, b| s.wrapping_mul(31).wrapping_add(*b as u64))
}

fn broken() -> Response<StubBody> {
    let frames = stream::iter([Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(
        b"0123456789",
    )))])
    .chain(stream::once(async {
        // Long enough for the head and first bytes to be on the wire.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        Err(std::io::Error::other("stub hangs up"))
    }));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    r.headers_mut().insert("content-length", 1000.into());
    r
}

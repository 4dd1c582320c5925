//! One log line per request, written when the response body is finished (or abandoned), so
//! that it can say how many bytes really went out; and the `in_flight_requests` gauge. Both
//! are a layer ([`AccessLogLayer`]) around the app, which tells it what the request was
//! ([`RouteKind`]) and where its bytes came from ([`CacheOutcome`]) in the response's
//! extensions.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use std::sync::LazyLock;

use crate::body::Body;
use crate::metrics::{RouteSeries, METRICS};
use crate::router::RouteKind;

/// One set of series per route kind, in `RouteKind` order.
static SERIES: LazyLock<[RouteSeries; 7]> = LazyLock::new(|| {
    [
        RouteKind::Passthrough,
        RouteKind::Download,
        RouteKind::Thumbnail,
        RouteKind::Federation,
        RouteKind::Preflight,
        RouteKind::Upload,
        RouteKind::Pin,
    ]
    .map(|kind| RouteSeries::new(kind.as_str()))
});

impl RouteKind {
    fn series(self) -> &'static RouteSeries {
        &SERIES[self as usize]
    }
}

/// Where a response's bytes came from; read by the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    /// A fetch this request started.
    Miss,
    /// A fetch another request had started.
    Joined,
    /// Answered without bytes (304).
    NotNeeded,
}

/// The lookup counters, found once (no label map on the request path).
static LOOKUPS: std::sync::LazyLock<[prometheus_client::metrics::counter::Counter; 3]> =
    std::sync::LazyLock::new(|| {
        ["hit", "miss", "joined"].map(|outcome| {
            METRICS
                .cache_lookups
                .get_or_create(&crate::metrics::Outcome { outcome })
                .clone()
        })
    });

impl CacheOutcome {
    /// Counts the lookup in `ipfs_media_proxy_cache_lookups_total`.
    pub fn count(self) {
        let index = match self {
            CacheOutcome::Hit => 0,
            CacheOutcome::Miss => 1,
            CacheOutcome::Joined => 2,
            CacheOutcome::NotNeeded => return,
        };
        LOOKUPS[index].inc();
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Joined => "joined",
            CacheOutcome::NotNeeded => "none",
        }
    }
}

/// What an upload stored on IPFS came to, for its access-log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRecord {
    /// The CID the bytes hashed to, once they all arrived.
    pub cid: Option<String>,
    /// Body bytes received.
    pub bytes: u64,
    /// `stored`, or the refusal (`too_large`, `rate_limited`, `store_error`, ...).
    pub outcome: &'static str,
}

/// One request counted in the `in_flight_requests` gauge for as long as this lives. It goes
/// with the request's log record, so the count falls when the response body is done, and also
/// when the request never got that far: a handler that panicked, or a client that left while
/// the answer was being prepared (hyper then drops the handler's future).
pub struct InFlight(());

impl InFlight {
    pub fn enter() -> Self {
        METRICS.in_flight.inc();
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
    }
}

pub struct RequestLog {
    pub method: Method,
    /// Path only: queries can carry access tokens.
    pub path: String,
    pub route: RouteKind,
    pub cache: Option<&'static str>,
    pub upload: Option<UploadRecord>,
    pub status: StatusCode,
    /// Body bytes the response announced (`Content-Length`; zero for HEAD, 204, 304).
    pub announced: Option<u64>,
    pub started: Instant,
    /// Held, never read: its drop is what lowers the gauge.
    pub _in_flight: InFlight,
}

impl RequestLog {
    fn emit(&self, bytes: u64, complete: bool) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let duration_ms = elapsed * 1000.0;
        self.route
            .series()
            .record(self.status.as_u16(), elapsed, bytes);
        if let Some(upload) = &self.upload {
            tracing::info!(
                target: "ipfs_media_proxy::access",
                method = %self.method,
                path = %self.path,
                route = self.route.as_str(),
                cid = upload.cid.as_deref().unwrap_or("-"),
                upload_bytes = upload.bytes,
                outcome = upload.outcome,
                status = self.status.as_u16(),
                bytes,
                complete,
                duration_ms = format_args!("{duration_ms:.3}"),
                "request"
            );
            return;
        }
        tracing::info!(
            target: "ipfs_media_proxy::access",
            method = %self.method,
            path = %self.path,
            route = self.route.as_str(),
            cache = self.cache.unwrap_or("-"),
            status = self.status.as_u16(),
            bytes,
            complete,
            duration_ms = format_args!("{duration_ms:.3}"),
            "request"
        );
    }
}

pin_project! {
    /// A body that counts what it yields and logs the request when it is done.
    pub struct Logged<B: HttpBody> {
        #[pin]
        inner: B,
        log: Option<RequestLog>,
        bytes: u64,
        ended: bool,
    }

    impl<B: HttpBody> PinnedDrop for Logged<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(log) = this.log.take() {
                // hyper stops polling once a body is at its end or has sent its announced
                // length, so any of the three means the client got everything.
                let complete = *this.ended
                    || this.inner.is_end_stream()
                    || log.announced == Some(*this.bytes);
                log.emit(*this.bytes, complete);
            }
        }
    }
}

impl<B: HttpBody> Logged<B> {
    pub fn new(inner: B, log: RequestLog) -> Self {
        Self {
            inner,
            log: Some(log),
            bytes: 0,
            ended: false,
        }
    }
}

impl<B> HttpBody for Logged<B>
where
    B: HttpBody<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => *this.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Logs every request once and counts it in flight while it lasts; see the module doc.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> AccessLog<S> {
        AccessLog { inner }
    }
}

#[derive(Debug, Clone)]
pub struct AccessLog<S> {
    inner: S,
}

impl<S> tower::Service<Request<Body>> for AccessLog<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let started = Instant::now();
        let in_flight = InFlight::enter();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        // A combinator, not an `async` block: awaiting the inner future in one trips rustc's
        // higher-ranked `Send` inference (the body type's `dyn Error` lifetime).
        Box::pin(self.inner.call(request).map(move |response| {
            let response = response?;
            let route = response
                .extensions()
                .get::<RouteKind>()
                .copied()
                .unwrap_or(RouteKind::Passthrough);
            let outcome = response.extensions().get::<CacheOutcome>().copied();
            let upload = response.extensions().get::<UploadRecord>().cloned();
            if let Some(outcome) = outcome {
                outcome.count();
            }
            let status = response.status();
            let announced = if method == Method::HEAD
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
            {
                Some(0)
            } else {
                response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
            };
            let log = RequestLog {
                method,
                path,
                route,
                cache: outcome.map(|c| c.as_str()),
                upload,
                status,
                announced,
                started,
                _in_flight: in_flight,
            };
            Ok(response.map(|body| Logged::new(body, log).boxed()))
        }))
    }
}

//! One log line per request, written when the response body is finished (or abandoned), so
//! that it can say how many bytes really went out.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use pin_project_lite::pin_project;

use std::sync::LazyLock;

use crate::metrics::{RouteSeries, METRICS};
use crate::router::RouteKind;

/// One set of series per route kind, in `RouteKind` order.
static SERIES: LazyLock<[RouteSeries; 5]> = LazyLock::new(|| {
    [
        RouteKind::Passthrough,
        RouteKind::Download,
        RouteKind::Thumbnail,
        RouteKind::Federation,
        RouteKind::Preflight,
    ]
    .map(|kind| RouteSeries::new(kind.as_str()))
});

impl RouteKind {
    fn series(self) -> &'static RouteSeries {
        &SERIES[self as usize]
    }
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
    pub status: StatusCode,
    /// Body bytes the response announced (`Content-Length`; zero for HEAD, 204, 304).
    pub announced: Option<u64>,
    pub started: Instant,
    pub in_flight: InFlight,
}

impl RequestLog {
    fn emit(&self, bytes: u64, complete: bool) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let duration_ms = elapsed * 1000.0;
        self.route
            .series()
            .record(self.status.as_u16(), elapsed, bytes);
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

//! The stack every client request goes through, outermost first, in one place. Each layer
//! says why it is there and what it must sit below.

use std::any::Any;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;

use crate::access_log::AccessLogLayer;
use crate::app::App;
use crate::body::{Body, BoxError};
use crate::error::RequestError;
use crate::forwarding::Peer;

/// The service for one client connection from `peer`.
pub fn stack(
    app: Arc<App>,
    peer: Peer,
) -> impl Service<
    Request<Incoming>,
    Response = Response<impl http_body::Body<Data = bytes::Bytes, Error = BoxError> + Send>,
    Error = Infallible,
    Future: Send,
> + Clone
       + Send {
    ServiceBuilder::new()
        // Outermost: a bug anywhere below is one 500 for one request, never a dead
        // connection task (the in-flight count below falls as its guard is dropped).
        .layer(CatchPanicLayer::custom(panic_response))
        // hyper's body into ours, so that everything below sees one body type.
        .map_request(|request: Request<Incoming>| request.map(box_incoming))
        // One log line per request, written at the body's end, and the in-flight gauge:
        // above the app so that every answer (passed through or ours) is counted.
        .layer(AccessLogLayer)
        .service(AppService { app, peer })
}

/// The app as a service: routes, answers, maps every failure to its Matrix answer.
#[derive(Clone)]
struct AppService {
    app: Arc<App>,
    peer: Peer,
}

impl Service<Request<Body>> for AppService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let app = Arc::clone(&self.app);
        Box::pin(app.handle(request, self.peer.clone()).map(Ok))
    }
}

fn box_incoming(body: Incoming) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = text, "request handler panicked");
    RequestError::Panic.into_response()
}

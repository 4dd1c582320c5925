//! The one body type every response and forwarded request uses.

use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http_body::Frame;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, streaming body: pass-through bodies, media streams and small fixed bodies alike.
pub type Body = BoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body from a stream of bytes that is `Send` but not `Sync` (as gateway streams are); an
/// error ends the body with that error, so the connection is aborted, never ended cleanly.
pub fn from_stream<S, E>(stream: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    let frames = Exclusive(Mutex::new(Box::pin(stream)))
        .map_ok(Frame::data)
        .map_err(Into::into);
    BodyExt::boxed(StreamBody::new(frames))
}

/// Makes a stream `Sync`: it is only ever polled through `&mut`, so the mutex is never
/// contended (`get_mut` does not even lock).
struct Exclusive<S>(Mutex<Pin<Box<S>>>);

impl<S: Stream> Stream for Exclusive<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let inner = self
            .get_mut()
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        inner.as_mut().poll_next(cx)
    }
}

/// Reads a whole body of at most `max` bytes. (Written out rather than with
/// `http_body_util::Limited`, whose boxed-error conversion trips a rustc higher-ranked `Send`
/// inference error once awaited inside hyper's connection future.)
pub async fn collect_limited(mut body: Body, max: usize) -> Result<Bytes, BoxError> {
    let mut all = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            if all.len() + data.len() > max {
                return Err(format!("body larger than {max} bytes").into());
            }
            all.extend_from_slice(data);
        }
    }
    Ok(all.freeze())
}

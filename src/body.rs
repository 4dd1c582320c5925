//! The one body type every response and forwarded request uses.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

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

//! Federation media (MSC3916): the media wrapped in `multipart/mixed`, laid out exactly as
//! Synapse writes it, since other servers' parsers were written against Synapse:
//!
//! ```text
//! Content-Type: multipart/mixed; boundary=B         (unquoted, last parameter)
//!
//! \r\n--B\r\nContent-Type: application/json\r\n\r\n{}
//! \r\n--B\r\nContent-Type: T\r\nContent-Disposition: D\r\n\r\n<bytes>
//! \r\n--B--\r\n
//! ```
//!
//! The bytes are streamed inline, never as a `Location` redirect (Dendrite rejects those).
//!
//! # GET `/_matrix/federation/v1/media/download/ipfs:{cid}`

use bytes::Bytes;
use futures_util::{stream, StreamExt};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, BodyStream, StreamBody};

use crate::access_log::CacheOutcome;
use crate::body::Body;
use crate::media::headers;
use crate::respond::content::Content;

/// A fresh random boundary: one derived from the content could be planted in the content.
fn boundary() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The federation answer for `content` of type `content_type`, under a fresh boundary.
pub fn respond(content: Content, content_type: &str, outcome: CacheOutcome) -> Response<Body> {
    let mut response = multipart(content, content_type, &boundary());
    response.extensions_mut().insert(outcome);
    response
}

/// The multipart answer for `content` of type `content_type`.
fn multipart(content: Content, content_type: &str, boundary: &str) -> Response<Body> {
    let disposition = headers::content_disposition(content_type, None, false);
    let media_type = headers::content_type_value(content_type);
    let head = format!(
        "\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{boundary}\r\nContent-Type: {}\r\nContent-Disposition: {}\r\n\r\n",
        media_type.to_str().unwrap_or("application/octet-stream"),
        disposition.to_str().unwrap_or("attachment"),
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let length = content
        .length()
        .map(|len| head.len() as u64 + len + tail.len() as u64);
    let frames = stream::once(async move { Ok(http_body::Frame::data(Bytes::from(head))) })
        .chain(BodyStream::new(content.into_body(0, None)))
        .chain(stream::once(async move {
            Ok(http_body::Frame::data(Bytes::from(tail)))
        }));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&format!("multipart/mixed; boundary={boundary}"))
            .expect("the boundary is hex"),
    );
    if let Some(length) = length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    h.insert(header::CACHE_CONTROL, headers::IMMUTABLE);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CachedMedia;
    use std::sync::Arc;

    #[tokio::test]
    async fn layout_is_synapses() {
        let item = Arc::new(CachedMedia::new(
            Bytes::from_static(b"PNGDATA"),
            Some("image/png"),
        ));
        let response = multipart(Content::Whole(item), "image/png", "abc123");
        assert_eq!(
            response.headers()["content-type"],
            "multipart/mixed; boundary=abc123"
        );
        let expected = "\r\n--abc123\r\nContent-Type: application/json\r\n\r\n{}\r\n--abc123\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\n\r\nPNGDATA\r\n--abc123--\r\n";
        assert_eq!(
            response.headers()["content-length"],
            expected.len().to_string().as_str()
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, expected.as_bytes());
    }

    #[test]
    fn boundaries_differ() {
        assert_ne!(boundary(), boundary());
        assert_eq!(boundary().len(), 32);
    }
}

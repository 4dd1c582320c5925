//! What a client sees when we answer with an error: one mapping from failure to status and
//! Matrix `errcode`, so every refusal has the shape `{"errcode": "M_...", "error": "..."}`.

use std::borrow::Cow;

use http::{header, HeaderValue, Response, StatusCode};

use crate::body::{self, Body};
use crate::media::headers::{media_security, NO_STORE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: Cow<'static, str>,
}

impl MatrixError {
    pub fn new(
        status: StatusCode,
        errcode: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    /// The spec's answer when content did not arrive within `timeout_ms`.
    pub fn not_yet_uploaded(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED", message)
    }

    pub fn too_large(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "M_TOO_LARGE", message)
    }

    /// Something upstream (homeserver or gateway) failed; not the client's fault.
    pub fn bad_gateway(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
    }

    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({ "errcode": self.errcode, "error": self.message });
        let mut response = Response::new(body::full(body.to_string()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Errors are never cached: the content may appear on a gateway a moment later.
        headers.insert(header::CACHE_CONTROL, NO_STORE);
        // Synapse puts its media security headers (and CORS) on its error answers too.
        media_security(headers);
        response
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.errcode,
            self.message
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_body_headers_and_status() {
        let response = MatrixError::not_yet_uploaded("not there yet").into_response();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        let h = response.headers().clone();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["cache-control"], "no-cache, no-store, must-revalidate");
        assert_eq!(h["access-control-allow-origin"], "*");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["errcode"], "M_NOT_YET_UPLOADED");
        assert_eq!(v["error"], "not there yet");
    }
}

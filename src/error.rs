//! What a client sees when we answer with an error. The layers below return their own typed
//! errors; [`RequestError`] gathers every failure a request can meet, and
//! [`RequestError::to_matrix`] is the one mapping from failure to status, Matrix `errcode`
//! and message, so every refusal has the shape `{"errcode": "M_...", "error": "..."}`. No
//! errcode string is written anywhere else (a test in `tests/architecture.rs` checks).

use std::borrow::Cow;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};

use std::sync::Arc;

use crate::auth::AuthError;
use crate::body::{self, Body};
use crate::homeserver::HomeserverError;
use crate::ipfs::gateway::FetchError;
use crate::media::headers::{media_security, NO_STORE};
use crate::media::media_id::MediaIdError;
use crate::media::query::QueryError;
use crate::media::range::unsatisfied_range;
use crate::media::thumbnail::{ParamError, ThumbnailError};
use crate::upload::UploadError;

/// Every way a request that we answer ourselves can fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    #[error("unauthenticated media downloads are disabled")]
    LegacyDisabled,
    #[error(transparent)]
    MediaId(#[from] MediaIdError),
    #[error("the CID is on a denylist")]
    Blocked,
    /// Routing sends thumbnails to us only when they are enabled; kept for completeness.
    #[error("thumbnails are disabled")]
    ThumbnailsDisabled,
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    ThumbnailParam(#[from] ParamError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The first bytes did not arrive within the client's `timeout_ms`.
    #[error("the content did not arrive within {0:?}")]
    NotInTime(Duration),
    #[error("the range is outside the content's {total} bytes")]
    RangeNotSatisfiable { total: u64 },
    /// The thumbnail source is over `thumbnails.max_source_bytes`.
    #[error("the thumbnail source is too large")]
    ThumbnailSourceTooLarge,
    /// Not an image, corrupt, too many pixels: Synapse's "no thumbnails" answer.
    #[error("no thumbnail: {0}")]
    NoThumbnail(String),
    /// No configured size has the requested method.
    #[error("no thumbnail of that kind is configured")]
    NoSuchThumbnailSize,
    /// The render did not finish within `thumbnails.render_timeout` (slot wait included).
    #[error("the thumbnail was not rendered within {0:?}")]
    RenderTimedOut(Duration),
    /// `thumbnails.max_queued` renders already wait for a slot.
    #[error("too many thumbnails are waiting to be rendered")]
    RenderQueueFull,
    /// The source and decoded image of this render would take the bytes held by running
    /// fetches and renders past `cache.max_fetch_bytes`.
    #[error("too much memory is held by renders and fetches")]
    RenderBusy,
    /// A render was lost (its task panicked or the runtime is stopping).
    #[error("thumbnailing failed: {0}")]
    RenderFailed(&'static str),
    #[error("the homeserver's capabilities could not be read")]
    Capabilities,
    #[error("the request handler panicked")]
    Panic,
    /// Boxed: its CIDs would make every `Result<_, RequestError>` large.
    #[error(transparent)]
    Upload(Box<UploadError>),
    /// The caller's token could not be checked (or was refused without asking).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Passing a request to the homeserver failed.
    #[error(transparent)]
    Homeserver(Arc<HomeserverError>),
}

impl From<HomeserverError> for RequestError {
    fn from(error: HomeserverError) -> Self {
        RequestError::Homeserver(Arc::new(error))
    }
}

impl From<crate::capabilities::Unreadable> for RequestError {
    fn from(_: crate::capabilities::Unreadable) -> Self {
        RequestError::Capabilities
    }
}

impl From<UploadError> for RequestError {
    fn from(error: UploadError) -> Self {
        RequestError::Upload(Box::new(error))
    }
}

impl From<ThumbnailError> for RequestError {
    fn from(error: ThumbnailError) -> Self {
        match error {
            ThumbnailError::SourceTooLarge { .. } => RequestError::ThumbnailSourceTooLarge,
            ThumbnailError::Abandoned => RequestError::RenderFailed("the render was abandoned"),
            other => RequestError::NoThumbnail(other.to_string()),
        }
    }
}

impl RequestError {
    /// The one mapping: what the client is told.
    pub fn to_matrix(&self) -> MatrixError {
        use RequestError as E;
        match self {
            E::LegacyDisabled => {
                not_found("unauthenticated media downloads are disabled on this server")
            }
            E::MediaId(error) => not_found(error.to_string()),
            E::Blocked => not_found("this media is blocked on this server"),
            E::ThumbnailsDisabled => not_found("thumbnails are disabled"),
            E::Query(QueryError::Timeout) => MatrixError::new(
                StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                "timeout_ms must be a non-negative integer",
            ),
            E::ThumbnailParam(error) => {
                let errcode = match error {
                    ParamError::Missing(_) => "M_MISSING_PARAM",
                    ParamError::Invalid { .. } => "M_INVALID_PARAM",
                };
                MatrixError::new(StatusCode::BAD_REQUEST, errcode, error.to_string())
            }
            E::Fetch(error) => fetch(error),
            E::NotInTime(wait) => not_yet_uploaded(format!(
                "the content did not arrive from IPFS within {} ms",
                wait.as_millis()
            )),
            E::RangeNotSatisfiable { total } => MatrixError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "M_UNKNOWN",
                format!("the requested range is outside the content's {total} bytes"),
            ),
            // The spec's answer for a source over the limit.
            E::ThumbnailSourceTooLarge => MatrixError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "M_TOO_LARGE",
                "Content is too large to thumbnail",
            ),
            // Synapse (with `dynamic_thumbnails` off, its default) answers any media it made
            // no thumbnails of with this.
            E::NoThumbnail(_) => MatrixError::new(
                StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Cannot find any thumbnails for the requested media",
            ),
            E::NoSuchThumbnailSize => not_found("no thumbnail of that kind is configured"),
            // Load, not the media: the client may try again later.
            E::RenderTimedOut(limit) => MatrixError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "M_UNKNOWN",
                format!(
                    "the thumbnail could not be rendered within {} ms",
                    limit.as_millis()
                ),
            ),
            E::RenderQueueFull => MatrixError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "M_LIMIT_EXCEEDED",
                "too many thumbnails are being rendered; try again later",
            ),
            // Overload, as for a refused fetch: 503 with a retry hint.
            E::RenderBusy => MatrixError {
                retry_after_ms: Some(1000),
                ..MatrixError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "M_LIMIT_EXCEEDED",
                    "this server is rendering and fetching too much right now; try again shortly",
                )
            },
            E::RenderFailed(why) => bad_gateway(*why),
            E::Capabilities => bad_gateway("the homeserver's capabilities could not be read"),
            E::Panic => MatrixError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "M_UNKNOWN",
                "internal error",
            ),
            E::Auth(error) => auth(error),
            E::Homeserver(error) => match **error {
                HomeserverError::BrokeOff(_) => {
                    bad_gateway("the homeserver's answer could not be read")
                }
                _ => bad_gateway("the homeserver could not be reached"),
            },
            E::Upload(error) => upload(error),
        }
    }

    /// The JSON answer, with the headers some failures carry.
    pub fn into_response(self) -> Response<Body> {
        let mut response = self.to_matrix().into_response();
        if let RequestError::RangeNotSatisfiable { total } = self {
            response
                .headers_mut()
                .insert(header::CONTENT_RANGE, unsatisfied_range(total));
        }
        response
    }
}

fn fetch(error: &FetchError) -> MatrixError {
    match error {
        FetchError::NotFound => not_found("the IPFS gateways could not find this content"),
        FetchError::Timeout => {
            not_yet_uploaded("the content could not be fetched from IPFS in time; try again later")
        }
        FetchError::TooLarge { limit } => MatrixError::new(
            StatusCode::BAD_GATEWAY,
            "M_TOO_LARGE",
            format!("the content is larger than this server's {limit}-byte limit"),
        ),
        // The details (gateway addresses, transport errors) are for the log, not clients.
        FetchError::Upstream(_) => bad_gateway("the IPFS gateways could not deliver this content"),
        FetchError::Unverified(_) => bad_gateway("no IPFS gateway served content matching the CID"),
        FetchError::NotAFile(kind) => not_found(format!("this CID is {kind}, not a file")),
        FetchError::Unsupported(reason) => not_found(reason.clone()),
        // Overload, not a rate limit on this client: 503 so clients retry after the hint.
        FetchError::Busy => MatrixError {
            retry_after_ms: Some(1000),
            ..MatrixError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "M_LIMIT_EXCEEDED",
                "this server is fetching too much content right now; try again shortly",
            )
        },
        FetchError::TooCostly(_) => bad_gateway(
            "this content's IPFS DAG needs more blocks than its size justifies; it is not served",
        ),
    }
}

fn auth(error: &AuthError) -> MatrixError {
    match error {
        // Synapse's own answer to mixed credentials, word for word.
        AuthError::MixedCredentials => MatrixError::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Mixing Authorization headers and access_token query parameters.",
        ),
        AuthError::MalformedToken(_) => MatrixError::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "malformed access token",
        ),
        AuthError::Check(error) => bad_gateway(match **error {
            HomeserverError::Unreachable(_) => {
                "the homeserver could not be asked to check the access token"
            }
            HomeserverError::BrokeOff(_) => "the homeserver's answer could not be read",
            _ => "the homeserver could not check the access token",
        }),
        AuthError::UnexpectedStatus(_) => {
            bad_gateway("the homeserver could not check the access token")
        }
    }
}

fn upload(error: &UploadError) -> MatrixError {
    use UploadError as U;
    match error {
        U::Guest => MatrixError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "guests may not upload media to this server",
        ),
        // Synapse's words for the same refusal.
        U::TooLarge { .. } => MatrixError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            "Uploaded content is too large",
        ),
        U::RateLimited(retry_after) => MatrixError {
            retry_after_ms: Some(retry_after.as_millis().max(1) as u64),
            ..MatrixError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "M_LIMIT_EXCEEDED",
                "Too Many Requests",
            )
        },
        U::Body(_) => MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "the upload did not arrive whole",
        ),
        // The store's address and errors are for the log.
        U::Store(_) | U::StoreTimeout(_) | U::StoreMismatch { .. } => {
            bad_gateway("the media could not be stored")
        }
        U::Blocked(_) => MatrixError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "this media is blocked on this server",
        ),
        U::NotACid(why) => MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            format!("not a CID: {why}"),
        ),
        U::NotFound(wait) => not_found(format!(
            "the content could not be found on IPFS within {} s; try again later",
            wait.as_secs()
        )),
        U::NotMedia(why) => MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            format!("only a file can be pinned as media: {why}"),
        ),
        U::Car(why) => MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            format!("the CAR was refused: {why}"),
        ),
    }
}

fn not_found(message: impl Into<Cow<'static, str>>) -> MatrixError {
    MatrixError::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
}

/// The spec's answer when content did not arrive within `timeout_ms`.
fn not_yet_uploaded(message: impl Into<Cow<'static, str>>) -> MatrixError {
    MatrixError::new(StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED", message)
}

fn bad_gateway(message: impl Into<Cow<'static, str>>) -> MatrixError {
    MatrixError::bad_gateway(message)
}

/// What the client is told: a status, a Matrix `errcode` and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {errcode}: {message}", status.as_u16())]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: Cow<'static, str>,
    /// `retry_after_ms` in the body (and `Retry-After` in seconds), for `M_LIMIT_EXCEEDED`.
    pub retry_after_ms: Option<u64>,
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
            retry_after_ms: None,
        }
    }

    /// Something upstream (homeserver or gateway) failed; not the client's fault.
    pub fn bad_gateway(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", message)
    }

    pub fn into_response(self) -> Response<Body> {
        let mut body = serde_json::json!({ "errcode": self.errcode, "error": self.message });
        if let Some(ms) = self.retry_after_ms {
            body["retry_after_ms"] = ms.into();
        }
        let mut response = Response::new(body::full(body.to_string()));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        if let Some(ms) = self.retry_after_ms {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::store::StoreError;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_body_headers_and_status() {
        let response = RequestError::NotInTime(Duration::from_millis(250)).into_response();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        let h = response.headers().clone();
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["cache-control"], "no-cache, no-store, must-revalidate");
        assert_eq!(h["access-control-allow-origin"], "*");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["errcode"], "M_NOT_YET_UPLOADED");
        assert_eq!(
            v["error"],
            "the content did not arrive from IPFS within 250 ms"
        );
    }

    #[test]
    fn an_unsatisfiable_range_names_the_length() {
        let response = RequestError::RangeNotSatisfiable { total: 42 }.into_response();
        assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(response.headers()["content-range"], "bytes */42");
    }

    /// The whole mapping, pinned: every failure, its status and errcode.
    #[test]
    fn every_failure_has_its_status_and_errcode() {
        use RequestError as E;
        let cases: Vec<(RequestError, u16, &str)> = vec![
            (E::LegacyDisabled, 404, "M_NOT_FOUND"),
            (
                E::MediaId(MediaIdError::InvalidCid("x".into())),
                404,
                "M_NOT_FOUND",
            ),
            (E::Blocked, 404, "M_NOT_FOUND"),
            (E::ThumbnailsDisabled, 404, "M_NOT_FOUND"),
            (E::Query(QueryError::Timeout), 400, "M_INVALID_PARAM"),
            (
                E::ThumbnailParam(ParamError::Missing("width")),
                400,
                "M_MISSING_PARAM",
            ),
            (
                E::ThumbnailParam(ParamError::Invalid {
                    param: "method",
                    message: "bad".into(),
                }),
                400,
                "M_INVALID_PARAM",
            ),
            (E::Fetch(FetchError::NotFound), 404, "M_NOT_FOUND"),
            (E::Fetch(FetchError::Busy), 503, "M_LIMIT_EXCEEDED"),
            (E::Fetch(FetchError::Timeout), 504, "M_NOT_YET_UPLOADED"),
            (
                E::Fetch(FetchError::TooLarge { limit: 1 }),
                502,
                "M_TOO_LARGE",
            ),
            (E::Fetch(FetchError::Upstream("x".into())), 502, "M_UNKNOWN"),
            (
                E::Fetch(FetchError::Unverified("x".into())),
                502,
                "M_UNKNOWN",
            ),
            (
                E::Fetch(FetchError::NotAFile("a directory".into())),
                404,
                "M_NOT_FOUND",
            ),
            (
                E::Fetch(FetchError::Unsupported("x".into())),
                404,
                "M_NOT_FOUND",
            ),
            (
                E::Fetch(FetchError::TooCostly("x".into())),
                502,
                "M_UNKNOWN",
            ),
            (
                E::NotInTime(Duration::from_secs(1)),
                504,
                "M_NOT_YET_UPLOADED",
            ),
            (E::RangeNotSatisfiable { total: 1 }, 416, "M_UNKNOWN"),
            (E::ThumbnailSourceTooLarge, 413, "M_TOO_LARGE"),
            (E::NoThumbnail("x".into()), 400, "M_UNKNOWN"),
            (E::NoSuchThumbnailSize, 404, "M_NOT_FOUND"),
            (E::RenderTimedOut(Duration::from_secs(1)), 503, "M_UNKNOWN"),
            (E::RenderQueueFull, 503, "M_LIMIT_EXCEEDED"),
            (E::RenderBusy, 503, "M_LIMIT_EXCEEDED"),
            (E::RenderFailed("x"), 502, "M_UNKNOWN"),
            (E::Capabilities, 502, "M_UNKNOWN"),
            (E::Panic, 500, "M_UNKNOWN"),
            (E::Auth(AuthError::MixedCredentials), 401, "M_MISSING_TOKEN"),
            (
                E::Auth(AuthError::MalformedToken("x")),
                401,
                "M_UNKNOWN_TOKEN",
            ),
            (
                E::Auth(AuthError::Check(Arc::new(HomeserverError::Unreachable(
                    "x".into(),
                )))),
                502,
                "M_UNKNOWN",
            ),
            (
                E::Auth(AuthError::UnexpectedStatus(StatusCode::IM_A_TEAPOT)),
                502,
                "M_UNKNOWN",
            ),
            (
                HomeserverError::Unreachable("x".into()).into(),
                502,
                "M_UNKNOWN",
            ),
            (
                HomeserverError::BrokeOff("x".into()).into(),
                502,
                "M_UNKNOWN",
            ),
            (E::from(UploadError::Guest), 403, "M_FORBIDDEN"),
            (
                E::from(UploadError::TooLarge { limit: 1 }),
                413,
                "M_TOO_LARGE",
            ),
            (
                E::from(UploadError::RateLimited(Duration::from_secs(1))),
                429,
                "M_LIMIT_EXCEEDED",
            ),
            (E::from(UploadError::Body("x".into())), 400, "M_UNKNOWN"),
            (
                E::from(UploadError::NotACid("x".into())),
                400,
                "M_INVALID_PARAM",
            ),
            (
                E::from(UploadError::NotFound(Duration::from_secs(60))),
                404,
                "M_NOT_FOUND",
            ),
            (
                E::from(UploadError::NotMedia("x".into())),
                400,
                "M_INVALID_PARAM",
            ),
            (
                E::from(UploadError::Car("x".into())),
                400,
                "M_INVALID_PARAM",
            ),
            (
                E::from(UploadError::Store(StoreError::Failed("x".into()))),
                502,
                "M_UNKNOWN",
            ),
            (
                E::from(UploadError::StoreTimeout(Duration::from_secs(1))),
                502,
                "M_UNKNOWN",
            ),
            (
                E::from(UploadError::StoreMismatch {
                    ours: cid(),
                    theirs: cid(),
                }),
                502,
                "M_UNKNOWN",
            ),
            (E::from(UploadError::Blocked(cid())), 403, "M_FORBIDDEN"),
        ];
        for (error, status, errcode) in cases {
            let matrix = error.to_matrix();
            assert_eq!(
                (matrix.status.as_u16(), matrix.errcode),
                (status, errcode),
                "{error:?}"
            );
        }
    }

    fn cid() -> cid::Cid {
        "bafkqaaa".parse().unwrap()
    }

    #[tokio::test]
    async fn a_rate_limit_says_when_to_retry() {
        let response = RequestError::from(UploadError::RateLimited(Duration::from_millis(1500)))
            .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "2");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["errcode"], "M_LIMIT_EXCEEDED");
        assert_eq!(v["retry_after_ms"], 1500);
    }

    #[test]
    fn thumbnail_errors_map_as_synapse_answers() {
        let too_large = ThumbnailError::SourceTooLarge { len: 2, max: 1 };
        let m = RequestError::from(too_large).to_matrix();
        assert_eq!((m.status.as_u16(), m.errcode), (413, "M_TOO_LARGE"));
        for other in [
            ThumbnailError::Unsupported("text/plain".into()),
            ThumbnailError::TooLarge {
                width: 9,
                height: 9,
            },
            ThumbnailError::Corrupt("x".into()),
            ThumbnailError::Internal("x".into()),
        ] {
            let m = RequestError::from(other).to_matrix();
            assert_eq!((m.status.as_u16(), m.errcode), (400, "M_UNKNOWN"));
            assert_eq!(
                m.message,
                "Cannot find any thumbnails for the requested media"
            );
        }
    }
}

//! One IPFS HTTP gateway: a path-gateway fetch (whole, or one `Range`) for trusted gateways,
//! raw-block and CAR requests (IPFS trustless gateway spec, `entity-bytes` for a range) for
//! the rest, and the cheap health probe.
//!
//! Each gateway has its own `reqwest` client so that its timeout (response headers, and every
//! pause between reads) and its optional `Authorization` header are its own.
//!
//! A gateway is only ever asked at its configured address: redirects are never followed (a
//! 3xx is that gateway's failure, so a gateway cannot point the proxy at a loopback or other
//! internal service), and every request says `Accept-Encoding: identity`; an answer in any
//! other content coding is that gateway's failure too (its bytes would not be the content's,
//! and decoding them would invite decompression bombs). reqwest is built without its
//! decompression features, so nothing is ever decoded behind our back.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use http::{header, HeaderMap, HeaderValue, StatusCode};

use crate::byte_range::ByteRange;
pub use crate::ipfs::fetch_error::FetchError;
use crate::ipfs::health::Health;
use crate::ipfs::part::{check_size, slice_stream, ContentRange, PartResponse};
use crate::ipfs::verify::{self, MAX_BLOCK_SIZE};

/// Content on its way: the length, when known, and the bytes (already verified when they come
/// from a trustless gateway).
pub struct GatewayResponse {
    pub content_length: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes, FetchError>>,
}

impl GatewayResponse {
    pub fn whole(bytes: Bytes) -> Self {
        Self {
            content_length: Some(bytes.len() as u64),
            body: futures_util::stream::once(async move { Ok(bytes) }).boxed(),
        }
    }
}

const ACCEPT_RAW: HeaderValue = HeaderValue::from_static("application/vnd.ipld.raw");
const ACCEPT_CAR: HeaderValue =
    HeaderValue::from_static("application/vnd.ipld.car; version=1; order=dfs; dups=y");
/// The empty identity CID: answering it proves the gateway is up without any lookup.
const PROBE_CID: &str = "bafkqaaa";

/// How a gateway's bytes are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A path gateway whose bytes are taken as they come.
    Trusted,
    /// Blocks and CARs, every byte checked against the CID.
    Trustless,
}

/// One gateway as the proxy uses it (built from a `[[gateways]]` entry by the app).
/// How long an idle gateway connection is kept for reuse.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct GatewaySettings {
    /// Base URL, without a trailing `/`: content is at `{base}/ipfs/{cid}`.
    pub base: String,
    pub mode: Mode,
    /// Longest wait for response headers, and longest pause between two reads.
    pub timeout: Duration,
    /// Sent on every request; marked sensitive so it is never logged.
    pub authorization: Option<HeaderValue>,
    /// Idle connections kept for reuse; the rest close when their request ends.
    pub max_idle_connections: usize,
}

pub struct Gateway {
    pub name: String,
    pub mode: Mode,
    base: String,
    timeout: Duration,
    client: reqwest::Client,
    pub health: Health,
}

impl Gateway {
    pub fn new(settings: &GatewaySettings) -> Result<Arc<Self>, reqwest::Error> {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        if let Some(value) = &settings.authorization {
            let mut value = value.clone();
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .read_timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            // Never followed: see the module documentation.
            .redirect(reqwest::redirect::Policy::none())
            // Only the configured address: `HTTP_PROXY` and friends in the environment would
            // send every request (and a private gateway's `Authorization`) elsewhere.
            .no_proxy()
            // Bounded: without it every connection of a burst stays open while idle.
            .pool_max_idle_per_host(settings.max_idle_connections)
            .pool_idle_timeout(IDLE_TIMEOUT)
            .user_agent(concat!("ipfs-media-proxy/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()?;
        Ok(Arc::new(Gateway {
            name: settings.base.clone(),
            mode: settings.mode,
            base: settings.base.clone(),
            timeout: settings.timeout,
            client,
            health: Health::default(),
        }))
    }

    /// `GET {base}/ipfs/{cid}{query}` with `accept` and `range`, response headers within the
    /// timeout, whatever the status.
    async fn send(
        &self,
        cid: &Cid,
        query: &str,
        accept: Option<HeaderValue>,
        range: Option<String>,
    ) -> Result<reqwest::Response, FetchError> {
        // Built from the parsed CID: the client's text never reaches the URL.
        let url = format!("{}/ipfs/{}{}", self.base, cid, query);
        let mut request = self.client.get(&url);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        if let Some(range) = range {
            request = request.header(header::RANGE, range);
        }
        let response = tokio::time::timeout(self.timeout, request.send())
            .await
            .map_err(|_| FetchError::Timeout)?
            .map_err(transport_error)?;
        if response.status().is_redirection() {
            return Err(FetchError::Upstream(format!(
                "the gateway answered {} (redirects are not followed)",
                response.status()
            )));
        }
        if response.status().is_success() {
            check_identity_coding(response.headers())?;
        }
        Ok(response)
    }

    /// As [`Self::send`], and only a 200 is content.
    async fn get(
        &self,
        cid: &Cid,
        query: &str,
        accept: Option<HeaderValue>,
    ) -> Result<reqwest::Response, FetchError> {
        let response = self.send(cid, query, accept, None).await?;
        match response.status() {
            StatusCode::OK => Ok(response),
            status => Err(status_error(status)),
        }
    }

    /// Path gateway: the file's bytes as the gateway deserialises them (trusted).
    pub async fn fetch_path(&self, cid: &Cid) -> Result<GatewayResponse, FetchError> {
        let response = self.get(cid, "", None).await?;
        let content_length = response.content_length();
        let body = response.bytes_stream().map_err(transport_error).boxed();
        Ok(GatewayResponse {
            content_length,
            body,
        })
    }

    /// Path gateway, one range: `Range: bytes=...`, and the gateway's answer held to it.
    ///
    /// A 206 must name exactly the range asked for (resolved against the total it states);
    /// any other range is a lie and refused. A 200 means the gateway ignored the `Range`: its
    /// `Content-Length` is the total and the part is cut here, reading no further than its
    /// end (without a length there is no total to answer with, so that is a failure). A 416
    /// must say the total, and the range must indeed be outside it.
    pub async fn fetch_path_range(
        &self,
        cid: &Cid,
        wanted: &ByteRange,
        max_bytes: u64,
    ) -> Result<PartResponse, FetchError> {
        let response = self
            .send(cid, "", None, Some(wanted.header_value()))
            .await?;
        let content_range = response
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(ContentRange::parse);
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let Some(ContentRange::Part { range, total }) = content_range else {
                    return Err(FetchError::Upstream(
                        "the gateway's 206 has no usable Content-Range".into(),
                    ));
                };
                check_size(total, max_bytes)?;
                if wanted.resolve(total).as_ref() != Some(&range) {
                    return Err(FetchError::Upstream(format!(
                        "the gateway answered bytes {}-{}/{total} to {}",
                        range.start(),
                        range.end(),
                        wanted.header_value()
                    )));
                }
                let body = response.bytes_stream().map_err(transport_error);
                Ok(PartResponse::new(total, range, body))
            }
            StatusCode::OK => {
                let Some(total) = response.content_length() else {
                    return Err(FetchError::Upstream(
                        "the gateway ignored the Range and announced no length".into(),
                    ));
                };
                check_size(total, max_bytes)?;
                let Some(range) = wanted.resolve(total) else {
                    return Ok(PartResponse::outside(total));
                };
                let len = range.end() - range.start() + 1;
                let body = response.bytes_stream().map_err(transport_error);
                let body = slice_stream(body, *range.start(), Some(len));
                Ok(PartResponse::new(total, range, body))
            }
            StatusCode::RANGE_NOT_SATISFIABLE => match content_range {
                Some(ContentRange::Unsatisfied { total }) if wanted.resolve(total).is_none() => {
                    check_size(total, max_bytes)?;
                    Ok(PartResponse::outside(total))
                }
                _ => Err(FetchError::Upstream(format!(
                    "the gateway refused {} without a matching Content-Range",
                    wanted.header_value()
                ))),
            },
            status => Err(status_error(status)),
        }
    }

    /// One raw block, checked against its CID before it is returned.
    pub async fn fetch_block(&self, cid: &Cid) -> Result<Bytes, FetchError> {
        if let Some(inline) = verify::identity_block(cid).map_err(unverified)? {
            return Ok(inline);
        }
        let response = self.get(cid, "?format=raw", Some(ACCEPT_RAW)).await?;
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BLOCK_SIZE as u64)
        {
            return Err(FetchError::Unverified(format!(
                "block {cid} is larger than {MAX_BLOCK_SIZE} bytes"
            )));
        }
        let mut stream = response.bytes_stream();
        let mut block = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport_error)?;
            if block.len() + chunk.len() > MAX_BLOCK_SIZE {
                return Err(FetchError::Unverified(format!(
                    "block {cid} is larger than {MAX_BLOCK_SIZE} bytes"
                )));
            }
            block.extend_from_slice(&chunk);
        }
        let block = block.freeze();
        verify::verify_block(cid, &block).map_err(unverified)?;
        Ok(block)
    }

    /// A CAR of the whole file, blocks in depth-first order with duplicates (unverified bytes:
    /// the caller walks and checks them).
    pub async fn fetch_car(
        &self,
        cid: &Cid,
    ) -> Result<BoxStream<'static, Result<Bytes, reqwest::Error>>, FetchError> {
        let response = self
            .get(cid, "?format=car&dag-scope=entity&dups=y", Some(ACCEPT_CAR))
            .await?;
        Ok(response.bytes_stream().boxed())
    }

    /// A CAR of the blocks that hold one range of the file (`entity-bytes`). `None` when the
    /// gateway answers 400, which the spec has it do for a range it can tell is outside the
    /// file: the caller learns the size from the root block instead.
    pub async fn fetch_car_range(
        &self,
        cid: &Cid,
        wanted: &ByteRange,
    ) -> Result<Option<BoxStream<'static, Result<Bytes, reqwest::Error>>>, FetchError> {
        let query = format!(
            "?format=car&dag-scope=entity&dups=y&entity-bytes={}",
            wanted.entity_bytes()
        );
        let response = self.send(cid, &query, Some(ACCEPT_CAR), None).await?;
        match response.status() {
            StatusCode::OK => Ok(Some(response.bytes_stream().boxed())),
            StatusCode::BAD_REQUEST => Ok(None),
            status => Err(status_error(status)),
        }
    }

    /// `GET /ipfs/bafkqaaa?format=raw`: up and answering, without any content lookup.
    pub async fn probe(&self) -> bool {
        let cid: Cid = PROBE_CID.parse().expect("a valid CID");
        let url = format!("{}/ipfs/{}?format=raw", self.base, cid);
        let request = self
            .client
            .get(url)
            .header(header::ACCEPT, ACCEPT_RAW)
            .send();
        matches!(
            tokio::time::timeout(self.timeout.min(Duration::from_secs(10)), request).await,
            Ok(Ok(response)) if response.status().is_success()
        )
    }
}

/// Content bytes must come as they are: no `Content-Encoding` but `identity` (we asked for
/// nothing else), or the bytes served would not be the content's.
fn check_identity_coding(headers: &HeaderMap) -> Result<(), FetchError> {
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let identity = value.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case("identity"))
        });
        if !identity {
            return Err(FetchError::Upstream(format!(
                "the gateway answered with Content-Encoding {value:?} (only identity is accepted)"
            )));
        }
    }
    Ok(())
}

/// What a status other than the one expected says about the content.
fn status_error(status: StatusCode) -> FetchError {
    match status {
        StatusCode::NOT_FOUND | StatusCode::GONE => FetchError::NotFound,
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => FetchError::Timeout,
        status => FetchError::Upstream(format!("gateway answered {status}")),
    }
}

pub(crate) fn unverified(error: impl std::fmt::Display) -> FetchError {
    FetchError::Unverified(error.to_string())
}

pub(crate) fn transport_error(error: reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout
    } else {
        FetchError::Upstream(crate::chain::error_chain(&error))
    }
}

//! Fetching content from IPFS path gateways (`GET {url}/ipfs/{cid}`).
//!
//! Gateways are asked in the configured order; the first that answers with content wins.
//! Each gateway has its own `reqwest` client so that its timeout (response headers, and every
//! pause between reads) is its own.

use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use http::StatusCode;

use crate::config::GatewayConfig;
use crate::error::MatrixError;

/// Why content could not be had. Cloned to every request waiting on the same fetch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("no gateway has this content")]
    NotFound,
    #[error("the content did not arrive in time")]
    Timeout,
    #[error("the content is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("gateway error: {0}")]
    Upstream(String),
}

impl FetchError {
    pub fn to_matrix(&self) -> MatrixError {
        match self {
            FetchError::NotFound => {
                MatrixError::not_found("the IPFS gateways could not find this content")
            }
            FetchError::Timeout => MatrixError::not_yet_uploaded(
                "the content could not be fetched from IPFS in time; try again later",
            ),
            FetchError::TooLarge { limit } => MatrixError::too_large(format!(
                "the content is larger than this server's {limit}-byte limit"
            )),
            FetchError::Upstream(reason) => {
                MatrixError::bad_gateway(format!("the IPFS gateway failed: {reason}"))
            }
        }
    }

    /// How telling a failure is when every gateway failed: a timeout says more than a
    /// "not found" (the content may exist), a broken gateway more than both.
    fn weight(&self) -> u8 {
        match self {
            FetchError::NotFound => 0,
            FetchError::Timeout => 1,
            FetchError::Upstream(_) => 2,
            FetchError::TooLarge { .. } => 3,
        }
    }
}

/// A gateway's answer, before its bytes are read.
pub struct GatewayResponse {
    /// The gateway's claim; checked against the bytes actually received.
    pub content_length: Option<u64>,
    pub body: BoxStream<'static, Result<Bytes, FetchError>>,
}

struct Gateway {
    base: String,
    timeout: Duration,
    client: reqwest::Client,
}

pub struct Gateways {
    gateways: Vec<Gateway>,
}

impl Gateways {
    pub fn new(configs: &[GatewayConfig]) -> Result<Self, reqwest::Error> {
        let gateways = configs
            .iter()
            .map(|c| {
                let client = reqwest::Client::builder()
                    .read_timeout(c.timeout)
                    .connect_timeout(c.timeout.min(Duration::from_secs(10)))
                    .redirect(reqwest::redirect::Policy::limited(3))
                    .user_agent(concat!("ipfs-media-proxy/", env!("CARGO_PKG_VERSION")))
                    .build()?;
                Ok(Gateway {
                    base: c.url.as_str().trim_end_matches('/').to_owned(),
                    timeout: c.timeout,
                    client,
                })
            })
            .collect::<Result<_, reqwest::Error>>()?;
        Ok(Self { gateways })
    }

    /// The first gateway's content, or the most telling failure of all of them.
    pub async fn fetch(&self, cid: &Cid) -> Result<GatewayResponse, FetchError> {
        let mut worst: Option<FetchError> = None;
        for (index, gateway) in self.gateways.iter().enumerate() {
            match gateway.fetch(cid).await {
                Ok(response) => return Ok(response),
                Err(error) => {
                    tracing::debug!(gateway = index, %cid, %error, "gateway failed");
                    if worst.as_ref().is_none_or(|w| error.weight() > w.weight()) {
                        worst = Some(error);
                    }
                }
            }
        }
        Err(worst.unwrap_or(FetchError::NotFound))
    }
}

impl Gateway {
    async fn fetch(&self, cid: &Cid) -> Result<GatewayResponse, FetchError> {
        // Built from the parsed CID: the client's text never reaches the URL.
        let url = format!("{}/ipfs/{}", self.base, cid);
        let send = self.client.get(&url).send();
        let response = tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| FetchError::Timeout)?
            .map_err(transport_error)?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND | StatusCode::GONE => return Err(FetchError::NotFound),
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => {
                return Err(FetchError::Timeout)
            }
            status => {
                return Err(FetchError::Upstream(format!("gateway answered {status}")));
            }
        }
        let content_length = response.content_length();
        let body = response.bytes_stream().map_err(transport_error).boxed();
        Ok(GatewayResponse {
            content_length,
            body,
        })
    }
}

fn transport_error(error: reqwest::Error) -> FetchError {
    if error.is_timeout() {
        FetchError::Timeout
    } else {
        // The URL holds nothing secret, but the chain of causes is what helps an admin.
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        FetchError::Upstream(text)
    }
}

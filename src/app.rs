//! The request handler: route -> (authorise) -> resolve -> respond, or pass through.
//!
//! `handle` never fails: every error becomes a Matrix JSON response here, in one place, and
//! every request is logged once (see `access_log`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::access_log::{Logged, RequestLog, RouteKind};
use crate::auth::{TokenChecker, Verdict};
use crate::body::{self, Body};
use crate::cache::MediaCache;
use crate::config::Config;
use crate::error::MatrixError;
use crate::homeserver::Homeserver;
use crate::ipfs::gateway::Gateways;
use crate::media::download::{self, CacheOutcome, Waits};
use crate::media::headers;
use crate::media::media_id::{self, IpfsMedia, MediaIdError};
use crate::resolve::{Limits, Resolver};
use crate::router::{self, Access};

pub struct App {
    homeserver: Homeserver,
    tokens: TokenChecker,
    resolver: Resolver,
    waits: Waits,
    legacy_unauthenticated: bool,
}

/// An ipfs media request, owned so the request itself can move on.
struct IpfsRequest {
    access: Access,
    media: Result<IpfsMedia, MediaIdError>,
    file_name: Option<String>,
}

impl App {
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let homeserver = Homeserver::new(&config.homeserver);
        let tokens = TokenChecker::new(
            homeserver.clone(),
            config.auth.token_cache_ttl,
            config.auth.token_cache_entries,
        );
        let resolver = Resolver::new(
            MediaCache::new(config.cache.max_bytes.as_u64()),
            Gateways::new(&config.gateways)?,
            Limits {
                max_bytes: config.media.max_bytes.as_u64(),
                max_cached_bytes: config.cache.max_item_bytes.as_u64(),
            },
        );
        Ok(Self {
            homeserver,
            tokens,
            resolver,
            waits: Waits {
                default: config.media.default_timeout,
                max: config.media.max_timeout,
            },
            legacy_unauthenticated: config.media.legacy_unauthenticated,
        })
    }

    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    pub async fn handle(
        self: Arc<Self>,
        request: Request<Body>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let (route, result) = match ipfs_request(&request) {
            Some(ipfs) => {
                let (parts, _body) = request.into_parts();
                let route = if parts.method == Method::OPTIONS {
                    RouteKind::Preflight
                } else {
                    RouteKind::Download
                };
                (route, self.serve_ipfs(&parts, ipfs, peer).await)
            }
            None => (
                RouteKind::Passthrough,
                self.homeserver.forward(request, peer).await,
            ),
        };
        let response = result.unwrap_or_else(|error| {
            if error.status.is_server_error() {
                tracing::warn!(%path, %error, "request failed");
            } else {
                tracing::debug!(%path, %error, "request refused");
            }
            error.into_response()
        });
        let cache = response
            .extensions()
            .get::<CacheOutcome>()
            .map(|c| c.as_str());
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
            cache,
            status,
            announced,
            started,
        };
        response.map(|body| Logged::new(body, log).boxed())
    }

    async fn serve_ipfs(
        &self,
        request: &Parts,
        ipfs: IpfsRequest,
        peer: SocketAddr,
    ) -> Result<Response<Body>, MatrixError> {
        if request.method == Method::OPTIONS {
            return Ok(preflight());
        }
        match ipfs.access {
            Access::Legacy if !self.legacy_unauthenticated => {
                return Err(MatrixError::not_found(
                    "unauthenticated media downloads are disabled on this server",
                ));
            }
            Access::Legacy => {}
            Access::Authenticated => match self.tokens.check(request, peer).await? {
                Verdict::Accepted { .. } => {}
                Verdict::Refused(response) => return Ok(response),
            },
        }
        let media = ipfs
            .media
            .map_err(|e| MatrixError::not_found(e.to_string()))?;
        download::download(
            &self.resolver,
            self.waits,
            request,
            &media,
            ipfs.file_name.as_deref(),
        )
        .await
    }
}

/// Our request when it is a GET/HEAD/OPTIONS of an `ipfs:` media ID on a media route.
fn ipfs_request<B>(request: &Request<B>) -> Option<IpfsRequest> {
    if !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return None;
    }
    let path = router::classify(request.uri().path())?;
    let media = media_id::parse(&path.media_id)?;
    Some(IpfsRequest {
        access: path.access,
        media,
        file_name: path.file_name.map(|f| f.into_owned()),
    })
}

/// CORS preflight for our media routes, as Synapse answers it.
fn preflight() -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    headers::cors(response.headers_mut());
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

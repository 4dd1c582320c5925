//! The homeserver behind us: pass-through of every request that is not ours, and the token
//! check that authenticated media needs.
//!
//! Keep-alive HTTP/1.1 connections (`pool`). Bodies are never buffered: the client's body
//! streams up and the homeserver's streams down.

mod pool;
mod wake_gate;

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;

use crate::body::Body;
use crate::config::HomeserverConfig;
use crate::error::MatrixError;
use crate::forwarding::{self, Peer};

#[derive(Clone)]
pub struct Homeserver {
    pool: Arc<pool::Pool>,
    /// `Host` for a request that came without one, as an HTTP client would send it.
    host: HeaderValue,
}

impl Homeserver {
    pub fn new(config: &HomeserverConfig) -> Self {
        let url = &config.url;
        let host = url
            .host_str()
            .expect("validated config: homeserver.url has a host");
        let port = url.port_or_known_default().unwrap_or(80);
        let host_header = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Self {
            pool: pool::Pool::new(format!("{host}:{port}"), config.connect_timeout),
            host: HeaderValue::from_str(&host_header).expect("a URL's host is a valid header"),
        }
    }

    /// Sends a request whose URI is in origin form (`/path?query`), as HTTP/1.1 wants it.
    async fn send(&self, mut request: Request<Body>) -> Result<Response<Body>, pool::SendError> {
        if !request.headers().contains_key(header::HOST) {
            request
                .headers_mut()
                .insert(header::HOST, self.host.clone());
        }
        let response = self.pool.send(request).await?;
        Ok(response.map(|body| body.map_err(response_broke_off).boxed()))
    }

    /// Sends a client's request on, byte for byte: same method, raw path and query (no
    /// `%xx` normalising), same headers but hop-by-hop ones, same `Host`.
    pub async fn forward(
        &self,
        request: Request<Body>,
        peer: &Peer,
    ) -> Result<Response<Body>, MatrixError> {
        let (mut parts, body) = request.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // HTTP/2 clients send `:authority` instead of `Host`; the homeserver speaks HTTP/1.1.
        // One `Host` line (the usual case) stays where it is; otherwise the first or the
        // authority becomes the only one.
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        let (host, set_host) = match (hosts.next(), hosts.next()) {
            (Some(host), None) => (Some(host.clone()), false),
            (first, _) => {
                let host = first.cloned().or_else(|| {
                    parts
                        .uri
                        .authority()
                        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                });
                (host, true)
            }
        };
        forwarding::strip_hop_by_hop(&mut parts.headers);
        forwarding::add_forwarded(&mut parts.headers, peer, host.as_ref());
        if let (Some(host), true) = (host, set_host) {
            parts.headers.insert(header::HOST, host);
        }
        parts.uri = Uri::from(path_and_query);
        parts.version = Version::HTTP_11;
        let mut response = self
            .send(Request::from_parts(parts, body))
            .await
            .map_err(|error| {
                tracing::warn!(error = %error_chain(&error), "homeserver request failed");
                MatrixError::bad_gateway("the homeserver could not be reached")
            })?;
        forwarding::strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }

    /// Asks `GET /_matrix/client/v3/account/whoami` on the caller's behalf, with its
    /// credentials and origin. Returns the homeserver's answer as is.
    pub async fn whoami(
        &self,
        authorization: Option<&HeaderValue>,
        access_token_query: Option<&str>,
        forwarded: &http::HeaderMap,
        peer: &Peer,
    ) -> Result<Response<Body>, MatrixError> {
        let path = match access_token_query {
            Some(token) => format!("/_matrix/client/v3/account/whoami?access_token={token}"),
            None => "/_matrix/client/v3/account/whoami".to_owned(),
        };
        let path = PathAndQuery::try_from(path).map_err(|_| {
            MatrixError::new(
                http::StatusCode::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
                "malformed access token",
            )
        })?;
        let mut request = Request::new(crate::body::empty());
        *request.uri_mut() = Uri::from(path);
        let headers = request.headers_mut();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, value.clone());
        }
        for name in [header::USER_AGENT, header::HOST] {
            if let Some(value) = forwarded.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        for name in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"] {
            if let Some(value) = forwarded.get(name) {
                headers.insert(name, value.clone());
            }
        }
        forwarding::add_forwarded(headers, peer, forwarded.get(header::HOST));
        self.send(request).await.map_err(|error| {
            tracing::warn!(error = %error_chain(&error), "token check: homeserver unreachable");
            MatrixError::bad_gateway("the homeserver could not be asked to check the access token")
        })
    }
}

fn response_broke_off(error: hyper::Error) -> crate::body::BoxError {
    tracing::warn!(error = %error_chain(&error), "homeserver response broke off");
    Box::new(error)
}

pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

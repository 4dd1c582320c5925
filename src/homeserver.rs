//! The homeserver behind us: pass-through of every request that is not ours, and the token
//! check that authenticated media needs.
//!
//! Keep-alive HTTP/1.1 connections (`pool`). Bodies are never buffered: the client's body
//! streams up and the homeserver's streams down.
//!
//! This module only talks to the homeserver: its failures are [`HomeserverError`]s, and what
//! one means for a client (which status, which errcode) is decided by the caller.

mod pool;
#[cfg(test)]
mod test_server;
mod upstream;

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};

use crate::body::Body;
use crate::forwarding::{self, Peer};

use upstream::Passthrough;
pub use upstream::Upstream;

/// What went wrong talking to the homeserver.
#[derive(Debug, thiserror::Error)]
pub enum HomeserverError {
    /// No answer: the connection could not be made, or the exchange failed before a response
    /// head arrived.
    #[error("the homeserver could not be reached")]
    Unreachable(#[source] crate::body::BoxError),
    /// A response head arrived, but its body broke off (or was larger than we read).
    #[error("the homeserver's response broke off")]
    BrokeOff(#[source] crate::body::BoxError),
    /// An answer that is not one to the question asked, such as a `200` whoami without a
    /// `user_id` (a maintenance page, an SPA fallback).
    #[error("the homeserver's answer to {question} is not one: {why}")]
    BadAnswer { question: &'static str, why: String },
    /// The request cannot be written at all (a token that cannot be part of a URL).
    #[error("the request cannot be sent: {0}")]
    Unsendable(&'static str),
}

/// The user a token belongs to, from a well-formed whoami answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whoami {
    /// `@localpart:server.name`, checked to have that shape.
    pub user_id: Arc<str>,
    pub is_guest: bool,
}

impl Whoami {
    /// The server name part of the user ID (everything after the first `:`).
    pub fn server_name(&self) -> &str {
        self.user_id
            .split_once(':')
            .map(|(_, server)| server)
            .expect("checked when parsed")
    }

    /// A `200` whoami body: a JSON object with a string `user_id` of the form
    /// `@localpart:server` and, if present, a boolean `is_guest`.
    fn parse(body: &[u8]) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Answer {
            user_id: String,
            #[serde(default)]
            is_guest: bool,
        }
        let answer: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let well_formed = answer.user_id.len() <= 255
            && answer
                .user_id
                .strip_prefix('@')
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(local, server)| !local.is_empty() && !server.is_empty());
        if !well_formed {
            return Err("user_id is not a Matrix user ID".to_owned());
        }
        Ok(Whoami {
            user_id: Arc::from(answer.user_id),
            is_guest: answer.is_guest,
        })
    }
}

/// The homeserver's answer to a whoami.
pub enum WhoamiAnswer {
    /// `200` with a well-formed body.
    User(Whoami),
    /// Any other status, as the homeserver sent it.
    Other(Response<Body>),
}

/// A whoami answer is small; more than this is not one.
const WHOAMI_MAX_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct Homeserver {
    client: Arc<Passthrough>,
    /// `Host` for a request that came without one, as an HTTP client would send it.
    host: HeaderValue,
}

impl Homeserver {
    /// `url` is the homeserver's base URL (`homeserver.url`, checked to have a host);
    /// `max_buffer` bounds what hyper buffers per connection (`server.connection_buffer`).
    pub fn new(url: &url::Url, connect_timeout: std::time::Duration, max_buffer: usize) -> Self {
        let host = url
            .host_str()
            .expect("validated config: homeserver.url has a host");
        let port = url.port_or_known_default().unwrap_or(80);
        let host_header = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Self {
            client: Arc::new(Passthrough::from_env(
                &format!("{host}:{port}"),
                connect_timeout,
                max_buffer,
            )),
            host: HeaderValue::from_str(&host_header).expect("a URL's host is a valid header"),
        }
    }

    /// Sends a request whose URI is in origin form (`/path?query`), as HTTP/1.1 wants it.
    async fn send(&self, mut request: Request<Body>) -> Result<Response<Body>, HomeserverError> {
        if !request.headers().contains_key(header::HOST) {
            request
                .headers_mut()
                .insert(header::HOST, self.host.clone());
        }
        self.client
            .send(request)
            .await
            .map_err(HomeserverError::Unreachable)
    }

    /// Sends a client's request on, byte for byte: same method, raw path and query (no
    /// `%xx` normalising), same headers but hop-by-hop ones, same `Host`.
    pub async fn relay(
        &self,
        request: Request<Body>,
        peer: &Peer,
    ) -> Result<Response<Body>, HomeserverError> {
        let (mut parts, body) = request.into_parts();
        let path_and_query = forwarding::origin_form(&parts.uri);
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
        let mut response = self.send(Request::from_parts(parts, body)).await?;
        forwarding::strip_hop_by_hop(response.headers_mut());
        Ok(response)
    }

    /// Asks `GET /_matrix/client/v3/account/whoami` on the caller's behalf, with exactly the
    /// credentials given (at most one of them, see `auth`) and the caller's origin. A `200` is
    /// read and must be a well-formed answer; any other status comes back as it is.
    pub async fn whoami(
        &self,
        authorization: Option<&HeaderValue>,
        access_token_query: Option<&str>,
        forwarded: &http::HeaderMap,
        peer: &Peer,
    ) -> Result<WhoamiAnswer, HomeserverError> {
        let path = match access_token_query {
            Some(token) => format!("/_matrix/client/v3/account/whoami?access_token={token}"),
            None => "/_matrix/client/v3/account/whoami".to_owned(),
        };
        let path = PathAndQuery::try_from(path)
            .map_err(|_| HomeserverError::Unsendable("the access token cannot be part of a URL"))?;
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
        let response = self.send(request).await?;
        if response.status() != StatusCode::OK {
            return Ok(WhoamiAnswer::Other(response));
        }
        let body = crate::body::collect_limited(response.into_body(), WHOAMI_MAX_BYTES)
            .await
            .map_err(HomeserverError::BrokeOff)?;
        Whoami::parse(&body)
            .map(WhoamiAnswer::User)
            .map_err(|why| HomeserverError::BadAnswer {
                question: "whoami",
                why,
            })
    }
}

fn response_broke_off(error: hyper::Error) -> crate::body::BoxError {
    tracing::warn!(error = %crate::chain::error_chain(&error), "homeserver response broke off");
    Box::new(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whoami_answers() {
        let alice = Whoami::parse(br#"{"user_id": "@alice:example.org", "device_id": "D"}"#);
        assert_eq!(
            alice,
            Ok(Whoami {
                user_id: Arc::from("@alice:example.org"),
                is_guest: false
            })
        );
        assert_eq!(alice.unwrap().server_name(), "example.org");
        let guest = Whoami::parse(br#"{"user_id": "@g:[::1]:8448", "is_guest": true}"#).unwrap();
        assert!(guest.is_guest);
        assert_eq!(guest.server_name(), "[::1]:8448");
        for bad in [
            &b"<html>down for maintenance</html>"[..],
            b"",
            b"{}",
            b"[]",
            br#"{"user_id": 5}"#,
            br#"{"user_id": null}"#,
            br#"{"user_id": ""}"#,
            br#"{"user_id": "alice"}"#,
            br#"{"user_id": "@alice"}"#,
            br#"{"user_id": "@:example.org"}"#,
            br#"{"user_id": "@alice:"}"#,
            br#"{"user_id": "@alice:example.org", "is_guest": "no"}"#,
        ] {
            assert!(
                Whoami::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

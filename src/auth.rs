//! Authenticated media (MSC3916): serve a caller only if the homeserver accepts its token.
//!
//! We have no user database, so we ask the homeserver the cheapest question that checks a
//! token, `GET /_matrix/client/v3/account/whoami`, with the caller's own credentials, and hand
//! its refusal back unchanged (the client sees exactly the homeserver's `M_MISSING_TOKEN`,
//! `M_UNKNOWN_TOKEN`, soft-logout flags, ...). Accepted tokens are remembered briefly in a
//! bounded cache, keyed by a SHA-256 of the token so no token sits in memory longer than its
//! request; refusals are never remembered.
//!
//! Access needs a well-formed whoami answer (a `200` whose body names a `user_id`); anything
//! else the homeserver says, or not being able to ask it, is a 502, never access. A request
//! carrying both an `Authorization` header and an `access_token` parameter is refused here as
//! Synapse refuses it, so the one credential checked is the one remembered.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode};
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

use std::sync::Arc;

use crate::body::Body;
use crate::forwarding::Peer;
use crate::homeserver::{Homeserver, HomeserverError, Whoami, WhoamiAnswer};
use crate::metrics::{Outcome, METRICS};

/// Why a caller's access could not be decided in its favour, short of the homeserver's own
/// refusal (which is a [`Verdict::Refused`], passed back as it is).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Both an `Authorization` header and an `access_token` parameter (Synapse refuses it).
    #[error("both an Authorization header and an access_token parameter")]
    MixedCredentials,
    /// A token that cannot even be sent to the homeserver (not valid in a URL).
    #[error("the access token cannot be sent: {0}")]
    MalformedToken(&'static str),
    /// The homeserver could not be asked, or its answer was not one.
    #[error("the token check failed")]
    Check(#[source] Arc<HomeserverError>),
    /// A whoami status that is neither success nor a refusal.
    #[error("the homeserver answered the token check with {0}")]
    UnexpectedStatus(StatusCode),
}

pub enum Verdict {
    Accepted {
        /// Served from memory (`true`) or after asking the homeserver (`false`).
        remembered: bool,
        /// Whose token it is, as the homeserver said.
        user: Whoami,
    },
    /// The homeserver's refusal, to be sent as it is.
    Refused(Response<Body>),
}

pub struct TokenChecker {
    homeserver: Homeserver,
    /// Token digest -> the user it belongs to.
    accepted: moka::sync::Cache<[u8; 32], Whoami>,
}

/// The credentials of a request on its way through, for [`TokenChecker::observe`].
pub struct Watched {
    authorization: Option<HeaderValue>,
    query_token: Option<String>,
    /// What a success would end, read from the request so no path is kept for the answer.
    logout: Logout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logout {
    No,
    /// `POST /logout`: this token.
    One,
    /// `POST /logout/all`: every token of its user.
    All,
}

impl Logout {
    fn of(method: &http::Method, path: &str) -> Self {
        if method != http::Method::POST {
            return Logout::No;
        }
        match path {
            "/_matrix/client/v3/logout" | "/_matrix/client/r0/logout" => Logout::One,
            "/_matrix/client/v3/logout/all" | "/_matrix/client/r0/logout/all" => Logout::All,
            _ => Logout::No,
        }
    }
}

impl TokenChecker {
    pub fn new(homeserver: Homeserver, ttl: Duration, max_entries: u64) -> Self {
        Self {
            homeserver,
            accepted: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(ttl)
                .support_invalidation_closures()
                .build(),
        }
    }

    /// Before a request passes through: the credentials it carries, kept as sent. They are
    /// hashed only in the rare case that [`Self::observe`] acts on them, not for every request.
    pub fn watch(&self, request: &http::Request<Body>) -> Option<Watched> {
        let authorization = request.headers().get(header::AUTHORIZATION).cloned();
        let query_token = request
            .uri()
            .query()
            .and_then(access_token_param)
            .map(str::to_owned);
        if authorization.is_none() && query_token.is_none() {
            return None;
        }
        Some(Watched {
            authorization,
            query_token,
            logout: Logout::of(request.method(), request.uri().path()),
        })
    }

    /// After it: a logout through us, or a 401 for a token, ends our memory of that token
    /// (a logout straight at the homeserver is honoured within `auth.token_cache_ttl`).
    pub fn observe(&self, watched: Option<Watched>, status: StatusCode) {
        let Some(watched) = watched else {
            return;
        };
        let logout = status.is_success() && watched.logout == Logout::One;
        let logout_all = status.is_success() && watched.logout == Logout::All;
        if !(logout || logout_all || status == StatusCode::UNAUTHORIZED) {
            return;
        }
        let Some(key) = token_key(
            watched.authorization.as_ref(),
            watched.query_token.as_deref(),
        ) else {
            return;
        };
        if logout_all {
            match self.accepted.get(&key) {
                Some(user) => {
                    let _ = self
                        .accepted
                        .invalidate_entries_if(move |_, u| u.user_id == user.user_id);
                }
                // We cannot tell whose tokens went: forget them all (they are re-checked).
                None => self.accepted.invalidate_all(),
            }
        } else {
            self.accepted.invalidate(&key);
        }
    }

    pub async fn check(&self, request: &Parts, peer: &Peer) -> Result<Verdict, AuthError> {
        let count = |outcome| {
            METRICS
                .token_checks
                .get_or_create(&Outcome { outcome })
                .inc();
        };
        let authorization = request.headers.get(header::AUTHORIZATION);
        let query = request.uri.query();
        if authorization.is_some() && query.is_some_and(has_access_token_param) {
            // Synapse's answer, without asking: which of the two a homeserver would check is
            // its business, and we would remember the answer under one of them.
            count("refused");
            return Err(AuthError::MixedCredentials);
        }
        let query_token = query.and_then(access_token_param);
        let key = token_key(authorization, query_token);
        if let Some(key) = &key {
            if let Some(user) = self.accepted.get(key) {
                METRICS.token_cache_hits.inc();
                return Ok(Verdict::Accepted {
                    remembered: true,
                    user,
                });
            }
        }
        let answer = self
            .homeserver
            .whoami(authorization, query_token, &request.headers, peer)
            .await;
        let response = match answer {
            Ok(WhoamiAnswer::User(user)) => {
                count("accepted");
                if let Some(key) = key {
                    self.accepted.insert(key, user.clone());
                }
                return Ok(Verdict::Accepted {
                    remembered: false,
                    user,
                });
            }
            Ok(WhoamiAnswer::Other(response)) => response,
            Err(HomeserverError::Unsendable(why)) => {
                count("refused");
                return Err(AuthError::MalformedToken(why));
            }
            Err(error) => {
                count("error");
                return Err(AuthError::Check(Arc::new(error)));
            }
        };
        match response.status() {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => {
                count("refused");
                Ok(Verdict::Refused(response))
            }
            status => {
                count("error");
                Err(AuthError::UnexpectedStatus(status))
            }
        }
    }
}

/// Whether a query string names `access_token` at all, even empty, in any spelling a form
/// decoder reads as that name (`access%5Ftoken`): Synapse refuses it next to a header.
fn has_access_token_param(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        name == "access_token" || form_decode(name) == b"access_token"
    })
}

/// `application/x-www-form-urlencoded` decoding, as homeservers read query values: `+` is a
/// space, then `%xx`.
fn form_decode(raw: &str) -> Vec<u8> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced).collect()
}

/// The raw (still percent-encoded) value of `access_token=` in a query string.
fn access_token_param(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("access_token="))
        .filter(|v| !v.is_empty())
}

/// One key per token, whichever way it was sent.
fn token_key(authorization: Option<&HeaderValue>, query_token: Option<&str>) -> Option<[u8; 32]> {
    let token: Vec<u8> = match (authorization, query_token) {
        (Some(value), _) => {
            let bytes = value.as_bytes();
            bytes.strip_prefix(b"Bearer ").unwrap_or(bytes).to_vec()
        }
        (None, Some(raw)) => form_decode(raw),
        (None, None) => return None,
    };
    Some(Sha256::digest(&token).into())
}

/// What the homeserver said about a federation media request.
pub enum FederationVerdict {
    /// Signature accepted, media unknown to it: ours to serve.
    Ours,
    /// Anything else (bad signature, ACL, media it does have, errors): its answer stands.
    Homeserver(Response<Body>),
}

/// The X-Matrix signature covers the exact request (method, URI, origin, destination), so it
/// cannot be re-checked by asking the homeserver a different question. We forward the same
/// request and serve from IPFS only when the homeserver, having authenticated it, answers
/// 404 `M_NOT_FOUND`. Why this rather than verifying signatures ourselves: the homeserver
/// applies all of its rules (key validity, `destination`, server ACLs, federation whitelist)
/// and we hold no key-fetching code that could drift from it. A 404 with any other errcode
/// (`M_UNRECOGNIZED` from a server without federation media) proves nothing about the
/// signature, so it is passed back rather than trusted.
pub async fn check_federation(
    homeserver: &Homeserver,
    request: &Parts,
    peer: &Peer,
) -> Result<FederationVerdict, HomeserverError> {
    let mut copy = http::Request::new(crate::body::empty());
    *copy.method_mut() = request.method.clone();
    *copy.uri_mut() = request.uri.clone();
    *copy.headers_mut() = request.headers.clone();
    let response = homeserver.relay(copy, peer).await?;
    if response.status() != StatusCode::NOT_FOUND {
        return Ok(FederationVerdict::Homeserver(response));
    }
    let (parts, body) = response.into_parts();
    // An error body is small; a 404 that is not cannot be a Matrix error and is passed back.
    let bytes = crate::body::collect_limited(body, 64 * 1024)
        .await
        .map_err(HomeserverError::BrokeOff)?;
    let errcode = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("errcode").and_then(|e| e.as_str()).map(str::to_owned));
    if errcode.as_deref() == Some("M_NOT_FOUND") {
        return Ok(FederationVerdict::Ours);
    }
    Ok(FederationVerdict::Homeserver(Response::from_parts(
        parts,
        crate::body::full(bytes),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_query() {
        assert_eq!(
            access_token_param("a=1&access_token=syt_x&b=2"),
            Some("syt_x")
        );
        assert_eq!(access_token_param("access_token="), None);
        assert_eq!(access_token_param("my_access_token=x"), None);
    }

    #[test]
    fn header_and_query_forms_share_a_key() {
        let header = HeaderValue::from_static("Bearer syt_a%b");
        let a = token_key(Some(&header), None);
        let b = token_key(None, Some("syt_a%25b"));
        assert_eq!(a, b);
        assert_ne!(a, token_key(None, Some("syt_other")));
        assert_eq!(token_key(None, None), None);
        // A homeserver reads `+` in a query value as a space.
        let spaced = HeaderValue::from_static("Bearer a b");
        assert_eq!(token_key(None, Some("a+b")), token_key(Some(&spaced), None));
    }

    #[test]
    fn mixed_credentials_are_seen_in_every_spelling() {
        for query in [
            "access_token=x",
            "a=1&access_token=x",
            "access_token=",
            "access_token",
            "access%5Ftoken=x",
            "access%5ftoken",
        ] {
            assert!(has_access_token_param(query), "{query}");
        }
        for query in [
            "",
            "a=1",
            "my_access_token=x",
            "access_tokens=x",
            "x=access_token",
        ] {
            assert!(!has_access_token_param(query), "{query}");
        }
    }
}

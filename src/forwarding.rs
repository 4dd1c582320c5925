//! Header rules for forwarding a message: hop-by-hop headers (RFC 9110 §7.6.1) are removed in
//! both directions, and the request learns who sent it (`X-Forwarded-*`).
//!
//! Both run on every pass-through, so they look before they touch: one walk over the names
//! finds whether there is anything hop-by-hop at all (usually not), and each `X-Forwarded-*`
//! header is looked up once through the map's entry API.

use std::net::SocketAddr;

use bytes::{BufMut, BytesMut};
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Connection-specific headers: never forwarded, whatever `Connection` says.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The client at the other end of a connection, with the `X-Forwarded-For` entry that names
/// it: formatted once per connection rather than per request.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    forwarded_for: HeaderValue,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        let ip = addr.ip().to_canonical().to_string();
        Self {
            addr,
            forwarded_for: HeaderValue::from_str(&ip).expect("an IP address is a valid header"),
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::UPGRADE || HOP_BY_HOP.iter().any(|hop| hop == name)
}

/// Removes hop-by-hop headers, and the ones `Connection` names. `Upgrade` goes too: the proxy
/// does not tunnel protocol switches (Matrix has none).
/// The path and query of a request target as sent (no `%xx` normalising), `/` when it has
/// none: what an HTTP/1.1 request line to the homeserver carries.
pub fn origin_form(uri: &http::Uri) -> http::uri::PathAndQuery {
    uri.path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"))
}

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // `Connection` is itself hop-by-hop, so without any of these there is nothing to do.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Appends the peer to `X-Forwarded-For`; sets `X-Forwarded-Proto` and `X-Forwarded-Host`
/// unless a proxy in front already did.
pub fn add_forwarded(headers: &mut HeaderMap, peer: &Peer, host: Option<&HeaderValue>) {
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Vacant(entry) => {
            entry.insert(peer.forwarded_for.clone());
        }
        Entry::Occupied(mut entry) => {
            // Earlier hops, in order (lines that are not text are dropped), then us.
            let mut chain = BytesMut::new();
            for value in entry.iter().filter(|v| v.to_str().is_ok()) {
                chain.put_slice(value.as_bytes());
                chain.put_slice(b", ");
            }
            chain.put_slice(peer.forwarded_for.as_bytes());
            if let Ok(value) = HeaderValue::from_maybe_shared(chain.freeze()) {
                entry.insert(value);
            }
        }
    }
    // We never terminate TLS: a client that reached us directly spoke plain HTTP.
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static("http"));
    if let Some(host) = host {
        headers
            .entry(X_FORWARDED_HOST)
            .or_insert_with(|| host.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let host = HeaderValue::from_static("matrix.example.org");
        let peer = Peer::new("127.0.0.1:5000".parse().unwrap());
        add_forwarded(&mut h, &peer, Some(&host));
        assert_eq!(h[&X_FORWARDED_FOR], "203.0.113.7, 127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "matrix.example.org");
    }

    #[test]
    fn several_forwarded_for_lines_become_one_chain() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"caf\xe9").unwrap(),
        );
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2"));
        let peer = Peer::new("[2001:db8::1]:5000".parse().unwrap());
        add_forwarded(&mut h, &peer, None);
        let chain: Vec<_> = h.get_all(&X_FORWARDED_FOR).iter().collect();
        assert_eq!(chain, ["203.0.113.7, 198.51.100.2, 2001:db8::1"]);
    }

    #[test]
    fn mapped_ipv4_is_shown_as_ipv4() {
        let mut h = HeaderMap::new();
        let peer = Peer::new("[::ffff:127.0.0.1]:5000".parse().unwrap());
        add_forwarded(&mut h, &peer, None);
        assert_eq!(h[&X_FORWARDED_FOR], "127.0.0.1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert!(!h.contains_key(&X_FORWARDED_HOST));
    }
}

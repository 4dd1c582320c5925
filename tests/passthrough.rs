//! Everything that is not ipfs media reaches the homeserver unchanged, and its answer comes
//! back unchanged.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::homeserver::checksum;
use support::{bounded, client, get, json, pattern, ProxyBuilder};

/// Sends raw bytes and returns the raw answer: no client library normalises anything.
fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Fails unless the homeserver was told these `X-Forwarded-For` and `X-Forwarded-Proto`.
fn assert_forwarded(headers: &http::HeaderMap, forwarded_for: &str, proto: &str) {
    assert_eq!(headers["x-forwarded-for"], forwarded_for);
    assert_eq!(headers["x-forwarded-proto"], proto);
}

#[tokio::test]
async fn request_is_forwarded_byte_for_byte() {
    bounded(30, async {
        let (hs, proxy) = support::plain_proxy().await;
        let target = "/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/t%2F1?a=%41%3a&b=c%2Fd&&x";
        let body = b"{\"msgtype\":\"m.text\",\"body\":\"hello\"}";
        let request = format!(
            "PUT {target} HTTP/1.1\r\nHost: matrix.example.org\r\nAuthorization: Bearer tok\r\nX-Custom: One\r\nX-Custom: two\r\nConnection: close, X-Drop-Me\r\nX-Drop-Me: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let addr = proxy.addr;
        let answer = tokio::task::spawn_blocking(move || {
            let mut bytes = request.into_bytes();
            bytes.extend_from_slice(body);
            raw_exchange(addr, &bytes)
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 201 Created\r\n"), "{answer}");

        let got = hs.last();
        assert_eq!(got.method, http::Method::PUT);
        assert_eq!(got.target, target, "path and query must not be normalised");
        assert_eq!(got.body.as_ref(), body);
        assert_eq!(got.version, http::Version::HTTP_11);
        let h = &got.headers;
        assert_eq!(h["host"], "matrix.example.org", "Host is kept");
        assert_eq!(h["authorization"], "Bearer tok");
        let customs: Vec<_> = h.get_all("x-custom").iter().collect();
        assert_eq!(customs, ["One", "two"]);
        assert_eq!(h["content-type"], "application/json");
        for hop in ["x-drop-me", "keep-alive", "te"] {
            assert!(!h.contains_key(hop), "{hop} must not be forwarded");
        }
        assert_forwarded(h, "127.0.0.1", "http");
        assert_eq!(h["x-forwarded-host"], "matrix.example.org");
    })
    .await;
}

#[tokio::test]
async fn response_comes_back_unchanged_but_for_hop_by_hop_headers() {
    bounded(30, async {
        let (hs, proxy) = support::plain_proxy().await;
        let response = client()
            .post(proxy.url("/_matrix/client/v3/echo"))
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .body("ping")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let h = response.headers();
        assert_eq!(h["x-upstream"], "stub");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert!(!h.contains_key("x-hop"), "named in Connection: dropped");
        assert!(!h.contains_key("keep-alive"));
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"ping");
        assert_forwarded(&hs.last().headers, "203.0.113.9, 127.0.0.1", "https");
    })
    .await;
}

#[tokio::test]
async fn encoded_slash_and_colon_in_media_paths_pass_through() {
    bounded(30, async {
        let (hs, proxy) = support::plain_proxy().await;
        for target in [
            "/_matrix/media/v3/download/example.org/AbCdEfGh%2Fx",
            "/_matrix/media/v3/download/example.org%3A8448/AbCdEfGhIjKl/name%3Ax.png",
            "/_matrix/client/v1/media/download/example.org/notipfs%3Abafkqaaa",
            "/_matrix/media/v3/thumbnail/example.org/AbCd?width=32&height=32",
            "/_matrix/federation/v1/media/download/AbCdEfGh",
            "/_matrix/federation/v1/query/profile?user_id=%40a%3Ab",
        ] {
            let response = get(&proxy, target).await;
            assert_eq!(response.status(), 201, "{target}");
            assert_eq!(hs.last().target, target);
        }
        // A POST to an ipfs download path is the homeserver's business too.
        let target = "/_matrix/media/v3/download/example.org/ipfs:bafkqaaa";
        let response = client().post(proxy.url(target)).send().await.unwrap();
        assert_eq!(response.status(), 201);
        assert_eq!(hs.last().method, http::Method::POST);
    })
    .await;
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    bounded(60, async {
        let (_hs, proxy) = support::plain_proxy().await;
        // Download: 50 MiB generated by the homeserver as it is sent.
        let n = 50 * 1024 * 1024;
        let mut response = get(&proxy, &format!("/stream/{n}")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.content_length(), Some(n as u64));
        let chunk = pattern(64 * 1024, 7);
        let mut received = 0usize;
        while let Some(part) = response.chunk().await.unwrap() {
            for (i, byte) in part.iter().enumerate() {
                assert_eq!(
                    *byte,
                    chunk[(received + i) % chunk.len()],
                    "byte {}",
                    received + i
                );
            }
            received += part.len();
        }
        assert_eq!(received, n);

        // Upload: 50 MiB sent as a stream, counted by the homeserver as it arrives.
        let block = bytes::Bytes::from(pattern(1024 * 1024, 3));
        let response = support::post_blocks(&proxy, "/count", block.clone(), 50).await;
        assert_eq!(response.status(), 200);
        let v = json(&response.bytes().await.unwrap());
        let whole: Vec<u8> = block
            .iter()
            .copied()
            .cycle()
            .take(50 * block.len())
            .collect();
        assert_eq!(v["len"], 50 * 1024 * 1024);
        assert_eq!(v["sum"], checksum(&whole));
    })
    .await;
}

#[tokio::test]
async fn unreachable_homeserver_is_a_502_matrix_error() {
    bounded(30, async {
        let proxy = ProxyBuilder::new(support::closed_port()).start().await;
        let response = get(&proxy, "/_matrix/client/versions").await;
        assert_eq!(response.status(), 502);
        assert_eq!(
            response.headers()["cache-control"],
            "no-cache, no-store, must-revalidate"
        );
        let v = json(&response.bytes().await.unwrap());
        assert_eq!(v["errcode"], "M_UNKNOWN");
        assert!(v["error"].as_str().unwrap().contains("homeserver"));
    })
    .await;
}

#[tokio::test]
async fn homeserver_failing_mid_response_aborts_only_that_response() {
    bounded(30, async {
        let (_hs, proxy) = support::plain_proxy().await;
        let response = get(&proxy, "/broken").await;
        assert_eq!(response.status(), 200);
        assert!(
            response.bytes().await.is_err(),
            "a cut body must not end cleanly"
        );
        // The proxy is unharmed.
        let response = get(&proxy, "/fine").await;
        assert_eq!(response.status(), 201);
    })
    .await;
}

#[tokio::test]
async fn h2c_clients_are_served_over_http1_upstream() {
    bounded(30, async {
        let (hs, proxy) = support::plain_proxy().await;
        let h2 = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let response = h2
            .put(proxy.url("/_matrix/client/v3/x?y=%2F"))
            .body("h2 body")
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 201);
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"h2 body");
        let got = hs.last();
        assert_eq!(got.version, http::Version::HTTP_11);
        assert_eq!(got.target, "/_matrix/client/v3/x?y=%2F");
        assert_eq!(got.headers["host"], proxy.addr.to_string().as_str());
    })
    .await;
}

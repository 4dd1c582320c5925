//! ipfs: media downloads served by the proxy itself.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::gateway::{holding, Behaviour, GatewayStub};
use support::homeserver::HomeserverStub;
use support::{bounded, client, get, get_as, json, pattern, Proxy};

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";

async fn setup(gw: &GatewayStub, extra: &str) -> (HomeserverStub, Proxy) {
    support::proxy_with(gw, extra).await
}

async fn error_of(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.headers()["cache-control"],
        "no-cache, no-store, must-revalidate"
    );
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let v = json(&response.bytes().await.unwrap());
    (
        status,
        v["errcode"].as_str().unwrap().to_owned(),
        v["error"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn every_legacy_route_form_serves_the_bytes() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let cid = gw.add(PNG);
        let (hs, proxy) = setup(&gw, "").await;
        for path in [
            format!("/_matrix/media/v3/download/localhost/ipfs:{cid}"),
            format!("/_matrix/media/r0/download/elsewhere.example/ipfs%3A{cid}"),
            format!("/_matrix/media/v1/download/any.server:8448/ipfs%3a{cid}/pic.png"),
            format!("/_matrix/media/v3/download/x/ipfs:{cid}/"),
        ] {
            let response = get(&proxy, &path).await;
            assert_eq!(response.status(), 200, "{path}");
            assert_eq!(response.bytes().await.unwrap().as_ref(), PNG, "{path}");
        }
        assert!(
            hs.recorded().is_empty(),
            "the homeserver is not asked for ipfs media"
        );
        assert_eq!(gw.hits(&cid), 1, "fetched once, then cached");
    })
    .await;
}

#[tokio::test]
async fn media_headers_are_a_homeservers_and_more() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let cid = gw.add(PNG);
        let (_hs, proxy) = setup(&gw, "").await;
        let response = get(
            &proxy,
            &format!("/_matrix/media/v3/download/s/ipfs:{cid}/cat%20pic.png"),
        )
        .await;
        assert_eq!(response.status(), 200);
        let h = response.headers();
        let (length, etag) = (PNG.len().to_string(), format!("\"{cid}\""));
        for (name, value) in [
            ("content-type", "image/png"),
            (
                "content-disposition",
                "inline; filename*=utf-8''cat%20pic.png",
            ),
            ("content-length", &length),
            ("cache-control", "public, max-age=31536000, immutable"),
            ("etag", &etag),
            ("accept-ranges", "bytes"),
            ("x-content-type-options", "nosniff"),
            ("x-content-security-policy", "sandbox;"),
            ("cross-origin-resource-policy", "cross-origin"),
            ("referrer-policy", "no-referrer"),
            ("x-robots-tag", "noindex, nofollow, noarchive, noimageindex"),
            ("access-control-allow-origin", "*"),
            (
                "access-control-allow-methods",
                "GET, HEAD, POST, PUT, DELETE, OPTIONS",
            ),
            (
                "access-control-allow-headers",
                "X-Requested-With, Content-Type, Authorization, Date",
            ),
        ] {
            assert_eq!(h[name], value, "{name}");
        }
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("sandbox;"));
    })
    .await;
}

#[tokio::test]
async fn content_type_is_sniffed_and_dangerous_types_are_attachments() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let html = gw.add(&b"<!DOCTYPE html><html><script>alert(1)</script></html>"[..]);
        let svg =
            gw.add(&b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"></svg>"[..]);
        let text = gw.add("grüße\n".as_bytes());
        let binary = gw.add(&b"\x00\x01\x02\x03binary"[..]);
        let (_hs, proxy) = setup(&gw, "").await;
        let cases = [
            // A name can never make a page inline.
            (
                format!("ipfs:{html}/cute.png"),
                "text/html; charset=UTF-8",
                "attachment; filename=cute.png",
            ),
            (format!("ipfs:{svg}"), "image/svg+xml", "attachment"),
            (
                format!("ipfs:{text}/notes.txt"),
                "text/plain; charset=UTF-8",
                "inline; filename=notes.txt",
            ),
            (
                format!("ipfs:{text}/Gr%C3%BC%C3%9Fe.txt"),
                "text/plain; charset=UTF-8",
                "inline; filename*=utf-8''Gr%C3%BC%C3%9Fe.txt",
            ),
            (
                format!("ipfs:{binary}"),
                "application/octet-stream",
                "attachment",
            ),
            (
                format!("ipfs:{binary}/movie.mp4"),
                "video/mp4",
                "inline; filename=movie.mp4",
            ),
        ];
        for (id, content_type, disposition) in cases {
            let response = get(&proxy, &format!("/_matrix/media/v3/download/s/{id}")).await;
            assert_eq!(response.status(), 200, "{id}");
            assert_eq!(response.headers()["content-type"], content_type, "{id}");
            assert_eq!(
                response.headers()["content-disposition"],
                disposition,
                "{id}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn ranges_head_and_conditional_requests() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let bytes = pattern(100_000, 1);
        let cid = gw.add(bytes.clone());
        let (_hs, proxy) = setup(&gw, "").await;
        let path = format!("/_matrix/media/v3/download/s/ipfs:{cid}");

        // First request: uncached, streamed, still ranged (length known from the gateway).
        let response = client()
            .get(proxy.url(&path))
            .header("range", "bytes=1000-1999")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(
            response.headers()["content-range"],
            "bytes 1000-1999/100000"
        );
        assert_eq!(response.headers()["content-length"], "1000");
        assert_eq!(response.bytes().await.unwrap().as_ref(), &bytes[1000..2000]);

        // Cached now (or fetched again: either way the same answers).
        let whole = get(&proxy, &path).await.bytes().await.unwrap();
        assert_eq!(whole.as_ref(), &bytes[..]);
        let response = client()
            .get(proxy.url(&path))
            .header("range", "bytes=-10")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(
            response.headers()["content-range"],
            "bytes 99990-99999/100000"
        );
        assert_eq!(response.bytes().await.unwrap().as_ref(), &bytes[99_990..]);

        let response = client()
            .get(proxy.url(&path))
            .header("range", "bytes=200000-")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 416);
        assert_eq!(response.headers()["content-range"], "bytes */100000");

        let response = client().head(proxy.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-length"], "100000");
        assert_eq!(response.headers()["etag"], format!("\"{cid}\"").as_str());
        assert!(response.bytes().await.unwrap().is_empty());

        let response = client()
            .get(proxy.url(&path))
            .header("if-none-match", format!("\"{cid}\""))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 304);
        assert_eq!(response.headers()["etag"], format!("\"{cid}\"").as_str());
        assert!(response.bytes().await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn not_modified_needs_no_gateway() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let cid = gw.add(PNG);
        let (_hs, proxy) = setup(&gw, "").await;
        let response = client()
            .get(proxy.url(&format!("/_matrix/media/v3/download/s/ipfs:{cid}")))
            .header("if-none-match", format!("W/\"{cid}\""))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 304);
        assert_eq!(gw.hits(&cid), 0);
    })
    .await;
}

#[tokio::test]
async fn preflight_is_answered_with_cors() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let (hs, proxy) = setup(&gw, "").await;
        let response = client()
            .request(
                reqwest::Method::OPTIONS,
                proxy.url("/_matrix/client/v1/media/download/s/ipfs:bafkqaaa"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        assert_eq!(response.headers()["access-control-allow-origin"], "*");
        assert!(response.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Authorization"));
        assert!(
            hs.recorded().is_empty(),
            "a preflight carries no token to check"
        );
    })
    .await;
}

#[tokio::test]
async fn error_answers() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let broken = gw.add_with(
            pattern(10, 2),
            Behaviour::Status(StatusCode::INTERNAL_SERVER_ERROR),
        );
        let absent = support::gateway::raw_cid(b"nobody has this").to_string();
        let (_hs, proxy) = setup(&gw, "").await;
        let base = "/_matrix/media/v3/download/s";

        let (status, code, text) =
            error_of(get(&proxy, &format!("{base}/ipfs:notacid")).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "M_NOT_FOUND")
        );
        assert!(text.contains("not a valid CID"), "{text}");

        let (status, code, text) =
            error_of(get(&proxy, &format!("{base}/ipfs:{absent}")).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "M_NOT_FOUND")
        );
        assert!(text.contains("could not find"), "{text}");

        let (status, code, _) = error_of(get(&proxy, &format!("{base}/ipfs:{broken}")).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_GATEWAY, "M_UNKNOWN")
        );

        let (status, code, _) =
            error_of(get(&proxy, &format!("{base}/ipfs:{absent}?timeout_ms=soon")).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_REQUEST, "M_INVALID_PARAM")
        );

        // Errors are never cached: the gateway is asked each time.
        let before = gw.hits(&broken);
        get(&proxy, &format!("{base}/ipfs:{broken}")).await;
        assert_eq!(gw.hits(&broken), before + 1);
    })
    .await;
}

#[tokio::test]
async fn gateway_stall_gives_504_within_timeout_ms() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let slow = gw.add_with(PNG, Behaviour::Delay(Duration::from_secs(20)));
        let (_hs, proxy) = setup(&gw, "").await;
        let started = Instant::now();
        let response = get(
            &proxy,
            &format!("/_matrix/media/v3/download/s/ipfs:{slow}?timeout_ms=500"),
        )
        .await;
        let elapsed = started.elapsed();
        let (status, code, _) = error_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::GATEWAY_TIMEOUT, "M_NOT_YET_UPLOADED")
        );
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    })
    .await;
}

#[tokio::test]
async fn gateway_read_timeout_ends_a_stalled_stream() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let stalls = gw.add_with(pattern(200_000, 4), Behaviour::StallAfter(50_000));
        let (_hs, builder) = support::builder().await;
        let proxy = builder
            .gateway(gw.start().await)
            .gateway_line("timeout = \"1s\"")
            .start()
            .await;
        let response = get(
            &proxy,
            &format!("/_matrix/media/v3/download/s/ipfs:{stalls}"),
        )
        .await;
        assert_eq!(
            response.status(),
            200,
            "headers go out once the first bytes are in"
        );
        assert!(
            response.bytes().await.is_err(),
            "a stalled body must end in an error, not cleanly"
        );
        // Not cached: asking again goes to the gateway again.
        let _ = get(
            &proxy,
            &format!("/_matrix/media/v3/download/s/ipfs:{stalls}"),
        )
        .await;
        assert_eq!(gw.hits(&stalls), 2);
    })
    .await;
}

#[tokio::test]
async fn oversized_media_is_refused() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let announced = gw.add(pattern(300_000, 5));
        let unannounced = gw.add_with(pattern(300_000, 6), Behaviour::NoLength);
        let (_hs, proxy) = setup(
            &gw,
            "[media]\nmax_bytes = \"200KiB\"\n[cache]\nmax_item_bytes = \"100KiB\"",
        )
        .await;
        let (status, code, _) = error_of(
            get(
                &proxy,
                &format!("/_matrix/media/v3/download/s/ipfs:{announced}"),
            )
            .await,
        )
        .await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::BAD_GATEWAY, "M_TOO_LARGE")
        );
        // Without a length the limit is found while streaming: the body is cut, never completed.
        let response = get(
            &proxy,
            &format!("/_matrix/media/v3/download/s/ipfs:{unannounced}"),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert!(response.bytes().await.is_err());
    })
    .await;
}

#[tokio::test]
async fn lying_content_length_is_not_served_as_complete() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let short = gw.add_with(pattern(40_000, 8), Behaviour::ClaimLength(50_000));
        let (_hs, proxy) = setup(&gw, "").await;
        let response = get(
            &proxy,
            &format!("/_matrix/media/v3/download/s/ipfs:{short}"),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert!(response.bytes().await.is_err());
        let _ = get(
            &proxy,
            &format!("/_matrix/media/v3/download/s/ipfs:{short}"),
        )
        .await;
        assert_eq!(gw.hits(&short), 2, "a truncated fetch is not cached");
    })
    .await;
}

#[tokio::test]
async fn concurrent_requests_share_one_fetch_and_stream_early() {
    bounded(60, async {
        let (gw, cid, release, bytes) = holding(2_000_000, 9, 100_000);
        let (_hs, proxy) = setup(&gw, "").await;
        let url = proxy.url(&format!("/_matrix/media/v3/download/s/ipfs:{cid}"));

        // 50 clients at once; each must get its first bytes while the gateway still holds the
        // rest back.
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut response = client().get(url).send().await.unwrap();
                assert_eq!(response.status(), 200);
                let first = response.chunk().await.unwrap().unwrap();
                (response, first)
            }));
        }
        let mut started = Vec::new();
        for t in tasks {
            started.push(t.await.unwrap());
        }
        assert_eq!(
            gw.hits(&cid),
            1,
            "one gateway fetch for 50 concurrent requests"
        );
        release.notify_one();
        for (mut response, first) in started {
            let mut all = first.to_vec();
            while let Some(part) = response.chunk().await.unwrap() {
                all.extend_from_slice(&part);
            }
            assert_eq!(all, bytes);
        }
        // And the next one is a cache hit.
        assert_eq!(
            get(&proxy, &format!("/_matrix/media/v3/download/s/ipfs:{cid}"))
                .await
                .bytes()
                .await
                .unwrap()
                .len(),
            bytes.len()
        );
        assert_eq!(gw.hits(&cid), 1);
    })
    .await;
}

#[tokio::test]
async fn an_item_is_cached_before_its_last_byte_reaches_the_client() {
    // A client that asks again the moment its download ends is answered from the cache,
    // whether the gateway announced a length (the client's response can end before the
    // gateway's body does) or not.
    bounded(60, async {
        let gw = GatewayStub::new();
        let cids: Vec<(String, Vec<u8>)> = (0..40)
            .map(|i| {
                let bytes = pattern(20_000 + i * 997, 300 + i as u64);
                let behaviour = if i % 2 == 0 {
                    Behaviour::Serve
                } else {
                    Behaviour::NoLength
                };
                (gw.add_with(bytes.clone(), behaviour), bytes)
            })
            .collect();
        let (_hs, proxy) = setup(&gw, "").await;
        let cache = proxy.app.resolver().cache();
        for (cid, bytes) in &cids {
            let path = format!("/_matrix/media/v3/download/s/ipfs_{cid}");
            let first = get(&proxy, &path).await.bytes().await.unwrap();
            assert_eq!(first.as_ref(), &bytes[..]);
            let key = ipfs_media_proxy::cache::CacheKey::Media(cid.parse().unwrap());
            assert!(
                cache.get(&key).is_some(),
                "{cid} not cached when its body ended"
            );
            let again = get(&proxy, &path).await.bytes().await.unwrap();
            assert_eq!(again.as_ref(), &bytes[..]);
            assert_eq!(gw.hits(cid), 1, "{cid} fetched again");
        }
    })
    .await;
}

#[tokio::test]
async fn cache_is_bounded_by_bytes() {
    bounded(60, async {
        let gw = GatewayStub::new();
        let cids: Vec<String> = (0..12).map(|i| gw.add(pattern(100_000, 100 + i))).collect();
        let (_hs, proxy) = setup(
            &gw,
            "[cache]\nmax_bytes = \"500KB\"\nmax_item_bytes = \"200KB\"",
        )
        .await;
        for cid in &cids {
            let r = get(&proxy, &format!("/_matrix/media/v3/download/s/ipfs:{cid}")).await;
            assert_eq!(r.bytes().await.unwrap().len(), 100_000);
        }
        let cache = proxy.app.resolver().cache();
        assert!(
            cache.weighted_size() <= 500_000,
            "{} bytes held",
            cache.weighted_size()
        );
        assert!(cache.entry_count() <= 5);
        // Whatever was evicted is fetched again, and served correctly.
        for (i, cid) in cids.iter().enumerate() {
            let r = get(&proxy, &format!("/_matrix/media/v3/download/s/ipfs:{cid}")).await;
            assert_eq!(
                r.bytes().await.unwrap().as_ref(),
                &pattern(100_000, 100 + i as u64)[..]
            );
        }
        let hits: Vec<usize> = cids.iter().map(|c| gw.hits(c)).collect();
        let refetched = hits.iter().sum::<usize>() - cids.len();
        assert!(
            refetched >= 7,
            "at least 7 of 12 items cannot fit: {refetched} refetched (gateway hits {hits:?})"
        );
    })
    .await;
}

#[tokio::test]
async fn large_media_is_streamed_not_cached() {
    bounded(60, async {
        let gw = GatewayStub::new();
        let bytes = pattern(3_000_000, 11);
        let cid = gw.add(bytes.clone());
        let (_hs, proxy) = setup(&gw, "[cache]\nmax_item_bytes = \"1MB\"").await;
        for _ in 0..2 {
            let r = get(&proxy, &format!("/_matrix/media/v3/download/s/ipfs:{cid}")).await;
            assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
        }
        assert_eq!(
            gw.hits(&cid),
            2,
            "items over cache.max_item_bytes are not kept"
        );
        assert_eq!(proxy.app.resolver().cache().entry_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn legacy_routes_can_be_turned_off() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let cid = gw.add(PNG);
        let (_hs, proxy) = setup(&gw, "[media]\nlegacy_unauthenticated = false").await;
        let (status, code, _) =
            error_of(get(&proxy, &format!("/_matrix/media/v3/download/s/ipfs:{cid}")).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::NOT_FOUND, "M_NOT_FOUND")
        );
        assert_eq!(gw.hits(&cid), 0);
        let r = get_as(
            &proxy,
            &format!("/_matrix/client/v1/media/download/s/ipfs:{cid}"),
            "good",
        )
        .await;
        assert_eq!(r.status(), 200);
    })
    .await;
}

#[tokio::test]
async fn cidv0_and_v1_are_one_cache_entry() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let raw: cid::Cid = support::gateway::raw_cid(PNG);
        let v0 = cid::Cid::new_v0(*raw.hash()).unwrap();
        let v1 = cid::Cid::new_v1(0x70, *raw.hash());
        // The stub answers under the CIDv0 text only.
        gw.add_under(&v0.to_string(), PNG);
        let (_hs, proxy) = setup(&gw, "").await;
        let r = get(&proxy, &format!("/_matrix/media/v3/download/s/ipfs:{v0}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["etag"],
            format!("\"{v1}\"").as_str(),
            "the ETag names the v1 form"
        );
        let r = get(&proxy, &format!("/_matrix/media/v3/download/s/ipfs:{v1}")).await;
        assert_eq!(
            r.status(),
            200,
            "served from the entry the v0 request filled"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), PNG);
        assert_eq!(gw.hits(&v0.to_string()), 1);
        assert_eq!(gw.hits(&v1.to_string()), 0);
    })
    .await;
}

/// A cache hit answers from headers prepared with the item: they must be the very headers,
/// in the same order, that the first (streamed) answer had.
#[tokio::test]
async fn cache_hits_answer_with_the_first_answers_headers() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let cid = gw.add(PNG);
        let (_hs, proxy) = setup(&gw, "").await;
        let listed = |response: &reqwest::Response| -> Vec<(String, String)> {
            response
                .headers()
                .iter()
                .filter(|(name, _)| *name != "date")
                .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
                .collect()
        };
        let plain = format!("/_matrix/media/v3/download/s/ipfs:{cid}");
        let first = get(&proxy, &plain).await;
        assert_eq!(gw.hits(&cid), 1);
        let expected = listed(&first);
        assert_eq!(first.bytes().await.unwrap().as_ref(), PNG);
        for _ in 0..2 {
            let hit = get(&proxy, &plain).await;
            assert_eq!(listed(&hit), expected);
            assert_eq!(hit.bytes().await.unwrap().as_ref(), PNG);
        }
        let head = client().head(proxy.url(&plain)).send().await.unwrap();
        assert_eq!(listed(&head), expected);

        // A file name changes the type's and disposition's values, not their places.
        let named = get(&proxy, &format!("{plain}/notes.txt")).await;
        let named_list = listed(&named);
        let names = |list: &[(String, String)]| -> Vec<String> {
            list.iter().map(|(name, _)| name.clone()).collect()
        };
        assert_eq!(names(&named_list), names(&expected));
        assert_eq!(
            named.headers()["content-disposition"],
            "inline; filename=notes.txt"
        );
        assert_eq!(named.headers()["content-type"], "image/png");
        assert_eq!(gw.hits(&cid), 1, "all but the first from the cache");
    })
    .await;
}

//! Ranges of uncached content, fetched on their own from the gateways: `Range` for trusted
//! (path) gateways, `entity-bytes` CARs for trustless ones, and answers identical to the ones
//! the cached item gives.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::gateway::{holding, Behaviour, GatewayStub, RangeMode};
use support::trustless::{Dag, EntityBytes, Lie, TrustlessStub};
use support::{bounded, client, pattern, Proxy};

/// A PNG signature and header, then filler: the type is in the first bytes only.
fn png_like(len: usize) -> Vec<u8> {
    let mut bytes =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89".to_vec();
    bytes.extend(pattern(len - bytes.len(), 21));
    bytes
}

async fn trusted(gateways: &[&GatewayStub], extra: &str) -> Proxy {
    let (_hs, builder) = support::builder().await;
    let mut builder = builder
        .toml("[retrieval]\nprobe_interval = \"0s\"")
        .toml(extra);
    for g in gateways {
        builder = builder.gateway(g.start().await);
    }
    builder.start().await
}

/// The proxy in front of `gateways`, all trustless, with a 2 s timeout each.
async fn trustless(gateways: &[&TrustlessStub], extra: &str) -> Proxy {
    support::trustless::trustless_proxy(gateways, "2s", extra).await
}

/// Every range not starting at byte 0 is fetched on its own.
const APART: &str = "[media]\nrange_fetch_threshold = \"0\"";

fn url(proxy: &Proxy, cid: &str) -> String {
    proxy.url(&format!("/_matrix/media/v3/download/s/ipfs:{cid}"))
}

async fn ranged(url: &str, range: &str) -> reqwest::Response {
    client()
        .get(url)
        .header("range", range)
        .send()
        .await
        .unwrap()
}

/// The body until it ends, and whether it ended cleanly.
async fn read_all(mut response: reqwest::Response) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(part)) => got.extend_from_slice(&part),
            Ok(None) => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// The headers that describe the content (everything but the date).
fn described(response: &reqwest::Response) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(name, _)| *name != "date")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    all.sort();
    all
}

fn some(range: &str) -> Option<String> {
    Some(range.to_owned())
}

#[tokio::test]
async fn a_trusted_gateway_is_asked_for_the_range_and_the_first_bytes() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let bytes = png_like(200_000);
        let cid = gw.add(bytes.clone());
        let p = trusted(&[&gw], "[media]\nrange_fetch_threshold = \"4KiB\"").await;

        let r = ranged(&url(&p, &cid), "bytes=100000-149999").await;
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 100000-149999/200000");
        assert_eq!(r.headers()["content-length"], "50000");
        assert_eq!(
            r.headers()["content-type"],
            "image/png",
            "sniffed from the first bytes, which the range lacks"
        );
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[100_000..150_000]);
        let mut seen = gw.ranges(&cid);
        seen.sort();
        assert_eq!(
            seen,
            [some("bytes=0-1023"), some("bytes=100000-149999")],
            "the range and the first bytes, never the whole"
        );

        // A second seek: the type and length are known now, only the range is asked for.
        let r = ranged(&url(&p, &cid), "bytes=150000-").await;
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 150000-199999/200000");
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[150_000..]);
        assert_eq!(gw.ranges(&cid).len(), 3);
        assert_eq!(gw.ranges(&cid)[2], some("bytes=150000-"));

        // A suffix: the length is known, so it is a range like any other.
        let r = ranged(&url(&p, &cid), "bytes=-1000").await;
        assert_eq!(r.headers()["content-range"], "bytes 199000-199999/200000");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[199_000..]);
        assert_eq!(gw.ranges(&cid)[3], some("bytes=-1000"));

        assert_eq!(
            p.app.resolver().cache().entry_count(),
            0,
            "a part is never cached"
        );
    })
    .await;
}

#[tokio::test]
async fn a_near_range_waits_for_the_shared_fetch_which_fills_the_cache() {
    bounded(30, async {
        // Held after 2,000 bytes: the near range's answer has begun but cannot end yet.
        let (gw, cid, release, bytes) = holding(100_000, 22, 2_000);
        let p = trusted(&[&gw], "[media]\nrange_fetch_threshold = \"4KiB\"").await;
        let near = ranged(&url(&p, &cid), "bytes=4000-4999").await;
        assert_eq!(near.status(), 206);
        assert_eq!(near.headers()["content-range"], "bytes 4000-4999/100000");
        // A range from byte 0 is the whole item. It joins the held fetch while the near
        // range still reads from it, so the fetch outlives the near range's reader: the
        // order in which the two end cannot matter.
        let whole = ranged(&url(&p, &cid), "bytes=0-").await;
        assert_eq!(whole.headers()["content-range"], "bytes 0-99999/100000");
        release.notify_one();
        assert_eq!(near.bytes().await.unwrap().as_ref(), &bytes[4000..5000]);
        assert_eq!(whole.bytes().await.unwrap().as_ref(), &bytes[..]);
        assert_eq!(
            gw.ranges(&cid),
            [None],
            "one shared full fetch, never a part"
        );
        // It filled the cache: any range now needs no gateway.
        let key = ipfs_media_proxy::cache::CacheKey::Media(cid.parse().unwrap());
        while p.app.resolver().cache().get(&key).is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let r = ranged(&url(&p, &cid), "bytes=90000-").await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[90_000..]);
        assert_eq!(gw.ranges(&cid), [None], "the cache, no second fetch");
    })
    .await;
}

#[tokio::test]
async fn a_range_joins_a_running_fetch_that_is_near_and_goes_apart_when_it_is_far() {
    bounded(30, async {
        let (gw, cid, release, bytes) = holding(2_000_000, 23, 100_000);
        let p = trusted(&[&gw], "[media]\nrange_fetch_threshold = \"4KiB\"").await;
        // A full download that the gateway holds after 100,000 bytes.
        let mut whole = client().get(url(&p, &cid)).send().await.unwrap();
        let first = whole.chunk().await.unwrap().unwrap();
        while p.app.resolver().in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Within what the fetch has (plus the threshold): served from it, no new request.
        let r = ranged(&url(&p, &cid), "bytes=50000-59999").await;
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[50_000..60_000]);
        assert_eq!(gw.ranges(&cid), [None]);
        // Far beyond it: fetched on its own at once, while the full fetch is still held. The
        // running fetch's head gives the type, so the first bytes are not asked for again.
        let r = ranged(&url(&p, &cid), "bytes=1500000-1500999").await;
        assert_eq!(r.status(), 206);
        assert_eq!(
            r.headers()["content-range"],
            "bytes 1500000-1500999/2000000"
        );
        assert_eq!(
            r.bytes().await.unwrap().as_ref(),
            &bytes[1_500_000..1_501_000]
        );
        assert_eq!(gw.ranges(&cid), [None, some("bytes=1500000-1500999")]);
        release.notify_one();
        let mut all = first.to_vec();
        while let Some(part) = whole.chunk().await.unwrap() {
            all.extend_from_slice(&part);
        }
        assert_eq!(all, bytes);
    })
    .await;
}

#[tokio::test]
async fn a_gateway_that_ignores_the_range_still_gives_the_right_part() {
    bounded(30, async {
        let gw = GatewayStub::new();
        gw.set_range_mode(RangeMode::Ignore);
        let bytes = png_like(300_000);
        let cid = gw.add(bytes.clone());
        let p = trusted(&[&gw], APART).await;
        let r = ranged(&url(&p, &cid), "bytes=200000-200999").await;
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 200000-200999/300000");
        assert_eq!(r.headers()["content-length"], "1000");
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[200_000..201_000]);
        assert!(gw.ranges(&cid).contains(&some("bytes=200000-200999")));
        assert_eq!(p.app.resolver().cache().entry_count(), 0);
    })
    .await;
}

/// A gateway that ignores `Range` and streams without a length gives no total for a `206`
/// (that used to be a 502): the request then takes the shared full fetch, as a request with
/// no part plan would. With no length known until the end, that answer is the whole content
/// (RFC 9110 lets a server ignore `Range`); once cached, ranges are 206s again.
#[tokio::test]
async fn a_gateway_that_ignores_the_range_without_a_length_falls_back_to_the_whole() {
    bounded(30, async {
        let gw = GatewayStub::new();
        gw.set_range_mode(RangeMode::Ignore);
        let bytes = png_like(300_000);
        let cid = gw.add_with(bytes.clone(), Behaviour::NoLength);
        let p = trusted(&[&gw], APART).await;
        let r = ranged(&url(&p, &cid), "bytes=200000-200999").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
        // The part (and, concurrently, the first bytes for sniffing), then the whole once.
        let asked = gw.ranges(&cid);
        assert!(asked.contains(&some("bytes=200000-200999")), "{asked:?}");
        assert_eq!(asked.iter().filter(|r| r.is_none()).count(), 1, "{asked:?}");
        // The whole went into the cache like any full fetch: the next seek is a hit.
        let r = ranged(&url(&p, &cid), "bytes=100-199").await;
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[100..200]);
        assert_eq!(p.app.resolver().cache().entry_count(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_206_for_another_range_is_refused_and_another_gateway_is_used() {
    bounded(30, async {
        let liar = GatewayStub::new();
        liar.set_range_mode(RangeMode::Shift(10));
        let honest = GatewayStub::new();
        let bytes = png_like(100_000);
        let cid = liar.add(bytes.clone());
        honest.add(bytes.clone());
        let p = trusted(&[&liar, &honest], APART).await;
        let r = ranged(&url(&p, &cid), "bytes=50000-59999").await;
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 50000-59999/100000");
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[50_000..60_000]);
        assert!(
            liar.ranges(&cid).contains(&some("bytes=50000-59999")),
            "the first gateway was asked first"
        );
        assert!(honest.ranges(&cid).contains(&some("bytes=50000-59999")));
    })
    .await;
}

#[tokio::test]
async fn a_range_outside_uncached_content_is_416() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let cid = gw.add(pattern(100_000, 24));
        let p = trusted(&[&gw], APART).await;
        let r = ranged(&url(&p, &cid), "bytes=100000-").await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()["content-range"], "bytes */100000");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert_eq!(support::errcode(r).await, "M_UNKNOWN");
        assert!(
            gw.ranges(&cid).contains(&some("bytes=100000-")),
            "the range went to the gateway"
        );
        assert!(!gw.ranges(&cid).contains(&None), "the whole did not");
        // The length is known now: a 416 needs no gateway.
        let r = ranged(&url(&p, &cid), "bytes=200000-300000").await;
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()["content-range"], "bytes */100000");
        assert_eq!(gw.hits(&cid), 2, "the range and the first bytes, once");
        assert_eq!(p.app.resolver().cache().entry_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn parts_obey_the_size_limit() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let cid = gw.add(pattern(300_000, 25));
        let p = trusted(
            &[&gw],
            "[media]\nmax_bytes = \"200KiB\"\nrange_fetch_threshold = \"0\"",
        )
        .await;
        let r = ranged(&url(&p, &cid), "bytes=1000-1999").await;
        assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(support::errcode(r).await, "M_TOO_LARGE");
    })
    .await;
}

#[tokio::test]
async fn parts_obey_timeout_ms() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let cid = gw.add_with(
            pattern(100_000, 26),
            Behaviour::Delay(Duration::from_secs(20)),
        );
        let p = trusted(&[&gw], APART).await;
        let started = std::time::Instant::now();
        let r = ranged(
            &format!("{}?timeout_ms=500", url(&p, &cid)),
            "bytes=1000-1999",
        )
        .await;
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(support::errcode(r).await, "M_NOT_YET_UPLOADED");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(gw.ranges(&cid).contains(&some("bytes=1000-1999")));
    })
    .await;
}

#[tokio::test]
async fn a_part_has_the_headers_the_cached_item_gives_and_nothing_partial_is_cached() {
    bounded(30, async {
        let gw = GatewayStub::new();
        let bytes = png_like(100_000);
        let cid = gw.add(bytes.clone());
        let p = trusted(&[&gw], APART).await;
        let path = |name: &str| {
            p.url(&format!(
                "/_matrix/client/v1/media/download/s/ipfs:{cid}{name}"
            ))
        };
        let authed = |url: String, range: &'static str| {
            client()
                .get(url)
                .bearer_auth("good")
                .header("range", range)
                .send()
        };
        let mut parts = Vec::new();
        for (name, range) in [
            ("", "bytes=60000-69999"),
            ("/cat%20pic.png", "bytes=99000-"),
            ("/x.txt", "bytes=-10"),
            ("", "bytes=100000-"),
        ] {
            let r = authed(path(name), range).await.unwrap();
            parts.push((
                name,
                range,
                r.status(),
                described(&r),
                r.bytes().await.unwrap(),
            ));
        }
        assert_eq!(p.app.resolver().cache().entry_count(), 0);
        assert!(!gw.ranges(&cid).contains(&None), "no full fetch yet");

        // The whole item: fetched in full (nothing partial was kept), and cached.
        let r = client()
            .get(path(""))
            .bearer_auth("good")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &bytes[..]);
        assert_eq!(gw.ranges(&cid).last().unwrap(), &None);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(p.app.resolver().cache().entry_count(), 1);

        let asked = gw.hits(&cid);
        for (name, range, status, headers, body) in parts {
            let r = authed(path(name), range).await.unwrap();
            assert_eq!(r.status(), status, "{name} {range}");
            assert_eq!(described(&r), headers, "{name} {range}");
            assert_eq!(r.bytes().await.unwrap(), body, "{name} {range}");
        }
        assert_eq!(gw.hits(&cid), asked, "answered from the cache");
    })
    .await;
}

#[tokio::test]
async fn a_trustless_gateway_is_asked_for_entity_bytes_and_every_byte_is_verified() {
    bounded(60, async {
        let want = Dag::file("file20k.bin");
        for fixture in [
            "balanced-1k.car",
            "deep-64.car",
            "trickle-512.car",
            "cidv0-4k.car",
        ] {
            let dag = Dag::load(fixture).await;
            let gw = TrustlessStub::new(std::slice::from_ref(&dag), Lie::Honest);
            let p = trustless(&[&gw], APART).await;
            let cid = dag.root.to_string();
            for (range, from, to, entity) in [
                ("bytes=5000-6999", 5000, 7000, "5000:6999"),
                ("bytes=19990-", 19_990, 20_000, "19990:*"),
                ("bytes=-100", 19_900, 20_000, "-100:*"),
            ] {
                let r = ranged(&url(&p, &cid), range).await;
                assert_eq!(r.status(), 206, "{fixture} {range}");
                assert_eq!(
                    r.headers()["content-range"],
                    format!("bytes {from}-{}/20000", to - 1).as_str(),
                    "{fixture} {range}"
                );
                assert_eq!(
                    r.headers()["content-type"],
                    "application/octet-stream",
                    "{fixture} {range}"
                );
                assert_eq!(
                    r.bytes().await.unwrap().as_ref(),
                    &want[from..to],
                    "{fixture} {range}"
                );
                assert!(gw.car_ranges().contains(&some(entity)), "{fixture} {range}");
            }
            // The first request's two CARs run concurrently: either may come first.
            let mut seen = gw.car_ranges();
            seen[..2].sort();
            assert_eq!(
                seen,
                ["0:1023", "5000:6999", "19990:*", "-100:*"].map(some),
                "{fixture}: the first bytes once, then only the ranges"
            );
            assert_eq!(gw.raws(), 0, "{fixture}: the CARs had every block needed");
            assert_eq!(p.app.resolver().cache().entry_count(), 0);
        }
    })
    .await;
}

#[tokio::test]
async fn a_flipped_byte_inside_the_range_aborts_the_answer_and_never_sends_bad_bytes() {
    bounded(30, async {
        let dag = Dag::load("balanced-1k.car").await;
        let want = Dag::file("file20k.bin");
        // Block 6 is the sixth 1 KiB leaf: bytes 5120..6144, inside the range.
        let liar = TrustlessStub::new(std::slice::from_ref(&dag), Lie::FlipByte(6));
        let p = trustless(&[&liar], APART).await;
        let r = ranged(&url(&p, &dag.root.to_string()), "bytes=5000-6999").await;
        assert_eq!(r.status(), 206, "the root was good: headers went out");
        let (got, clean) = read_all(r).await;
        assert!(!clean, "must not end cleanly");
        assert!(got.len() < 2000);
        assert_eq!(got, want[5000..5000 + got.len()], "only verified bytes");
        assert!(liar.raws() >= 1, "the bad block was sought elsewhere");
    })
    .await;
}

#[tokio::test]
async fn a_tampered_block_outside_the_range_does_not_matter() {
    bounded(30, async {
        let dag = Dag::load("balanced-1k.car").await;
        let want = Dag::file("file20k.bin");
        // Block 3 is bytes 2048..3072: neither in the range nor in the first bytes.
        let gw = TrustlessStub::new(std::slice::from_ref(&dag), Lie::FlipByte(3));
        let p = trustless(&[&gw], APART).await;
        let r = ranged(&url(&p, &dag.root.to_string()), "bytes=5000-6999").await;
        assert_eq!(r.status(), 206);
        let (got, clean) = read_all(r).await;
        assert!(clean);
        assert_eq!(got, want[5000..7000]);
        assert_eq!(gw.raws(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_gateway_that_ignores_entity_bytes_is_completed_block_by_block() {
    bounded(30, async {
        let dag = Dag::load("balanced-1k.car").await;
        let want = Dag::file("file20k.bin");
        let gw = TrustlessStub::new(std::slice::from_ref(&dag), Lie::Honest);
        gw.set_entity_bytes(EntityBytes::Ignore);
        let p = trustless(&[&gw], APART).await;
        let r = ranged(&url(&p, &dag.root.to_string()), "bytes=15000-16999").await;
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 15000-16999/20000");
        let (got, clean) = read_all(r).await;
        assert!(clean);
        assert_eq!(got, want[15_000..17_000]);
        // Leaves 14, 15 and 16 hold the range; the whole CAR was not read through.
        assert_eq!(gw.raws(), 3);
    })
    .await;
}

#[tokio::test]
async fn trustless_416_from_the_root_alone() {
    bounded(30, async {
        let dag = Dag::load("deep-64.car").await;
        for mode in [EntityBytes::Honour, EntityBytes::Refuse] {
            let gw = TrustlessStub::new(std::slice::from_ref(&dag), Lie::Honest);
            gw.set_entity_bytes(mode);
            let p = trustless(&[&gw], APART).await;
            let r = ranged(&url(&p, &dag.root.to_string()), "bytes=20000-").await;
            assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{mode:?}");
            assert_eq!(r.headers()["content-range"], "bytes */20000", "{mode:?}");
            assert_eq!(support::errcode(r).await, "M_UNKNOWN", "{mode:?}");
            assert!(gw.car_ranges().contains(&some("20000:*")), "{mode:?}");
            match mode {
                // The spec's 400 for a range it can tell is outside: the root, raw (and the
                // first bytes' blocks too, for the type: both are asked at once).
                EntityBytes::Refuse => assert!(gw.raws() >= 1, "{mode:?}"),
                _ => assert_eq!(gw.raws(), 0, "{mode:?}: the range CAR held the root"),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_raw_block_is_fetched_verified_and_cut() {
    bounded(30, async {
        let small = Dag::load("small-raw.car").await;
        let want = Dag::file("small.txt");
        let gw = TrustlessStub::new(std::slice::from_ref(&small), Lie::Honest);
        let p = trustless(&[&gw], APART).await;
        let r = ranged(&url(&p, &small.root.to_string()), "bytes=10-19").await;
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 10-19/37");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=UTF-8");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &want[10..20]);
        assert_eq!(gw.cars(), 0, "a raw CID is one block");

        let liar = TrustlessStub::new(std::slice::from_ref(&small), Lie::FlipByte(0));
        let p = trustless(&[&liar], APART).await;
        let r = ranged(&url(&p, &small.root.to_string()), "bytes=10-19").await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_GATEWAY,
            "a bad block is never cut"
        );
    })
    .await;
}

#[tokio::test]
async fn a_trustless_part_has_the_cached_answers_headers_and_is_not_cached() {
    bounded(30, async {
        let dag = Dag::load("trickle-512.car").await;
        let gw = TrustlessStub::new(std::slice::from_ref(&dag), Lie::Honest);
        let p = trustless(&[&gw], APART).await;
        let cid = dag.root.to_string();
        let first = ranged(&url(&p, &cid), "bytes=7000-7999").await;
        let headers = described(&first);
        let body = first.bytes().await.unwrap();
        assert_eq!(p.app.resolver().cache().entry_count(), 0);

        let whole = client().get(url(&p, &cid)).send().await.unwrap();
        assert_eq!(
            whole.bytes().await.unwrap().as_ref(),
            Dag::file("file20k.bin")
        );
        assert_eq!(
            gw.car_ranges().last().unwrap(),
            &None,
            "the whole file was fetched, not pieced together from parts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(p.app.resolver().cache().entry_count(), 1);

        let cars = gw.cars();
        let again = ranged(&url(&p, &cid), "bytes=7000-7999").await;
        assert_eq!(described(&again), headers);
        assert_eq!(again.bytes().await.unwrap(), body);
        assert_eq!(gw.cars(), cars, "from the cache");
    })
    .await;
}

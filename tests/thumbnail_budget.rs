//! Thumbnail renders count in the fetches' memory budget (`cache.max_fetch_bytes`, issue #16
//! items 5 and 7): a render's source from when it is collected (its wait for a slot included)
//! and its decoded image while it renders. Past the budget a render is refused with 503
//! `M_LIMIT_EXCEEDED` and a retry hint; a lone render larger than the budget still runs.
//!
//! One test in this binary: the budget's gauge is process-wide.

mod support;

use support::gateway::GatewayStub;
use support::{bounded, client, json, pattern, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::fetch_held_bytes as held;

const LIMIT: u64 = 1024 * 1024;

fn image(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn thumb(proxy: &Proxy, cid: &str) -> String {
    proxy.url(&format!(
        "/_matrix/media/v3/thumbnail/s/ipfs_{cid}?width=96&height=96&method=crop"
    ))
}

fn refusals() -> u64 {
    let text = ipfs_media_proxy::metrics::render();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("ipfs_media_proxy_thumbnail_refusals_total{outcome=\"budget\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_hold_their_source_and_pixels_in_the_fetch_budget() {
    bounded(120, async {
        let gw = GatewayStub::new();
        let small = gw.add(image("pattern-1000x500.png"));
        // 4096 x 4096 16-bit RGBA: 128 MiB decoded from a 200 KiB file.
        let wide = gw.add(image("rgba16-4096x4096.png"));
        let stalled = gw.add(pattern(16 * 1024 * 1024, 3));
        let (_hs, proxy) = support::proxy_with(
            &gw,
            "[cache]\nmax_fetch_bytes = \"1MiB\"\n[retrieval]\nprobe_interval = \"0s\"\n\
             [thumbnails]\nrender_timeout = \"100s\"\nall_sizes = false",
        )
        .await;

        // (One size at a time: the other sizes of a 16-megapixel source, made ahead in a debug
        // build, would hold the charge for tens of seconds.)
        // Alone, a render over the whole budget runs, and is counted while it does. Its source
        // is fetched first, so that the fetch's own count is given back before the render
        // asks for room (otherwise the render may or may not be alone, by a few microseconds).
        let source = proxy.url(&format!("/_matrix/media/v3/download/s/ipfs_{wide}"));
        let r = client().get(&source).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), image("rgba16-4096x4096.png"));
        support::until("the source's fetch is given back", 10, || held() == 0).await;
        let url = thumb(&proxy, &wide);
        let render = tokio::spawn(async move { client().get(url).send().await.unwrap() });
        support::until("the decoded image is counted", 60, || held() >= 128 << 20).await;
        let r = render.await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(gw.hits(&wide), 1, "the source came from the cache");
        support::until("and given back", 10, || held() == 0).await;

        // The small source, cached: its thumbnail needs no fetch.
        let source = proxy.url(&format!("/_matrix/media/v3/download/s/ipfs_{small}"));
        assert_eq!(client().get(&source).send().await.unwrap().status(), 200);

        // A client that reads nothing of a 16 MiB answer fills the budget.
        let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
        let request = format!(
            "GET /_matrix/media/v3/download/s/ipfs_{stalled} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        slow.write_all(request.as_bytes()).await.unwrap();
        support::until("the fetch fills the budget", 10, || held() >= LIMIT).await;

        let before = refusals();
        let r = client().get(thumb(&proxy, &small)).send().await.unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let v = json(&r.bytes().await.unwrap());
        assert_eq!(v["errcode"], "M_LIMIT_EXCEEDED");
        assert_eq!(v["retry_after_ms"], 1000);
        assert_eq!(refusals(), before + 1);
        assert_eq!(gw.hits(&small), 1, "the source came from the cache");

        // The slow client reads; the budget is given back and the same thumbnail is made.
        let mut answer = Vec::new();
        slow.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        support::until("the budget is given back", 10, || held() == 0).await;
        let r = client().get(thumb(&proxy, &small)).send().await.unwrap();
        assert_eq!(r.status(), 200, "the refusal was not cached");
        assert_eq!(r.headers()["content-type"], "image/png");
        support::until("nothing held after", 10, || held() == 0).await;
    })
    .await;
}

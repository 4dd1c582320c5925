//! `cache.max_fetch_bytes`: bytes held by running fetches are bounded process-wide. A client
//! that stops reading a cacheable item makes its fetch stop keeping it (streamed, not cached)
//! and wait; a request needing a new fetch meanwhile gets 503 `M_LIMIT_EXCEEDED`; when the
//! reader takes its bytes, everything is given back and served again.
//!
//! One test in this binary: the budget's gauge is process-wide.

mod support;

use std::time::Duration;

use support::gateway::GatewayStub;
use support::{bounded, client, json, pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: u64 = 1024 * 1024;

use support::fetch_held_bytes as held;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_budget_fetches_degrade_wait_and_new_ones_are_refused() {
    bounded(60, async {
        let gw = GatewayStub::new();
        let big = pattern(16 * 1024 * 1024, 7);
        let stalled = gw.add(big.clone());
        let other = gw.add(&b"small and later"[..]);
        let (_hs, proxy) = support::proxy_with(
            &gw,
            "[cache]\nmax_fetch_bytes = \"1MiB\"\n[retrieval]\nprobe_interval = \"0s\"",
        )
        .await;

        // A client that asks for 16 MiB (cacheable: under the 64 MiB item limit) and reads
        // nothing for now.
        let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
        let request = format!(
            "GET /_matrix/media/v3/download/s/ipfs_{stalled} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        slow.write_all(request.as_bytes()).await.unwrap();
        support::until("the fetch fills the budget", 5, || held() >= LIMIT).await;
        // It waits there rather than reading all 16 MiB into memory.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(held() < LIMIT + 2 * 1024 * 1024, "held {}", held());

        let url = proxy.url(&format!("/_matrix/media/v3/download/s/ipfs_{other}"));
        let refused = client().get(&url).send().await.unwrap();
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["retry-after"], "1");
        let cache_control = refused.headers()["cache-control"].to_str().unwrap();
        assert!(cache_control.contains("no-store"), "{cache_control}");
        let v = json(&refused.bytes().await.unwrap());
        assert_eq!(v["errcode"], "M_LIMIT_EXCEEDED");
        assert_eq!(v["retry_after_ms"], 1000);
        assert_eq!(gw.hits(&other), 0, "a refused fetch asks no gateway");

        // The slow client reads: every byte arrives, and the budget is given back.
        let mut answer = Vec::new();
        slow.read_to_end(&mut answer).await.unwrap();
        let at = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        assert!(answer[at..] == big[..], "the degraded fetch still delivers every byte");
        support::until("the budget is given back", 5, || held() == 0).await;

        // Served again; the degraded item was not cached, so it is fetched anew.
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap().as_ref(), b"small and later");
        let again = proxy.url(&format!("/_matrix/media/v3/download/s/ipfs_{stalled}"));
        let r = client().get(&again).send().await.unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), big.len());
        assert_eq!(gw.hits(&stalled), 2);
        support::until("and given back again", 5, || held() == 0).await;
    })
    .await;
}

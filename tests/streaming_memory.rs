//! Bodies stream: moving 200 MiB each way through the proxy must not grow memory by anything
//! like 200 MiB. Alone in its own test binary so no other test's allocations blur the figure.

mod support;

use support::homeserver::HomeserverStub;
use support::{bounded, client, json, pattern, ProxyBuilder};

use support::rss_bytes;

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mib_each_way_keeps_rss_flat() {
    bounded(120, async {
        let hs = HomeserverStub::new();
        let proxy = ProxyBuilder::new(hs.start().await).start().await;
        // Warm up pools and allocator arenas with a small transfer first.
        let _ = client()
            .get(proxy.url("/stream/1048576"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let before = rss_bytes();

        let mut response = client()
            .get(proxy.url(&format!("/stream/{}", 200 * MIB)))
            .send()
            .await
            .unwrap();
        let mut received = 0usize;
        while let Some(part) = response.chunk().await.unwrap() {
            received += part.len();
        }
        assert_eq!(received, 200 * MIB);

        let block = bytes::Bytes::from(pattern(MIB, 3));
        let response = support::post_blocks(&proxy, "/count", block, 200).await;
        assert_eq!(json(&response.bytes().await.unwrap())["len"], 200 * MIB);

        support::assert_rss_growth_below(before, 32 * MIB as u64, "moving 400 MiB");
    })
    .await;
}

//! Bodies stream: moving 200 MiB each way through the proxy must not grow memory by anything
//! like 200 MiB. Alone in its own test binary so no other test's allocations blur the figure.

mod support;

use support::{bounded, get, json, pattern};

use support::rss_bytes;

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mib_each_way_keeps_rss_flat() {
    bounded(120, async {
        let (_hs, proxy) = support::plain_proxy().await;
        // Warm up pools and allocator arenas with a small transfer first.
        let _ = get(&proxy, "/stream/1048576").await.bytes().await.unwrap();
        let before = rss_bytes();

        let mut response = get(&proxy, &format!("/stream/{}", 200 * MIB)).await;
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

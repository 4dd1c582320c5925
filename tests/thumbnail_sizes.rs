//! `thumbnails.all_sizes`: a source's first thumbnail makes every configured size from the
//! one decode, as Synapse makes them all when media arrives. Its own binary: the tests read
//! the process-wide render counters, so they run one at a time (`support::serially`).

mod support;

use ipfs_media_proxy::metrics::METRICS;
use support::gateway::GatewayStub;
use support::{client, Proxy};

fn image(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const SIZES: [&str; 5] = [
    "width=800&height=600&method=scale",
    "width=96&height=96&method=crop",
    "width=32&height=32&method=crop",
    "width=320&height=240&method=scale",
    "width=640&height=480&method=scale",
];

async fn thumbnail(proxy: &Proxy, cid: &str, query: &str) -> bytes::Bytes {
    let url = proxy.url(&format!(
        "/_matrix/client/v1/media/thumbnail/s/ipfs_{cid}?{query}"
    ));
    let r = client().get(url).bearer_auth("good").send().await.unwrap();
    assert_eq!(r.status(), 200, "{query}");
    r.bytes().await.unwrap()
}

fn renders() -> (u64, u64, u64) {
    (
        METRICS.thumbnail_renders_started.get(),
        METRICS.thumbnails_rendered.get(),
        METRICS.thumbnails_made_ahead.get(),
    )
}

#[tokio::test]
async fn the_first_thumbnail_makes_every_configured_size_from_one_decode() {
    support::serially(120, async {
        let gw = GatewayStub::new();
        let png = gw.add(image("pattern-1000x500.png"));
        let jpeg = gw.add(image("gray-640x480.jpg"));
        let (_hs, proxy) = support::proxy_with(&gw, "").await;
        let (_hs1, one_at_a_time) =
            support::proxy_with(&gw, "[thumbnails]\nall_sizes = false\n").await;

        // Each source adds itself and five thumbnails to the cache.
        for (n, cid) in [&png, &jpeg].into_iter().enumerate() {
            let before = renders();
            thumbnail(&proxy, cid, SIZES[0]).await;
            let cache = proxy.app.resolver().cache();
            // The source and five thumbnails, the four others after the answer.
            let entries = 6 * (n as u64 + 1);
            support::until("the other sizes are made", 30, || {
                cache.entry_count() == entries
            })
            .await;
            let ahead = renders();
            assert_eq!(ahead.0 - before.0, 1, "one render slot taken");
            assert_eq!(ahead.1 - before.1, 1, "one thumbnail for the request");
            assert_eq!(ahead.2 - before.2, 4, "four made ahead");
            // Every other size is now a cache hit: no render starts.
            let mut made_ahead = Vec::new();
            for query in &SIZES[1..] {
                made_ahead.push(thumbnail(&proxy, cid, query).await);
            }
            assert_eq!(renders(), ahead, "no render for the sizes made ahead");
            assert_eq!(cache.entry_count(), entries);
            assert_eq!(gw.hits(cid), 1);

            // Made alone, each size is a render of its own; a PNG source (no DCT scaling)
            // gives the very same bytes either way, a JPEG the same dimensions.
            for (query, ahead) in SIZES[1..].iter().zip(&made_ahead) {
                let before = renders();
                let alone = thumbnail(&one_at_a_time, cid, query).await;
                assert_eq!(renders().0 - before.0, 1, "{query}");
                let dims = |b: &[u8]| {
                    let i = image::load_from_memory(b).unwrap();
                    (i.width(), i.height())
                };
                assert_eq!(dims(&alone), dims(ahead), "{query}");
                if cid == &png {
                    assert_eq!(&alone, ahead, "{query}");
                }
            }
            assert_eq!(
                one_at_a_time.app.resolver().cache().entry_count(),
                5 * (n as u64 + 1),
                "the source and the four sizes asked for, nothing more"
            );
        }
    })
    .await;
}

/// A request for an animated thumbnail makes only itself: the sizes made ahead are stills.
#[tokio::test]
async fn an_animated_request_makes_only_its_own_size() {
    support::serially(120, async {
        let gw = GatewayStub::new();
        let png = gw.add(image("pattern-1000x500.png"));
        let (_hs, proxy) = support::proxy_with(&gw, "").await;
        let before = renders();
        thumbnail(&proxy, &png, "width=96&height=96&method=crop&animated=true").await;
        let after = renders();
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
        assert_eq!(after.2, before.2, "nothing made ahead");
        assert_eq!(proxy.app.resolver().cache().entry_count(), 2);
    })
    .await;
}

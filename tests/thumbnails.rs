//! Thumbnails of ipfs images on every thumbnail route, from real encoder output
//! (tests/fixtures/images, made with Pillow).

mod support;

use std::sync::Arc;

use support::gateway::GatewayStub;
use support::homeserver::HomeserverStub;
use support::{bounded, client, Proxy};

fn image(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

async fn setup(extra: &str) -> (HomeserverStub, GatewayStub, Proxy) {
    let gw = GatewayStub::new();
    let (hs, proxy) = support::proxy_with(&gw, extra).await;
    (hs, gw, proxy)
}

/// These tests count cache entries: without the other sizes made ahead, one render makes one.
const ONE_SIZE_AT_A_TIME: &str = "[thumbnails]\nall_sizes = false\n";

fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).expect("a decodable thumbnail");
    (img.width(), img.height())
}

#[tokio::test]
async fn element_style_requests_get_synapse_sized_thumbnails() {
    bounded(60, async {
        let (_hs, gw, proxy) = setup("").await;
        let png = gw.add(image("pattern-1000x500.png"));
        let cases = [
            ("width=800&height=600&method=scale", "image/png", (800, 400)),
            ("width=96&height=96&method=crop", "image/png", (96, 96)),
            ("width=32&height=32&method=crop", "image/png", (32, 32)),
            ("width=300&height=300", "image/png", (320, 160)),
        ];
        for (query, content_type, dims) in cases {
            for prefix in ["/_matrix/media/v3", "/_matrix/client/v1/media"] {
                let r = support::get_as(
                    &proxy,
                    &format!("{prefix}/thumbnail/localhost/ipfs:{png}?{query}"),
                    "good",
                )
                .await;
                assert_eq!(r.status(), 200, "{prefix} {query}");
                let h = r.headers().clone();
                assert_eq!(h["content-type"], content_type);
                assert_eq!(h["content-disposition"], "inline");
                assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
                assert_eq!(h["cross-origin-resource-policy"], "cross-origin");
                assert_eq!(h["access-control-allow-origin"], "*");
                let etag = h["etag"].to_str().unwrap();
                assert_ne!(etag, format!("\"{png}\""), "differs from the original's");
                assert!(etag.contains(&png.to_string()));
                assert_eq!(dimensions(&r.bytes().await.unwrap()), dims, "{query}");
            }
        }
        assert_eq!(gw.hits(&png), 1, "the source is fetched once");
    })
    .await;
}

#[tokio::test]
async fn orientation_type_and_animation() {
    bounded(60, async {
        let (_hs, gw, proxy) = setup("").await;
        let jpeg = gw.add(image("orientation6-400x200.jpg"));
        let gif = gw.add(image("animated-120x80.gif"));
        let thumb = |cid: &str, q: &str| {
            proxy.url(&format!("/_matrix/media/v3/thumbnail/s/ipfs:{cid}?{q}"))
        };

        let r = client()
            .get(thumb(&jpeg, "width=320&height=240"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "image/jpeg", "JPEG gives JPEG");
        let (w, h) = dimensions(&r.bytes().await.unwrap());
        assert!(
            h > w,
            "EXIF orientation 6 makes a portrait thumbnail: {w}x{h}"
        );

        let r = client()
            .get(thumb(&gif, "width=96&height=96&method=crop&animated=true"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], "image/gif");
        let bytes = r.bytes().await.unwrap();
        let frames = image::AnimationDecoder::into_frames(
            image::codecs::gif::GifDecoder::new(std::io::Cursor::new(bytes.to_vec())).unwrap(),
        )
        .count();
        assert!(frames > 1, "animation kept: {frames} frames");

        let r = client()
            .get(thumb(&gif, "width=96&height=96&method=crop"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.headers()["content-type"],
            "image/png",
            "GIF gives a still PNG"
        );
    })
    .await;
}

#[tokio::test]
async fn what_cannot_be_thumbnailed_answers_like_synapse() {
    bounded(60, async {
        let (_hs, gw, proxy) = setup("").await;
        let text = gw.add(&b"just some text, not an image"[..]);
        let bomb = gw.add(image("bomb-20000x20000.png"));
        let corrupt = gw.add(image("truncated.jpg"));
        let png = gw.add(image("pattern-1000x500.png"));
        let thumb = |cid: &str, q: &str| {
            proxy.url(&format!("/_matrix/media/v3/thumbnail/s/ipfs:{cid}?{q}"))
        };
        for cid in [&text, &bomb, &corrupt] {
            let started = std::time::Instant::now();
            let r = client()
                .get(thumb(cid, "width=96&height=96&method=crop"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "{cid}");
            assert_eq!(
                r.headers()["cache-control"],
                "no-cache, no-store, must-revalidate"
            );
            assert_eq!(support::errcode(r).await, "M_UNKNOWN");
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }
        for (query, errcode) in [
            ("height=96", "M_MISSING_PARAM"),
            ("width=96", "M_MISSING_PARAM"),
            ("width=x&height=96", "M_INVALID_PARAM"),
            ("width=96&height=96&method=stretch", "M_INVALID_PARAM"),
        ] {
            let r = client().get(thumb(&png, query)).send().await.unwrap();
            assert_eq!(r.status(), 400, "{query}");
            assert_eq!(support::errcode(r).await, errcode, "{query}");
        }
    })
    .await;
}

#[tokio::test]
async fn thumbnails_are_cached_and_made_once_under_concurrency() {
    bounded(60, async {
        let (_hs, gw, proxy) = setup(ONE_SIZE_AT_A_TIME).await;
        let png = gw.add(image("pattern-1000x500.png"));
        let url = Arc::new(proxy.url(&format!(
            "/_matrix/media/v3/thumbnail/s/ipfs:{png}?width=640&height=480"
        )));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let url = Arc::clone(&url);
            tasks.push(tokio::spawn(async move {
                client()
                    .get(url.as_str())
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            }));
        }
        let mut bodies = Vec::new();
        for t in tasks {
            bodies.push(t.await.unwrap());
        }
        assert!(bodies.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(gw.hits(&png), 1);
        let cache = proxy.app.resolver().cache();
        // The source and exactly one thumbnail.
        assert_eq!(cache.entry_count(), 2);
    })
    .await;
}

/// Synapse answers 30x30 and 32x32 crop requests with its one 32x32 thumbnail; so does the
/// proxy, and it holds that thumbnail once (it used to make and keep one per request size).
#[tokio::test]
async fn requests_that_map_to_one_configured_size_share_its_thumbnail() {
    bounded(60, async {
        let (_hs, gw, proxy) = setup(ONE_SIZE_AT_A_TIME).await;
        let png = gw.add(image("pattern-1000x500.png"));
        let get = |w: u32| {
            let url = proxy.url(&format!(
                "/_matrix/media/v3/thumbnail/s/ipfs:{png}?width={w}&height={w}&method=crop"
            ));
            async move {
                let r = client().get(url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap()
            }
        };
        let a = get(32).await;
        let b = get(30).await;
        assert_eq!(dimensions(&a), (32, 32));
        assert_eq!(a, b);
        let cache = proxy.app.resolver().cache();
        // The source and one thumbnail.
        assert_eq!(cache.entry_count(), 2);
        // Another size of the same source is a thumbnail of its own.
        assert_eq!(dimensions(&get(96).await), (96, 96));
        assert_eq!(cache.entry_count(), 3);
        assert_eq!(gw.hits(&png), 1);
    })
    .await;
}

/// A bad parameter is a 400 whether or not the thumbnail is cached (the e2e suite found a
/// cached thumbnail answering `timeout_ms=abc` with a 200).
#[tokio::test]
async fn a_bad_timeout_is_refused_even_when_the_thumbnail_is_cached() {
    bounded(60, async {
        let (_hs, gw, proxy) = setup("").await;
        let png = gw.add(image("pattern-1000x500.png"));
        let url = proxy.url(&format!(
            "/_matrix/media/v3/thumbnail/s/ipfs:{png}?width=96&height=96&method=crop"
        ));
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        let r = client()
            .get(format!("{url}&timeout_ms=abc"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(support::errcode(r).await, "M_INVALID_PARAM");
    })
    .await;
}

#[tokio::test]
async fn dynamic_mode_makes_the_exact_size() {
    bounded(60, async {
        let (_hs, gw, proxy) = setup("[thumbnails]\ndynamic = true").await;
        let png = gw.add(image("pattern-1000x500.png"));
        let r = support::get(
            &proxy,
            &format!("/_matrix/media/v3/thumbnail/s/ipfs:{png}?width=50&height=50&method=crop"),
        )
        .await;
        assert_eq!(dimensions(&r.bytes().await.unwrap()), (50, 50));
    })
    .await;
}

#[tokio::test]
async fn federation_thumbnail_is_multipart() {
    bounded(60, async {
        let (_hs, gw, proxy) = setup("").await;
        let png = gw.add(image("pattern-1000x500.png"));
        let r = client()
            .get(proxy.url(&format!("/_matrix/federation/v1/media/thumbnail/ipfs:{png}?width=96&height=96&method=crop")))
            .header("authorization", "X-Matrix origin=\"r.example\",destination=\"localhost\",key=\"ed25519:a\",sig=\"good\"")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        let boundary = content_type.split("boundary=").nth(1).unwrap().to_owned();
        let mut multipart = multer::Multipart::new(r.bytes_stream(), boundary);
        let first = multipart.next_field().await.unwrap().unwrap();
        assert_eq!(first.bytes().await.unwrap().as_ref(), b"{}");
        let second = multipart.next_field().await.unwrap().unwrap();
        assert_eq!(second.headers()["content-type"], "image/png");
        assert_eq!(dimensions(&second.bytes().await.unwrap()), (96, 96));
    })
    .await;
}

#[tokio::test]
async fn thumbnails_can_be_left_to_the_homeserver() {
    bounded(30, async {
        let (hs, gw, proxy) = setup("[thumbnails]\nenabled = false").await;
        let png = gw.add(image("one-1x1.png"));
        let path = format!("/_matrix/media/v3/thumbnail/s/ipfs:{png}?width=32&height=32");
        let r = support::get(&proxy, &path).await;
        assert_eq!(r.status(), 201, "the homeserver answered");
        assert_eq!(hs.last().target, path);
    })
    .await;
}

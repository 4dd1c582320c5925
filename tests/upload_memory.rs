//! Uploads stream: storing 128 MiB on IPFS through the proxy must not grow memory by anything
//! like 128 MiB (nor by the 64 MiB the issue allows a 1 GiB upload; debug-build hashing makes
//! a larger test slow). Alone in its own test binary so no other test's allocations blur the figure.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use ipfs_media_proxy::ipfs::import::{Importer, Profile};

use support::store::text;
use support::{bounded, json, pattern, StubBody};

use support::rss_bytes;

const MIB: usize = 1024 * 1024;

/// The bytes uploaded: `len / MIB` times the same MiB.
fn blocks(len: usize) -> impl Iterator<Item = Bytes> {
    std::iter::repeat_n(Bytes::from(pattern(MIB, 5)), len / MIB)
}

/// The CID of `blocks(len)`, by the crate's importer (whose CIDs the unit tests check against
/// a real node).
fn cid_of(len: usize) -> String {
    let mut importer = Importer::new(Profile::UnixfsV1_2025);
    for block in blocks(len) {
        importer.update(&block);
    }
    importer.finish().cid.to_string()
}

/// A Kubo `add` that keeps nothing: it counts what it reads and answers the CID it is told.
async fn add(req: Request<Incoming>, seen: Arc<Mutex<(u64, String)>>) -> Response<StubBody> {
    let cid = support::store::count_file(req, &seen).await;
    text(
        StatusCode::OK,
        &format!("{{\"Name\":\"upload\",\"Hash\":\"{cid}\"}}\n"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_128_mib_upload_keeps_rss_flat() {
    bounded(300, async {
        const LEN: usize = 128 * MIB;
        let seen = Arc::new(Mutex::new((0u64, cid_of(2 * MIB))));
        let counter = Arc::clone(&seen);
        let (proxy, client) = support::store::proxy_before(
            move |req| add(req, Arc::clone(&counter)),
            "max_bytes = \"1GiB\"",
        )
        .await;
        let upload = |len: usize| {
            let blocks = blocks(len).map(Ok::<_, std::io::Error>);
            client
                .post(proxy.url("/_matrix/media/v3/upload"))
                .bearer_auth("good")
                .header("content-length", len.to_string())
                .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    blocks,
                )))
                .send()
        };
        // Warm up pools and allocator arenas first (small enough to be cached).
        let r = upload(2 * MIB).await.unwrap();
        assert_eq!(r.status(), 200);
        seen.lock().unwrap().1 = cid_of(LEN);
        let before = rss_bytes();
        let r = upload(LEN).await.unwrap();
        let status = r.status();
        let answer = json(&r.bytes().await.unwrap());
        assert_eq!(status, 200, "{answer}");
        assert_eq!(seen.lock().unwrap().0, LEN as u64);
        assert!(answer["content_uri"]
            .as_str()
            .unwrap()
            .ends_with(&cid_of(LEN)));
        support::assert_rss_growth_below(before, 64 * MIB as u64, "storing 128 MiB");
    })
    .await;
}

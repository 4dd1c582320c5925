//! CAR pins stream: a CAR of `upload.max_bytes` (64 MiB of distinct 1 MiB leaves) is read,
//! verified, spooled, walked and imported without the proxy holding it: RSS grows by far
//! less than the CAR. Alone in its own test binary so no other test's allocations blur the
//! figure; the client generates the CAR as it sends it, and the stub store only counts.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cid::multihash::Multihash;
use cid::Cid;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use ipfs_media_proxy::ipfs::unixfs::FileLink;
use sha2::Digest as _;

use support::store::text;
use support::trustless::encode::{encode_file_node, encode_varint};
use support::{bounded, json, pattern, rss_bytes, StubBody};

const MIB: usize = 1024 * 1024;

fn sha256_cid(codec: u64, block: &[u8]) -> Cid {
    Cid::new_v1(
        codec,
        Multihash::wrap(0x12, &sha2::Sha256::digest(block)).unwrap(),
    )
}

fn leaf(i: usize) -> Vec<u8> {
    // Odd seeds: `pattern` ignores the lowest bit.
    pattern(MIB, 101 + 2 * i as u64)
}

fn section(cid: &Cid, block: &[u8]) -> Bytes {
    let cid = cid.to_bytes();
    let mut out = Vec::with_capacity(block.len() + 48);
    encode_varint((cid.len() + block.len()) as u64, &mut out);
    out.extend_from_slice(&cid);
    out.extend_from_slice(block);
    Bytes::from(out)
}

/// The root and the CAR of `leaves` distinct leaves, the CAR made lazily as it is sent.
fn car(
    leaves: usize,
) -> (
    Cid,
    impl futures_util::Stream<Item = Result<Bytes, std::io::Error>>,
) {
    let links: Vec<FileLink> = (0..leaves)
        .map(|i| FileLink {
            cid: sha256_cid(0x55, &leaf(i)),
            blocksize: MIB as u64,
        })
        .collect();
    let root_block = encode_file_node(&[], &links);
    let root = sha256_cid(0x70, &root_block);
    let header = support::trustless::encode::encode_car(&[root], std::iter::empty());
    let head = [Bytes::from(header), section(&root, &root_block)];
    let stream = futures_util::stream::iter(head.into_iter().map(Ok)).chain(
        futures_util::stream::iter(0..leaves).map(move |i| Ok(section(&links[i].cid, &leaf(i)))),
    );
    (root, stream)
}

use futures_util::StreamExt;

/// A Kubo RPC that keeps nothing: `dag/import` counts its bytes and answers the root it is
/// told; nothing is pinned before.
async fn store(req: Request<Incoming>, seen: Arc<Mutex<(u64, String)>>) -> Response<StubBody> {
    match req.uri().path() {
        "/api/v0/pin/ls" => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "{\"Message\":\"not pinned\"}",
        ),
        "/api/v0/dag/import" => {
            let root = support::store::count_file(req, &seen).await;
            text(
                StatusCode::OK,
                &format!("{{\"Root\":{{\"Cid\":{{\"/\":\"{root}\"}},\"PinErrorMsg\":\"\"}}}}\n"),
            )
        }
        _ => text(StatusCode::OK, "{}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_car_pin_of_max_bytes_keeps_rss_flat() {
    bounded(300, async {
        const LEAVES: usize = 64;
        let seen = Arc::new(Mutex::new((0u64, String::new())));
        let counter = Arc::clone(&seen);
        let spool = tempfile::tempdir().unwrap();
        let (proxy, client) = support::store::proxy_before(
            move |req| store(req, Arc::clone(&counter)),
            &format!("max_bytes = \"64MiB\"\nspool_dir = {:?}", spool.path()),
        )
        .await;
        let pin = |leaves: usize| {
            let (root, body) = car(leaves);
            seen.lock().unwrap().1 = root.to_string();
            let request = client
                .post(proxy.url(&format!("/_matrix/media/v3/pin/{root}")))
                .bearer_auth("good")
                .header("content-type", "application/vnd.ipld.car")
                .body(reqwest::Body::wrap_stream(body));
            async move {
                let r = request.send().await.unwrap();
                let status = r.status();
                (root, status, json(&r.bytes().await.unwrap()))
            }
        };
        // Warm up pools and allocator arenas first.
        let (_, status, answer) = pin(2).await;
        assert_eq!(status, 200, "{answer}");
        let before = rss_bytes();
        // The peak while the pin runs, not only what is left after it.
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(before));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
            tokio::spawn(async move {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    peak.fetch_max(rss_bytes(), std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
        };
        let (root, status, answer) = pin(LEAVES).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        sampler.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert!(answer["content_uri"]
            .as_str()
            .unwrap()
            .ends_with(&root.to_string()));
        let imported = seen.lock().unwrap().0;
        assert!(imported > (LEAVES * MIB) as u64, "{imported}");
        let growth = peak.load(std::sync::atomic::Ordering::SeqCst) - before;
        eprintln!("peak RSS growth: {} MiB", growth >> 20);
        assert!(
            growth < 24 * MIB as u64,
            "RSS peaked {} MiB above its start while pinning a 64 MiB CAR",
            growth >> 20
        );
        support::assert_rss_growth_below(before, 24 * MIB as u64, "pinning a 64 MiB CAR");
        // The spool file was unlinked from the start: nothing is left behind.
        assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
    })
    .await;
}

//! Uploads stored on IPFS (`[upload]`), against stub stores that speak Kubo's RPC and IPFS
//! Cluster's REST API: honest, lying about the CID, failing mid-add, stalling.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;

use support::gateway::{raw_cid, GatewayStub};
use support::homeserver::HomeserverStub;
use support::store::{arg, first_part, post_as, text};
use support::{bounded, client, json, Proxy, ProxyBuilder, StubBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answers the raw-block CID of what it received (right for files of one chunk).
    Honest,
    /// Pins and answers the CID of other bytes.
    Lie,
    /// Reads the first part of the file, then answers 500.
    FailMidAdd,
    /// Reads everything, then never answers.
    Stall,
    /// Lies about the CID, and answers the unpin that follows with its headers and the
    /// first byte of its body, then nothing more.
    LieThenStallUnpin,
}

#[derive(Clone)]
struct StoreStub {
    mode: Arc<Mutex<Mode>>,
    /// Query strings of every add.
    adds: Arc<Mutex<Vec<String>>>,
    /// File bytes of every add that read to the end.
    files: Arc<Mutex<Vec<Bytes>>>,
    pinned: Arc<Mutex<BTreeSet<String>>>,
    unpins: Arc<Mutex<Vec<String>>>,
    cluster: bool,
}

const LIE: &str = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

impl StoreStub {
    fn new(mode: Mode, cluster: bool) -> Self {
        Self {
            mode: Arc::new(Mutex::new(mode)),
            adds: Arc::default(),
            files: Arc::default(),
            pinned: Arc::default(),
            unpins: Arc::default(),
            cluster,
        }
    }

    fn pinned(&self) -> BTreeSet<String> {
        self.pinned.lock().unwrap().clone()
    }

    fn unpins(&self) -> Vec<String> {
        self.unpins.lock().unwrap().clone()
    }

    fn adds(&self) -> Vec<String> {
        self.adds.lock().unwrap().clone()
    }

    async fn start(&self) -> std::net::SocketAddr {
        support::serve_stub(self, |stub, req| async move { stub.answer(req).await }).await
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<StubBody> {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let add_path = if self.cluster { "/add" } else { "/api/v0/add" };
        if path == add_path && req.method() == "POST" {
            self.adds.lock().unwrap().push(query);
            return self.add(req).await;
        }
        // Whether a CID is pinned: Kubo's `pin/ls`, Cluster's `allocations/{cid}`.
        let listed = if self.cluster {
            path.strip_prefix("/allocations/")
                .filter(|_| req.method() == "GET")
                .map(str::to_owned)
        } else {
            (path == "/api/v0/pin/ls").then(|| arg(&query))
        };
        if let Some(cid) = listed {
            return if self.pinned.lock().unwrap().contains(&cid) {
                text(
                    StatusCode::OK,
                    &format!("{{\"Keys\":{{\"{cid}\":{{\"Type\":\"recursive\"}}}}}}"),
                )
            } else if self.cluster {
                text(
                    StatusCode::NOT_FOUND,
                    "{\"code\":404,\"message\":\"not found\"}",
                )
            } else {
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("{{\"Message\":\"path '{cid}' is not pinned\",\"Code\":0}}"),
                )
            };
        }
        let unpinned = if self.cluster {
            path.strip_prefix("/pins/")
                .filter(|_| req.method() == "DELETE")
                .map(str::to_owned)
        } else {
            (path == "/api/v0/pin/rm").then(|| arg(&query))
        };
        if let Some(cid) = unpinned {
            self.unpins.lock().unwrap().push(cid.clone());
            if *self.mode.lock().unwrap() == Mode::LieThenStallUnpin {
                let first = futures_util::stream::once(async {
                    Ok::<_, std::io::Error>(hyper::body::Frame::data(Bytes::from_static(b"{")))
                });
                let body = first.chain(futures_util::stream::pending());
                return Response::new(http_body_util::BodyExt::boxed(
                    http_body_util::StreamBody::new(body),
                ));
            }
            let was = self.pinned.lock().unwrap().remove(&cid);
            return text(
                if was {
                    StatusCode::OK
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                },
                if was {
                    "{\"Pins\":[]}"
                } else {
                    "{\"Message\":\"not pinned or pinned indirectly\"}"
                },
            );
        }
        text(StatusCode::NOT_FOUND, "404 page not found")
    }

    async fn add(&self, req: Request<Incoming>) -> Response<StubBody> {
        let mode = *self.mode.lock().unwrap();
        let Ok(Some(mut field)) = first_part(req).await else {
            return text(StatusCode::BAD_REQUEST, "no file");
        };
        assert_eq!(field.name(), Some("file"));
        let mut file = Vec::new();
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    file.extend_from_slice(&chunk);
                    if mode == Mode::FailMidAdd && file.len() >= 1000 {
                        return text(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "{\"Message\":\"disk full\",\"Code\":0,\"Type\":\"error\"}",
                        );
                    }
                }
                Ok(None) => break,
                // The proxy aborted the add: nothing is pinned.
                Err(_) => return text(StatusCode::BAD_REQUEST, "truncated"),
            }
        }
        let file = Bytes::from(file);
        self.files.lock().unwrap().push(file.clone());
        let cid = match mode {
            Mode::Lie | Mode::LieThenStallUnpin => LIE.to_owned(),
            _ => raw_cid(&file).to_string(),
        };
        if mode == Mode::Stall {
            // Pinned, but the answer never comes.
            self.pinned.lock().unwrap().insert(cid);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            unreachable!();
        }
        self.pinned.lock().unwrap().insert(cid.clone());
        let line = if self.cluster {
            format!(
                "{{\"name\":\"upload\",\"cid\":{{\"/\":\"{cid}\"}},\"size\":{}}}\n",
                file.len()
            )
        } else {
            format!(
                "{{\"Name\":\"upload\",\"Hash\":\"{cid}\",\"Size\":\"{}\"}}\n",
                file.len()
            )
        };
        text(StatusCode::OK, &line)
    }
}

type Setup = support::store::Setup<GatewayStub, StoreStub>;

async fn setup(mode: Mode, cluster: bool, upload_lines: &str, extra: &str) -> Setup {
    let hs = HomeserverStub::new();
    let gw = GatewayStub::new();
    let store = StoreStub::new(mode, cluster);
    let store_addr = store.start().await;
    let kind = if cluster { "cluster" } else { "kubo" };
    let builder = ProxyBuilder::new(hs.start().await)
        .gateway(gw.start().await)
        .toml(&format!(
            "[upload]\nenabled = true\nmax_bytes = \"4MiB\"\nstore_timeout = \"400ms\"\n{upload_lines}\n\
             [upload.store]\nkind = \"{kind}\"\nurl = \"http://{store_addr}\"\n\
             authorization = \"Bearer store-secret\"\nreplication_min = 2\nreplication_max = 3\n{extra}"
        ));
    Setup::start(hs, gw, store, builder).await
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR not really a picture, but it sniffs as one";

async fn upload(
    proxy: &Proxy,
    token: Option<&str>,
    bytes: Vec<u8>,
) -> (StatusCode, serde_json::Value) {
    post_as(
        proxy,
        "/_matrix/media/v3/upload?filename=a.png",
        token,
        "image/png",
        bytes,
    )
    .await
}

#[tokio::test]
async fn an_upload_is_stored_pinned_cached_and_answered_as_synapse_does() {
    bounded(30, async {
        let s = setup(Mode::Honest, false, "", "").await;
        let cid = raw_cid(PNG).to_string();
        let (status, answer) = upload(&s.proxy, Some("good"), PNG.to_vec()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["content_uri"], format!("mxc://test/ipfs_{cid}"));
        assert_eq!(s.store.files.lock().unwrap()[0].as_ref(), PNG);
        assert_eq!(s.store.pinned(), BTreeSet::from([cid.clone()]));
        // The profile's import parameters, unixfs-v1-2025 by default.
        let query = &s.store.adds()[0];
        for param in [
            "cid-version=1",
            "raw-leaves=true",
            "hash=sha2-256",
            "chunker=size-1048576",
            "max-file-links=1024",
            "trickle=false",
            "wrap-with-directory=false",
            "pin=true",
        ] {
            assert!(query.split('&').any(|p| p == param), "{param} in {query}");
        }
        // The room's first download needs no gateway.
        let r = client()
            .get(
                s.proxy
                    .url(&format!("/_matrix/media/v3/download/test/ipfs_{cid}")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "image/png");
        assert_eq!(r.bytes().await.unwrap().as_ref(), PNG);
        assert_eq!(s.gw.hits(&cid), 0);
        // The same bytes again: the same answer, one pin.
        let (status, again) = upload(&s.proxy, Some("good"), PNG.to_vec()).await;
        assert_eq!(status, 200);
        assert_eq!(again, answer);
        assert_eq!(s.store.pinned().len(), 1);
        assert!(s.store.unpins().is_empty());
        // Nothing of it went to the homeserver but the token check.
        assert!(s
            .hs
            .recorded()
            .iter()
            .all(|r| !r.target.contains("/upload")));
    })
    .await;
}

#[tokio::test]
async fn every_upload_version_and_the_msc2706_form_with_the_older_profile() {
    bounded(30, async {
        let s = setup(
            Mode::Honest,
            false,
            "media_id_form = \"msc2706\"\nprofile = \"kubo-v1-256k\"",
            "",
        )
        .await;
        for version in ["r0", "v1", "v3"] {
            let r = client()
                .post(s.proxy.url(&format!("/_matrix/media/{version}/upload")))
                .bearer_auth("good")
                .body(format!("file for {version}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let answer = json(&r.bytes().await.unwrap());
            let cid = raw_cid(format!("file for {version}").as_bytes());
            assert_eq!(answer["content_uri"], format!("mxc://test/ipfs:{cid}"));
        }
        let query = &s.store.adds()[0];
        assert!(query.contains("chunker=size-262144"), "{query}");
        assert!(query.contains("max-file-links=174"), "{query}");
    })
    .await;
}

#[tokio::test]
async fn a_cluster_store_gets_the_replication_factors() {
    bounded(30, async {
        let s = setup(Mode::Honest, true, "", "").await;
        let (status, answer) = upload(&s.proxy, Some("good"), PNG.to_vec()).await;
        assert_eq!(status, 200, "{answer}");
        let query = &s.store.adds()[0];
        assert!(query.contains("replication-min=2"), "{query}");
        assert!(query.contains("replication-max=3"), "{query}");
        assert!(query.contains("raw-leaves=true"), "{query}");
        assert_eq!(s.store.pinned(), BTreeSet::from([raw_cid(PNG).to_string()]));
    })
    .await;
}

/// A store that reports another CID is misconfigured: 502, its pin removed, nothing cached.
#[tokio::test]
async fn a_store_that_lies_about_the_cid_is_a_502() {
    for cluster in [false, true] {
        bounded(30, async {
            let s = setup(Mode::Lie, cluster, "", "").await;
            let (status, answer) = upload(&s.proxy, Some("good"), PNG.to_vec()).await;
            assert_eq!(status, 502);
            assert_eq!(answer["errcode"], "M_UNKNOWN");
            assert!(answer.get("content_uri").is_none());
            assert_eq!(s.store.unpins(), [LIE]);
            assert!(s.store.pinned().is_empty());
            assert_not_cached(&s, &raw_cid(PNG).to_string()).await;
        })
        .await;
    }
}

/// An unpin whose answer stalls after its headers is bounded by `store_timeout` too: the
/// client still gets its 502 at once.
#[tokio::test]
async fn an_unpin_whose_answer_stalls_is_bounded_by_the_store_timeout() {
    bounded(30, async {
        let s = setup(Mode::LieThenStallUnpin, false, "", "").await;
        let started = Instant::now();
        let (status, answer) = upload(&s.proxy, Some("good"), PNG.to_vec()).await;
        assert_eq!(status, 502);
        assert_eq!(answer["errcode"], "M_UNKNOWN");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert_eq!(s.store.unpins(), [LIE]);
    })
    .await;
}

async fn assert_not_cached(s: &Setup, cid: &str) {
    let before = s.gw.hits(cid);
    let r = client()
        .get(
            s.proxy
                .url(&format!("/_matrix/media/v3/download/test/ipfs_{cid}")),
        )
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200);
    assert!(s.gw.hits(cid) > before, "the download went to a gateway");
}

#[tokio::test]
async fn a_store_failing_mid_add_is_a_502_and_pins_nothing() {
    bounded(30, async {
        let s = setup(Mode::FailMidAdd, false, "", "").await;
        let bytes = support::pattern(300_000, 7);
        let (status, answer) = upload(&s.proxy, Some("good"), bytes.clone()).await;
        assert_eq!(status, 502);
        assert_eq!(answer["errcode"], "M_UNKNOWN");
        assert!(s.store.pinned().is_empty());
        assert_not_cached(&s, &raw_cid(&bytes).to_string()).await;
    })
    .await;
}

/// Reads everything, pins, never answers: after `store_timeout` the client gets a 502 and
/// what the store pinned is unpinned.
#[tokio::test]
async fn a_stalling_store_times_out_and_is_unpinned() {
    bounded(30, async {
        let s = setup(Mode::Stall, false, "", "").await;
        let started = Instant::now();
        let (status, answer) = upload(&s.proxy, Some("good"), PNG.to_vec()).await;
        assert_eq!(status, 502);
        assert_eq!(answer["errcode"], "M_UNKNOWN");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(s.store.unpins(), [raw_cid(PNG).to_string()]);
        assert!(s.store.pinned().is_empty());
    })
    .await;
}

/// The same stall, but the CID was pinned before this upload (another user's identical
/// file): the failed upload must not remove that pin.
#[tokio::test]
async fn a_failed_upload_never_unpins_what_was_pinned_before_it() {
    for cluster in [false, true] {
        bounded(30, async {
            let s = setup(Mode::Stall, cluster, "", "").await;
            let cid = raw_cid(PNG).to_string();
            s.store.pinned.lock().unwrap().insert(cid.clone());
            let (status, answer) = upload(&s.proxy, Some("good"), PNG.to_vec()).await;
            assert_eq!(status, 502, "{answer}");
            assert!(s.store.unpins().is_empty(), "{:?}", s.store.unpins());
            assert_eq!(s.store.pinned(), BTreeSet::from([cid]));
        })
        .await;
    }
}

#[tokio::test]
async fn too_large_by_length_and_by_stream() {
    bounded(30, async {
        let s = setup(Mode::Honest, false, "", "").await;
        let big = support::pattern(4 * 1024 * 1024 + 1, 3);
        // By Content-Length: refused before any byte is read or sent on.
        let (status, answer) = upload(&s.proxy, Some("good"), big.clone()).await;
        assert_eq!(status, 413);
        assert_eq!(answer["errcode"], "M_TOO_LARGE");
        assert!(s.store.adds().is_empty());
        // Without a length (chunked): found while streaming, the add aborted.
        let chunks: Vec<Result<Bytes, std::io::Error>> = big
            .chunks(64 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let r = client()
            .post(s.proxy.url("/_matrix/media/v3/upload"))
            .bearer_auth("good")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(json(&r.bytes().await.unwrap())["errcode"], "M_TOO_LARGE");
        assert_eq!(s.store.adds().len(), 1);
        assert!(
            s.store.files.lock().unwrap().is_empty(),
            "the add never completed"
        );
        assert!(s.store.pinned().is_empty());
    })
    .await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_ms() {
    bounded(30, async {
        let s = setup(
            Mode::Honest,
            false,
            "[upload.rate]\nrequests = 2\nwindow = \"1h\"",
            "",
        )
        .await;
        for n in 0..2 {
            let (status, _) = upload(&s.proxy, Some("good"), vec![n; 10]).await;
            assert_eq!(status, 200);
        }
        let (status, answer) = upload(&s.proxy, Some("good"), vec![9; 10]).await;
        assert_eq!(status, 429);
        assert_eq!(answer["errcode"], "M_LIMIT_EXCEEDED");
        let retry = answer["retry_after_ms"].as_u64().unwrap();
        assert!(retry > 3_500_000 && retry <= 3_600_000, "{retry}");
        assert_eq!(s.store.adds().len(), 2);
    })
    .await;
}

/// Bytes per window: refused from `Content-Length` when it says so, else mid-stream.
#[tokio::test]
async fn the_byte_rate_is_enforced_by_length_and_while_streaming() {
    bounded(30, async {
        let s = setup(
            Mode::Honest,
            false,
            "[upload.rate]\nbytes = \"3000B\"\nwindow = \"1h\"",
            "",
        )
        .await;
        let (status, _) = upload(&s.proxy, Some("good"), vec![1; 2000]).await;
        assert_eq!(status, 200);
        let (status, answer) = upload(&s.proxy, Some("good"), vec![2; 1500]).await;
        assert_eq!(status, 429);
        assert!(answer["retry_after_ms"].as_u64().unwrap() > 3_500_000);
        assert_eq!(s.store.adds().len(), 1, "refused before the store");
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..3).map(|n| Ok(Bytes::from(vec![n; 500]))).collect();
        let r = client()
            .post(s.proxy.url("/_matrix/media/v3/upload"))
            .bearer_auth("good")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        let answer = json(&r.bytes().await.unwrap());
        assert_eq!(answer["errcode"], "M_LIMIT_EXCEEDED");
        assert!(answer["retry_after_ms"].as_u64().is_some());
        assert_eq!(s.store.pinned().len(), 1, "only the first upload");
        // What is left of the window still serves a small upload.
        let (status, _) = upload(&s.proxy, Some("good"), vec![3; 900]).await;
        assert_eq!(status, 200);
    })
    .await;
}

/// A body the test feeds chunk by chunk, so that uploads overlap.
fn fed_body() -> (tokio::sync::mpsc::Sender<Vec<u8>>, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(Bytes::from(chunk)), rx))
    });
    (tx, reqwest::Body::wrap_stream(stream))
}

fn fed_upload(
    proxy: &Proxy,
    length: Option<u64>,
) -> (
    tokio::sync::mpsc::Sender<Vec<u8>>,
    tokio::task::JoinHandle<(u16, serde_json::Value)>,
) {
    let (tx, body) = fed_body();
    let mut request = client()
        .post(proxy.url("/_matrix/media/v3/upload"))
        .bearer_auth("good")
        .body(body);
    if let Some(length) = length {
        request = request.header("content-length", length);
    }
    let task = tokio::spawn(async move {
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        (status, json(&r.bytes().await.unwrap()))
    });
    (tx, task)
}

/// Uploads running at the same time share one byte allowance: a second upload cannot take
/// what the first announced, and bytes streamed without a length are charged as they
/// arrive, so together they never store more than `upload.rate.bytes`.
#[tokio::test]
async fn concurrent_uploads_share_the_byte_rate() {
    bounded(30, async {
        let s = setup(
            Mode::Honest,
            false,
            "[upload.rate]\nbytes = \"3000B\"\nwindow = \"1h\"",
            "",
        )
        .await;
        // By Content-Length: the first one's 2000 bytes are reserved while it streams.
        let (first, first_answer) = fed_upload(&s.proxy, Some(2000));
        first.send(vec![1; 1000]).await.unwrap();
        support::until("the first add begins", 5, || s.store.adds().len() == 1).await;
        let (status, answer) = upload(&s.proxy, Some("good"), vec![2; 2000]).await;
        assert_eq!(status, 429, "{answer}");
        assert_eq!(answer["errcode"], "M_LIMIT_EXCEEDED");
        assert!(answer["retry_after_ms"].as_u64().unwrap() > 3_500_000);
        first.send(vec![1; 1000]).await.unwrap();
        drop(first);
        assert_eq!(first_answer.await.unwrap().0, 200);

        // Without lengths: two uploads of 1000 + 1000 against the 1000 left.
        let s = setup(
            Mode::Honest,
            false,
            "[upload.rate]\nbytes = \"3000B\"\nwindow = \"1h\"",
            "",
        )
        .await;
        let (a, a_answer) = fed_upload(&s.proxy, None);
        let (b, b_answer) = fed_upload(&s.proxy, None);
        a.send(vec![3; 1000]).await.unwrap();
        b.send(vec![4; 1000]).await.unwrap();
        support::until("both adds begin", 5, || s.store.adds().len() == 2).await;
        a.send(vec![3; 1000]).await.unwrap();
        b.send(vec![4; 1000]).await.unwrap();
        drop((a, b));
        let (a, b) = (a_answer.await.unwrap(), b_answer.await.unwrap());
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 429], "{a:?} {b:?}");
        let refused = if a.0 == 429 { &a.1 } else { &b.1 };
        assert_eq!(refused["errcode"], "M_LIMIT_EXCEEDED");
        assert!(refused["retry_after_ms"].as_u64().is_some());
        assert_eq!(s.store.pinned().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn tokens_are_checked_as_synapse_answers_and_guests_refused() {
    bounded(30, async {
        let s = setup(Mode::Honest, false, "", "").await;
        let (status, answer) = upload(&s.proxy, None, PNG.to_vec()).await;
        assert_eq!(
            (status.as_u16(), answer["errcode"].as_str()),
            (401, Some("M_MISSING_TOKEN"))
        );
        let (status, answer) = upload(&s.proxy, Some("bad"), PNG.to_vec()).await;
        assert_eq!(
            (status.as_u16(), answer["errcode"].as_str()),
            (401, Some("M_UNKNOWN_TOKEN"))
        );
        s.hs.answer_whoami(Some((
            StatusCode::OK,
            "application/json",
            r#"{"user_id": "@guest:test", "is_guest": true}"#,
        )));
        let (status, answer) = upload(&s.proxy, Some("guest"), PNG.to_vec()).await;
        assert_eq!(
            (status.as_u16(), answer["errcode"].as_str()),
            (403, Some("M_FORBIDDEN"))
        );
        assert!(s.store.adds().is_empty());
    })
    .await;
}

#[tokio::test]
async fn guests_may_upload_when_allowed() {
    bounded(30, async {
        let s = setup(Mode::Honest, false, "allow_guests = true", "").await;
        s.hs.answer_whoami(Some((
            StatusCode::OK,
            "application/json",
            r#"{"user_id": "@guest:other.example", "is_guest": true}"#,
        )));
        let (status, answer) = upload(&s.proxy, Some("guest"), PNG.to_vec()).await;
        assert_eq!(status, 200);
        let want = format!("mxc://other.example/ipfs_{}", raw_cid(PNG));
        assert_eq!(answer["content_uri"], want);
    })
    .await;
}

/// Users outside `upload.users` upload to the homeserver as before.
#[tokio::test]
async fn users_outside_the_patterns_pass_through() {
    bounded(30, async {
        let s = setup(
            Mode::Honest,
            false,
            "users = [\"@bob:*\", \"@*:elsewhere\"]",
            "",
        )
        .await;
        let (status, _) = upload(&s.proxy, Some("good"), b"{}".to_vec()).await;
        // The stub homeserver's echo answers 201.
        assert_eq!(status, 201);
        let last = s.hs.last();
        assert_eq!(last.target, "/_matrix/media/v3/upload?filename=a.png");
        assert_eq!(last.body.as_ref(), b"{}");
        assert!(s.store.adds().is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_denylisted_upload_is_refused_and_removed_from_the_store() {
    bounded(30, async {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("deny.txt");
        std::fs::write(&list, format!("{}\n", raw_cid(PNG))).unwrap();
        let s = setup(
            Mode::Honest,
            false,
            "",
            &format!("[denylist]\npaths = [{list:?}]\n"),
        )
        .await;
        let (status, answer) = upload(&s.proxy, Some("good"), PNG.to_vec()).await;
        assert_eq!(status, 403);
        assert_eq!(answer["errcode"], "M_FORBIDDEN");
        assert_eq!(answer["error"], "this media is blocked on this server");
        assert_eq!(s.store.unpins(), [raw_cid(PNG).to_string()]);
        assert!(s.store.pinned().is_empty());
    })
    .await;
}

/// A client that goes away mid-body: the add is aborted, nothing pinned.
#[tokio::test]
async fn a_client_leaving_mid_body_leaves_nothing() {
    bounded(30, async {
        let s = setup(Mode::Honest, false, "", "").await;
        let mut socket = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
        socket
            .write_all(
                b"POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer good\r\n\
                  Content-Length: 100000\r\n\r\n",
            )
            .await
            .unwrap();
        socket.write_all(&[1u8; 5000]).await.unwrap();
        // Wait until the add has begun, then leave.
        while s.store.adds().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(socket);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(s.store.files.lock().unwrap().is_empty());
        assert!(s.store.pinned().is_empty());
    })
    .await;
}

/// A larger upload streams: several chunks of the profile, hashed as they pass.
#[tokio::test]
async fn a_multi_chunk_upload_reaches_the_store_whole() {
    bounded(60, async {
        let s = setup(Mode::Lie, false, "", "").await;
        let bytes = support::pattern(3 * 1024 * 1024 + 5, 11);
        let (status, _) = upload(&s.proxy, Some("good"), bytes.clone()).await;
        // The stub cannot build a tree, so it lies; what matters here is what it received.
        assert_eq!(status, 502);
        let files = s.store.files.lock().unwrap().clone();
        assert_eq!(files.len(), 1);
        assert!(files[0].as_ref() == bytes.as_slice());
        assert_eq!(s.store.unpins(), [LIE]);
    })
    .await;
}

/// Without `upload.max_bytes`, the limit is the homeserver's `m.upload.size`: asked once
/// (with the caller's token: the media config needs one), the legacy path when the v1 one is
/// unknown, and asked again after a reload.
#[tokio::test]
async fn the_limit_is_the_homeservers_own_asked_once_and_again_on_reload() {
    bounded(30, async {
        let asked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
        let log = Arc::clone(&asked);
        let (hs, _task) = support::serve(move |req: Request<Incoming>| {
            let log = Arc::clone(&log);
            async move {
                let path = req.uri().path().to_owned();
                let auth = req
                    .headers()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                match path.as_str() {
                    "/_matrix/client/v3/account/whoami" => {
                        text(StatusCode::OK, r#"{"user_id":"@alice:test","is_guest":false}"#)
                    }
                    "/_matrix/client/v1/media/config" => {
                        log.lock().unwrap().push((path, auth));
                        text(StatusCode::NOT_FOUND, r#"{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}"#)
                    }
                    "/_matrix/media/v3/config" => {
                        log.lock().unwrap().push((path, auth));
                        text(StatusCode::OK, r#"{"m.upload.size": 1000}"#)
                    }
                    _ => text(StatusCode::NOT_FOUND, "{}"),
                }
            }
        })
        .await;
        let store = StoreStub::new(Mode::Honest, false);
        let store_addr = store.start().await;
        let builder = ProxyBuilder::new(hs).toml(&format!(
            "[upload]\nenabled = true\n[upload.store]\nkind = \"kubo\"\nurl = \"http://{store_addr}\"\n"
        ));
        let config = builder.config();
        let proxy = builder.start().await;
        let (status, answer) = upload(&proxy, Some("good"), vec![1; 1001]).await;
        assert_eq!((status.as_u16(), answer["errcode"].as_str()), (413, Some("M_TOO_LARGE")));
        let (status, _) = upload(&proxy, Some("good"), vec![1; 1000]).await;
        assert_eq!(status, 200);
        assert_eq!(
            *asked.lock().unwrap(),
            [
                ("/_matrix/client/v1/media/config".to_owned(), "Bearer good".to_owned()),
                ("/_matrix/media/v3/config".to_owned(), "Bearer good".to_owned()),
            ]
        );
        proxy.app.reload(&config).unwrap();
        let (status, _) = upload(&proxy, Some("good"), vec![2; 1000]).await;
        assert_eq!(status, 200);
        assert_eq!(asked.lock().unwrap().len(), 4);
    })
    .await;
}

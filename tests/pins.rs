//! MSC2706's pin endpoint (`POST /_matrix/media/v3/pin/{cid}`), against stub stores that
//! speak Kubo's RPC (`pin/ls`, `pin/add`, `pin/rm`, `dag/import`) and Cluster's REST API
//! (`allocations`, `pins`), and stub trustless gateways serving real DAGs (the fixtures made
//! by js-ipfs and ipfs-car).

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use support::homeserver::HomeserverStub;
use support::store::{arg, first_part, post_as, text};
use support::trustless::{Dag, Lie, TrustlessStub};
use support::{bounded, client, json, Proxy, ProxyBuilder, StubBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PinMode {
    /// `pin/add` pins at once.
    Pin,
    /// `pin/add` answers 500.
    Fail,
}

#[derive(Clone)]
struct PinStore {
    mode: Arc<Mutex<PinMode>>,
    cluster: bool,
    pinned: Arc<Mutex<BTreeSet<String>>>,
    /// Every call, as `method path?query`.
    calls: Arc<Mutex<Vec<String>>>,
    /// Blocks received by `dag/import`, and the CAR bytes.
    imported: Arc<Mutex<Vec<Bytes>>>,
}

impl PinStore {
    fn new(cluster: bool) -> Self {
        Self {
            mode: Arc::new(Mutex::new(PinMode::Pin)),
            cluster,
            pinned: Arc::default(),
            calls: Arc::default(),
            imported: Arc::default(),
        }
    }

    fn pinned(&self) -> BTreeSet<String> {
        self.pinned.lock().unwrap().clone()
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn calls_where(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        self.calls().into_iter().filter(|c| keep(c)).collect()
    }

    fn calls_to(&self, what: &str) -> usize {
        self.calls_where(|c| c.contains(what)).len()
    }

    async fn start(&self) -> std::net::SocketAddr {
        support::serve_stub(self, |stub, req| async move { stub.answer(req).await }).await
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<StubBody> {
        let (method, path, query) = logged(&self.calls, &req);
        let arg = arg(&query);
        let mode = *self.mode.lock().unwrap();
        if self.cluster {
            if let Some(cid) = path.strip_prefix("/allocations/") {
                return if self.pinned().contains(cid) {
                    text(StatusCode::OK, &format!("{{\"cid\":\"{cid}\"}}"))
                } else {
                    text(StatusCode::NOT_FOUND, "{\"code\":404}")
                };
            }
            if let Some(cid) = path.strip_prefix("/pins/") {
                if method == "DELETE" {
                    self.pinned.lock().unwrap().remove(cid);
                    return text(StatusCode::OK, "{}");
                }
                if mode == PinMode::Fail {
                    return text(StatusCode::INTERNAL_SERVER_ERROR, "{\"code\":500}");
                }
                self.pinned.lock().unwrap().insert(cid.to_owned());
                return text(StatusCode::OK, &format!("{{\"cid\":\"{cid}\"}}"));
            }
            return text(StatusCode::NOT_FOUND, "404 page not found");
        }
        match path.as_str() {
            "/api/v0/id" => text(
                StatusCode::OK,
                "{\"ID\":\"12D3KooWStore\",\"Addresses\":[\"/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWStore\"]}",
            ),
            "/api/v0/pin/ls" if arg.is_empty() => {
                let keys: Vec<String> = self
                    .pinned()
                    .iter()
                    .map(|c| format!("\"{c}\":{{\"Type\":\"recursive\"}}"))
                    .collect();
                text(StatusCode::OK, &format!("{{\"Keys\":{{{}}}}}", keys.join(",")))
            }
            "/api/v0/pin/ls" => {
                if self.pinned().contains(&arg) {
                    text(
                        StatusCode::OK,
                        &format!("{{\"Keys\":{{\"{arg}\":{{\"Type\":\"recursive\"}}}}}}"),
                    )
                } else {
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("{{\"Message\":\"path '{arg}' is not pinned\",\"Code\":0}}"),
                    )
                }
            }
            "/api/v0/pin/add" => {
                if mode == PinMode::Fail {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "{\"Message\":\"context deadline exceeded\",\"Code\":0}",
                    );
                }
                self.pinned.lock().unwrap().insert(arg.clone());
                text(StatusCode::OK, &format!("{{\"Pins\":[\"{arg}\"]}}"))
            }
            "/api/v0/pin/rm" => {
                let was = self.pinned.lock().unwrap().remove(&arg);
                if was {
                    text(StatusCode::OK, "{\"Pins\":[]}")
                } else {
                    text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "{\"Message\":\"not pinned or pinned indirectly\"}",
                    )
                }
            }
            "/api/v0/dag/import" => self.dag_import(req).await,
            _ => text(StatusCode::NOT_FOUND, "404 page not found"),
        }
    }

    /// Reads the multipart CAR whole and pins the roots it names (as js-ipfs does: without
    /// checking a block).
    async fn dag_import(&self, req: Request<Incoming>) -> Response<StubBody> {
        let Ok(Some(field)) = first_part(req).await else {
            return text(StatusCode::BAD_REQUEST, "no file");
        };
        let Ok(car) = field.bytes().await else {
            return text(StatusCode::BAD_REQUEST, "truncated");
        };
        self.imported.lock().unwrap().push(car.clone());
        let mut reader =
            ipfs_media_proxy::ipfs::car::CarReader::new(futures_util::stream::iter([Ok::<
                _,
                std::io::Error,
            >(
                car
            )]));
        let roots = reader.header().await.unwrap().roots.clone();
        let mut lines = String::new();
        for root in roots {
            self.pinned.lock().unwrap().insert(root.to_string());
            lines.push_str(&format!(
                "{{\"Root\":{{\"Cid\":{{\"/\":\"{root}\"}},\"PinErrorMsg\":\"\"}}}}\n"
            ));
        }
        text(StatusCode::OK, &lines)
    }
}

type Setup = support::store::Setup<TrustlessStub, PinStore>;

/// A stub's request, added to its `calls` as `method path?query`: its method, path and query.
fn logged(calls: &Mutex<Vec<String>>, req: &Request<Incoming>) -> (http::Method, String, String) {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().clone();
    calls
        .lock()
        .unwrap()
        .push(format!("{method} {path}?{query}"));
    (method, path, query)
}

async fn setup(dags: &[Dag], cluster: bool, upload_lines: &str, extra: &str) -> Setup {
    let hs = HomeserverStub::new();
    let gw = TrustlessStub::new(dags, Lie::Honest);
    let store = PinStore::new(cluster);
    let store_addr = store.start().await;
    let kind = if cluster { "cluster" } else { "kubo" };
    let max_bytes = if upload_lines.contains("max_bytes") {
        ""
    } else {
        "max_bytes = \"4MiB\"\n"
    };
    let builder = ProxyBuilder::new(hs.start().await)
        .gateway(gw.start().await)
        .gateway_line("mode = \"trustless\"")
        .gateway_line("timeout = \"1s\"")
        .toml(&format!(
            "[retrieval]\nprobe_interval = \"0s\"\n\
             [upload]\nenabled = true\n{max_bytes}store_timeout = \"2s\"\n\
             pin_find_timeout = \"1s\"\n{upload_lines}\n\
             [upload.store]\nkind = \"{kind}\"\nurl = \"http://{store_addr}\"\n\
             replication_min = 2\nreplication_max = 3\n{extra}"
        ));
    Setup::start(hs, gw, store, builder).await
}

async fn pin(proxy: &Proxy, cid: &str) -> (StatusCode, serde_json::Value) {
    post_as(
        proxy,
        &format!("/_matrix/media/v3/pin/{cid}"),
        Some("good"),
        "application/json",
        b"{}".to_vec(),
    )
    .await
}

async fn balanced() -> Dag {
    Dag::load("balanced-1k.car").await
}

/// A file the gateways can find: its verified root says 20,000 bytes, the store pins it
/// with its own `pin/add`, and the answer is the uploads' `content_uri`.
#[tokio::test]
async fn a_found_file_is_pinned_by_the_store_and_answered_with_its_mxc() {
    bounded(30, async {
        let dag = balanced().await;
        let s = setup(std::slice::from_ref(&dag), false, "", "").await;
        let root = dag.root.to_string();
        let (status, answer) = pin(&s.proxy, &root).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["content_uri"], format!("mxc://test/ipfs_{root}"));
        assert_eq!(s.store.pinned(), BTreeSet::from([root.clone()]));
        let pin_adds = s.store.calls_where(|c| c.contains("/api/v0/pin/add"));
        assert_eq!(pin_adds.len(), 1);
        assert!(pin_adds[0].contains(&format!("arg={root}")));
        assert!(pin_adds[0].contains("recursive=true"));
        // Only the root came through the proxy: the store fetched the rest itself.
        assert_eq!(s.gw.raws(), 1);
        assert_eq!(s.gw.cars(), 0);
        // Pinned already: answered at once, no gateway, no second pin/add.
        let (status, again) = pin(&s.proxy, &root).await;
        assert_eq!(status, 200);
        assert_eq!(again, answer);
        assert_eq!(s.gw.raws(), 1);
        assert_eq!(s.store.calls_to("/api/v0/pin/add"), 1);
    })
    .await;
}

/// The unstable path, a percent-encoded CID, another multibase (base32 upper-case and
/// CIDv0), and the `msc2706` media-ID form.
#[tokio::test]
async fn the_unstable_path_encodings_and_the_msc2706_form() {
    bounded(30, async {
        let dag = balanced().await;
        let v0 = Dag::load("cidv0-4k.car").await;
        let s = setup(
            &[dag.clone(), v0.clone()],
            false,
            "media_id_form = \"msc2706\"",
            "",
        )
        .await;
        let root = dag.root.to_string();
        let encoded: String = root
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 3 == 0 {
                    format!("%{:02X}", c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect();
        let (status, answer) = post_as(
            &s.proxy,
            &format!("/_matrix/media/unstable/rs.chir.matrix.msc2706/pin/{encoded}"),
            Some("good"),
            "application/json",
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["content_uri"], format!("mxc://test/ipfs:{root}"));
        // The same CID in base32 upper-case (multibase `B`): the same content.
        let upper = format!("B{}", root[1..].to_uppercase());
        let (status, same) = pin(&s.proxy, &upper).await;
        assert_eq!(status, 200, "{same}");
        assert_eq!(same, answer);
        let (status, answer) = pin(&s.proxy, &v0.root.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["content_uri"],
            format!("mxc://test/ipfs:{}", v0.root)
        );
    })
    .await;
}

/// Not a CID: 400 `M_INVALID_PARAM`; a blocked one: 403 before any gateway or store call.
#[tokio::test]
async fn not_a_cid_and_a_blocked_cid_are_refused_before_any_fetch() {
    bounded(30, async {
        let dag = balanced().await;
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("deny.txt");
        std::fs::write(&list, format!("{}\n", dag.root)).unwrap();
        let s = setup(
            std::slice::from_ref(&dag),
            false,
            "",
            &format!("[denylist]\npaths = [{list:?}]\n"),
        )
        .await;
        for bad in ["not-a-cid", "bafy", "Qm%FF", "%F0%9F%98%80"] {
            let (status, answer) = pin(&s.proxy, bad).await;
            assert_eq!(status, 400, "{bad}: {answer}");
            assert_eq!(answer["errcode"], "M_INVALID_PARAM", "{bad}");
        }
        let (status, answer) = pin(&s.proxy, &dag.root.to_string()).await;
        assert_eq!(status, 403, "{answer}");
        assert_eq!(answer["errcode"], "M_FORBIDDEN");
        assert_eq!(s.gw.raws() + s.gw.cars(), 0);
        assert!(s.store.calls().is_empty(), "{:?}", s.store.calls());
    })
    .await;
}

/// Content no gateway has: 404 `M_NOT_FOUND` once `upload.pin_find_timeout` has passed
/// (asked again meanwhile), nothing pinned.
#[tokio::test]
async fn content_nobody_has_is_404_after_the_wait() {
    bounded(30, async {
        let dag = balanced().await;
        let s = setup(&[], false, "", "").await;
        let started = Instant::now();
        let (status, answer) = pin(&s.proxy, &dag.root.to_string()).await;
        let took = started.elapsed();
        assert_eq!(status, 404, "{answer}");
        assert_eq!(answer["errcode"], "M_NOT_FOUND");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert!(s.gw.raws() >= 2, "asked more than once: {}", s.gw.raws());
        assert_eq!(s.store.calls_to("pin/add"), 0);
        assert!(s.store.pinned().is_empty());
    })
    .await;
}

/// The root says the size: over `upload.max_bytes` is 413 before anything is pinned; a
/// directory is 400 saying why.
#[tokio::test]
async fn too_large_and_directories_are_refused_before_pinning() {
    bounded(30, async {
        let dag = balanced().await;
        let dir = Dag::load("dir.car").await;
        let s = setup(
            &[dag.clone(), dir.clone()],
            false,
            "max_bytes = \"19999B\"",
            "",
        )
        .await;
        let (status, answer) = pin(&s.proxy, &dag.root.to_string()).await;
        assert_eq!(status, 413, "{answer}");
        assert_eq!(answer["errcode"], "M_TOO_LARGE");
        let (status, answer) = pin(&s.proxy, &dir.root.to_string()).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["errcode"], "M_INVALID_PARAM");
        assert!(
            answer["error"].as_str().unwrap().contains("directory"),
            "{answer}"
        );
        assert_eq!(s.store.calls_to("pin/add"), 0);
        assert!(s.store.pinned().is_empty());
        // 20,000 bytes fit a limit of 20,000.
        let s = setup(
            std::slice::from_ref(&dag),
            false,
            "max_bytes = \"20000B\"",
            "",
        )
        .await;
        assert_eq!(pin(&s.proxy, &dag.root.to_string()).await.0, 200);
    })
    .await;
}

/// Tokens as for uploads (Synapse's answers), guests refused, the rate limit shared.
#[tokio::test]
async fn callers_and_rate_limits_as_uploads() {
    bounded(30, async {
        let dag = balanced().await;
        let s = setup(
            std::slice::from_ref(&dag),
            false,
            "[upload.rate]\nrequests = 2\nwindow = \"1h\"",
            "",
        )
        .await;
        let path = format!("/_matrix/media/v3/pin/{}", dag.root);
        let (status, answer) = post_as(&s.proxy, &path, None, "application/json", vec![]).await;
        assert_eq!(
            (status.as_u16(), answer["errcode"].as_str()),
            (401, Some("M_MISSING_TOKEN"))
        );
        let (status, answer) =
            post_as(&s.proxy, &path, Some("bad"), "application/json", vec![]).await;
        assert_eq!(
            (status.as_u16(), answer["errcode"].as_str()),
            (401, Some("M_UNKNOWN_TOKEN"))
        );
        assert_eq!(pin(&s.proxy, &dag.root.to_string()).await.0, 200);
        assert_eq!(pin(&s.proxy, &dag.root.to_string()).await.0, 200);
        let (status, answer) = pin(&s.proxy, &dag.root.to_string()).await;
        assert_eq!(status, 429, "{answer}");
        assert_eq!(answer["errcode"], "M_LIMIT_EXCEEDED");
        assert!(answer["retry_after_ms"].as_u64().unwrap() > 3_500_000);

        s.hs.answer_whoami(Some((
            StatusCode::OK,
            "application/json",
            r#"{"user_id":"@guest:test","is_guest":true}"#,
        )));
        let (status, answer) =
            post_as(&s.proxy, &path, Some("guest"), "application/json", vec![]).await;
        assert_eq!(
            (status.as_u16(), answer["errcode"].as_str()),
            (403, Some("M_FORBIDDEN"))
        );
    })
    .await;
}

/// A Cluster store pins with `POST /pins/{cid}` and its replication factors; a store that
/// fails the pin is a 502 and keeps nothing.
#[tokio::test]
async fn a_cluster_store_and_a_failing_store() {
    bounded(30, async {
        let dag = balanced().await;
        let s = setup(std::slice::from_ref(&dag), true, "", "").await;
        let root = dag.root.to_string();
        let (status, answer) = pin(&s.proxy, &root).await;
        assert_eq!(status, 200, "{answer}");
        let posts = s.store.calls_where(|c| c.starts_with("POST /pins/"));
        assert_eq!(posts.len(), 1, "{:?}", s.store.calls());
        assert!(posts[0].contains(&root));
        assert!(posts[0].contains("replication-min=2") && posts[0].contains("replication-max=3"));
        assert_eq!(s.store.pinned(), BTreeSet::from([root.clone()]));

        let s = setup(std::slice::from_ref(&dag), false, "", "").await;
        *s.store.mode.lock().unwrap() = PinMode::Fail;
        let (status, answer) = pin(&s.proxy, &root).await;
        assert_eq!(status, 502, "{answer}");
        assert_eq!(answer["errcode"], "M_UNKNOWN");
        assert!(s.store.pinned().is_empty());
    })
    .await;
}

/// With uploads on, the capabilities answer says `m.ipfs` (how MSC2706 clients learn the
/// pin endpoint is there), even without `capabilities.advertise_ipfs`.
#[tokio::test]
async fn the_capability_is_advertised_with_uploads_on() {
    bounded(30, async {
        let s = setup(&[], false, "", "").await;
        let r = client()
            .get(s.proxy.url("/_matrix/client/v3/capabilities"))
            .bearer_auth("good")
            .send()
            .await
            .unwrap();
        let answer = json(&r.bytes().await.unwrap());
        assert_eq!(
            answer["capabilities"]["m.ipfs"]["enabled"], true,
            "{answer}"
        );
        assert_eq!(answer["capabilities"]["io.t2bot.ipfs"]["enabled"], true);
    })
    .await;
}

fn car_of(roots: &[cid::Cid], blocks: &[(cid::Cid, Bytes)]) -> Vec<u8> {
    support::trustless::encode::encode_car(roots, blocks.iter().map(|(c, b)| (c, b.as_ref())))
}

async fn pin_car(proxy: &Proxy, cid: &cid::Cid, car: Vec<u8>) -> (StatusCode, serde_json::Value) {
    post_as(
        proxy,
        &format!("/_matrix/media/v3/pin/{cid}"),
        Some("good"),
        "application/vnd.ipld.car",
        car,
    )
    .await
}

/// The blocks of the CARs the store imported, in order.
async fn imported_blocks(store: &PinStore) -> Vec<Vec<cid::Cid>> {
    let cars = store.imported.lock().unwrap().clone();
    let mut out = Vec::new();
    for car in cars {
        let mut reader =
            ipfs_media_proxy::ipfs::car::CarReader::new(futures_util::stream::iter([Ok::<
                _,
                std::io::Error,
            >(
                car
            )]));
        let mut cids = Vec::new();
        while let Some((cid, _)) = reader.next_block().await.unwrap() {
            cids.push(cid);
        }
        out.push(cids);
    }
    out
}

/// A CAR that holds its file: every block verified, the DAG walked in whatever order the
/// CAR had it (ipfs-car writes leaves first; here reversed), and exactly the file's blocks
/// imported (not the stray one the client added), root pinned. No gateway is asked.
#[tokio::test]
async fn a_car_pin_imports_exactly_the_verified_file_blocks() {
    bounded(30, async {
        let dag = balanced().await;
        let small = Dag::load("small-raw.car").await;
        let s = setup(&[], false, "", "").await;
        let mut blocks = dag.blocks.clone();
        blocks.reverse();
        blocks.insert(3, small.blocks[0].clone());
        let (status, answer) = pin_car(&s.proxy, &dag.root, car_of(&[dag.root], &blocks)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["content_uri"],
            format!("mxc://test/ipfs_{}", dag.root)
        );
        let imported = imported_blocks(&s.store).await;
        assert_eq!(imported.len(), 1);
        let walked: Vec<cid::Cid> = dag.blocks.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            imported[0], walked,
            "the file's blocks, root first, nothing else"
        );
        assert!(s.store.pinned().contains(&dag.root.to_string()));
        assert_eq!(s.gw.raws() + s.gw.cars(), 0);
        // ipfs-car's own CAR of one raw block.
        let (status, answer) = pin_car(&s.proxy, &small.root, Dag::file("small-raw.car")).await;
        assert_eq!(status, 200, "{answer}");
        // Already pinned: answered at once, nothing imported again.
        let (status, _) = pin_car(&s.proxy, &small.root, Dag::file("small-raw.car")).await;
        assert_eq!(status, 200);
        assert_eq!(imported_blocks(&s.store).await.len(), 2);
    })
    .await;
}

/// Each broken CAR is refused saying which fault, and nothing of it reaches the store.
#[tokio::test]
async fn broken_cars_are_refused_and_nothing_is_imported() {
    bounded(30, async {
        let dag = balanced().await;
        let small = Dag::load("small-raw.car").await;
        let dir = Dag::load("dir.car").await;
        let s = setup(&[], false, "max_bytes = \"19999B\"", "").await;
        let mut tampered = dag.blocks.clone();
        let mut leaf = tampered[5].1.to_vec();
        leaf[0] ^= 1;
        tampered[5].1 = Bytes::from(leaf);
        let mut missing = dag.blocks.clone();
        missing.remove(7);
        let cases: Vec<(&str, cid::Cid, Vec<u8>, u16, &str)> = vec![
            (
                "tampered",
                dag.root,
                car_of(&[dag.root], &tampered),
                400,
                "does not match",
            ),
            (
                "missing",
                small.root,
                car_of(&[small.root], &[]),
                400,
                "missing",
            ),
            (
                "wrong root",
                small.root,
                car_of(&[dag.root], &dag.blocks),
                400,
                "root",
            ),
            ("no root", dag.root, car_of(&[], &dag.blocks), 400, "root"),
            (
                "too large",
                dag.root,
                car_of(&[dag.root], &dag.blocks),
                413,
                "",
            ),
            (
                "directory",
                dir.root,
                Dag::file("dir.car"),
                400,
                "directory",
            ),
            ("not a CAR", dag.root, b"{}".to_vec(), 400, "CAR"),
        ];
        for (what, cid, car, status, says) in cases {
            let (got, answer) = pin_car(&s.proxy, &cid, car).await;
            assert_eq!(got.as_u16(), status, "{what}: {answer}");
            let errcode = if status == 413 {
                "M_TOO_LARGE"
            } else {
                "M_INVALID_PARAM"
            };
            assert_eq!(answer["errcode"], errcode, "{what}");
            assert!(
                answer["error"].as_str().unwrap().contains(says),
                "{what}: {answer}"
            );
        }
        // A missing block deep in the file (the limit raised so that only that is wrong).
        let s2 = setup(&[], false, "", "").await;
        let (got, answer) = pin_car(&s2.proxy, &dag.root, car_of(&[dag.root], &missing)).await;
        assert_eq!(got, 400, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("missing"),
            "{answer}"
        );
        for store in [&s.store, &s2.store] {
            assert!(store.imported.lock().unwrap().is_empty());
            assert_eq!(store.calls_to("dag/import"), 0);
            assert!(store.pinned().is_empty());
        }
    })
    .await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServiceMode {
    /// As the spec says: 202, `queued`, then `pinning`, then `pinned`.
    Spec,
    /// Pinata's deviations: 200, no `requestid`, statuses capitalised.
    Lenient,
    /// Every request ends `failed`.
    Failing,
}

/// A Pinning Service API stub, from `pinning-service-api.yaml`.
#[derive(Clone)]
struct PinService {
    mode: ServiceMode,
    /// `POST /pins` bodies, in order.
    requests: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Every call, as `method path?query`.
    calls: Arc<Mutex<Vec<String>>>,
    /// CID -> status checks so far.
    pins: Arc<Mutex<std::collections::HashMap<String, u32>>>,
}

impl PinService {
    fn new(mode: ServiceMode) -> Self {
        Self {
            mode,
            requests: Arc::default(),
            calls: Arc::default(),
            pins: Arc::default(),
        }
    }

    /// A request for `cid` the service holds from before, checked twice already (at its final
    /// status).
    fn held_before(&self, cid: &str) {
        self.pins.lock().unwrap().insert(cid.to_owned(), 2);
    }

    fn requested(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r["cid"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn start(&self) -> std::net::SocketAddr {
        support::serve_stub(self, |stub, req| async move { stub.answer(req).await }).await
    }

    fn status(&self, checks: u32) -> &'static str {
        match (self.mode, checks) {
            (ServiceMode::Failing, _) => "failed",
            (ServiceMode::Lenient, 0) => "Queued",
            (ServiceMode::Lenient, _) => "Pinned",
            (ServiceMode::Spec, 0) => "queued",
            (ServiceMode::Spec, 1) => "pinning",
            (ServiceMode::Spec, _) => "pinned",
        }
    }

    fn pin_status(&self, cid: &str, checks: u32) -> serde_json::Value {
        let mut v = serde_json::json!({
            "status": self.status(checks),
            "created": "2026-12-02T00:00:00Z",
            "pin": {"cid": cid},
            "delegates": ["/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWService"],
        });
        if self.mode != ServiceMode::Lenient {
            v["requestid"] = format!("req-{cid}").into();
        }
        v
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<StubBody> {
        let (method, path, query) = logged(&self.calls, &req);
        let auth = req
            .headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned());
        if auth.as_deref() != Some("Bearer svc-token") {
            return text(
                StatusCode::UNAUTHORIZED,
                "{\"error\":{\"reason\":\"UNAUTHORIZED\"}}",
            );
        }
        if path == "/pins" && method == "POST" {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let cid = body["cid"].as_str().unwrap().to_owned();
            self.requests.lock().unwrap().push(body);
            self.pins.lock().unwrap().insert(cid.clone(), 0);
            let status = if self.mode == ServiceMode::Lenient {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            return text(status, &self.pin_status(&cid, 0).to_string());
        }
        if path == "/pins" && method == "GET" {
            let wanted: Vec<String> = query
                .split('&')
                .find_map(|p| p.strip_prefix("cid="))
                .map(|c| {
                    percent_encoding::percent_decode_str(c)
                        .decode_utf8()
                        .unwrap()
                        .split(',')
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let pins = self.pins.lock().unwrap().clone();
            let results: Vec<serde_json::Value> = wanted
                .iter()
                .filter(|c| pins.contains_key(*c))
                .map(|c| self.pin_status(c, 2))
                .collect();
            return text(
                StatusCode::OK,
                &serde_json::json!({"count": results.len(), "results": results}).to_string(),
            );
        }
        if let Some(id) = path.strip_prefix("/pins/") {
            let cid = id.strip_prefix("req-").unwrap_or(id).to_owned();
            let checks = {
                let mut pins = self.pins.lock().unwrap();
                let Some(n) = pins.get_mut(&cid) else {
                    return text(StatusCode::NOT_FOUND, "{}");
                };
                *n += 1;
                *n
            };
            return text(StatusCode::OK, &self.pin_status(&cid, checks).to_string());
        }
        text(StatusCode::NOT_FOUND, "{}")
    }
}

fn service_lines(name: &str, addr: &str) -> String {
    format!(
        "[[upload.remote_pins]]\nname = \"{name}\"\nendpoint = \"http://{addr}\"\ntoken = \"svc-token\"\n\
         max_attempts = 3\nretry_backoff = \"50ms\"\nstatus_interval = \"50ms\"\n"
    )
}

/// A second proxy over the homeserver `hs` and the store (the first stopped), with the
/// remote pinning service `name` at `addr`.
async fn restarted(
    hs: &HomeserverStub,
    store: &PinStore,
    name: &str,
    addr: std::net::SocketAddr,
) -> Proxy {
    let services = service_lines(name, &addr.to_string());
    let store_url = format!("http://{}", store.start().await);
    ProxyBuilder::new(hs.start().await)
        .toml(&format!(
            "[upload]\nenabled = true\nmax_bytes = \"4MiB\"\n\
             [upload.store]\nkind = \"kubo\"\nurl = \"{store_url}\"\n{services}"
        ))
        .start()
        .await
}

fn metric(line_start: &str) -> Option<f64> {
    ipfs_media_proxy::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

/// Both a service that follows the spec and one with Pinata's deviations get the CID (with
/// a name, the store's addresses as origins and the bearer token), and are followed until
/// they say pinned. The token never shows in the configuration's debug form.
#[tokio::test]
async fn remote_services_pin_what_the_store_pins_and_are_followed() {
    bounded(30, async {
        let dag = balanced().await;
        let spec = PinService::new(ServiceMode::Spec);
        let lenient = PinService::new(ServiceMode::Lenient);
        let extra = format!(
            "{}{}",
            service_lines("follow-spec", &spec.start().await.to_string()),
            service_lines("follow-lenient", &lenient.start().await.to_string())
        );
        let s = setup(std::slice::from_ref(&dag), false, "", &extra).await;
        let root = dag.root.to_string();
        assert_eq!(pin(&s.proxy, &root).await.0, 200);
        for service in [&spec, &lenient] {
            support::until("the service is asked", 5, || service.requested() == [root.clone()]).await;
            let request = service.requests.lock().unwrap()[0].clone();
            assert!(request["name"].as_str().unwrap().contains(&root));
            assert_eq!(
                request["origins"],
                serde_json::json!(["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWStore"])
            );
        }
        for name in ["follow-spec", "follow-lenient"] {
            let line = format!("ipfs_media_proxy_remote_pinned_total{{service=\"{name}\"}} ");
            support::until("pinned", 5, || metric(&line) == Some(1.0)).await;
            let waiting = format!(
                "ipfs_media_proxy_remote_pins{{service=\"{name}\",status=\"queued\"}} "
            );
            assert_eq!(metric(&waiting), Some(0.0));
        }
        // The spec's service was followed through `pinning` (two status checks).
        assert_eq!(
            spec.calls.lock().unwrap().iter().filter(|c| c.starts_with("GET /pins/")).count(),
            2
        );
        let reconciled = "ipfs_media_proxy_remote_pin_reconciliations_total{service=\"follow-spec\",status=\"ok\"} ";
        assert!(metric(reconciled).unwrap_or(0.0) >= 1.0);
        let config = ProxyBuilder::new(s.hs.start().await).toml(&format!(
            "[upload]\nenabled = true\n[upload.store]\nkind = \"kubo\"\nurl = \"http://127.0.0.1:9\"\n{}",
            service_lines("x", "127.0.0.1:9")
        ));
        assert!(!format!("{:?}", config.config()).contains("svc-token"));
    })
    .await;
}

/// A service that reports `failed`: asked again up to `max_attempts`, then left (counted as
/// failed) for the next reconciliation.
#[tokio::test]
async fn a_failing_service_is_retried_a_bounded_number_of_times() {
    bounded(30, async {
        let dag = balanced().await;
        let failing = PinService::new(ServiceMode::Failing);
        let extra = service_lines("fails", &failing.start().await.to_string());
        let s = setup(std::slice::from_ref(&dag), false, "", &extra).await;
        assert_eq!(pin(&s.proxy, &dag.root.to_string()).await.0, 200);
        let line = "ipfs_media_proxy_remote_pins{service=\"fails\",status=\"failed\"} ";
        support::until("given up", 10, || {
            failing.requested().len() == 3 && metric(line) == Some(1.0)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(failing.requested().len(), 3, "bounded attempts");
    })
    .await;
}

/// The service is down while two CIDs are pinned (one of them it already holds from before),
/// and the proxy restarts: the next proxy's reconciliation requests only the missing one.
#[tokio::test]
async fn after_a_restart_reconciliation_requests_only_what_is_missing() {
    bounded(30, async {
        let dag = balanced().await;
        let small = Dag::load("small-raw.car").await;
        let s = setup(
            &[dag.clone(), small.clone()],
            false,
            "",
            &service_lines("restart", "127.0.0.1:9"),
        )
        .await;
        assert_eq!(pin(&s.proxy, &dag.root.to_string()).await.0, 200);
        assert_eq!(pin(&s.proxy, &small.root.to_string()).await.0, 200);
        s.proxy.stop().await;
        let service = PinService::new(ServiceMode::Spec);
        service.held_before(&small.root.to_string());
        let addr = service.start().await;
        let _again = restarted(&s.hs, &s.store, "restart", addr).await;
        support::until("the missing CID is requested", 5, || {
            service.requested() == [dag.root.to_string()]
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            service.requested(),
            [dag.root.to_string()],
            "only what was missing"
        );
        assert!(service
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.starts_with("GET /pins?") && c.contains(&small.root.to_string())));
    })
    .await;
}

/// CIDs a service refuses for good do not keep later ones out: with room for one CID, a
/// second pin is still requested once the first is given up on.
#[tokio::test]
async fn a_cid_given_up_on_makes_room_for_the_next() {
    bounded(30, async {
        let dag = balanced().await;
        let small = Dag::load("small-raw.car").await;
        let failing = PinService::new(ServiceMode::Failing);
        let extra = format!(
            "{}queue = 1
reconcile_interval = \"0s\"\n",
            service_lines("room", &failing.start().await.to_string())
        );
        let s = setup(&[dag.clone(), small.clone()], false, "", &extra).await;
        assert_eq!(pin(&s.proxy, &dag.root.to_string()).await.0, 200);
        let line = "ipfs_media_proxy_remote_pins{service=\"room\",status=\"failed\"} ";
        support::until("the first is given up on", 10, || metric(line) == Some(1.0)).await;
        assert_eq!(pin(&s.proxy, &small.root.to_string()).await.0, 200);
        support::until("the second is requested", 10, || {
            failing.requested().contains(&small.root.to_string())
        })
        .await;
    })
    .await;
}

/// A pin the service holds as `failed` is requested again by the next reconciliation.
#[tokio::test]
async fn reconciliation_asks_again_for_what_the_service_failed() {
    bounded(30, async {
        let small = Dag::load("small-raw.car").await;
        let failing = PinService::new(ServiceMode::Failing);
        failing.held_before(&small.root.to_string());
        let addr = failing.start().await;
        let s = setup(std::slice::from_ref(&small), false, "", "").await;
        assert_eq!(pin(&s.proxy, &small.root.to_string()).await.0, 200);
        s.proxy.stop().await;
        let _again = restarted(&s.hs, &s.store, "asks-again", addr).await;
        support::until("the failed pin is requested again", 5, || {
            failing.requested().contains(&small.root.to_string())
        })
        .await;
    })
    .await;
}

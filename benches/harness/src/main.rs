//! `benchkit`: the reference servers and special-purpose clients of the `benches/` harness.
//!
//! ```text
//! benchkit serve --role upstream --listen 127.0.0.1:0
//! benchkit serve --role gateway  --listen 127.0.0.1:0 --cid-cache benches/out/cids.txt
//! benchkit burst --url http://127.0.0.1:P/path --n 500 [--timeout-s 60] [--expect-sha256 HEX]
//! benchkit idle  --addr 127.0.0.1:P --steps 1000,5000 --establish-path /x --probe-path /y --pid PID
//! benchkit relay --listen 127.0.0.1:0 --to 127.0.0.1:P
//! benchkit hyper-proxy --listen 127.0.0.1:0 --to 127.0.0.1:P
//! ```
//!
//! `serve` prints `LISTENING <addr>` once it accepts connections (so `--listen 127.0.0.1:0` works).
//!
//! * upstream (stands in for the homeserver): any path answers a small fixed JSON body, `/64k` and
//!   `/1m` answer 64 KiB and 1 MiB, `POST`/`PUT` bodies are read, counted and discarded.
//! * gateway (an IPFS path gateway): `GET|HEAD /ipfs/{cid}` for a few objects of fixed sizes
//!   (64 KiB, 1 MiB, 1 GiB, and "burst" objects for the shared-fetch test, answered after
//!   `--burst-delay-ms`). Their bytes are a deterministic pattern (a 1 MiB xorshift block repeated)
//!   streamed from one shared buffer, never materialised; their CIDs are real CIDv1 raw sha2-256
//!   of those bytes (the 1 GiB hash is computed once and kept in `--cid-cache`).
//!   Also one UnixFS file (`--dag-size`, default 100 MiB) for trustless retrieval: raw leaves
//!   of 256 KiB (CIDv1 raw) under one dag-pb root (CIDv1 dag-pb), all encoded by hand and
//!   hashed at start-up; `GET /ipfs/{root}` is the file's bytes (path gateway),
//!   `?format=car` (or `Accept: application/vnd.ipld.car`) a CARv1 of root then leaves,
//!   `?format=raw` one block (root or leaf). `GET /ipfs/bafkqaaa` (the proxies' probe) is 200.
//!   `GET /stats` answers JSON with every object's name, size, CID and request count, and the
//!   file's root CID, SHA-256 and path / CAR / raw request counts.
//!
//! `burst` opens N connections, releases N identical GETs at once and reports latency, statuses
//! and how many distinct bodies (SHA-256) came back. `idle` opens keep-alive connections in steps,
//! leaves them idle and checks requests still succeed on old and fresh connections.
//!
//! `relay` is a calibration for the cold 1 GiB scenario: a plain TCP relay (no HTTP at all, 256 KiB
//! buffers, one task per connection) from `--listen` to `--to`. It does the least any user-space
//! relay must do, one copy in and one copy out, so its throughput is the ceiling for the proxy.
//!
//! `hyper-proxy` is the calibration for the pass-through scenarios: the least a reverse proxy built
//! on hyper does (the stack the proxy is required to use). Each client connection gets its own
//! keep-alive HTTP/1.1 connection to `--to` (hyper's `client::conn::http1`, driven by a task of its
//! own as hyper's documentation does it); requests go on with their headers untouched and
//! responses come back as they are: no routing, no header rules, no logging, no metrics.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};

const BLOCK: usize = 1 << 20;
const CHUNK: usize = 256 << 10;
const SMALL_JSON: &[u8] =
    br#"{"versions":["r0.6.1","v1.1","v1.11","v1.12"],"unstable_features":{"org.matrix.bench":true}}"#;

// ---------------------------------------------------------------------------------------------
// arguments

struct Args(HashMap<String, String>);

impl Args {
    fn parse(items: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut it = items.iter();
        while let Some(k) = it.next() {
            let key = k.trim_start_matches("--").to_string();
            let val = it.next().cloned().unwrap_or_default();
            map.insert(key, val);
        }
        Args(map)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(|s| s.as_str())
    }
    fn req(&self, k: &str) -> &str {
        self.get(k)
            .unwrap_or_else(|| die(&format!("missing --{k}")))
    }
    fn num(&self, k: &str, default: u64) -> u64 {
        self.get(k)
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| die(&format!("--{k}: not a number")))
            })
            .unwrap_or(default)
    }
}

fn die(msg: &str) -> ! {
    eprintln!("benchkit: {msg}");
    std::process::exit(2)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        die("usage: benchkit serve|burst|idle --key value ...")
    };
    let args = Args::parse(&argv[1..]);
    let threads = args.num("threads", 2) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cmd.as_str() {
        "serve" => rt.block_on(serve_main(args)),
        "burst" => rt.block_on(burst_main(args)),
        "idle" => rt.block_on(idle_main(args)),
        "relay" => rt.block_on(relay_main(args)),
        "hyper-proxy" => rt.block_on(hyper_proxy_main(args)),
        "hash" => hash_main(args),
        other => die(&format!("unknown command {other}")),
    }
}

/// `benchkit hash --mib N`: the CPU time SHA-256 alone takes over N MiB in 256 KiB blocks
/// (the scenario-7 file's leaf size), with the same `sha2` crate the proxy verifies with. It
/// is the floor under verified retrieval's extra cost. Prints `HASH_CPU_S <seconds>`; the
/// time is this thread's own (`/proc/thread-self/schedstat`), not wall time, so a busy machine
/// does not inflate it.
fn hash_main(args: Args) {
    use sha2::Digest;
    let mib = args.num("mib", 100) as usize;
    let block: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let cpu_ns = || -> u64 {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        text.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let started = cpu_ns();
    let mut last = [0u8; 32];
    for _ in 0..mib * 4 {
        let digest = sha2::Sha256::digest(&block);
        last[0] ^= digest[0];
    }
    let spent = cpu_ns() - started;
    std::hint::black_box(last);
    println!("HASH_CPU_S {:.6}", spent as f64 / 1e9);
}

// ---------------------------------------------------------------------------------------------
// bodies and content

/// `len` bytes of `block` repeated, sent as slices of the one shared buffer.
/// Or, with `parts`, those buffers one after the other (the UnixFS file and its CAR).
struct RepeatBody {
    block: Bytes,
    pos: u64,
    len: u64,
    parts: Option<(Arc<Vec<Bytes>>, usize)>,
}

impl RepeatBody {
    fn new(block: Bytes, len: u64) -> Self {
        RepeatBody {
            block,
            pos: 0,
            len,
            parts: None,
        }
    }
    fn empty() -> Self {
        RepeatBody::new(Bytes::new(), 0)
    }
    fn parts(parts: Arc<Vec<Bytes>>) -> Self {
        let len = parts.iter().map(|p| p.len() as u64).sum();
        RepeatBody {
            block: Bytes::new(),
            pos: 0,
            len,
            parts: Some((parts, 0)),
        }
    }
}

impl Body for RepeatBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.pos >= self.len {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        if let Some((parts, idx)) = &mut this.parts {
            let data = parts[*idx].clone();
            *idx += 1;
            this.pos += data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        let blen = self.block.len();
        let off = (self.pos % blen as u64) as usize;
        let n = CHUNK.min(blen - off).min((self.len - self.pos) as usize);
        let data = self.block.slice(off..off + n);
        self.pos += n as u64;
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
    fn is_end_stream(&self) -> bool {
        self.pos >= self.len
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.pos)
    }
}

/// 1 MiB of xorshift output: the repeating unit of every generated object.
fn pattern_block(seed: u64) -> Bytes {
    let mut v = vec![0u8; BLOCK];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in v.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    Bytes::from(v)
}

fn content_sha256(block: &[u8], size: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    let full = size / block.len() as u64;
    for _ in 0..full {
        h.update(block);
    }
    h.update(&block[..(size % block.len() as u64) as usize]);
    h.finalize().into()
}

fn base32_lower(data: &[u8]) -> String {
    const A: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | b as u32;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((buf >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((buf << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// CIDv1, codec raw (0x55), multihash sha2-256 (0x12, 32 bytes), multibase base32 ("b").
fn cid_v1_raw(digest: &[u8; 32]) -> String {
    let mut b = vec![0x01, 0x55, 0x12, 0x20];
    b.extend_from_slice(digest);
    format!("b{}", base32_lower(&b))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn bytes_response(status: StatusCode, ctype: &str, block: Bytes, len: u64) -> Response<RepeatBody> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CONTENT_LENGTH, len)
        .body(RepeatBody::new(block, len))
        .expect("response")
}

fn json_response(status: StatusCode, body: String) -> Response<RepeatBody> {
    let b = Bytes::from(body);
    let len = b.len() as u64;
    bytes_response(status, "application/json", b, len)
}

// ---------------------------------------------------------------------------------------------
// a UnixFS file for trustless retrieval (scenario 7)

const DAG_LEAF: usize = 256 << 10;

fn varint(mut x: u64, out: &mut Vec<u8>) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// CIDv1 bytes: version 1, `codec`, multihash sha2-256 (0x12, 32 bytes).
fn cid_bytes(codec: u8, data: &[u8]) -> Vec<u8> {
    let mut b = vec![0x01, codec, 0x12, 0x20];
    b.extend_from_slice(&Sha256::digest(data));
    b
}

fn cid_string(bytes: &[u8]) -> String {
    format!("b{}", base32_lower(bytes))
}

/// A CARv1 header: varint length, then DAG-CBOR `{"roots": [root], "version": 1}`.
fn car_header(root: &[u8]) -> Bytes {
    let mut cbor = vec![0xa2, 0x65];
    cbor.extend_from_slice(b"roots");
    cbor.extend_from_slice(&[0x81, 0xd8, 0x2a, 0x58, (root.len() + 1) as u8, 0x00]);
    cbor.extend_from_slice(root);
    cbor.push(0x67);
    cbor.extend_from_slice(b"version");
    cbor.push(0x01);
    let mut out = Vec::new();
    varint(cbor.len() as u64, &mut out);
    out.extend_from_slice(&cbor);
    Bytes::from(out)
}

/// A CAR section's prefix: varint(len(cid) + len(block)), then the CID.
fn car_section_prefix(cid: &[u8], block_len: usize) -> Bytes {
    let mut out = Vec::new();
    varint((cid.len() + block_len) as u64, &mut out);
    out.extend_from_slice(cid);
    Bytes::from(out)
}

/// One file of `size` bytes as a balanced-enough UnixFS DAG: raw leaves of 256 KiB (CIDv1 raw)
/// under one dag-pb root (CIDv1 dag-pb), as Kubo builds it with `--raw-leaves --cid-version 1`
/// (one level: up to a few thousand links fit in a root block under 1 MiB).
struct Dag {
    size: u64,
    root_cid: String,
    root_block: Bytes,
    leaves: Arc<Vec<Bytes>>,
    /// leaf CID string -> index
    leaf_index: HashMap<String, usize>,
    car: Arc<Vec<Bytes>>,
    sha256: String,
    path_requests: AtomicU64,
    car_requests: AtomicU64,
    raw_requests: AtomicU64,
}

impl Dag {
    fn new(size: u64, seed: u64) -> Dag {
        let t = Instant::now();
        // Every leaf distinct: the 1 MiB pattern with the leaf number in its first 8 bytes.
        let block = pattern_block(seed);
        let mut leaves = Vec::new();
        let mut pos = 0u64;
        let mut i = 0u64;
        while pos < size {
            let n = (DAG_LEAF as u64).min(size - pos) as usize;
            let off = (pos % BLOCK as u64) as usize;
            let mut v = block[off..off + n].to_vec();
            let tag = i.to_le_bytes();
            let k = tag.len().min(n);
            v[..k].copy_from_slice(&tag[..k]);
            leaves.push(Bytes::from(v));
            pos += n as u64;
            i += 1;
        }
        let mut whole = Sha256::new();
        let mut links = Vec::new();
        let mut leaf_cids = Vec::new();
        for leaf in &leaves {
            whole.update(leaf);
            let cid = cid_bytes(0x55, leaf);
            // PBLink: Hash (1, bytes), Name (2, string, ""), Tsize (3, varint)
            let mut link = vec![0x0a];
            varint(cid.len() as u64, &mut link);
            link.extend_from_slice(&cid);
            link.extend_from_slice(&[0x12, 0x00, 0x18]);
            varint(leaf.len() as u64, &mut link);
            links.push(link);
            leaf_cids.push(cid);
        }
        // UnixFS Data: Type (1) = File (2), filesize (3), blocksizes (4, not packed)
        let mut unixfs = vec![0x08, 0x02, 0x18];
        varint(size, &mut unixfs);
        for leaf in &leaves {
            unixfs.push(0x20);
            varint(leaf.len() as u64, &mut unixfs);
        }
        // PBNode, canonical order: Links (2) first, then Data (1)
        let mut root = Vec::new();
        for link in &links {
            root.push(0x12);
            varint(link.len() as u64, &mut root);
            root.extend_from_slice(link);
        }
        root.push(0x0a);
        varint(unixfs.len() as u64, &mut root);
        root.extend_from_slice(&unixfs);
        let root_cid = cid_bytes(0x70, &root);
        let root_block = Bytes::from(root);

        let mut car = vec![
            car_header(&root_cid),
            car_section_prefix(&root_cid, root_block.len()),
            root_block.clone(),
        ];
        for (cid, leaf) in leaf_cids.iter().zip(&leaves) {
            car.push(car_section_prefix(cid, leaf.len()));
            car.push(leaf.clone());
        }
        let leaf_index = leaf_cids
            .iter()
            .enumerate()
            .map(|(i, c)| (cid_string(c), i))
            .collect();
        let dag = Dag {
            size,
            root_cid: cid_string(&root_cid),
            root_block,
            leaves: Arc::new(leaves),
            leaf_index,
            car: Arc::new(car),
            sha256: hex(&whole.finalize()),
            path_requests: AtomicU64::new(0),
            car_requests: AtomicU64::new(0),
            raw_requests: AtomicU64::new(0),
        };
        eprintln!(
            "benchkit: built UnixFS DAG of {size} bytes ({} leaves, root block {} bytes) in {:?}",
            dag.leaves.len(),
            dag.root_block.len(),
            t.elapsed()
        );
        dag
    }

    fn stats(&self) -> String {
        format!(
            "{{\"root\":\"{}\",\"size\":{},\"leaves\":{},\"leaf_size\":{DAG_LEAF},\"root_block_bytes\":{},\"sha256\":\"{}\",\"path_requests\":{},\"car_requests\":{},\"raw_requests\":{}}}",
            self.root_cid,
            self.size,
            self.leaves.len(),
            self.root_block.len(),
            self.sha256,
            self.path_requests.load(Ordering::SeqCst),
            self.car_requests.load(Ordering::SeqCst),
            self.raw_requests.load(Ordering::SeqCst),
        )
    }

    /// `/ipfs/{cid}` for the root or a leaf: `?format=car` (or Accept: CAR), `?format=raw` (or
    /// Accept: raw), or the file's bytes (path gateway). None: not one of ours.
    fn answer(&self, cid: &str, req: &Request<Incoming>) -> Option<Response<RepeatBody>> {
        let query = req.uri().query().unwrap_or("");
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let car = query.contains("format=car") || accept.contains("application/vnd.ipld.car");
        let raw = query.contains("format=raw") || accept.contains("application/vnd.ipld.raw");
        let (body, ctype) = if cid == self.root_cid {
            if car {
                self.car_requests.fetch_add(1, Ordering::SeqCst);
                (RepeatBody::parts(self.car.clone()), CAR_TYPE)
            } else if raw {
                self.raw_requests.fetch_add(1, Ordering::SeqCst);
                let b = self.root_block.clone();
                let n = b.len() as u64;
                (RepeatBody::new(b, n), "application/vnd.ipld.raw")
            } else {
                self.path_requests.fetch_add(1, Ordering::SeqCst);
                (
                    RepeatBody::parts(self.leaves.clone()),
                    "application/octet-stream",
                )
            }
        } else {
            let i = *self.leaf_index.get(cid)?;
            let leaf = self.leaves[i].clone();
            if car {
                self.car_requests.fetch_add(1, Ordering::SeqCst);
                let c = cid_bytes(0x55, &leaf);
                let parts = vec![car_header(&c), car_section_prefix(&c, leaf.len()), leaf];
                (RepeatBody::parts(Arc::new(parts)), CAR_TYPE)
            } else {
                self.raw_requests.fetch_add(1, Ordering::SeqCst);
                let n = leaf.len() as u64;
                let t = if raw {
                    "application/vnd.ipld.raw"
                } else {
                    "application/octet-stream"
                };
                (RepeatBody::new(leaf, n), t)
            }
        };
        let len = body.len;
        let mut resp = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, ctype)
            .header(header::CONTENT_LENGTH, len)
            .header("x-ipfs-path", format!("/ipfs/{cid}"))
            .body(body)
            .expect("response");
        if req.method() == Method::HEAD {
            *resp.body_mut() = RepeatBody::empty();
        }
        Some(resp)
    }
}

const CAR_TYPE: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=y";

// ---------------------------------------------------------------------------------------------
// servers

async fn serve_main(args: Args) {
    let listener = TcpListener::bind(args.req("listen"))
        .await
        .unwrap_or_else(|e| die(&e.to_string()));
    match args.req("role") {
        "upstream" => {
            let st = Arc::new(Upstream {
                block: pattern_block(7),
            });
            println!("LISTENING {}", listener.local_addr().unwrap());
            accept_loop(listener, move |req| upstream(req, st.clone())).await
        }
        "gateway" => {
            let gw = Arc::new(Gateway::new(&args));
            println!("LISTENING {}", listener.local_addr().unwrap());
            accept_loop(listener, move |req| gateway(req, gw.clone())).await
        }
        other => die(&format!("unknown role {other}")),
    }
}

async fn accept_loop<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<RepeatBody>, Infallible>> + Send + 'static,
{
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("benchkit: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(h))
                .await;
        });
    }
}

struct Upstream {
    block: Bytes,
}

async fn upstream(
    req: Request<Incoming>,
    st: Arc<Upstream>,
) -> Result<Response<RepeatBody>, Infallible> {
    if req.method() == Method::POST || req.method() == Method::PUT {
        let mut body = req.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        return Ok(json_response(
            StatusCode::OK,
            format!("{{\"received\":{n}}}"),
        ));
    }
    Ok(match req.uri().path() {
        "/64k" => bytes_response(
            StatusCode::OK,
            "application/octet-stream",
            st.block.clone(),
            64 << 10,
        ),
        "/1m" => bytes_response(
            StatusCode::OK,
            "application/octet-stream",
            st.block.clone(),
            BLOCK as u64,
        ),
        // Scenario 9: the proxy asks who the uploader is before it stores anything.
        "/_matrix/client/v3/account/whoami" => json_response(
            StatusCode::OK,
            "{\"user_id\":\"@bench:bench.localhost\",\"is_guest\":false}".to_string(),
        ),
        _ => bytes_response(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(SMALL_JSON),
            SMALL_JSON.len() as u64,
        ),
    })
}

struct Obj {
    name: String,
    size: u64,
    block: Bytes,
    cid: String,
    delay: Duration,
    requests: AtomicU64,
}

struct Gateway {
    by_cid: HashMap<String, Arc<Obj>>,
    list: Vec<Arc<Obj>>,
    dag: Dag,
    other: AtomicU64,
}

impl Gateway {
    fn new(args: &Args) -> Gateway {
        let delay = Duration::from_millis(args.num("burst-delay-ms", 100));
        let bursts = args.num("burst-count", 8);
        let burst_size = args.num("burst-size", 256 << 10);
        let mut specs: Vec<(String, u64, u64, Duration)> = vec![
            ("64k".into(), 64 << 10, 1, Duration::ZERO),
            ("1m".into(), 1 << 20, 2, Duration::ZERO),
            ("1g".into(), 1 << 30, 3, Duration::ZERO),
        ];
        for i in 0..bursts {
            specs.push((format!("burst-{i}"), burst_size, 100 + i, delay));
        }
        // seed size cid
        let cache_path = args.get("cid-cache").map(|s| s.to_string());
        let mut cache: HashMap<(u64, u64), String> = HashMap::new();
        if let Some(p) = &cache_path {
            if let Ok(text) = std::fs::read_to_string(p) {
                for line in text.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if let [seed, size, cid] = f[..] {
                        if let (Ok(a), Ok(b)) = (seed.parse(), size.parse()) {
                            cache.insert((a, b), cid.to_string());
                        }
                    }
                }
            }
        }
        let mut dirty = false;
        let mut list = Vec::new();
        for (name, size, seed, delay) in specs {
            let block = pattern_block(seed);
            let cid = match cache.get(&(seed, size)) {
                Some(c) => c.clone(),
                None => {
                    let t = Instant::now();
                    let c = cid_v1_raw(&content_sha256(&block, size));
                    eprintln!(
                        "benchkit: hashed {name} ({size} bytes) in {:?}",
                        t.elapsed()
                    );
                    cache.insert((seed, size), c.clone());
                    dirty = true;
                    c
                }
            };
            list.push(Arc::new(Obj {
                name,
                size,
                block,
                cid,
                delay,
                requests: AtomicU64::new(0),
            }));
        }
        if let (true, Some(p)) = (dirty, &cache_path) {
            let mut text = String::new();
            for ((seed, size), cid) in &cache {
                text.push_str(&format!("{seed} {size} {cid}\n"));
            }
            let _ = std::fs::write(p, text);
        }
        let by_cid = list.iter().map(|o| (o.cid.clone(), o.clone())).collect();
        let dag = Dag::new(args.num("dag-size", 100 << 20), 300);
        Gateway {
            by_cid,
            list,
            dag,
            other: AtomicU64::new(0),
        }
    }

    fn stats(&self) -> String {
        let objs: Vec<String> = self
            .list
            .iter()
            .map(|o| {
                format!(
                    "{{\"name\":\"{}\",\"size\":{},\"cid\":\"{}\",\"requests\":{}}}",
                    o.name,
                    o.size,
                    o.cid,
                    o.requests.load(Ordering::SeqCst)
                )
            })
            .collect();
        format!(
            "{{\"objects\":[{}],\"dag\":{},\"other_requests\":{}}}",
            objs.join(","),
            self.dag.stats(),
            self.other.load(Ordering::SeqCst)
        )
    }
}

async fn gateway(
    req: Request<Incoming>,
    gw: Arc<Gateway>,
) -> Result<Response<RepeatBody>, Infallible> {
    let path = req.uri().path();
    if path == "/stats" {
        return Ok(json_response(StatusCode::OK, gw.stats()));
    }
    let cid = path
        .strip_prefix("/ipfs/")
        .map(|rest| rest.split('/').next().unwrap_or(""))
        .unwrap_or("");
    if req.method() == Method::GET || req.method() == Method::HEAD {
        if cid == "bafkqaaa" {
            // The empty identity CID: proxies probe with it (no content lookup).
            return Ok(bytes_response(
                StatusCode::OK,
                "application/vnd.ipld.raw",
                Bytes::new(),
                0,
            ));
        }
        if let Some(resp) = gw.dag.answer(cid, &req) {
            return Ok(resp);
        }
    }
    let obj = path
        .strip_prefix("/ipfs/")
        .map(|rest| rest.split('/').next().unwrap_or(""))
        .and_then(|cid| gw.by_cid.get(cid))
        .filter(|_| req.method() == Method::GET || req.method() == Method::HEAD);
    let Some(obj) = obj else {
        gw.other.fetch_add(1, Ordering::SeqCst);
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            "{\"error\":\"not found\"}".into(),
        ));
    };
    obj.requests.fetch_add(1, Ordering::SeqCst);
    if !obj.delay.is_zero() {
        tokio::time::sleep(obj.delay).await;
    }
    let mut resp = bytes_response(
        StatusCode::OK,
        "application/octet-stream",
        obj.block.clone(),
        obj.size,
    );
    resp.headers_mut()
        .insert("etag", format!("\"{}\"", obj.cid).parse().unwrap());
    resp.headers_mut()
        .insert("x-ipfs-path", format!("/ipfs/{}", obj.cid).parse().unwrap());
    if req.method() == Method::HEAD {
        *resp.body_mut() = RepeatBody::empty();
    }
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// clients

fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| die("only http:// URLs"));
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

async fn connect(addr: &str) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn request(method: Method, host: &str, path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, host)
        .header("origin", "http://bench.invalid")
        .body(Empty::new())
        .expect("request")
}

struct Outcome {
    status: u16,
    bytes: u64,
    ttfb: Duration,
    total: Duration,
    digest: String,
}

/// Sends one request and reads the whole body, hashing it when `hash` is set.
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
    hash: bool,
) -> Result<Outcome, String> {
    let t0 = Instant::now();
    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let ttfb = t0.elapsed();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut h = Sha256::new();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("body: {e}"))?;
        if let Some(d) = frame.data_ref() {
            n += d.len() as u64;
            if hash {
                h.update(d);
            }
        }
    }
    let digest = if hash {
        hex(&h.finalize())
    } else {
        String::new()
    };
    Ok(Outcome {
        status,
        bytes: n,
        ttfb,
        total: t0.elapsed(),
        digest,
    })
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn jnum(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "null".into()
    }
}

fn jstr(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Accepts on `--listen` for ever; each connection gets its own new connection to `--to`
/// (both without Nagle) and is handed with it to `relay`.
async fn accept_relayed<F, Fut>(args: &Args, relay: F)
where
    F: Fn(TcpStream, TcpStream) -> Fut + Send + Copy + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind(args.req("listen"))
        .await
        .unwrap_or_else(|e| die(&format!("--listen: {e}")));
    let to = args.req("to").to_string();
    println!("LISTENING {}", listener.local_addr().expect("bound"));
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            continue;
        };
        let to = to.clone();
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(&to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            relay(inbound, outbound).await;
        });
    }
}

async fn relay_main(args: Args) {
    accept_relayed(&args, |mut inbound, mut outbound| async move {
        let _ = tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, CHUNK, CHUNK)
            .await;
    })
    .await;
}

async fn hyper_proxy_main(args: Args) {
    accept_relayed(&args, |inbound, outbound| async move {
        let Ok((sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(outbound)).await
        else {
            return;
        };
        tokio::spawn(conn);
        let sender = Arc::new(tokio::sync::Mutex::new(sender));
        let service = service_fn(move |req: Request<Incoming>| {
            let sender = Arc::clone(&sender);
            async move {
                // HTTP/1.1 without pipelining: one request at a time per client connection,
                // so the lock is never contended; it only satisfies the borrow checker.
                let mut sender = sender.lock().await;
                sender.ready().await?;
                sender.send_request(req).await
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(inbound), service)
            .await;
    })
    .await;
}

async fn burst_main(args: Args) {
    let (addr, path) = split_url(args.req("url"));
    let n = args.num("n", 500) as usize;
    let timeout = Duration::from_secs(args.num("timeout-s", 60));
    let expect = args.get("expect-sha256").map(|s| s.to_lowercase());
    let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (addr, path, barrier) = (addr.clone(), path.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let conn = tokio::time::timeout(Duration::from_secs(10), connect(&addr)).await;
            barrier.wait().await;
            let mut sender = match conn {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("connect timed out".into()),
            };
            let req = request(Method::GET, &addr, &path);
            match tokio::time::timeout(timeout, exchange(&mut sender, req, true)).await {
                Ok(r) => r,
                Err(_) => Err("request timed out".into()),
            }
        }));
    }
    barrier.wait().await;
    let wall0 = Instant::now();
    let mut lat = Vec::new();
    let mut ttfb = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut digests: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors: Vec<String> = Vec::new();
    let mut nerr = 0usize;
    let mut bytes = BTreeMap::new();
    for t in tasks {
        match t.await {
            Ok(Ok(o)) => {
                *statuses.entry(o.status).or_default() += 1;
                if o.status == 200 {
                    *digests.entry(o.digest).or_default() += 1;
                    *bytes.entry(o.bytes).or_insert(0usize) += 1;
                    lat.push(ms(o.total));
                    ttfb.push(ms(o.ttfb));
                }
            }
            Ok(Err(e)) => {
                nerr += 1;
                if errors.len() < 3 {
                    errors.push(e)
                }
            }
            Err(e) => {
                nerr += 1;
                if errors.len() < 3 {
                    errors.push(e.to_string())
                }
            }
        }
    }
    let wall = wall0.elapsed();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    ttfb.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let ok = statuses.get(&200).copied().unwrap_or(0);
    let digest_match = match (&expect, digests.len()) {
        (Some(e), 1) => format!("{}", digests.keys().next().unwrap() == e),
        (Some(_), _) => "false".into(),
        (None, _) => "null".into(),
    };
    let st: Vec<String> = statuses
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    let by: Vec<String> = bytes.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    let er: Vec<String> = errors.iter().map(|e| jstr(e)).collect();
    println!(
        "{{\"n\":{n},\"ok\":{ok},\"errors\":{nerr},\"error_samples\":[{}],\"statuses\":{{{}}},\"body_sizes\":{{{}}},\"distinct_bodies\":{},\"digest_match\":{digest_match},\"ttfb_p50_ms\":{},\"ttfb_p99_ms\":{},\"p50_ms\":{},\"p99_ms\":{},\"max_ms\":{},\"wall_ms\":{}}}",
        er.join(","),
        st.join(","),
        by.join(","),
        digests.len(),
        jnum(pct(&ttfb, 0.5)),
        jnum(pct(&ttfb, 0.99)),
        jnum(pct(&lat, 0.5)),
        jnum(pct(&lat, 0.99)),
        jnum(lat.last().copied().unwrap_or(f64::NAN)),
        jnum(ms(wall)),
    );
}

fn proc_status_kib(pid: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn proc_fds(pid: &str) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

async fn establish(
    addr: String,
    method: Method,
    path: String,
) -> Result<SendRequest<Empty<Bytes>>, String> {
    let mut s = connect(&addr).await?;
    let o = exchange(&mut s, request(method, &addr, &path), false).await?;
    if o.status >= 400 {
        return Err(format!("establish: status {}", o.status));
    }
    Ok(s)
}

async fn idle_main(args: Args) {
    let timeout = Duration::from_secs(args.num("timeout-s", 120));
    if tokio::time::timeout(timeout, idle_steps(&args))
        .await
        .is_err()
    {
        println!("{{\"timeout\":true}}");
    }
}

async fn idle_steps(args: &Args) {
    let addr = args.req("addr").to_string();
    let method: Method = args
        .get("establish-method")
        .unwrap_or("OPTIONS")
        .parse()
        .unwrap();
    let est_path = args.req("establish-path").to_string();
    let probe_path = args.req("probe-path").to_string();
    let probe_n = args.num("probe-n", 200) as usize;
    let hold = Duration::from_millis(args.num("hold-ms", 1000));
    let parallel = args.num("parallel", 256) as usize;
    let pid = args.get("pid").unwrap_or("").to_string();
    let steps: Vec<usize> = args
        .req("steps")
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    let mut conns: Vec<Option<SendRequest<Empty<Bytes>>>> = Vec::new();
    for step in steps {
        let t_open = Instant::now();
        let need = step.saturating_sub(conns.len());
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..need {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let (a, m, p) = (addr.clone(), method.clone(), est_path.clone());
            set.spawn(async move {
                let r = tokio::time::timeout(Duration::from_secs(10), establish(a, m, p)).await;
                drop(permit);
                r.unwrap_or_else(|_| Err("establish timed out".into()))
            });
        }
        let mut failed = 0usize;
        let mut first_error = String::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(s)) => conns.push(Some(s)),
                Ok(Err(e)) => {
                    failed += 1;
                    if first_error.is_empty() {
                        first_error = e
                    }
                }
                Err(e) => {
                    failed += 1;
                    if first_error.is_empty() {
                        first_error = e.to_string()
                    }
                }
            }
        }
        let open_s = t_open.elapsed().as_secs_f64();
        tokio::time::sleep(hold).await;

        // Probe idle connections spread over everything opened so far.
        let total = conns.len();
        let k = probe_n.min(total);
        let mut lat = Vec::new();
        let (mut probe_ok, mut probe_closed, mut probe_fail) = (0usize, 0usize, 0usize);
        let mut set = tokio::task::JoinSet::new();
        for j in 0..k {
            let idx = j * total / k.max(1);
            if let Some(mut s) = conns[idx].take() {
                let (a, p) = (addr.clone(), probe_path.clone());
                set.spawn(async move {
                    if s.is_closed() {
                        return (idx, None, Err("closed".to_string()));
                    }
                    let r = tokio::time::timeout(
                        Duration::from_secs(10),
                        exchange(&mut s, request(Method::GET, &a, &p), false),
                    )
                    .await
                    .unwrap_or_else(|_| Err("probe timed out".into()));
                    (idx, Some(s), r)
                });
            }
        }
        while let Some(r) = set.join_next().await {
            let Ok((idx, s, r)) = r else {
                probe_fail += 1;
                continue;
            };
            match r {
                Ok(o) if o.status < 400 => {
                    probe_ok += 1;
                    lat.push(ms(o.total));
                }
                Err(e) if e == "closed" => probe_closed += 1,
                Ok(_) | Err(_) => {
                    probe_fail += 1;
                    if first_error.is_empty() {
                        first_error = "probe failed".into()
                    }
                }
            }
            conns[idx] = s;
        }
        // And fresh connections while all of those stay open.
        let fresh_n = (probe_n / 2).max(1);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..fresh_n {
            let (a, p) = (addr.clone(), probe_path.clone());
            set.spawn(async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    let mut s = connect(&a).await?;
                    exchange(&mut s, request(Method::GET, &a, &p), false).await
                })
                .await
                .unwrap_or_else(|_| Err("fresh timed out".into()))
            });
        }
        let mut fresh_ok = 0usize;
        let mut fresh_err = String::new();
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(o)) if o.status < 400 => {
                    fresh_ok += 1;
                    lat.push(ms(o.total));
                }
                Ok(Ok(o)) => fresh_err = format!("status {}", o.status),
                Ok(Err(e)) => fresh_err = e,
                Err(e) => fresh_err = e.to_string(),
            }
        }
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let still_open = conns
            .iter()
            .filter(|c| c.as_ref().is_some_and(|s| !s.is_closed()))
            .count();
        let rss = proc_status_kib(&pid, "VmRSS:").map_or("null".into(), |v| v.to_string());
        let fds = proc_fds(&pid).map_or("null".into(), |v| v.to_string());
        println!(
            "{{\"step\":{step},\"open\":{still_open},\"open_failed\":{failed},\"open_s\":{},\"first_error\":{},\"probe_total\":{k},\"probe_ok\":{probe_ok},\"probe_closed\":{probe_closed},\"probe_failed\":{probe_fail},\"fresh_total\":{fresh_n},\"fresh_ok\":{fresh_ok},\"fresh_error\":{},\"p50_ms\":{},\"p99_ms\":{},\"server_rss_kib\":{rss},\"server_fds\":{fds}}}",
            jnum(open_s),
            jstr(&first_error),
            jstr(&fresh_err),
            jnum(pct(&lat, 0.5)),
            jnum(pct(&lat, 0.99)),
        );
        if failed > 0 && conns.len() < step {
            break;
        }
    }
}

//! A stub trustless gateway serving blocks a real IPFS implementation made (the CARs in
//! `tests/fixtures/ipfs/`), honestly or with one chosen lie.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures_util::{stream, StreamExt};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use ipfs_media_proxy::ipfs::car::CarReader;
use ipfs_media_proxy::ipfs::unixfs::FileLink;

#[path = "encode.rs"]
pub mod encode;
use encode::{encode_car, encode_varint};

use super::StubBody;

/// The proxy in front of a new homeserver stub and `gateways`, all trustless, each with
/// `timeout`, never probed, with `extra` TOML.
pub async fn trustless_proxy(
    gateways: &[&TrustlessStub],
    timeout: &str,
    extra: &str,
) -> super::Proxy {
    let (_hs, mut builder) = super::builder().await;
    builder = builder
        .gateway_line("mode = \"trustless\"")
        .gateway_line(&format!("timeout = \"{timeout}\""))
        .toml("[retrieval]\nprobe_interval = \"0s\"")
        .toml(extra);
    for g in gateways {
        builder = builder.gateway(g.start().await);
    }
    builder.start().await
}

/// A fixture DAG: its root and its blocks in depth-first order.
#[derive(Clone)]
pub struct Dag {
    pub root: Cid,
    pub blocks: Vec<(Cid, Bytes)>,
}

impl Dag {
    pub async fn load(name: &str) -> Dag {
        let path = format!("{}/tests/fixtures/ipfs/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = Bytes::from(std::fs::read(path).unwrap());
        let mut car = CarReader::new(stream::iter([Ok::<_, std::io::Error>(bytes)]));
        let root = car.header().await.unwrap().roots[0];
        let mut blocks = Vec::new();
        while let Some(block) = car.next_block().await.unwrap() {
            blocks.push(block);
        }
        Dag { root, blocks }
    }

    pub fn file(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/fixtures/ipfs/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }
}

/// What the stub does to the CAR it sends.
#[derive(Clone, Debug)]
pub enum Lie {
    Honest,
    /// Flips one byte of block `n`.
    FlipByte(usize),
    /// Leaves block `n` out (a CAR that ends early when `n` is the last).
    Drop(usize),
    /// Swaps blocks `n` and `n + 1`.
    Swap(usize),
    /// Appends an oversized (3 MiB) section after block `n`.
    Oversized(usize),
    /// Sends the first `n` blocks, then stalls forever.
    StallAfter(usize),
    /// Announces a `Content-Length` larger than the CAR and closes early.
    ShortLength,
    /// Answers 404 for CARs (only raw blocks are served).
    NoCar,
    /// Answers every request but the probe with `302 Location: <url>`.
    Redirect(String),
    /// Serves honestly, but labels every answer but the probe's `Content-Encoding: <coding>`.
    Encoding(&'static str),
}

/// What the stub does with `entity-bytes`.
#[derive(Clone, Copy, Debug, Default)]
pub enum EntityBytes {
    /// Only the blocks the range needs, in depth-first order (the spec's minimal set).
    #[default]
    Honour,
    /// The whole file's CAR, as a gateway that does not know the parameter.
    Ignore,
    /// 400 for any CAR request with `entity-bytes`.
    Refuse,
}

#[derive(Clone)]
pub struct TrustlessStub {
    blocks: Arc<HashMap<Cid, Bytes>>,
    dags: Arc<Vec<Dag>>,
    lie: Arc<Mutex<Lie>>,
    delay: Arc<Mutex<Duration>>,
    entity_bytes: Arc<Mutex<EntityBytes>>,
    /// Every query string received, in order (the probe's too).
    queries: Arc<Mutex<Vec<String>>>,
    pub car_requests: Arc<AtomicUsize>,
    pub raw_requests: Arc<AtomicUsize>,
}

impl TrustlessStub {
    pub fn new(dags: &[Dag], lie: Lie) -> Self {
        let mut blocks = HashMap::new();
        for dag in dags {
            for (cid, block) in &dag.blocks {
                blocks.insert(*cid, block.clone());
            }
        }
        Self {
            blocks: Arc::new(blocks),
            dags: Arc::new(dags.to_vec()),
            lie: Arc::new(Mutex::new(lie)),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
            entity_bytes: Arc::default(),
            queries: Arc::default(),
            car_requests: Arc::default(),
            raw_requests: Arc::default(),
        }
    }

    /// Waits this long before answering anything.
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }

    pub fn set_entity_bytes(&self, mode: EntityBytes) {
        *self.entity_bytes.lock().unwrap() = mode;
    }

    /// The `entity-bytes` value of each CAR request, in order (`None`: the whole file).
    pub fn car_ranges(&self) -> Vec<Option<String>> {
        self.queries
            .lock()
            .unwrap()
            .iter()
            .filter(|q| q.contains("format=car"))
            .map(|q| {
                q.split('&')
                    .find_map(|p| p.strip_prefix("entity-bytes="))
                    .map(str::to_owned)
            })
            .collect()
    }

    pub fn cars(&self) -> usize {
        self.car_requests.load(Ordering::SeqCst)
    }

    pub fn raws(&self) -> usize {
        self.raw_requests.load(Ordering::SeqCst)
    }

    pub async fn start(&self) -> SocketAddr {
        let stub = self.clone();
        let (addr, _task) = super::serve(move |req| {
            let stub = stub.clone();
            async move {
                let delay = *stub.delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                let query = req.uri().query().unwrap_or("").to_owned();
                let path = req.uri().path().to_owned();
                stub.answer(&path, &query)
            }
        })
        .await;
        addr
    }

    fn answer(&self, path: &str, query: &str) -> Response<StubBody> {
        self.queries.lock().unwrap().push(query.to_owned());
        let Some(cid) = path
            .strip_prefix("/ipfs/")
            .and_then(|c| c.parse::<Cid>().ok())
        else {
            return status(StatusCode::BAD_REQUEST);
        };
        let lie = self.lie.lock().unwrap().clone();
        let probe = cid.to_string() == "bafkqaaa";
        match lie {
            Lie::Redirect(location) if !probe => {
                let mut r = status(StatusCode::FOUND);
                r.headers_mut()
                    .insert(http::header::LOCATION, location.parse().unwrap());
                r
            }
            Lie::Encoding(coding) if !probe => {
                let mut r = self.answer_cid(cid, query);
                r.headers_mut()
                    .insert(http::header::CONTENT_ENCODING, coding.parse().unwrap());
                r
            }
            _ => self.answer_cid(cid, query),
        }
    }

    fn answer_cid(&self, cid: Cid, query: &str) -> Response<StubBody> {
        if query.contains("format=raw") {
            self.raw_requests.fetch_add(1, Ordering::SeqCst);
            if cid.to_string() == "bafkqaaa" {
                return Response::new(full(Bytes::new()));
            }
            return match self.blocks.get(&cid) {
                Some(block) => {
                    let mut block = block.to_vec();
                    if let Lie::FlipByte(n) = *self.lie.lock().unwrap() {
                        if self
                            .dags
                            .iter()
                            .any(|d| d.blocks.get(n).is_some_and(|b| b.0 == cid))
                        {
                            block[0] ^= 1;
                        }
                    }
                    Response::new(full(Bytes::from(block)))
                }
                None => status(StatusCode::NOT_FOUND),
            };
        }
        if query.contains("format=car") {
            self.car_requests.fetch_add(1, Ordering::SeqCst);
            let lie = self.lie.lock().unwrap().clone();
            if matches!(lie, Lie::NoCar) {
                return status(StatusCode::NOT_FOUND);
            }
            let Some(dag) = self.dags.iter().find(|d| d.root == cid) else {
                return status(StatusCode::NOT_FOUND);
            };
            let range = query
                .split('&')
                .find_map(|p| p.strip_prefix("entity-bytes="));
            let mode = *self.entity_bytes.lock().unwrap();
            return match (range, mode) {
                (Some(_), EntityBytes::Refuse) => status(StatusCode::BAD_REQUEST),
                (Some(range), EntityBytes::Honour) => self.range_car(dag, range, &lie),
                _ => car_response(dag, &lie),
            };
        }
        status(StatusCode::NOT_IMPLEMENTED)
    }
}

impl TrustlessStub {
    /// A CAR of the blocks `entity-bytes=range` needs, found by walking the DAG here with
    /// this stub's own dag-pb reading (not the proxy's): a node is sent when its subtree's
    /// bytes meet the range. `FlipByte` and `Drop` apply to whichever fixture block they
    /// name, if it is sent.
    fn range_car(&self, dag: &Dag, range: &str, lie: &Lie) -> Response<StubBody> {
        let total = self.span(&dag.root);
        let (from, to) = range.split_once(':').unwrap();
        let start = match from.strip_prefix('-') {
            Some(n) => total.saturating_sub(n.parse().unwrap()),
            None => from.parse().unwrap(),
        };
        let end = match to {
            "*" => total,
            to => (to.parse::<u64>().unwrap() + 1).min(total),
        };
        let mut out = Vec::new();
        self.emit(&dag.root, 0, (start, end), &mut out);
        let named = |n: usize| dag.blocks.get(n).map(|b| b.0);
        match *lie {
            Lie::FlipByte(n) => {
                for (cid, block) in out.iter_mut() {
                    if Some(*cid) == named(n) {
                        block[0] ^= 1;
                    }
                }
            }
            Lie::Drop(n) => out.retain(|(cid, _)| Some(*cid) != named(n)),
            _ => {}
        }
        let car = encode_car(&[dag.root], out.iter().map(|(c, b)| (c, b.as_slice())));
        Response::new(full(Bytes::from(car)))
    }

    /// Sends `cid` (whose bytes start at `offset`), then the children that meet the range.
    fn emit(&self, cid: &Cid, offset: u64, range: (u64, u64), out: &mut Vec<(Cid, Vec<u8>)>) {
        let block = &self.blocks[cid];
        out.push((*cid, block.to_vec()));
        if cid.codec() != 0x70 {
            return;
        }
        let (data, links) = pb_node(block);
        let mut at = offset + data;
        for child in links {
            let len = self.span(&child);
            if at < range.1 && at + len > range.0 {
                self.emit(&child, at, range, out);
            }
            at += len;
        }
    }

    /// How many file bytes the subtree under `cid` holds, counted from its leaves.
    fn span(&self, cid: &Cid) -> u64 {
        let block = &self.blocks[cid];
        if cid.codec() != 0x70 {
            return block.len() as u64;
        }
        let (data, links) = pb_node(block);
        data + links.iter().map(|c| self.span(c)).sum::<u64>()
    }
}

/// A dag-pb node's own file bytes (UnixFS `Data`) and its links, read with a minimal
/// protobuf reader: PBNode { 1: Data, 2: Links { 1: Hash } }, UnixFS Data { 2: Data }.
fn pb_node(block: &[u8]) -> (u64, Vec<Cid>) {
    let mut own = 0;
    let mut links = Vec::new();
    for (field, value) in pb_fields(block) {
        match field {
            1 => {
                for (f, v) in pb_fields(value) {
                    if f == 2 {
                        own = v.len() as u64;
                    }
                }
            }
            2 => {
                for (f, v) in pb_fields(value) {
                    if f == 1 {
                        links.push(Cid::try_from(v).unwrap());
                    }
                }
            }
            _ => {}
        }
    }
    (own, links)
}

/// The length-delimited fields of a protobuf message (varint fields are skipped).
fn pb_fields(mut bytes: &[u8]) -> Vec<(u64, &[u8])> {
    fn varint(bytes: &mut &[u8]) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let b = bytes[0];
            *bytes = &bytes[1..];
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut fields = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes);
        match key & 7 {
            0 => {
                varint(&mut bytes);
            }
            2 => {
                let len = varint(&mut bytes) as usize;
                fields.push((key >> 3, &bytes[..len]));
                bytes = &bytes[len..];
            }
            wire => panic!("unexpected protobuf wire type {wire}"),
        }
    }
    fields
}

fn car_response(dag: &Dag, lie: &Lie) -> Response<StubBody> {
    let mut blocks: Vec<(Cid, Vec<u8>)> =
        dag.blocks.iter().map(|(c, b)| (*c, b.to_vec())).collect();
    match *lie {
        Lie::FlipByte(n) => blocks[n].1[0] ^= 1,
        Lie::Drop(n) => {
            blocks.remove(n);
        }
        Lie::Swap(n) => blocks.swap(n, n + 1),
        _ => {}
    }
    let car = encode_car(&[dag.root], blocks.iter().map(|(c, b)| (c, b.as_slice())));
    match *lie {
        Lie::Oversized(n) => {
            // The honest prefix up to block n, then a section claiming 3 MiB.
            let prefix = encode_car(
                &[dag.root],
                blocks[..=n].iter().map(|(c, b)| (c, b.as_slice())),
            );
            let mut bytes = prefix;
            let mut section = Vec::new();
            encode_varint(3 * 1024 * 1024, &mut section);
            bytes.extend_from_slice(&section);
            bytes.extend(std::iter::repeat_n(0u8, 64 * 1024));
            Response::new(full(Bytes::from(bytes)))
        }
        Lie::StallAfter(n) => {
            let prefix = encode_car(
                &[dag.root],
                blocks[..n].iter().map(|(c, b)| (c, b.as_slice())),
            );
            let frames = stream::iter([Ok::<_, std::io::Error>(Frame::data(Bytes::from(prefix)))])
                .chain(stream::once(async {
                    std::future::pending::<()>().await;
                    Ok(Frame::data(Bytes::new()))
                }));
            Response::new(BodyExt::boxed(StreamBody::new(frames)))
        }
        Lie::ShortLength => {
            let len = car.len() as u64 + 1000;
            let frames = stream::iter([Ok::<_, std::io::Error>(Frame::data(Bytes::from(car)))])
                .chain(stream::once(async {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Err(std::io::Error::other("closing early"))
                }));
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(frames)));
            r.headers_mut().insert("content-length", len.into());
            r
        }
        _ => Response::new(full(Bytes::from(car))),
    }
}

fn full(bytes: Bytes) -> StubBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn status(code: StatusCode) -> Response<StubBody> {
    let mut r = Response::new(full(Bytes::from_static(b"no")));
    *r.status_mut() = code;
    r
}

/// A trustless gateway serving one hostile but valid DAG, the "diamond": a 0-byte file whose
/// root links 4096 times (blocksize 0) to one node that links 4096 times to the empty raw
/// leaf. Its `dups=y` CAR is 16.8 million sections (1.39 GB), made lazily as the proxy reads,
/// so `bytes_sent` says how much of it the proxy pulled.
#[derive(Clone)]
pub struct DiamondGateway {
    pub root: Cid,
    root_block: Bytes,
    mid: Cid,
    mid_block: Bytes,
    leaf: Cid,
    bytes_sent: Arc<std::sync::atomic::AtomicU64>,
    requests: Arc<AtomicUsize>,
}

/// Links of each diamond node (the decoder's per-node maximum).
pub const DIAMOND_FANOUT: usize = 4096;

impl DiamondGateway {
    pub fn new() -> Self {
        use encode::encode_file_node;
        let leaf = block_cid(0x55, b"");
        let mid_block = Bytes::from(encode_file_node(
            b"",
            &vec![
                FileLink {
                    cid: leaf,
                    blocksize: 0
                };
                DIAMOND_FANOUT
            ],
        ));
        let mid = block_cid(0x70, &mid_block);
        let root_block = Bytes::from(encode_file_node(
            b"",
            &vec![
                FileLink {
                    cid: mid,
                    blocksize: 0
                };
                DIAMOND_FANOUT
            ],
        ));
        let root = block_cid(0x70, &root_block);
        Self {
            root,
            root_block,
            mid,
            mid_block,
            leaf,
            bytes_sent: Arc::default(),
            requests: Arc::default(),
        }
    }

    /// CAR bytes (and raw block bytes) handed to the connection so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent.load(Ordering::SeqCst)
    }

    /// Requests received, the probe's included.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub async fn start(&self) -> SocketAddr {
        let stub = self.clone();
        let (addr, _task) = super::serve(move |req| {
            let stub = stub.clone();
            async move {
                stub.requests.fetch_add(1, Ordering::SeqCst);
                let query = req.uri().query().unwrap_or("").to_owned();
                let cid = req
                    .uri()
                    .path()
                    .strip_prefix("/ipfs/")
                    .and_then(|c| c.parse::<Cid>().ok());
                stub.answer(cid, &query)
            }
        })
        .await;
        addr
    }

    fn answer(&self, cid: Option<Cid>, query: &str) -> Response<StubBody> {
        let Some(cid) = cid else {
            return status(StatusCode::BAD_REQUEST);
        };
        if query.contains("format=raw") {
            let block = if cid == self.root {
                self.root_block.clone()
            } else if cid == self.mid {
                self.mid_block.clone()
            } else if cid == self.leaf || cid.to_string() == "bafkqaaa" {
                Bytes::new()
            } else {
                return status(StatusCode::NOT_FOUND);
            };
            self.bytes_sent
                .fetch_add(block.len() as u64, Ordering::SeqCst);
            return Response::new(full(block));
        }
        if !query.contains("format=car") || cid != self.root {
            return status(StatusCode::NOT_FOUND);
        }
        // Frame 0: header and root; frame i (1..=4096): the middle node and its 4096 leaves.
        let header = encode_car(&[self.root], [(&self.root, &self.root_block[..])]);
        let mut mid_frame = Vec::new();
        let mid_section = encode_car(&[], [(&self.mid, &self.mid_block[..])]);
        let leaf_section = encode_car(&[], [(&self.leaf, &b""[..])]);
        let header_len = encode_car(&[], []).len();
        mid_frame.extend_from_slice(&mid_section[header_len..]);
        for _ in 0..DIAMOND_FANOUT {
            mid_frame.extend_from_slice(&leaf_section[header_len..]);
        }
        let mid_frame = Bytes::from(mid_frame);
        let sent = Arc::clone(&self.bytes_sent);
        let frames = stream::unfold(0usize, move |i| {
            let frame = match i {
                0 => Bytes::from(header.clone()),
                i if i <= DIAMOND_FANOUT => mid_frame.clone(),
                _ => return std::future::ready(None),
            };
            sent.fetch_add(frame.len() as u64, Ordering::SeqCst);
            std::future::ready(Some((Ok::<_, std::io::Error>(Frame::data(frame)), i + 1)))
        });
        Response::new(BodyExt::boxed(StreamBody::new(frames)))
    }
}

impl Default for DiamondGateway {
    fn default() -> Self {
        Self::new()
    }
}

/// The CIDv1 (sha2-256) of a block.
pub fn block_cid(codec: u64, block: &[u8]) -> Cid {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(block);
    Cid::new_v1(
        codec,
        cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap(),
    )
}

//! A stub IPFS path gateway: `GET /ipfs/{cid}` from a table, with faults on demand.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures_util::stream;
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::StubBody;

/// How the stub answers for one CID.
#[derive(Clone)]
pub enum Behaviour {
    /// 200 with `Content-Length`.
    Serve,
    /// 200 chunked, no length.
    NoLength,
    /// Waits this long before answering.
    Delay(Duration),
    /// Sends this many bytes, then waits for `release` before the rest.
    HoldAfter(usize, Arc<Notify>),
    /// Sends this many bytes, then nothing, forever.
    StallAfter(usize),
    /// Announces this length but sends the real bytes.
    ClaimLength(u64),
    /// Answers with this status and a short body.
    Status(StatusCode),
    /// Answers with this (3xx) status and `Location`, as a hostile gateway pointing the proxy
    /// at another service.
    Redirect(StatusCode, String),
    /// 200 with the bytes as they are, labelled `Content-Encoding: <coding>` (as a CDN in
    /// front of a gateway may answer).
    Encoded(&'static str),
}

/// A new stub serving `pattern(len, seed)` held after `after` bytes
/// ([`GatewayStub::add_held`]): the stub, the CID, the release and the bytes.
pub fn holding(len: usize, seed: u64, after: usize) -> (GatewayStub, String, Arc<Notify>, Vec<u8>) {
    let gw = GatewayStub::new();
    let bytes = super::pattern(len, seed);
    let (cid, release) = gw.add_held(bytes.clone(), after);
    (gw, cid, release, bytes)
}

/// How the stub answers a `Range` request.
#[derive(Clone, Copy, Debug, Default)]
pub enum RangeMode {
    /// 206 with the range (at once, whatever the item's `Behaviour` but `Delay` and
    /// `Status`), 416 with `bytes */len` outside the content; as a path gateway does.
    #[default]
    Honour,
    /// 200 with the whole content, as if there were no `Range`.
    Ignore,
    /// 206 for the range shifted this many bytes later, with a matching `Content-Range`.
    Shift(u64),
}

struct Item {
    bytes: Bytes,
    behaviour: Behaviour,
}

#[derive(Clone, Default)]
pub struct GatewayStub {
    items: Arc<Mutex<HashMap<String, Item>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    /// Every request's `Range` header (`None`: no range), by CID, in order.
    ranges: Arc<Mutex<HashMap<String, Vec<Option<String>>>>>,
    range_mode: Arc<Mutex<RangeMode>>,
    /// Every request's `Accept-Encoding` header, in order (the probe's too).
    accept_encodings: Arc<Mutex<Vec<Option<String>>>>,
}

/// The CIDv1 (raw, sha2-256) a real node gives these bytes with `--raw-leaves`.
pub fn raw_cid(bytes: &[u8]) -> Cid {
    let digest = Sha256::digest(bytes);
    let hash = cid::multihash::Multihash::<64>::wrap(0x12, &digest).unwrap();
    Cid::new_v1(0x55, hash)
}

impl GatewayStub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds content and returns its CID text (base32 CIDv1).
    pub fn add(&self, bytes: impl Into<Bytes>) -> String {
        self.add_with(bytes, Behaviour::Serve)
    }

    /// Adds content whose first `after` bytes are sent at once and the rest only once the
    /// returned `Notify` is notified ([`Behaviour::HoldAfter`]); returns its CID text too.
    pub fn add_held(&self, bytes: impl Into<Bytes>, after: usize) -> (String, Arc<Notify>) {
        let release = Arc::new(Notify::new());
        let cid = self.add_with(bytes, Behaviour::HoldAfter(after, release.clone()));
        (cid, release)
    }

    pub fn add_with(&self, bytes: impl Into<Bytes>, behaviour: Behaviour) -> String {
        let bytes = bytes.into();
        let cid = raw_cid(&bytes).to_string();
        self.items
            .lock()
            .unwrap()
            .insert(cid.clone(), Item { bytes, behaviour });
        cid
    }

    /// Serves bytes under any CID text (the stub checks nothing).
    pub fn add_under(&self, cid: &str, bytes: impl Into<Bytes>) {
        let item = Item {
            bytes: bytes.into(),
            behaviour: Behaviour::Serve,
        };
        self.items.lock().unwrap().insert(cid.to_owned(), item);
    }

    /// Serves bytes under any CID text, answering as `behaviour` says.
    pub fn add_under_with(&self, cid: &str, bytes: impl Into<Bytes>, behaviour: Behaviour) {
        let item = Item {
            bytes: bytes.into(),
            behaviour,
        };
        self.items.lock().unwrap().insert(cid.to_owned(), item);
    }

    pub fn set_range_mode(&self, mode: RangeMode) {
        *self.range_mode.lock().unwrap() = mode;
    }

    /// The `Range` header of each request for this CID (`None`: a request without one).
    pub fn ranges(&self, cid: &str) -> Vec<Option<String>> {
        self.ranges
            .lock()
            .unwrap()
            .get(cid)
            .cloned()
            .unwrap_or_default()
    }

    /// The `Accept-Encoding` header of every request received, in order.
    pub fn accept_encodings(&self) -> Vec<Option<String>> {
        self.accept_encodings.lock().unwrap().clone()
    }

    /// Requests the stub received for this CID.
    pub fn hits(&self, cid: &str) -> usize {
        self.hits.lock().unwrap().get(cid).copied().unwrap_or(0)
    }

    pub async fn start(&self) -> SocketAddr {
        let stub = self.clone();
        let (addr, _task) = super::serve(move |req| {
            let stub = stub.clone();
            async move {
                let range = req
                    .headers()
                    .get(http::header::RANGE)
                    .map(|v| v.to_str().unwrap().to_owned());
                let coding = req
                    .headers()
                    .get(http::header::ACCEPT_ENCODING)
                    .map(|v| v.to_str().unwrap().to_owned());
                stub.accept_encodings.lock().unwrap().push(coding);
                stub.answer(req.uri().path(), range).await
            }
        })
        .await;
        addr
    }

    async fn answer(&self, path: &str, range: Option<String>) -> Response<StubBody> {
        let Some(cid) = path.strip_prefix("/ipfs/") else {
            return status(StatusCode::BAD_REQUEST);
        };
        *self.hits.lock().unwrap().entry(cid.to_owned()).or_default() += 1;
        self.ranges
            .lock()
            .unwrap()
            .entry(cid.to_owned())
            .or_default()
            .push(range.clone());
        // The health probe: the empty identity CID.
        if cid == "bafkqaaa" {
            return with_length(full(Bytes::new()), 0);
        }
        let found = self
            .items
            .lock()
            .unwrap()
            .get(cid)
            .map(|i| (i.bytes.clone(), i.behaviour.clone()));
        let Some((bytes, behaviour)) = found else {
            return status(StatusCode::NOT_FOUND);
        };
        let len = bytes.len();
        let mode = *self.range_mode.lock().unwrap();
        match (&range, &behaviour, mode) {
            (_, Behaviour::Status(_) | Behaviour::Redirect(..) | Behaviour::Encoded(_), _)
            | (None, _, _)
            | (_, _, RangeMode::Ignore) => {}
            (Some(range), behaviour, mode) => {
                if let Behaviour::Delay(d) = behaviour {
                    tokio::time::sleep(*d).await;
                }
                let shift = match mode {
                    RangeMode::Shift(n) => n,
                    _ => 0,
                };
                return ranged(&bytes, range, shift);
            }
        }
        match behaviour {
            Behaviour::Serve => with_length(full(bytes), len as u64),
            Behaviour::NoLength => Response::new(chunks(bytes, None)),
            Behaviour::Delay(d) => {
                tokio::time::sleep(d).await;
                with_length(full(bytes), len as u64)
            }
            Behaviour::HoldAfter(n, release) => {
                with_length(chunks(bytes, Some((n, Hold::Until(release)))), len as u64)
            }
            Behaviour::StallAfter(n) => {
                with_length(chunks(bytes, Some((n, Hold::Forever))), len as u64)
            }
            // The pause lets the real bytes reach the wire before the connection ends short.
            Behaviour::ClaimLength(claimed) => with_length(
                chunks(bytes, Some((len, Hold::Sleep(Duration::from_millis(300))))),
                claimed,
            ),
            Behaviour::Status(code) => status(code),
            Behaviour::Redirect(code, location) => {
                let mut r = status(code);
                r.headers_mut()
                    .insert(http::header::LOCATION, location.parse().unwrap());
                r
            }
            Behaviour::Encoded(coding) => {
                let mut r = with_length(full(bytes), len as u64);
                r.headers_mut()
                    .insert(http::header::CONTENT_ENCODING, coding.parse().unwrap());
                r
            }
        }
    }
}

/// A path gateway's answer to `Range: range` (RFC 9110, parsed here on its own).
fn ranged(bytes: &Bytes, range: &str, shift: u64) -> Response<StubBody> {
    let len = bytes.len() as u64;
    let spec = range.strip_prefix("bytes=").expect("a bytes range");
    let (first, last) = spec.split_once('-').expect("one range");
    let (start, end) = if first.is_empty() {
        let n: u64 = last.parse().unwrap();
        (len.saturating_sub(n), len)
    } else {
        let start: u64 = first.parse().unwrap();
        let end = if last.is_empty() {
            len
        } else {
            (last.parse::<u64>().unwrap() + 1).min(len)
        };
        (start, end)
    };
    if start >= end {
        let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
        r.headers_mut().insert(
            http::header::CONTENT_RANGE,
            format!("bytes */{len}").parse().unwrap(),
        );
        return r;
    }
    let (start, end) = ((start + shift).min(len - 1), (end + shift).min(len));
    let mut r = with_length(full(bytes.slice(start as usize..end as usize)), end - start);
    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
    r.headers_mut().insert(
        http::header::CONTENT_RANGE,
        format!("bytes {start}-{}/{len}", end - 1).parse().unwrap(),
    );
    r
}

enum Hold {
    Until(Arc<Notify>),
    Sleep(Duration),
    Forever,
}

fn full(bytes: Bytes) -> StubBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn status(code: StatusCode) -> Response<StubBody> {
    let mut r = Response::new(full(Bytes::from_static(b"stub says no")));
    *r.status_mut() = code;
    r
}

fn with_length(body: StubBody, len: u64) -> Response<StubBody> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    r
}

/// The bytes in 16 KiB frames, optionally pausing after the first `n` bytes.
fn chunks(bytes: Bytes, hold: Option<(usize, Hold)>) -> StubBody {
    let (first, rest) = match &hold {
        Some((n, _)) => (
            bytes.slice(..(*n).min(bytes.len())),
            bytes.slice((*n).min(bytes.len())..),
        ),
        None => (Bytes::new(), bytes),
    };
    let head = stream::iter(split(first).into_iter().map(|b| Ok(Frame::data(b))));
    let tail = stream::once(async move {
        match hold {
            Some((_, Hold::Until(release))) => release.notified().await,
            Some((_, Hold::Sleep(d))) => tokio::time::sleep(d).await,
            Some((_, Hold::Forever)) => std::future::pending::<()>().await,
            None => {}
        }
        stream::iter(
            split(rest)
                .into_iter()
                .map(|b| Ok::<_, std::io::Error>(Frame::data(b))),
        )
    });
    use futures_util::StreamExt;
    BodyExt::boxed(StreamBody::new(head.chain(tail.flatten())))
}

fn split(bytes: Bytes) -> Vec<Bytes> {
    (0..bytes.len())
        .step_by(16 * 1024)
        .map(|i| bytes.slice(i..(i + 16 * 1024).min(bytes.len())))
        .collect()
}

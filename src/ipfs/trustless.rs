//! Verified retrieval from a gateway we do not trust.
//!
//! A raw-codec CID is one block: fetched with `?format=raw`, hashed, then served. Anything else
//! is fetched as a CAR (`dag-scope=entity`, `order=dfs`, `dups=y`) and walked block by block
//! (`walk::FileWalker`): every block is hash-checked and must be the one the file's DAG needs
//! next, and file bytes are released only once their block is verified. When the CAR stops
//! early or carries a bad block, the walk continues with raw blocks from the other gateways,
//! and the gateway that lied is benched.
//!
//! A range is the same walk on a CAR asked for with `entity-bytes`: the root gives the file's
//! size, and only the blocks holding the range are needed and only its bytes come out.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use crate::byte_range::ByteRange;
use crate::ipfs::car::{CarError, CarReader};
use crate::ipfs::fetch_error::FetchError;
use crate::ipfs::gateway::{unverified, Gateway, GatewayResponse};
use crate::ipfs::multicodec::RAW;
use crate::ipfs::part::{check_size, PartResponse};
use crate::ipfs::verify::VerifyError;
use crate::ipfs::walk::{next_from_car, CarWalkError, FileWalker, WalkError};

type CarStream = BoxStream<'static, Result<Bytes, reqwest::Error>>;

/// Everything a verified fetch needs besides the CID.
#[derive(Clone)]
pub struct Sources {
    /// Every configured gateway, for blocks the first one did not deliver.
    pub all: Arc<[Arc<Gateway>]>,
    pub bench_time: Duration,
    /// The absolute cap on one walk's blocks (`retrieval.max_dag_blocks`).
    pub max_dag_blocks: u64,
}

/// The file `cid` from `gateway`, every byte verified. Returns once the root block is verified
/// (so the length is known); the rest streams.
pub async fn fetch_verified(
    gateway: Arc<Gateway>,
    cid: Cid,
    sources: Sources,
) -> Result<GatewayResponse, FetchError> {
    if cid.codec() == RAW {
        let block = gateway.fetch_block(&cid).await.inspect_err(|e| {
            if matches!(e, FetchError::Unverified(_)) {
                bench(&gateway, &sources, e);
            }
        })?;
        return Ok(GatewayResponse::whole(block));
    }
    let car = gateway.fetch_car(&cid).await?;
    let mut walk = VerifiedWalk {
        car: Some(CarReader::new(car)),
        walker: FileWalker::new(cid, None).with_max_blocks(sources.max_dag_blocks),
        source: gateway,
        sources,
        ranged: false,
    };
    let ready = walk.until_root().await?;
    Ok(GatewayResponse {
        content_length: walk.walker.file_size(),
        body: walk.into_stream(ready),
    })
}

/// One range of the file `cid` from `gateway`, every byte verified: a raw block is fetched
/// whole (at most 2 MiB) and cut; a file DAG as a CAR with `entity-bytes`, walked from the
/// root (whose `filesize` is the total), and only the blocks holding the range are taken.
/// Returns once the root is verified.
pub async fn fetch_verified_range(
    gateway: Arc<Gateway>,
    cid: Cid,
    wanted: ByteRange,
    sources: Sources,
    max_bytes: u64,
) -> Result<PartResponse, FetchError> {
    if cid.codec() == RAW {
        let block = gateway.fetch_block(&cid).await.inspect_err(|e| {
            if matches!(e, FetchError::Unverified(_)) {
                bench(&gateway, &sources, e);
            }
        })?;
        return PartResponse::cut(block, &wanted, max_bytes);
    }
    let car = gateway.fetch_car_range(&cid, &wanted).await?;
    let mut walk = VerifiedWalk {
        car: car.map(CarReader::new),
        walker: FileWalker::for_range(cid, wanted).with_max_blocks(sources.max_dag_blocks),
        source: gateway,
        sources,
        ranged: true,
    };
    let ready = walk.until_root().await?;
    let Some(total) = walk.walker.file_size() else {
        return Err(FetchError::Unverified(
            "the walk ended without a root".into(),
        ));
    };
    check_size(total, max_bytes)?;
    match wanted.resolve(total) {
        None => Ok(PartResponse::outside(total)),
        Some(range) => Ok(PartResponse::new(total, range, walk.into_stream(ready))),
    }
}

impl VerifiedWalk {
    /// Walks until the root block is verified (until then the file's length is unknown), and
    /// returns the file bytes that came with it.
    async fn until_root(&mut self) -> Result<VecDeque<Bytes>, FetchError> {
        let mut ready = VecDeque::new();
        while self.walker.file_size().is_none() {
            match self.next().await? {
                Some(bytes) => ready.extend(bytes),
                None => break,
            }
        }
        Ok(ready)
    }

    /// The rest of the walk's bytes, after `ready`.
    fn into_stream(self, ready: VecDeque<Bytes>) -> BoxStream<'static, Result<Bytes, FetchError>> {
        // The state is `None` after an error: one error ends the stream (the response is
        // aborted, nothing is cached).
        futures_util::stream::unfold(Some((self, ready)), |state| async move {
            let (mut walk, mut ready) = state?;
            loop {
                if let Some(bytes) = ready.pop_front() {
                    return Some((Ok(bytes), Some((walk, ready))));
                }
                match walk.next().await {
                    Ok(Some(bytes)) => ready.extend(bytes),
                    Ok(None) => return None,
                    Err(error) => return Some((Err(error), None)),
                }
            }
        })
        .boxed()
    }
}

struct VerifiedWalk {
    car: Option<CarReader<CarStream>>,
    walker: FileWalker,
    source: Arc<Gateway>,
    sources: Sources,
    /// A range walk (`entity-bytes`).
    ranged: bool,
}

impl VerifiedWalk {
    /// The next verified file bytes (`None`: the file is complete).
    async fn next(&mut self) -> Result<Option<Vec<Bytes>>, FetchError> {
        loop {
            if self.walker.is_complete() {
                if self.car.is_some() {
                    self.source.health.success();
                    self.car = None;
                }
                return Ok(None);
            }
            let Some(car) = self.car.as_mut() else {
                let Some(needed) = self.walker.next_needed() else {
                    return Err(FetchError::Unverified("the walk failed".into()));
                };
                let block = fetch_elsewhere(&self.sources, &self.source, &needed).await?;
                match self.walker.accept(&needed, block) {
                    Ok(bytes) if bytes.is_empty() => continue,
                    Ok(bytes) => return Ok(Some(bytes)),
                    Err(error) => return Err(content_error(error)),
                }
            };
            match next_from_car(car, &mut self.walker).await {
                Ok(Some(bytes)) => return Ok(Some(bytes)),
                Ok(None) if self.walker.is_complete() => continue,
                Ok(None) => {
                    tracing::info!(gateway = %self.source.name, "CAR ended early; fetching the rest block by block");
                    self.source.health.failure();
                    self.car = None;
                }
                // A range CAR that carries blocks outside the range: the gateway ignored
                // `entity-bytes` (older gateways do) rather than lied, since the block may well
                // be the file's. Reading on through the whole file could cost far more than
                // the range, so the range's blocks are fetched one by one instead; nothing
                // unverified is used either way.
                Err(CarWalkError::Walk(WalkError::Unexpected(unexpected))) if self.ranged => {
                    tracing::info!(gateway = %self.source.name, got = %unexpected.got, "range CAR carries other blocks; fetching the range block by block");
                    self.source.health.failure();
                    self.car = None;
                }
                Err(CarWalkError::Walk(error)) if error.is_bad_block() => {
                    bench(&self.source, &self.sources, &error);
                    self.car = None;
                }
                Err(CarWalkError::Walk(error)) => return Err(content_error(error)),
                Err(CarWalkError::Car(error)) => {
                    // A CAR that breaks its own framing (oversized section, bad header) is a
                    // lie; a connection that drops is only a failure.
                    match error {
                        CarError::Stream(_) | CarError::Truncated(_) => {
                            self.source.health.failure()
                        }
                        _ => bench(&self.source, &self.sources, &error),
                    }
                    tracing::info!(gateway = %self.source.name, %error, "CAR unusable; fetching the rest block by block");
                    self.car = None;
                }
            }
        }
    }
}

/// The block from the other gateways, best first, the one that failed us last.
async fn fetch_elsewhere(
    sources: &Sources,
    failed: &Arc<Gateway>,
    cid: &Cid,
) -> Result<Bytes, FetchError> {
    let mut order: Vec<&Arc<Gateway>> = sources.all.iter().collect();
    order.sort_by_key(|g| (Arc::ptr_eq(g, failed), g.health.rank()));
    let mut worst = FetchError::NotFound;
    for gateway in order {
        match gateway.fetch_block(cid).await {
            Ok(block) => {
                gateway.health.success();
                return Ok(block);
            }
            Err(error) => {
                if matches!(error, FetchError::Unverified(_)) {
                    bench(gateway, sources, &error);
                } else {
                    gateway.health.failure();
                }
                if error.weight() >= worst.weight() {
                    worst = error;
                }
            }
        }
    }
    Err(worst)
}

/// A verified block that proves the content unservable (not a file, malformed DAG, hash we do
/// not accept): no other gateway can do better.
fn content_error(error: WalkError) -> FetchError {
    match error {
        WalkError::NotAFile(kind) => FetchError::NotAFile(kind.to_string()),
        WalkError::TooCostly(_) => FetchError::TooCostly(error.to_string()),
        WalkError::Verify(VerifyError::UnsupportedHash { .. }) => {
            FetchError::Unsupported(error.to_string())
        }
        other => unverified(other),
    }
}

fn bench(gateway: &Gateway, sources: &Sources, why: &dyn std::fmt::Display) {
    tracing::warn!(gateway = %gateway.name, reason = %why, bench = ?sources.bench_time, "gateway served bad data; benched");
    gateway.health.bench(sources.bench_time);
    crate::metrics::METRICS
        .verification_failures
        .get_or_create(&crate::metrics::GatewayLabel {
            gateway: gateway.name.clone(),
        })
        .inc();
}

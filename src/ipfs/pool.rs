//! The configured gateways as one source of content.
//!
//! The healthiest gateway is asked first; if it has not answered within `hedge_delay` the next
//! one is asked too, and so on: the first good answer wins and the others are cancelled (their
//! futures are dropped, which drops their connections). A failure moves on at once rather than
//! waiting for the hedge. When every gateway fails, the most telling failure is returned (404
//! only when every gateway said not found) and each gateway's outcome is logged.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use cid::Cid;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;

use crate::byte_range::ByteRange;
use crate::ipfs::fetch_error::FetchError;
use crate::ipfs::gateway::{Gateway, GatewayResponse, GatewaySettings, Mode};
use crate::ipfs::multicodec::RAW;
use crate::ipfs::part::PartResponse;
use crate::ipfs::trustless::{self, Sources};
use crate::ipfs::verify;
use crate::metrics::{GatewayLabel, GatewayOutcome, METRICS};

/// The gateway set in use. A reload (SIGHUP) swaps in a new set; fetches already running keep
/// the set they started with, so nothing in flight is dropped.
pub struct Gateways {
    current: ArcSwap<GatewaySet>,
}

/// How gateways are raced and walks bounded (the app builds it from `[retrieval]`).
#[derive(Debug, Clone)]
pub struct RetrievalSettings {
    /// When the best gateway has not answered within this, the next one is asked too.
    pub hedge_delay: Duration,
    /// How long a gateway caught serving a bad block is asked last.
    pub bench_time: Duration,
    /// How often every gateway is probed; zero turns probing off.
    pub probe_interval: Duration,
    /// The most blocks one verified walk may take, whatever the file's size justifies.
    pub max_dag_blocks: u64,
}

pub struct GatewaySet {
    all: Arc<[Arc<Gateway>]>,
    hedge_delay: Duration,
    bench_time: Duration,
    probe_interval: Duration,
    max_dag_blocks: u64,
}

impl Gateways {
    pub fn new(
        gateways: &[GatewaySettings],
        retrieval: &RetrievalSettings,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            current: ArcSwap::from_pointee(GatewaySet::new(gateways, retrieval)?),
        })
    }

    /// The set requests use from now on.
    pub fn replace(
        &self,
        gateways: &[GatewaySettings],
        retrieval: &RetrievalSettings,
    ) -> Result<(), reqwest::Error> {
        self.current
            .store(Arc::new(GatewaySet::new(gateways, retrieval)?));
        Ok(())
    }

    pub fn current(&self) -> Arc<GatewaySet> {
        self.current.load_full()
    }

    /// The content of `cid` from the first gateway to deliver it.
    pub async fn fetch(&self, cid: &Cid) -> Result<GatewayResponse, FetchError> {
        self.current().fetch(cid).await
    }

    /// Probes every gateway every `retrieval.probe_interval` so that a recovered gateway
    /// regains its rank. The interval is read again after each round, so a reload applies.
    pub fn spawn_probes(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(set) = pool.upgrade().map(|p| p.current()) else {
                    break;
                };
                if set.probe_interval.is_zero() {
                    // Probing off: look again later in case a reload turns it on.
                    drop(set);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
                let interval = set.probe_interval;
                for gateway in set.all.iter() {
                    if gateway.probe().await {
                        gateway.health.success();
                    } else {
                        gateway.health.failure();
                    }
                }
                drop(set);
                tokio::time::sleep(interval).await;
            }
        })
    }
}

impl GatewaySet {
    fn new(
        gateways: &[GatewaySettings],
        retrieval: &RetrievalSettings,
    ) -> Result<Self, reqwest::Error> {
        let all = gateways
            .iter()
            .map(Gateway::new)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            all: all.into(),
            hedge_delay: retrieval.hedge_delay,
            bench_time: retrieval.bench_time,
            probe_interval: retrieval.probe_interval,
            max_dag_blocks: retrieval.max_dag_blocks,
        })
    }

    pub fn all(&self) -> &[Arc<Gateway>] {
        &self.all
    }

    /// The content of `cid` from the first gateway to deliver it.
    pub async fn fetch(&self, cid: &Cid) -> Result<GatewayResponse, FetchError> {
        // Identity CIDs carry their bytes: no request at all.
        if let Some(inline) = identity(cid)? {
            return Ok(GatewayResponse::whole(inline));
        }
        self.race(cid, |gateway| self.fetch_from(gateway, *cid))
            .await
    }

    /// One range of `cid` (never cached, never shared), from the first gateway to deliver it:
    /// the same health order, hedging and choice of failure as [`Self::fetch`].
    pub async fn fetch_range(
        &self,
        cid: &Cid,
        wanted: ByteRange,
        max_bytes: u64,
    ) -> Result<PartResponse, FetchError> {
        if let Some(inline) = identity(cid)? {
            return PartResponse::cut(inline, &wanted, max_bytes);
        }
        self.race(cid, |gateway| {
            self.fetch_range_from(gateway, *cid, wanted, max_bytes)
        })
        .await
    }

    /// Asks the healthiest gateway first, hedges after `hedge_delay`, moves on at once after
    /// a failure, and returns the first success or the most telling failure.
    async fn race<T, F, Fut>(&self, cid: &Cid, attempt: F) -> Result<T, FetchError>
    where
        F: Fn(Arc<Gateway>) -> Fut,
        Fut: Future<Output = Result<T, FetchError>>,
    {
        let mut order: Vec<Arc<Gateway>> = self.all.iter().cloned().collect();
        // Stable: equal health keeps the configured order.
        order.sort_by_key(|g| g.health.rank());
        let mut waiting = order.into_iter();
        let mut running = FuturesUnordered::new();
        let mut outcomes: Vec<(String, String)> = Vec::new();
        let mut worst: Option<FetchError> = None;
        let start = |gateway: Arc<Gateway>| recorded(Arc::clone(&gateway), attempt(gateway));
        if let Some(first) = waiting.next() {
            running.push(start(first));
        }
        loop {
            let hedge = tokio::time::sleep(self.hedge_delay);
            tokio::select! {
                finished = running.next() => {
                    let Some((gateway, result)) = finished else { break };
                    match result {
                        Ok(response) => return Ok(response),
                        Err(error) => {
                            outcomes.push((gateway.name.clone(), error.to_string()));
                            if error.is_final() {
                                return Err(error);
                            }
                            if worst.as_ref().is_none_or(|w| error.weight() > w.weight()) {
                                worst = Some(error);
                            }
                            // A failure moves on at once.
                            if let Some(next) = waiting.next() {
                                running.push(start(next));
                            }
                        }
                    }
                }
                _ = hedge, if waiting.len() > 0 && !running.is_empty() => {
                    if let Some(next) = waiting.next() {
                        tracing::debug!(gateway = %next.name, %cid, "hedging: asking another gateway too");
                        running.push(start(next));
                    }
                }
            }
        }
        let error = worst.unwrap_or(FetchError::NotFound);
        tracing::warn!(%cid, ?outcomes, %error, "no gateway delivered the content");
        Err(error)
    }

    fn sources(&self) -> Sources {
        Sources {
            all: Arc::clone(&self.all),
            bench_time: self.bench_time,
            max_dag_blocks: self.max_dag_blocks,
        }
    }

    async fn fetch_from(
        &self,
        gateway: Arc<Gateway>,
        cid: Cid,
    ) -> Result<GatewayResponse, FetchError> {
        match gateway.mode {
            Mode::Trusted => gateway.fetch_path(&cid).await,
            Mode::Trustless => {
                verifiable(&cid)?;
                trustless::fetch_verified(gateway, cid, self.sources()).await
            }
        }
    }

    async fn fetch_range_from(
        &self,
        gateway: Arc<Gateway>,
        cid: Cid,
        wanted: ByteRange,
        max_bytes: u64,
    ) -> Result<PartResponse, FetchError> {
        match gateway.mode {
            Mode::Trusted => gateway.fetch_path_range(&cid, &wanted, max_bytes).await,
            Mode::Trustless => {
                verifiable(&cid)?;
                trustless::fetch_verified_range(gateway, cid, wanted, self.sources(), max_bytes)
                    .await
            }
        }
    }
}

/// The bytes an identity CID carries (`None` for any other CID).
fn identity(cid: &Cid) -> Result<Option<bytes::Bytes>, FetchError> {
    if cid.codec() != RAW {
        return Ok(None);
    }
    verify::identity_block(cid).map_err(|e| FetchError::Unsupported(e.to_string()))
}

/// A trustless gateway is of no use for a CID whose hash we cannot check.
fn verifiable(cid: &Cid) -> Result<(), FetchError> {
    if verify::is_supported(cid) {
        return Ok(());
    }
    Err(FetchError::Unsupported(format!(
        "this CID's hash function ({:#x}) cannot be verified",
        cid.hash().code()
    )))
}

/// Runs one gateway's attempt, and records its outcome in the metrics and its health.
async fn recorded<T>(
    gateway: Arc<Gateway>,
    attempt: impl Future<Output = Result<T, FetchError>>,
) -> (Arc<Gateway>, Result<T, FetchError>) {
    let started = std::time::Instant::now();
    let result = attempt.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(FetchError::NotFound) => "not_found",
        Err(FetchError::Timeout) => "timeout",
        Err(FetchError::TooLarge { .. }) => "too_large",
        Err(FetchError::Upstream(_)) => "error",
        Err(FetchError::Unverified(_)) => "unverified",
        Err(FetchError::NotAFile(_)) => "not_a_file",
        Err(FetchError::Unsupported(_)) => "unsupported",
        Err(FetchError::TooCostly(_)) => "too_costly",
        Err(FetchError::Busy) => "busy",
    };
    let name = gateway.name.clone();
    METRICS
        .gateway_requests
        .get_or_create(&GatewayOutcome {
            gateway: name.clone(),
            outcome,
        })
        .inc();
    METRICS
        .gateway_duration
        .get_or_create(&GatewayLabel { gateway: name })
        .observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(_) => gateway.health.success(),
        // Not having content is no fault; the rest lowers the score.
        Err(FetchError::NotFound)
        | Err(FetchError::Unsupported(_))
        | Err(FetchError::TooCostly(_))
        | Err(FetchError::Busy) => {}
        Err(FetchError::Unverified(_)) => {} // benched where it was caught
        Err(_) => gateway.health.failure(),
    }
    (gateway, result)
}

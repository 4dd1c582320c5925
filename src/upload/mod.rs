//! Uploads stored on IPFS: `POST /_matrix/media/{r0,v1,v3}/upload` answered by the proxy.
//!
//! The caller has been accepted by the homeserver (`app` asks `auth` first). The body is
//! hashed by our UnixFS importer ([`crate::ipfs::import`]) and streamed to the store's `add`
//! in the same pass ([`store`]), never held whole: memory is the importer's pending links,
//! the chunks in flight, and, for uploads small enough to be cached, their bytes. Success is
//! answered only when the store reports exactly our CID; every other ending (a client that
//! leaves, too large, a store that fails, stalls or reports another CID, a blocked CID)
//! answers an error, pins nothing that was not pinned before, and caches nothing.

pub mod car_pin;
pub mod pin;
pub mod rate;
pub mod remote;
pub mod store;

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures_util::{FutureExt, Stream, StreamExt};
use http::request::Parts;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyDataStream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::access_log::UploadRecord;
use crate::body::{self, Body};
use crate::cache::{CacheKey, CachedMedia, MediaCache};
use crate::denylist::Denylists;
use crate::forwarding::Peer;
use crate::homeserver::{Homeserver, Whoami};
use crate::ipfs::import::{Imported, Importer, Profile};
use crate::ipfs::pool::Gateways;
use crate::media::{headers, sniff};
use crate::metrics::{Outcome, METRICS};

use self::rate::{Charge, RateLimiter, RateSettings};
use self::store::{Store, StoreError, StoreSettings};

/// How the answered media ID names the CID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaIdForm {
    /// `<prefix><cid>`, the spec-grammar alias (`ipfs_<cid>`).
    Alias(String),
    /// `ipfs:<cid>`, MSC2706's own form.
    Msc2706,
}

/// What the upload side runs with, made from the configuration by `app`.
pub struct UploadSettings {
    pub allow_guests: bool,
    /// User-ID patterns (`*`: any run); empty: every user.
    pub users: Vec<String>,
    pub media_id: MediaIdForm,
    pub profile: Profile,
    /// `upload.max_bytes`; `None`: the homeserver's `m.upload.size`, else `fallback_max_bytes`.
    pub max_bytes: Option<u64>,
    pub fallback_max_bytes: u64,
    pub rate: RateSettings,
    /// Uploads up to this go into the cache (`cache.max_item_bytes`).
    pub cache_item_limit: u64,
    pub store: StoreSettings,
    /// Pin endpoint: how long gateways may take to find a CID's root (`upload.pin_find_timeout`).
    pub pin_find_timeout: Duration,
    /// Pin endpoint: how long the store's pin may take (`upload.pin_timeout`).
    pub pin_timeout: Duration,
    /// CAR pins: where verified blocks are spooled (`upload.spool_dir`; `None`: the system's
    /// temporary directory).
    pub spool_dir: Option<std::path::PathBuf>,
    /// CAR pins: the most blocks one CAR may hold (`retrieval.max_dag_blocks`).
    pub max_dag_blocks: u64,
    /// `[[upload.remote_pins]]`.
    pub remote_pins: Vec<remote::RemotePinSettings>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    #[error("guests may not upload to IPFS here")]
    Guest,
    #[error("the upload is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// When the caller may try again.
    #[error("too many uploads; retry in {0:?}")]
    RateLimited(Duration),
    #[error("the upload did not arrive whole: {0}")]
    Body(String),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the store did not answer within {0:?}")]
    StoreTimeout(Duration),
    #[error("misconfigured store: it reported {theirs} for content whose CID is {ours}")]
    StoreMismatch { ours: Cid, theirs: Cid },
    #[error("the CID {0} is on a denylist")]
    Blocked(Cid),
    /// Pin endpoint: the path does not name a CID.
    #[error("not a CID: {0}")]
    NotACid(String),
    /// Pin endpoint: no gateway found the root within `upload.pin_find_timeout`.
    #[error("the content was not found within {0:?}")]
    NotFound(Duration),
    /// Pin endpoint: found, and not something the proxy could serve as media.
    #[error("{0}")]
    NotMedia(String),
    /// Pin endpoint: a CAR that does not hold exactly the file its path names.
    #[error("the CAR was refused: {0}")]
    Car(String),
}

impl UploadError {
    /// The `outcome` label of `uploads_total` and of the access log.
    pub fn outcome(&self) -> &'static str {
        match self {
            UploadError::Guest => "refused",
            UploadError::TooLarge { .. } => "too_large",
            UploadError::RateLimited(_) => "rate_limited",
            UploadError::Body(_) => "aborted",
            UploadError::Store(_) | UploadError::StoreTimeout(_) => "store_error",
            UploadError::StoreMismatch { .. } => "store_mismatch",
            UploadError::Blocked(_) => "blocked",
            UploadError::NotACid(_) | UploadError::NotMedia(_) | UploadError::Car(_) => "invalid",
            UploadError::NotFound(_) => "not_found",
        }
    }
}

pub struct Uploader {
    settings: UploadSettings,
    store: Store,
    rate: RateLimiter,
    cache: MediaCache,
    denylist: Arc<Denylists>,
    homeserver: Homeserver,
    /// Where the pin endpoint looks for a CID's root.
    gateways: Arc<Gateways>,
    /// Remote pinning services, when configured.
    remote: Option<remote::RemotePins>,
    /// The homeserver's `m.upload.size`: `None` until asked, then what it said.
    homeserver_limit: Mutex<Option<Option<u64>>>,
    /// CIDs this process has answered as stored: a failed later upload of the same bytes must
    /// not unpin what an earlier one was promised.
    stored: moka::sync::Cache<Cid, ()>,
}

/// The most of the homeserver's media config answer that is read.
const MAX_CONFIG_ANSWER: usize = 64 * 1024;

impl Uploader {
    pub fn new(
        settings: UploadSettings,
        cache: MediaCache,
        denylist: Arc<Denylists>,
        homeserver: Homeserver,
        gateways: Arc<Gateways>,
    ) -> Result<Self, reqwest::Error> {
        let store = Store::new(settings.store.clone())?;
        let remote = match settings.remote_pins.is_empty() {
            true => None,
            false => Some(remote::RemotePins::start(
                settings.remote_pins.clone(),
                store.clone(),
            )?),
        };
        Ok(Self {
            store,
            remote,
            rate: RateLimiter::new(settings.rate),
            settings,
            cache,
            denylist,
            homeserver,
            gateways,
            homeserver_limit: Mutex::new(None),
            stored: moka::sync::Cache::new(100_000),
        })
    }

    /// Whether this user's uploads go to IPFS (`upload.users`); others pass through.
    pub fn stores_for(&self, user: &Whoami) -> bool {
        self.settings.users.is_empty()
            || self
                .settings
                .users
                .iter()
                .any(|pattern| glob(pattern, &user.user_id))
    }

    /// Asks the homeserver's limit again at the next upload (on reload).
    pub fn forget_homeserver_limit(&self) {
        *self
            .homeserver_limit
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Stores the body of an accepted user's upload; the success answer, or why not.
    pub async fn upload(&self, parts: &Parts, body: Body, user: &Whoami, peer: &Peer) -> Recorded {
        recorded(&METRICS.uploads, "stored", async |record| {
            let answer = self.store_upload(parts, body, user, peer, record).await?;
            METRICS.upload_bytes.inc_by(record.bytes);
            Ok(answer)
        })
        .await
    }

    async fn store_upload(
        &self,
        parts: &Parts,
        body: Body,
        user: &Whoami,
        peer: &Peer,
        record: &mut UploadRecord,
    ) -> Result<Response<Body>, UploadError> {
        if user.is_guest && !self.settings.allow_guests {
            return Err(UploadError::Guest);
        }
        let announced = content_length(parts);
        let limit = self.max_bytes(parts, peer).await;
        if announced.is_some_and(|n| n > limit) {
            return Err(UploadError::TooLarge { limit });
        }
        let charge = self.start_charge(user, announced)?;

        let keep = announced.is_none_or(|n| n <= self.settings.cache_item_limit);
        let progress = Arc::new(Mutex::new(Progress {
            importer: Some(Importer::new(self.settings.profile)),
            kept: keep.then(Vec::new),
            kept_len: 0,
            keep_limit: self.settings.cache_item_limit,
            bytes: 0,
            limit,
            charge: Some(charge),
            ended: None,
            handed_at: None,
            pinned_before: None,
        }));
        let tee = Tee {
            body: BodyDataStream::new(body),
            progress: Arc::clone(&progress),
            store: self.store.clone(),
            check: None,
            finished: None,
        };
        let added = self.add_watched(tee, &progress).await;
        // Dropped on every failure below, giving the bytes back.
        let (ended, kept, pinned_before, charge) = {
            let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
            record.bytes = p.bytes;
            (
                p.ended.take(),
                p.kept.take(),
                p.pinned_before,
                p.charge.take(),
            )
        };
        // Ours to undo only when the store did not hold it before and no earlier upload here
        // was answered with it.
        let ours_to_undo =
            |cid: &Cid| pinned_before == Some(false) && !self.stored.contains_key(cid);
        let ours = match ended {
            Some(Ok(imported)) => imported,
            Some(Err(fault)) => {
                // The add was aborted before the file was whole: the store pinned nothing.
                return Err(fault);
            }
            None => {
                // The store answered (or failed) before reading the whole body.
                if let Ok(theirs) = &added {
                    self.unpin(theirs, "the store answered before the upload ended")
                        .await;
                }
                return Err(added.err().unwrap_or_else(|| {
                    UploadError::Store(StoreError::BadAnswer(
                        "answered before the upload ended".to_owned(),
                    ))
                }));
            }
        };
        record.cid = Some(ours.cid.to_string());
        let theirs = match added {
            Ok(theirs) => theirs,
            Err(error) => {
                // The store may have pinned our CID just before failing to answer.
                if ours_to_undo(&ours.cid) {
                    self.unpin(&ours.cid, "the store failed").await;
                }
                return Err(error);
            }
        };
        if theirs != ours.cid {
            tracing::error!(
                store = self.store.kind().as_str(),
                ours = %ours.cid,
                %theirs,
                profile = self.settings.profile.name(),
                "misconfigured store: it reported another CID for the uploaded bytes; check its import parameters"
            );
            if !self.stored.contains_key(&theirs) {
                self.unpin(&theirs, "its CID is not ours").await;
            }
            return Err(UploadError::StoreMismatch {
                ours: ours.cid,
                theirs,
            });
        }
        if self.denylist.blocks(&ours.cid) {
            tracing::warn!(cid = %ours.cid, user = %user.user_id, "upload refused: the CID is on a denylist");
            METRICS.denylist_refusals.inc();
            self.stored.invalidate(&ours.cid);
            // Unlike a failure, whoever else pinned it: blocked content does not stay here.
            self.unpin(&ours.cid, "blocked").await;
            return Err(UploadError::Blocked(ours.cid));
        }
        self.stored.insert(ours.cid, ());
        if let Some(charge) = charge {
            charge.keep();
        }
        self.pinned_here(&ours.cid);
        if let Some(chunks) = kept {
            self.cache_upload(&ours, chunks);
        }
        let content_uri = self.content_uri(user, &ours.cid);
        tracing::info!(cid = %ours.cid, bytes = ours.file_size, user = %user.user_id, "upload stored on IPFS");
        Ok(answer(&content_uri))
    }

    /// Runs the add, failing it when the store has held a chunk (or, after the last, its
    /// answer) for longer than the store timeout.
    async fn add_watched(
        &self,
        tee: Tee,
        progress: &Arc<Mutex<Progress>>,
    ) -> Result<Cid, UploadError> {
        let timeout = self.store.timeout();
        let tick = (timeout / 4).max(Duration::from_millis(5));
        let add = self.store.add(self.settings.profile, tee);
        tokio::pin!(add);
        loop {
            tokio::select! {
                result = &mut add => return result.map_err(UploadError::from),
                _ = tokio::time::sleep(tick) => {
                    let handed_at = progress.lock().unwrap_or_else(|e| e.into_inner()).handed_at;
                    if handed_at.is_some_and(|at| at.elapsed() >= timeout) {
                        return Err(UploadError::StoreTimeout(timeout));
                    }
                }
            }
        }
    }

    async fn unpin(&self, cid: &Cid, why: &str) {
        match self.store.unpin(cid).await {
            Ok(()) => tracing::info!(%cid, why, "unpinned from the store"),
            Err(error) => tracing::error!(%cid, why, %error, "could not unpin from the store"),
        }
    }

    fn cache_upload(&self, imported: &Imported, chunks: Vec<Bytes>) {
        let mut bytes = BytesMut::with_capacity(imported.file_size as usize);
        for chunk in chunks {
            bytes.extend_from_slice(&chunk);
        }
        let bytes = bytes.freeze();
        let sniffed = sniff::sniff(&bytes[..bytes.len().min(1024)]);
        self.cache.insert(
            CacheKey::Media(imported.cid),
            Arc::new(CachedMedia::new(bytes, sniffed)),
        );
    }

    /// Starts charging `user`'s rate limit for a request announcing `announced` bytes.
    #[allow(clippy::result_large_err)] // UploadError, as every step of an upload or pin returns
    fn start_charge(&self, user: &Whoami, announced: Option<u64>) -> Result<Charge, UploadError> {
        self.rate
            .start(&user.user_id, announced)
            .map_err(UploadError::RateLimited)
    }

    /// The store now holds `cid` because of an upload or a pin: the remote services too.
    fn pinned_here(&self, cid: &Cid) {
        if let Some(remote) = &self.remote {
            remote.request(*cid);
        }
    }

    /// `mxc://<the user's server name>/<media ID>`.
    fn content_uri(&self, user: &Whoami, cid: &Cid) -> String {
        format!("mxc://{}/{}", user.server_name(), self.media_id(cid))
    }

    fn media_id(&self, cid: &Cid) -> String {
        match &self.settings.media_id {
            MediaIdForm::Alias(prefix) => format!("{prefix}{cid}"),
            MediaIdForm::Msc2706 => format!("ipfs:{cid}"),
        }
    }

    /// `upload.max_bytes`, else the homeserver's `m.upload.size` (asked once with this
    /// caller's credentials: the media config needs a token), else the fallback.
    async fn max_bytes(&self, parts: &Parts, peer: &Peer) -> u64 {
        if let Some(limit) = self.settings.max_bytes {
            return limit;
        }
        let known = *self
            .homeserver_limit
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let asked = match known {
            Some(answer) => answer,
            None => {
                let answer = self.ask_homeserver_limit(parts, peer).await;
                *self
                    .homeserver_limit
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(answer);
                answer
            }
        };
        asked.unwrap_or(self.settings.fallback_max_bytes)
    }

    async fn ask_homeserver_limit(&self, parts: &Parts, peer: &Peer) -> Option<u64> {
        for path in [
            "/_matrix/client/v1/media/config",
            "/_matrix/media/v3/config",
        ] {
            let mut request = Request::get(path);
            if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
                request = request.header(header::AUTHORIZATION, value.clone());
            }
            let Ok(request) = request.body(body::empty()) else {
                return None;
            };
            let Ok(response) = self.homeserver.relay(request, peer).await else {
                return None;
            };
            if !response.status().is_success() {
                continue;
            }
            let Ok(answer) = body::collect_limited(response.into_body(), MAX_CONFIG_ANSWER).await
            else {
                continue;
            };
            let size = serde_json::from_slice::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v.get("m.upload.size").and_then(|s| s.as_u64()));
            if let Some(size) = size {
                tracing::info!(bytes = size, "upload limit: the homeserver's m.upload.size");
                return Some(size);
            }
        }
        None
    }
}

/// The answer to an upload or a pin, with its access-log record (on the response, or with
/// the error).
pub type Recorded = Result<Response<Body>, (UploadError, UploadRecord)>;

/// Runs one upload or pin (`run`, filling in its record) and counts its outcome in `counter`.
async fn recorded(
    counter: &Family<Outcome, Counter>,
    success: &'static str,
    run: impl AsyncFnOnce(&mut UploadRecord) -> Result<Response<Body>, UploadError>,
) -> Recorded {
    let mut record = UploadRecord {
        cid: None,
        bytes: 0,
        outcome: success,
    };
    let result = run(&mut record).await;
    record.outcome = match &result {
        Ok(_) => success,
        Err(error) => error.outcome(),
    };
    counter
        .get_or_create(&Outcome {
            outcome: record.outcome,
        })
        .inc();
    match result {
        Ok(mut response) => {
            response.extensions_mut().insert(record);
            Ok(response)
        }
        Err(error) => Err((error, record)),
    }
}

/// The request's `Content-Length`, when it has a valid one.
fn content_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Synapse's upload answer.
fn answer(content_uri: &str) -> Response<Body> {
    let text = serde_json::json!({ "content_uri": content_uri }).to_string();
    let mut response = Response::new(body::full(text));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers::cors(h);
    *response.status_mut() = StatusCode::OK;
    response
}

/// `*` matches any run of characters; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// What the pass over the body has seen, shared by the stream the store reads and the
/// upload that waits for it.
struct Progress {
    importer: Option<Importer>,
    /// The bytes, while they may still go into the cache.
    kept: Option<Vec<Bytes>>,
    kept_len: u64,
    keep_limit: u64,
    bytes: u64,
    limit: u64,
    /// This upload's hold on the user's byte allowance, charged as bytes arrive; taken by
    /// the upload at the end (kept on success, given back otherwise).
    charge: Option<Charge>,
    /// Set once the body has ended: the import, or why the body failed.
    ended: Option<Result<Imported, UploadError>>,
    /// When the store was last handed something (a chunk, or the end) that it has not yet
    /// asked past: the stall watch.
    handed_at: Option<Instant>,
    /// Whether the store held our CID pinned before this upload; `None`: unknown (not
    /// asked, or it could not say), which never unpins.
    pinned_before: Option<bool>,
}

/// The client's body as the store reads it, hashed and counted on the way.
struct Tee {
    body: BodyDataStream<Body>,
    progress: Arc<Mutex<Progress>>,
    store: Store,
    /// Once the body has ended and its CID is known: whether the store already pinned it
    /// (another user's identical file), asked before the stream ends. The store cannot have
    /// completed this add, and so cannot have pinned anything because of it, before it sees
    /// the multipart's closing boundary, which follows the end of this stream: so the answer
    /// is the pinset as it was before this upload, and a failing upload unpins only what it
    /// pinned itself. (Not `pin=false` then `pin/add`: Cluster's `/add` always pins.) A
    /// spawned task, so the stream stays `Sync` as the store's request body must be.
    check: Option<tokio::task::JoinHandle<Result<bool, StoreError>>>,
    finished: Option<Imported>,
}

impl Stream for Tee {
    type Item = Result<Bytes, UploadError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(check) = this.check.as_mut() {
            let answer = std::task::ready!(check.poll_unpin(cx));
            this.check = None;
            let mut p = this.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.pinned_before = match answer {
                Ok(Ok(pinned)) => Some(pinned),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "could not ask the store whether the upload's CID was already pinned; it will not be unpinned");
                    None
                }
                Err(_) => None,
            };
            p.ended = this.finished.take().map(Ok);
            p.handed_at = Some(Instant::now());
            return Poll::Ready(None);
        }
        {
            let mut p = this.progress.lock().unwrap_or_else(|e| e.into_inner());
            if p.ended.is_some() {
                return Poll::Ready(None);
            }
            p.handed_at = None;
        }
        let polled = this.body.poll_next_unpin(cx);
        let mut p = this.progress.lock().unwrap_or_else(|e| e.into_inner());
        match polled {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                p.bytes += chunk.len() as u64;
                let fault = if p.bytes > p.limit {
                    Some(UploadError::TooLarge { limit: p.limit })
                } else {
                    let total = p.bytes;
                    p.charge
                        .as_mut()
                        .and_then(|charge| charge.cover(total).err())
                        .map(UploadError::RateLimited)
                };
                if let Some(fault) = fault {
                    p.ended = Some(Err(fault.clone()));
                    p.kept = None;
                    return Poll::Ready(Some(Err(fault)));
                }
                if let Some(importer) = p.importer.as_mut() {
                    importer.update(&chunk);
                }
                p.kept_len += chunk.len() as u64;
                if p.kept_len > p.keep_limit {
                    p.kept = None;
                } else if let Some(kept) = p.kept.as_mut() {
                    kept.push(chunk.clone());
                }
                p.handed_at = Some(Instant::now());
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(error))) => {
                let fault = UploadError::Body(crate::chain::error_chain(&*error));
                p.ended = Some(Err(fault.clone()));
                p.kept = None;
                Poll::Ready(Some(Err(fault)))
            }
            Poll::Ready(None) => {
                let Some(imported) = p.importer.take().map(Importer::finish) else {
                    return Poll::Ready(None);
                };
                // Asked before the closing boundary is handed over: see `Tee::check`.
                let store = this.store.clone();
                let cid = imported.cid;
                this.check = Some(tokio::spawn(async move { store.pinned(&cid).await }));
                this.finished = Some(imported);
                drop(p);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn user_patterns() {
        assert!(glob("@*:example.org", "@alice:example.org"));
        assert!(!glob("@*:example.org", "@alice:example.org.evil"));
        assert!(glob("@alice:example.org", "@alice:example.org"));
        assert!(!glob("@alice:example.org", "@alice2:example.org"));
        assert!(glob("*", "@x:y"));
        assert!(glob("@bot-*:*", "@bot-1:any.server"));
        assert!(!glob("@bot-*:*", "@human:any.server"));
        assert!(!glob("@a*a:x", "@a:x"));
    }
}

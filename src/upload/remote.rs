//! Remote pinning services (`[[upload.remote_pins]]`, the IPFS Pinning Service API): every
//! CID the store holds because of an upload or a pin is also pinned there.
//!
//! - **Request**: `POST /pins {cid, name, origins}` (origins: the store's own addresses, asked
//!   once from its `id`), retried with doubling backoff up to `max_attempts`.
//! - **Follow**: `GET /pins/{requestid}` every `status_interval` until `pinned` or `failed`,
//!   at most `max_status_checks` times; `failed` is requested again while attempts remain.
//! - **Reconcile**: the store is the record, so nothing is lost across restarts without a
//!   database of our own: at start and every `reconcile_interval`, the store's recursive pins
//!   are compared with the service (`GET /pins?cid=...`, 10 at a time, the spec's maximum),
//!   and only the CIDs the service does not hold or is not pinning are requested (a pin it
//!   failed is asked for again). A crash between an upload and
//!   its request is repaired on the next pass.
//!
//! Lenient where real services deviate from the spec: a `200` where it says `202` (Pinata);
//! a `PinStatus` without `requestid` (the CID is used, as Cluster's own API does); a status
//! in another case; a `GET /pins` answer without `results` (nothing known). The token is sent
//! as `Authorization: Bearer` and never logged (the header is marked sensitive, and errors
//! name only the service).
//!
//! Every loop is bounded: the queue (`queue`), the attempts, the status checks, the listing
//! (`MAX_LISTING_BYTES`), and the known-state map (entries for CIDs not yet pinned, at most
//! the queue's size; one given up on makes room for a new one).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cid::Cid;
use http::HeaderValue;
use url::Url;

use crate::metrics::{RemoteService, RemoteStatus, METRICS};

use super::store::Store;

/// The Pinning Service API's most CIDs in one `GET /pins?cid=` query.
const CID_BATCH: usize = 10;
/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The most of one service answer read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct RemotePinSettings {
    pub name: String,
    pub endpoint: Url,
    pub token: HeaderValue,
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub status_interval: Duration,
    pub max_status_checks: u32,
    pub reconcile_interval: Duration,
    pub queue: usize,
    pub timeout: Duration,
}

/// The services, each with its worker; dropped, their tasks end.
pub struct RemotePins {
    services: Vec<Arc<Service>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RemotePins {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RemotePins {
    /// Starts one worker and one reconciliation loop per service.
    pub fn start(settings: Vec<RemotePinSettings>, store: Store) -> Result<Self, reqwest::Error> {
        let origins: Arc<tokio::sync::OnceCell<Vec<String>>> = Arc::default();
        let mut services = Vec::new();
        let mut tasks = Vec::new();
        for s in settings {
            let (tx, rx) = tokio::sync::mpsc::channel(s.queue.max(1));
            let client = reqwest::Client::builder()
                .connect_timeout(s.timeout)
                .timeout(s.timeout)
                .redirect(reqwest::redirect::Policy::none())
                .build()?;
            let service = Arc::new(Service {
                settings: s,
                client,
                queue: tx,
                state: Mutex::default(),
                store: store.clone(),
                origins: Arc::clone(&origins),
            });
            tasks.push(tokio::spawn(Arc::clone(&service).work(rx)));
            tasks.push(tokio::spawn(Arc::clone(&service).reconcile_loop()));
            services.push(service);
        }
        Ok(Self { services, tasks })
    }

    /// Asks every service to pin `cid` (in the background; a full queue leaves it to the
    /// next reconciliation).
    pub fn request(&self, cid: Cid) {
        for service in &self.services {
            service.enqueue(cid);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Queued,
    Pinning,
    Pinned,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Pinning => "pinning",
            Status::Pinned => "pinned",
            Status::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "queued" => Some(Status::Queued),
            "pinning" => Some(Status::Pinning),
            "pinned" => Some(Status::Pinned),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

const STATUSES: [Status; 4] = [
    Status::Queued,
    Status::Pinning,
    Status::Pinned,
    Status::Failed,
];

struct Service {
    settings: RemotePinSettings,
    client: reqwest::Client,
    queue: tokio::sync::mpsc::Sender<Cid>,
    /// CIDs requested and not yet pinned: their status and since when they wait.
    state: Mutex<HashMap<Cid, (Status, Instant)>>,
    store: Store,
    origins: Arc<tokio::sync::OnceCell<Vec<String>>>,
}

#[derive(Debug, thiserror::Error)]
enum RemoteError {
    #[error("the service could not be reached: {0}")]
    Unreachable(String),
    #[error("the service answered {0}")]
    Status(u16),
    #[error("the service's answer could not be read: {0}")]
    BadAnswer(String),
}

impl Service {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn enqueue(&self, cid: Cid) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.len() >= self.settings.queue && !state.contains_key(&cid) {
                // A CID given up on makes room: else `queue` CIDs the service refuses for
                // good would keep every later one out, for ever.
                let given_up = state
                    .iter()
                    .find(|(_, (status, _))| *status == Status::Failed)
                    .map(|(cid, _)| *cid);
                match given_up {
                    Some(old) => {
                        state.remove(&old);
                    }
                    None => {
                        tracing::warn!(service = self.name(), %cid, "remote pin queue full; left to the next reconciliation");
                        return;
                    }
                }
            }
            state.entry(cid).or_insert((Status::Queued, Instant::now()));
        }
        self.update_metrics();
        if self.queue.try_send(cid).is_err() {
            tracing::warn!(service = self.name(), %cid, "remote pin queue full; left to the next reconciliation");
        }
    }

    fn set(&self, cid: &Cid, status: Status) {
        // Counted once, when it leaves the waiting set.
        let newly_pinned = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            match status {
                Status::Pinned => state.remove(cid).is_some(),
                status => {
                    let entry = state.entry(*cid).or_insert((status, Instant::now()));
                    entry.0 = status;
                    false
                }
            }
        };
        if newly_pinned {
            METRICS
                .remote_pinned
                .get_or_create(&RemoteService {
                    service: self.name().to_owned(),
                })
                .inc();
        }
        self.update_metrics();
    }

    /// `remote_pins{service,status}` for what is not yet pinned, and the oldest wait.
    fn update_metrics(&self) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for status in STATUSES.into_iter().filter(|s| *s != Status::Pinned) {
            let n = state.values().filter(|(s, _)| *s == status).count();
            METRICS
                .remote_pins
                .get_or_create(&RemoteStatus {
                    service: self.name().to_owned(),
                    status: status.as_str(),
                })
                .set(n as i64);
        }
        let oldest = state
            .values()
            .map(|(_, since)| since.elapsed().as_secs())
            .max()
            .unwrap_or(0);
        METRICS
            .remote_oldest_unpinned
            .get_or_create(&RemoteService {
                service: self.name().to_owned(),
            })
            .set(oldest as i64);
    }

    async fn work(self: Arc<Self>, mut rx: tokio::sync::mpsc::Receiver<Cid>) {
        while let Some(cid) = rx.recv().await {
            self.pin(cid).await;
        }
    }

    /// Requests `cid` and follows it until pinned, failed for good, or out of checks.
    async fn pin(&self, cid: Cid) {
        let mut backoff = self.settings.retry_backoff;
        for attempt in 1..=self.settings.max_attempts.max(1) {
            match self.follow(cid).await {
                Ok(Status::Pinned) => {
                    tracing::info!(service = self.name(), %cid, "remote pin done");
                    self.set(&cid, Status::Pinned);
                    return;
                }
                Ok(status) => {
                    self.set(&cid, status);
                    tracing::warn!(service = self.name(), %cid, attempt, status = status.as_str(), "remote pin not done");
                }
                Err(error) => {
                    tracing::warn!(service = self.name(), %cid, attempt, %error, "remote pin request failed");
                }
            }
            if attempt < self.settings.max_attempts {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        self.set(&cid, Status::Failed);
        tracing::error!(service = self.name(), %cid, "remote pin given up after {} attempts; the next reconciliation asks again", self.settings.max_attempts);
    }

    /// One request and its status checks; the last status seen.
    async fn follow(&self, cid: Cid) -> Result<Status, RemoteError> {
        let (requestid, mut status) = self.request(cid).await?;
        self.set(&cid, status);
        for _ in 0..self.settings.max_status_checks {
            if matches!(status, Status::Pinned | Status::Failed) {
                break;
            }
            tokio::time::sleep(self.settings.status_interval).await;
            status = self.check(&requestid).await?;
            self.set(&cid, status);
        }
        Ok(status)
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.settings.endpoint.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, RemoteError> {
        let response = request
            .header(http::header::AUTHORIZATION, self.settings.token.clone())
            .send()
            .await
            // Without the URL: it may carry credentials of its own.
            .map_err(|e| RemoteError::Unreachable(crate::chain::error_chain(&e.without_url())))?;
        let status = response.status();
        if !status.is_success() {
            return Err(RemoteError::Status(status.as_u16()));
        }
        let mut body = Vec::new();
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| RemoteError::BadAnswer(crate::chain::error_chain(&e.without_url())))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(RemoteError::BadAnswer("too long".to_owned()));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| RemoteError::BadAnswer(e.to_string()))
    }

    /// `POST /pins`: the request ID and first status (200 accepted as well as 202).
    async fn request(&self, cid: Cid) -> Result<(String, Status), RemoteError> {
        let origins = self
            .origins
            .get_or_init(|| async { self.store.addresses().await.unwrap_or_default() })
            .await
            .clone();
        let body = serde_json::json!({
            "cid": cid.to_string(),
            "name": format!("matrix-media-{cid}"),
            "origins": origins,
        });
        let answer = self
            .send(
                self.client
                    .post(self.url("/pins"))
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string()),
            )
            .await?;
        let requestid = answer
            .get("requestid")
            .and_then(|v| v.as_str())
            .map_or_else(|| cid.to_string(), str::to_owned);
        Ok((requestid, pin_status(&answer)?))
    }

    async fn check(&self, requestid: &str) -> Result<Status, RemoteError> {
        let answer = self
            .send(self.client.get(self.url(&format!("/pins/{requestid}"))))
            .await?;
        pin_status(&answer)
    }

    async fn reconcile_loop(self: Arc<Self>) {
        if self.settings.reconcile_interval.is_zero() {
            return;
        }
        loop {
            let outcome = match self.reconcile().await {
                Ok(missing) => {
                    tracing::info!(
                        service = self.name(),
                        missing,
                        "remote pin reconciliation done"
                    );
                    "ok"
                }
                Err(error) => {
                    tracing::warn!(service = self.name(), %error, "remote pin reconciliation failed");
                    "error"
                }
            };
            METRICS
                .remote_reconciliations
                .get_or_create(&RemoteStatus {
                    service: self.name().to_owned(),
                    status: outcome,
                })
                .inc();
            tokio::time::sleep(self.settings.reconcile_interval).await;
        }
    }

    /// One pass: requests what the store pins and the service does not know; how many.
    async fn reconcile(&self) -> Result<usize, String> {
        let pins = self.store.list_pins().await.map_err(|e| e.to_string())?;
        let mut missing = 0;
        for batch in pins.chunks(CID_BATCH) {
            let cids: Vec<String> = batch.iter().map(Cid::to_string).collect();
            let mut url = self.url("/pins");
            url.query_pairs_mut()
                .append_pair("cid", &cids.join(","))
                // A pin the service failed is requested again, like one it never had.
                .append_pair("status", "queued,pinning,pinned")
                .append_pair("limit", &CID_BATCH.to_string());
            let answer = self
                .send(self.client.get(url))
                .await
                .map_err(|e| e.to_string())?;
            let known: Vec<String> = answer
                .get("results")
                .and_then(|r| r.as_array())
                .map(|results| {
                    results
                        .iter()
                        // Also here: a service may ignore the status filter.
                        .filter(|r| !matches!(pin_status(r), Ok(Status::Failed)))
                        .filter_map(|r| r.get("pin")?.get("cid")?.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            for cid in batch {
                let text = cid.to_string();
                if !known.contains(&text) {
                    missing += 1;
                    self.enqueue(*cid);
                }
            }
        }
        Ok(missing)
    }
}

/// A `PinStatus`'s status.
fn pin_status(answer: &serde_json::Value) -> Result<Status, RemoteError> {
    answer
        .get("status")
        .and_then(|s| s.as_str())
        .and_then(Status::parse)
        .ok_or_else(|| RemoteError::BadAnswer("no status".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_in_any_case() {
        let v = serde_json::json!({"status": "Pinned"});
        assert_eq!(pin_status(&v).unwrap(), Status::Pinned);
        assert!(pin_status(&serde_json::json!({"status": "done"})).is_err());
        assert!(pin_status(&serde_json::json!({})).is_err());
    }
}

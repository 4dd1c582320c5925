//! Where uploads are stored and pinned: a Kubo-compatible RPC API or IPFS Cluster's REST API.
//!
//! The bytes go to the store's own `add` (`/api/v0/add` or Cluster's `/add`), streamed as one
//! multipart part with the profile's import parameters, while the proxy hashes the same bytes
//! with its own importer. Not a CAR to `dag/import`: with `add` the store builds the DAG
//! itself, so its answer is an independent check of our CID (a store importing differently
//! is caught, not silently fed blocks it never verified; js-ipfs's `dag/import` stores
//! whatever it is sent), the blocks never cross the wire as a second encoding, and the same
//! request shape works for Kubo and Cluster (which replicates it). The cost: a store must
//! honour the profile's parameters (a Kubo that knows `max-file-links`;
//! js-ipfs caps nodes at 174 links, so it matches `unixfs-v1-2025` only up to 174 MiB), and a
//! store that does not is answered as misconfigured (502), never as a success.
//!
//! The store's API is admin-level (it can pin, unpin and read anything): it belongs on
//! loopback or a private network. Its `Authorization` value is never logged.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use futures_util::{Stream, StreamExt};
use http::HeaderValue;
use url::Url;

use crate::ipfs::import::Profile;
use crate::metrics::{StoreOutcome, METRICS};

/// The most a store's answer to one call may hold (its NDJSON events for one file).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The most of a pin listing read for reconciliation (about 150,000 CIDs).
const MAX_LISTING_BYTES: usize = 16 * 1024 * 1024;
/// The most store addresses sent as `origins` (the spec allows 20).
const MAX_ORIGINS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Kubo RPC (`/api/v0/...`), or anything speaking it (js-ipfs, Cluster's IPFS proxy).
    Kubo,
    /// IPFS Cluster REST API (`/add`, `/pins/{cid}`).
    Cluster,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Kubo => "kubo",
            StoreKind::Cluster => "cluster",
        }
    }
}

#[derive(Clone)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub url: Url,
    pub authorization: Option<HeaderValue>,
    /// Cluster only; 0: the cluster's defaults.
    pub replication_min: i32,
    pub replication_max: i32,
    pub timeout: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store could not be reached or failed: {0}")]
    Failed(String),
    #[error("the store answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the store's answer could not be read: {0}")]
    BadAnswer(String),
}

impl StoreError {
    /// A refusal, with the start of the store's answer (enough to tell why; never all of it).
    fn refused(status: http::StatusCode, text: &str) -> Self {
        StoreError::Refused {
            status: status.as_u16(),
            body: text.chars().take(200).collect(),
        }
    }
}

/// Cheap to clone (the settings and a shared connection pool).
#[derive(Clone)]
pub struct Store {
    settings: StoreSettings,
    client: reqwest::Client,
}

impl Store {
    pub fn new(settings: StoreSettings) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            // The store is named by the configuration: never follow it elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Self { settings, client })
    }

    pub fn kind(&self) -> StoreKind {
        self.settings.kind
    }

    pub fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.settings.url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url
    }

    /// `request` with the store's `Authorization`, where one is configured.
    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.settings.authorization {
            Some(value) => request.header(http::header::AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    fn post(&self, url: Url) -> reqwest::RequestBuilder {
        self.authorized(self.client.post(url))
    }

    /// A Kubo RPC call: a POST to `path` with the query `params`.
    fn rpc(&self, path: &str, params: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut url = self.endpoint(path);
        url.query_pairs_mut().extend_pairs(params);
        self.post(url)
    }

    /// Sends `request`; the caller bounds it in time together with reading its answer.
    async fn send(request: reqwest::RequestBuilder) -> Result<reqwest::Response, StoreError> {
        request
            .send()
            .await
            .map_err(|e| StoreError::Failed(crate::chain::error_chain(&e)))
    }

    /// Cluster's replication factors, where configured (0: the cluster's own default).
    fn replication(&self, query: &mut url::form_urlencoded::Serializer<'_, url::UrlQuery<'_>>) {
        if self.settings.replication_min > 0 {
            query.append_pair(
                "replication-min",
                &self.settings.replication_min.to_string(),
            );
        }
        if self.settings.replication_max > 0 {
            query.append_pair(
                "replication-max",
                &self.settings.replication_max.to_string(),
            );
        }
    }

    /// POSTs `body` as the one file of a `multipart/form-data` request (both stores' `add`
    /// and `dag/import` take that form), streamed; the answer's bytes, or the refusal.
    async fn post_file<S, E>(
        &self,
        url: Url,
        file_name: &str,
        content_type: &str,
        body: S,
    ) -> Result<Vec<u8>, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Sync + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let boundary = format!("ipfs-media-proxy-{:032x}", rand::random::<u128>());
        let head = Bytes::from(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\n\
             Content-Type: {content_type}\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let parts = futures_util::stream::once(async move { Ok(head) })
            .chain(body.map(|item| item.map_err(Into::into)))
            .chain(futures_util::stream::once(async move { Ok(tail) }));
        let request = self
            .post(url)
            .header(
                http::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(reqwest::Body::wrap_stream(parts));
        read_success(Self::send(request).await?, MAX_ANSWER_BYTES).await
    }

    /// Adds and pins the file whose bytes `body` yields, imported with `profile`; answers the
    /// root CID the store reports. An error from `body` aborts the request (the store sees a
    /// truncated multipart, and Kubo pins only a completed add).
    pub async fn add<S, E>(&self, profile: Profile, body: S) -> Result<Cid, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Sync + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.recorded(self.add_inner(profile, body)).await
    }

    async fn add_inner<S, E>(&self, profile: Profile, body: S) -> Result<Cid, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Sync + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        let mut url = match self.settings.kind {
            StoreKind::Kubo => self.endpoint("/api/v0/add"),
            StoreKind::Cluster => self.endpoint("/add"),
        };
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("cid-version", "1")
                .append_pair("raw-leaves", "true")
                .append_pair("hash", "sha2-256")
                .append_pair("chunker", &format!("size-{}", profile.chunk_size()));
            // Every parameter the CID depends on is said, even at its usual default: a node's
            // own `Import.*` settings (Kubo's `unixfs-v1-2025` profile sets 1024 links) must
            // not decide it.
            query
                .append_pair("max-file-links", &profile.max_links().to_string())
                .append_pair("trickle", "false")
                .append_pair("wrap-with-directory", "false");
            match self.settings.kind {
                StoreKind::Kubo => {
                    query
                        .append_pair("pin", "true")
                        .append_pair("progress", "false");
                }
                StoreKind::Cluster => {
                    query.append_pair("name", "matrix-upload");
                    self.replication(&mut query);
                }
            }
        }
        let answer = self
            .post_file(url, "upload", "application/octet-stream", body)
            .await?;
        last_added_cid(&answer)
    }

    /// Whether `cid` is pinned on the store now: Kubo's `pin/ls` (recursive), Cluster's
    /// `allocations/{cid}` (its pinset, whatever the peers' progress).
    pub async fn pinned(&self, cid: &Cid) -> Result<bool, StoreError> {
        self.recorded(async {
            let request = match self.settings.kind {
                StoreKind::Kubo => self.rpc(
                    "/api/v0/pin/ls",
                    &[("arg", &cid.to_string()), ("type", "recursive")],
                ),
                StoreKind::Cluster => self.authorized(
                    self.client
                        .get(self.endpoint(&format!("/allocations/{cid}"))),
                ),
            };
            let (status, text) = self.call(request, self.settings.timeout).await?;
            if status.is_success() {
                return Ok(true);
            }
            // Kubo answers 500 "... is not pinned"; Cluster 404.
            if status == 404 || text.contains("not pinned") {
                return Ok(false);
            }
            Err(StoreError::refused(status, &text))
        })
        .await
    }

    /// Pins `cid` recursively, fetching what the store lacks from its own network; waits at
    /// most `timeout`. Kubo's `pin/add`, Cluster's `POST /pins/{cid}` (with the replication
    /// factors).
    pub async fn pin(&self, cid: &Cid, timeout: Duration) -> Result<(), StoreError> {
        self.recorded(async {
            let request = match self.settings.kind {
                StoreKind::Kubo => self.rpc(
                    "/api/v0/pin/add",
                    &[
                        ("arg", &cid.to_string()),
                        ("recursive", "true"),
                        ("progress", "false"),
                    ],
                ),
                StoreKind::Cluster => {
                    let mut url = self.endpoint(&format!("/pins/{cid}"));
                    {
                        let mut query = url.query_pairs_mut();
                        query.append_pair("name", "matrix-pin");
                        self.replication(&mut query);
                    }
                    self.post(url)
                }
            };
            let (status, text) = self.call(request, timeout).await?;
            if status.is_success() && !text.contains("\"Message\"") {
                Ok(())
            } else {
                Err(StoreError::refused(status, &text))
            }
        })
        .await
    }

    /// Sends a small control call, answered whole within `timeout`; its status and
    /// (bounded) text.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<(http::StatusCode, String), StoreError> {
        within(timeout, async {
            let response = Self::send(request).await?;
            let status = response.status();
            let answer = read_answer(response).await?;
            Ok((status, String::from_utf8_lossy(&answer).into_owned()))
        })
        .await
    }

    /// Imports the CAR `body` yields (one root) and pins its root: Kubo's `dag/import` with
    /// `pin-roots`, Cluster's `add?format=car`. Answers the root the store reports. The
    /// caller has verified every block: js-ipfs's `dag/import` checks none.
    pub async fn import_car<S, E>(&self, body: S) -> Result<Cid, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Sync + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.recorded(async {
            let mut url = match self.settings.kind {
                StoreKind::Kubo => self.endpoint("/api/v0/dag/import"),
                StoreKind::Cluster => self.endpoint("/add"),
            };
            {
                let mut query = url.query_pairs_mut();
                match self.settings.kind {
                    StoreKind::Kubo => {
                        query
                            .append_pair("pin-roots", "true")
                            .append_pair("stats", "false");
                    }
                    StoreKind::Cluster => {
                        query
                            .append_pair("format", "car")
                            .append_pair("name", "matrix-pin");
                        self.replication(&mut query);
                    }
                }
            }
            let answer = self
                .post_file(url, "pin.car", "application/vnd.ipld.car", body)
                .await?;
            match self.settings.kind {
                StoreKind::Kubo => imported_root(&answer),
                StoreKind::Cluster => last_added_cid(&answer),
            }
        })
        .await
    }

    /// The store's own addresses (multiaddrs with `/p2p/<id>`), for remote pinning services'
    /// `origins`: Kubo's `id` (`Addresses`), Cluster's `id` (`ipfs.addresses`).
    pub async fn addresses(&self) -> Result<Vec<String>, StoreError> {
        let request = match self.settings.kind {
            StoreKind::Kubo => self.post(self.endpoint("/api/v0/id")),
            StoreKind::Cluster => self.authorized(self.client.get(self.endpoint("/id"))),
        };
        let (status, text) = self.call(request, self.settings.timeout).await?;
        if !status.is_success() {
            return Err(StoreError::refused(status, &text));
        }
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| StoreError::BadAnswer(e.to_string()))?;
        let list = v
            .get("Addresses")
            .or_else(|| v.get("ipfs").and_then(|i| i.get("addresses")))
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .take(MAX_ORIGINS)
                    .collect()
            })
            .unwrap_or_default();
        Ok(list)
    }

    /// Every CID the store pins recursively (Kubo's `pin/ls?type=recursive`, Cluster's
    /// `allocations`), for remote pin reconciliation; at most `MAX_LISTING_BYTES` of answer.
    pub async fn list_pins(&self) -> Result<Vec<Cid>, StoreError> {
        let request = match self.settings.kind {
            StoreKind::Kubo => self.rpc("/api/v0/pin/ls", &[("type", "recursive")]),
            StoreKind::Cluster => self.authorized(self.client.get(self.endpoint("/allocations"))),
        };
        // The listing's body is bounded in time as well as in size.
        let answer = within(self.settings.timeout, async {
            read_success(Self::send(request).await?, MAX_LISTING_BYTES).await
        })
        .await?;
        let mut cids = Vec::new();
        // Kubo: one `{"Keys": {cid: {...}}}` object; Cluster: NDJSON (or an array) of pins.
        for v in json_lines(&answer) {
            let v = v?;
            let mut take = |text: &str| {
                if let Ok(cid) = text.parse::<Cid>() {
                    cids.push(cid);
                }
            };
            if let Some(keys) = v.get("Keys").and_then(|k| k.as_object()) {
                keys.keys().for_each(|k| take(k));
            } else {
                let items = v.as_array().cloned().unwrap_or_else(|| vec![v]);
                for item in items {
                    let cid = item.get("cid");
                    if let Some(text) =
                        cid.and_then(|c| c.as_str().or_else(|| c.get("/").and_then(|c| c.as_str())))
                    {
                        take(text);
                    }
                }
            }
        }
        Ok(cids)
    }

    /// Removes the pin on `cid` (a store that does not hold it is not an error).
    pub async fn unpin(&self, cid: &Cid) -> Result<(), StoreError> {
        self.recorded(async {
            let request = match self.settings.kind {
                StoreKind::Kubo => self.rpc("/api/v0/pin/rm", &[("arg", &cid.to_string())]),
                StoreKind::Cluster => {
                    self.authorized(self.client.delete(self.endpoint(&format!("/pins/{cid}"))))
                }
            };
            // The answer's body is bounded in time too, not only its headers.
            let (status, text) = self.call(request, self.settings.timeout).await?;
            // Kubo answers 500 "not pinned or pinned indirectly"; Cluster 404.
            if status.is_success() || status == 404 || text.contains("not pinned") {
                Ok(())
            } else {
                Err(StoreError::refused(status, &text))
            }
        })
        .await
    }

    /// Runs one store call, counted and timed by its outcome.
    async fn recorded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        let labels = StoreOutcome {
            store: self.settings.kind.as_str(),
            outcome: if result.is_ok() { "ok" } else { "error" },
        };
        METRICS.store_requests.get_or_create(&labels).inc();
        METRICS
            .store_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        result
    }
}

/// `call`'s result, or "timed out" once `timeout` has passed.
async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| StoreError::Failed("timed out".to_owned()))?
}

async fn read_answer(response: reqwest::Response) -> Result<Vec<u8>, StoreError> {
    read_answer_limited(response, MAX_ANSWER_BYTES).await
}

/// The answer's bytes (at most `limit`), or the store's refusal.
async fn read_success(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, StoreError> {
    let status = response.status();
    let answer = read_answer_limited(response, limit).await?;
    if !status.is_success() {
        return Err(StoreError::refused(
            status,
            &String::from_utf8_lossy(&answer),
        ));
    }
    Ok(answer)
}

/// The JSON values of an NDJSON answer, blank lines skipped.
fn json_lines(answer: &[u8]) -> impl Iterator<Item = Result<serde_json::Value, StoreError>> + '_ {
    answer
        .split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .map(|line| {
            serde_json::from_slice(line)
                .map_err(|e| StoreError::BadAnswer(format!("not JSON: {e}")))
        })
}

async fn read_answer_limited(
    response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, StoreError> {
    let mut answer = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| StoreError::BadAnswer(crate::chain::error_chain(&e)))?;
        if answer.len() + chunk.len() > limit {
            return Err(StoreError::BadAnswer("the answer is too long".to_owned()));
        }
        answer.extend_from_slice(&chunk);
    }
    Ok(answer)
}

/// The CID of the last per-file event of an `add` answer: NDJSON, Kubo's `{"Hash": "..."}`,
/// Cluster's `{"cid": "..."}` or `{"cid": {"/": "..."}}`. An error event (`Message`/`error`)
/// or no CID at all is a failure.
fn last_added_cid(answer: &[u8]) -> Result<Cid, StoreError> {
    let mut found = None;
    for event in json_lines(answer) {
        let event = event?;
        if let Some(message) = event.get("Message").or_else(|| event.get("error")) {
            return Err(StoreError::Failed(format!("the add failed: {message}")));
        }
        let cid = event
            .get("Hash")
            .or_else(|| event.get("cid"))
            .and_then(|v| v.as_str().or_else(|| v.get("/").and_then(|v| v.as_str())));
        if let Some(cid) = cid {
            found = Some(
                cid.parse::<Cid>()
                    .map_err(|e| StoreError::BadAnswer(format!("not a CID: {e}")))?,
            );
        }
    }
    found.ok_or_else(|| StoreError::BadAnswer("no CID in the answer".to_owned()))
}

/// The root of a Kubo `dag/import` answer (`{"Root":{"Cid":{"/":...},"PinErrorMsg":""}}`);
/// a pin error or an error event is a failure.
fn imported_root(answer: &[u8]) -> Result<Cid, StoreError> {
    let mut found = None;
    for event in json_lines(answer) {
        let event = event?;
        if let Some(message) = event.get("Message") {
            return Err(StoreError::Failed(format!("the import failed: {message}")));
        }
        let Some(root) = event.get("Root") else {
            continue;
        };
        if let Some(pin_error) = root
            .get("PinErrorMsg")
            .and_then(|v| v.as_str())
            .filter(|m| !m.is_empty())
        {
            return Err(StoreError::Failed(format!(
                "the root was not pinned: {pin_error}"
            )));
        }
        let cid = root
            .get("Cid")
            .and_then(|c| c.get("/"))
            .and_then(|c| c.as_str())
            .ok_or_else(|| StoreError::BadAnswer("a root without a CID".to_owned()))?;
        found = Some(
            cid.parse::<Cid>()
                .map_err(|e| StoreError::BadAnswer(format!("not a CID: {e}")))?,
        );
    }
    found.ok_or_else(|| StoreError::BadAnswer("no root in the answer".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubo_and_cluster_answers() {
        let hello = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
        let kubo = format!("{{\"Name\":\"upload\",\"Hash\":\"{hello}\",\"Size\":\"11\"}}\n");
        assert_eq!(last_added_cid(kubo.as_bytes()).unwrap().to_string(), hello);
        let cluster =
            format!("{{\"name\":\"upload\",\"cid\":{{\"/\":\"{hello}\"}},\"size\":11}}\n");
        assert_eq!(
            last_added_cid(cluster.as_bytes()).unwrap().to_string(),
            hello
        );
        let plain = format!("{{\"name\":\"upload\",\"cid\":\"{hello}\"}}");
        assert_eq!(last_added_cid(plain.as_bytes()).unwrap().to_string(), hello);
        assert!(matches!(
            last_added_cid(b"{\"Message\":\"disk full\",\"Code\":0}\n"),
            Err(StoreError::Failed(_))
        ));
        assert!(last_added_cid(b"").is_err());
        assert!(last_added_cid(b"{\"Hash\":\"nope\"}").is_err());
    }
}

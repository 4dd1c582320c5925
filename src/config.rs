//! Configuration: a TOML file, overridden key by key from the environment.
//!
//! Every key of `config/ipfs-media-proxy.toml` can be set from the environment as
//! `IPFS_MEDIA_PROXY_<SECTION>__<KEY>` (double underscore between levels, any case), e.g.
//! `IPFS_MEDIA_PROXY_CACHE__MAX_BYTES=1GiB`. Values are parsed like TOML values, so arrays and
//! tables work too: `IPFS_MEDIA_PROXY_GATEWAYS='[{url="http://127.0.0.1:8080"}]'`.
//!
//! Unknown keys and bad values are rejected with an error naming the key, so a typo never
//! silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use url::Url;

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "IPFS_MEDIA_PROXY_";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub homeserver: HomeserverConfig,
    pub gateways: Vec<GatewayConfig>,
    #[serde(default)]
    pub retrieval: RetrievalConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub media: MediaConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub thumbnails: ThumbnailsConfig,
    #[serde(default)]
    pub capabilities: CapabilitiesConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub denylist: DenylistConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub upload: UploadConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Answer `POST /_matrix/media/{r0,v1,v3}/upload` by storing the bytes on IPFS.
    pub enabled: bool,
    /// Let guest accounts store on IPFS (else 403).
    pub allow_guests: bool,
    /// User-ID patterns (`*` any run of characters) whose uploads go to IPFS; empty: everyone.
    /// Others upload to the homeserver as before.
    pub users: Vec<String>,
    /// `alias` (`ipfs_<cid>`, `media.id_alias_prefix`) or `msc2706` (`ipfs:<cid>`).
    pub media_id_form: MediaIdForm,
    /// The UnixFS import profile: `unixfs-v1-2025` or `kubo-v1-256k`.
    pub profile: ImportProfile,
    /// Larger uploads are refused (413). Default: the homeserver's `m.upload.size`, else 50 MiB.
    pub max_bytes: Option<ByteSize>,
    /// Longest wait for the store, for any one read or write, and for its final answer.
    #[serde(with = "humantime_serde")]
    pub store_timeout: Duration,
    pub store: Option<UploadStoreConfig>,
    pub rate: UploadRateConfig,
    /// Pin endpoint: how long a CID's root may take to be found by the gateways (else 404,
    /// which the client may retry, as MSC2706 says).
    #[serde(with = "humantime_serde")]
    pub pin_find_timeout: Duration,
    /// Pin endpoint: the longest the store may take to pin the whole DAG (its `pin/add`).
    #[serde(with = "humantime_serde")]
    pub pin_timeout: Duration,
    /// CAR pins: where their verified blocks are spooled (unlinked temporary files, at most
    /// about `max_bytes` each); default: the system's temporary directory.
    pub spool_dir: Option<std::path::PathBuf>,
    /// Remote pinning services (IPFS Pinning Service API) that also pin every upload and pin.
    pub remote_pins: Vec<RemotePinConfig>,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemotePinConfig {
    /// A short name for logs and metrics (`service` label).
    pub name: String,
    /// The API's base URL (`https://api.pinata.cloud/psa`, or Cluster's pinning service API).
    pub endpoint: Url,
    /// The bearer token. Secret: never logged.
    pub token: String,
    /// Requests of one CID before giving up until the next reconciliation.
    #[serde(default = "RemotePinConfig::default_max_attempts")]
    pub max_attempts: u32,
    /// The first pause between attempts; doubled each time, at most 5 min.
    #[serde(
        default = "RemotePinConfig::default_retry_backoff",
        with = "humantime_serde"
    )]
    pub retry_backoff: Duration,
    /// Between status checks of a queued or pinning request.
    #[serde(
        default = "RemotePinConfig::default_status_interval",
        with = "humantime_serde"
    )]
    pub status_interval: Duration,
    /// Status checks of one request before it counts as a failed attempt.
    #[serde(default = "RemotePinConfig::default_max_status_checks")]
    pub max_status_checks: u32,
    /// Between reconciliation passes (the first at start); 0: none.
    #[serde(
        default = "RemotePinConfig::default_reconcile_interval",
        with = "humantime_serde"
    )]
    pub reconcile_interval: Duration,
    /// CIDs waiting for this service at most; more are left to the next reconciliation.
    #[serde(default = "RemotePinConfig::default_queue")]
    pub queue: usize,
    /// The longest one request to the service may take.
    #[serde(default = "RemotePinConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl RemotePinConfig {
    fn default_max_attempts() -> u32 {
        5
    }
    fn default_retry_backoff() -> Duration {
        Duration::from_secs(10)
    }
    fn default_status_interval() -> Duration {
        Duration::from_secs(30)
    }
    fn default_max_status_checks() -> u32 {
        120
    }
    fn default_reconcile_interval() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_queue() -> usize {
        10_000
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(30)
    }
}

impl std::fmt::Debug for RemotePinConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePinConfig")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint.as_str())
            .field("token", &"<redacted>")
            .field("max_attempts", &self.max_attempts)
            .field("retry_backoff", &self.retry_backoff)
            .field("status_interval", &self.status_interval)
            .field("max_status_checks", &self.max_status_checks)
            .field("reconcile_interval", &self.reconcile_interval)
            .field("queue", &self.queue)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ImportProfile {
    #[serde(rename = "unixfs-v1-2025")]
    UnixfsV1_2025,
    #[serde(rename = "kubo-v1-256k")]
    KuboV1_256k,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaIdForm {
    Alias,
    Msc2706,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadStoreConfig {
    /// `kubo` (a Kubo-compatible RPC API) or `cluster` (IPFS Cluster's REST API).
    pub kind: StoreKind,
    /// Base URL of the RPC API (`http://127.0.0.1:5001`) or of the Cluster REST API
    /// (`http://127.0.0.1:9094`). Admin-level: keep it on loopback or a private network.
    pub url: Url,
    /// `Authorization` header value for the store. Secret: never logged.
    pub authorization: Option<String>,
    /// Cluster only: replication factors (0: the cluster's own defaults).
    #[serde(default)]
    pub replication_min: i32,
    #[serde(default)]
    pub replication_max: i32,
}

impl std::fmt::Debug for UploadStoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadStoreConfig")
            .field("kind", &self.kind)
            .field("url", &self.url.as_str())
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("replication_min", &self.replication_min)
            .field("replication_max", &self.replication_max)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Kubo,
    Cluster,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadRateConfig {
    /// The window both limits count over, per user.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Uploads one user may start per window; 0: no limit.
    pub requests: u32,
    /// Bytes one user may upload per window; 0: no limit.
    pub bytes: ByteSize,
    /// Users remembered at most (the oldest are forgotten first).
    pub max_users: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            allow_guests: false,
            users: Vec::new(),
            media_id_form: MediaIdForm::Alias,
            profile: ImportProfile::UnixfsV1_2025,
            max_bytes: None,
            store_timeout: Duration::from_secs(60),
            store: None,
            rate: UploadRateConfig::default(),
            pin_find_timeout: Duration::from_secs(60),
            pin_timeout: Duration::from_secs(600),
            spool_dir: None,
            remote_pins: Vec::new(),
        }
    }
}

impl Default for UploadRateConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            requests: 30,
            bytes: ByteSize::gib(1),
            max_users: 100_000,
        }
    }
}

impl UploadConfig {
    /// The limit when neither this file nor the homeserver names one.
    pub const FALLBACK_MAX_BYTES: ByteSize = ByteSize::mib(50);
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenylistConfig {
    /// Files of blocked CIDs: plain (one CID per line) or the IPFS compact denylist format.
    /// Relative paths are relative to the configuration file's directory.
    pub paths: Vec<PathBuf>,
    /// How often the files are looked at for changes; "0s" turns that off (SIGHUP still
    /// reloads them).
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `/metrics`, `/health`, `/ready`; off when absent. Keep it on loopback.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// One address or a list of them.
    pub listen: Listen,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Time a client has to send its request headers.
    #[serde(default = "thirty_seconds", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Threads serving connections, each with a runtime of its own; 0: one per CPU.
    #[serde(default)]
    pub workers: usize,
    /// Client connections open at once; past it a new connection is closed at once (and
    /// counted). 0: derived from the open-file limit, leaving room for upstream sockets.
    #[serde(default)]
    pub max_connections: usize,
    /// A connection that sends no byte this long after it is accepted is closed.
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// A connection on which no byte moves either way for this long is closed: idle
    /// keep-alive, a stalled HTTP/2 handshake, a client that stopped reading its answer.
    /// Keep it above the longest long-poll clients use (`/sync?timeout=30000`).
    #[serde(default = "two_minutes", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// What hyper may buffer per connection and direction (its read buffer; the answer
    /// queued for a client that is not reading), for client and homeserver connections
    /// alike: a client that stops reading holds about twice this until `idle_timeout`.
    /// 8 KiB to 16 MiB.
    #[serde(default = "connection_buffer")]
    pub connection_buffer: ByteSize,
}

fn connection_buffer() -> ByteSize {
    ByteSize::kib(128)
}

// The defaults of sections that have a required key, so they cannot default as a whole.
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn sixty_seconds() -> Duration {
    Duration::from_secs(60)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn two_minutes() -> Duration {
    Duration::from_secs(120)
}

/// `listen = "addr"` or `listen = ["addr", ...]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Listen {
    One(SocketAddr),
    Many(Vec<SocketAddr>),
}

impl Listen {
    pub fn addrs(&self) -> Vec<SocketAddr> {
        match self {
            Listen::One(a) => vec![*a],
            Listen::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Base URL of the homeserver (plain HTTP; it normally runs beside the proxy).
    pub url: Url,
    #[serde(default = "five_seconds", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Base URL of an IPFS gateway: content is fetched from `{url}/ipfs/{cid}`.
    pub url: Url,
    /// `trusted` (path gateway, bytes taken as they come) or `trustless` (blocks and CARs,
    /// every byte checked against the CID). Default: trusted for loopback, else trustless.
    pub mode: Option<GatewayMode>,
    /// Longest wait for the gateway's response headers, and longest pause between two reads.
    #[serde(default = "sixty_seconds", with = "humantime_serde")]
    pub timeout: Duration,
    /// `Authorization` header value for a private gateway. Secret: never logged.
    pub authorization: Option<String>,
    /// Idle keep-alive connections kept to this gateway for reuse; more are closed when their
    /// request ends (a burst of concurrent fetches would otherwise leave one open each).
    #[serde(default = "GatewayConfig::default_max_idle_connections")]
    pub max_idle_connections: usize,
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("url", &self.url.as_str())
            .field("mode", &self.effective_mode())
            .field("timeout", &self.timeout)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("max_idle_connections", &self.max_idle_connections)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayMode {
    Trusted,
    Trustless,
}

impl GatewayConfig {
    fn default_max_idle_connections() -> usize {
        32
    }

    /// A gateway on this machine is ours to trust; anything across a network is not.
    pub fn effective_mode(&self) -> GatewayMode {
        self.mode.unwrap_or_else(|| {
            let loopback = match self.url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if loopback {
                GatewayMode::Trusted
            } else {
                GatewayMode::Trustless
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrievalConfig {
    /// When the best gateway has not answered within this, the next one is asked too.
    #[serde(with = "humantime_serde")]
    pub hedge_delay: Duration,
    /// How long a gateway caught serving a bad block is asked last.
    #[serde(with = "humantime_serde")]
    pub bench_time: Duration,
    /// How often every gateway is probed (`GET /ipfs/bafkqaaa?format=raw`); "0s" turns it off.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// The most blocks one verified (trustless) walk of a file may take, whatever its size
    /// justifies; a DAG needing more is refused (502 `M_UNKNOWN`).
    pub max_dag_blocks: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Total bytes of media held in memory.
    pub max_bytes: ByteSize,
    /// Media larger than this is streamed through without being kept. Default:
    /// 64 MiB or an eighth of `max_bytes`, whichever is smaller (see [`Self::item_limit`]).
    pub max_item_bytes: Option<ByteSize>,
    /// Bytes held by all running fetches together, outside the cache. Past it, fetches being
    /// kept for the cache are streamed instead, fetches wait for their readers, and new
    /// fetches are refused with 503 `M_LIMIT_EXCEEDED`.
    pub max_fetch_bytes: ByteSize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Larger ipfs media is refused with 502 `M_TOO_LARGE`.
    pub max_bytes: ByteSize,
    /// Serve ipfs media on the unauthenticated `/_matrix/media/*` routes.
    pub legacy_unauthenticated: bool,
    /// Wait for content when the client sends no `timeout_ms`.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// Upper bound on a client's `timeout_ms`.
    #[serde(with = "humantime_serde")]
    pub max_timeout: Duration,
    /// A second, spec-grammar form of ipfs media IDs (`ipfs_<cid>`); empty turns it off.
    pub id_alias_prefix: String,
    /// A `Range` of uncached media starting more than this beyond what the shared fetch has
    /// delivered (beyond byte 0 when none runs) is fetched on its own.
    pub range_fetch_threshold: ByteSize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThumbnailsConfig {
    /// Make thumbnails of ipfs images; off, thumbnail requests go to the homeserver.
    pub enabled: bool,
    /// Render the exact requested size instead of choosing among `sizes`.
    pub dynamic: bool,
    /// The sizes thumbnails are made at (Synapse's defaults).
    pub sizes: Vec<ThumbnailSizeConfig>,
    /// A source's first still thumbnail also makes every other size in `sizes` from the same
    /// decode, as Synapse makes them all when media arrives (after the requested one is
    /// answered, in its render slot).
    pub all_sizes: bool,
    /// Images with more pixels are not thumbnailed (decompression bombs).
    pub max_pixels: u64,
    /// Larger sources are not thumbnailed.
    pub max_source_bytes: ByteSize,
    /// Thumbnails rendered at once; 0 means one per CPU.
    pub max_concurrent: usize,
    /// Renders that may wait for a slot, each holding its source; more are refused (503).
    pub max_queued: usize,
    /// The longest a render may take, its wait for a slot included (503 when hit).
    #[serde(with = "humantime_serde")]
    pub render_timeout: Duration,
    /// Images whose decoded pixels (16-bit channels and alpha counted) would take more are
    /// not thumbnailed.
    pub max_decoded_bytes: ByteSize,
    /// JPEGs with more scans are not thumbnailed (each scan decodes the whole image).
    pub max_jpeg_scans: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSizeConfig {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    Crop,
    Scale,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapabilitiesConfig {
    /// Add `m.ipfs` (and `io.t2bot.ipfs`) to the homeserver's capabilities answer.
    pub advertise_ipfs: bool,
    /// The server name clients should put in the `mxc://` URIs of content they add to IPFS.
    pub preferred_origin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long an access token the homeserver accepted is trusted without asking again.
    #[serde(with = "humantime_serde")]
    pub token_cache_ttl: Duration,
    /// How many accepted tokens are remembered at most.
    pub token_cache_entries: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter (`info`, `ipfs_media_proxy=debug`, ...); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            hedge_delay: Duration::from_secs(2),
            bench_time: Duration::from_secs(300),
            probe_interval: Duration::from_secs(30),
            max_dag_blocks: 100_000,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: ByteSize::mib(512),
            max_item_bytes: None,
            max_fetch_bytes: ByteSize::mib(256),
        }
    }
}

impl CacheConfig {
    /// The largest item kept: `max_item_bytes` when set, else a default that follows
    /// `max_bytes` (a small cache is not refused for a key the admin never set).
    pub fn item_limit(&self) -> ByteSize {
        self.max_item_bytes.unwrap_or_else(|| {
            ByteSize::b((self.max_bytes.as_u64() / 8).min(ByteSize::mib(64).as_u64()))
        })
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_bytes: ByteSize::mib(100),
            legacy_unauthenticated: true,
            default_timeout: Duration::from_secs(20),
            max_timeout: Duration::from_secs(60),
            id_alias_prefix: crate::media::media_id::DEFAULT_ALIAS_PREFIX.to_owned(),
            range_fetch_threshold: ByteSize::mib(4),
        }
    }
}

impl Default for ThumbnailsConfig {
    fn default() -> Self {
        let size = |width, height, method| ThumbnailSizeConfig {
            width,
            height,
            method,
        };
        Self {
            enabled: true,
            dynamic: false,
            // Synapse's defaults.
            sizes: vec![
                size(32, 32, ThumbnailMethod::Crop),
                size(96, 96, ThumbnailMethod::Crop),
                size(320, 240, ThumbnailMethod::Scale),
                size(640, 480, ThumbnailMethod::Scale),
                size(800, 600, ThumbnailMethod::Scale),
            ],
            all_sizes: true,
            max_pixels: 32 * 1024 * 1024,
            max_source_bytes: ByteSize::mib(64),
            max_concurrent: 0,
            max_queued: 16,
            render_timeout: Duration::from_secs(10),
            max_decoded_bytes: ByteSize::b(crate::media::thumbnail::DEFAULT_MAX_DECODED_BYTES),
            max_jpeg_scans: crate::media::thumbnail::DEFAULT_MAX_JPEG_SCANS,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_cache_ttl: Duration::from_secs(60),
            token_cache_entries: 10_000,
        }
    }
}

impl Default for DenylistConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            watch_interval: Duration::from_secs(5),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Reads `path` and the `IPFS_MEDIA_PROXY_*` environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut config =
            Self::from_figment(Figment::new().merge(Toml::file_exact(path)).merge(env()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for list in &mut config.denylist.paths {
            if list.is_relative() {
                *list = base.join(&*list);
            }
        }
        Ok(config)
    }

    /// Parses TOML text alone (tests, embedding).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.server.listen.addrs().is_empty() {
            return invalid("server.listen", "at least one address is needed");
        }
        let buffer = self.server.connection_buffer.as_u64();
        if !(8 * 1024..=16 * 1024 * 1024).contains(&buffer) {
            return invalid("server.connection_buffer", "must be from 8KiB to 16MiB");
        }
        if self.server.first_byte_timeout.is_zero() || self.server.idle_timeout.is_zero() {
            return invalid(
                "server.idle_timeout",
                "first_byte_timeout and idle_timeout must be more than zero",
            );
        }
        if self.homeserver.url.scheme() != "http" || self.homeserver.url.host().is_none() {
            return invalid(
                "homeserver.url",
                "must be an http:// URL with a host (TLS belongs to the reverse proxy in front)",
            );
        }
        if self.gateways.is_empty() {
            return invalid("gateways", "at least one [[gateways]] entry is needed");
        }
        for gateway in &self.gateways {
            if !matches!(gateway.url.scheme(), "http" | "https") || gateway.url.host().is_none() {
                return invalid(
                    "gateways.url",
                    "must be an http:// or https:// URL with a host",
                );
            }
            if gateway.url.query().is_some() || gateway.url.fragment().is_some() {
                return invalid("gateways.url", "must not carry a query or fragment");
            }
            if gateway.timeout.is_zero() {
                return invalid("gateways.timeout", "must be more than zero");
            }
            if let Some(value) = &gateway.authorization {
                if http::HeaderValue::from_str(value).is_err() {
                    return invalid("gateways.authorization", "not a valid header value");
                }
            }
        }
        if self.cache.item_limit() > self.cache.max_bytes {
            return invalid("cache.max_item_bytes", "must not exceed cache.max_bytes");
        }
        if self.cache.max_fetch_bytes.as_u64() == 0 {
            return invalid("cache.max_fetch_bytes", "must be above 0");
        }
        if self.cache.item_limit().as_u64() > u64::from(u32::MAX) {
            return invalid("cache.max_item_bytes", "must be under 4 GiB");
        }
        if self.media.max_bytes.as_u64() == 0 {
            return invalid("media.max_bytes", "must be more than zero");
        }
        if self.media.default_timeout > self.media.max_timeout {
            return invalid("media.default_timeout", "must not exceed media.max_timeout");
        }
        let prefix = &self.media.id_alias_prefix;
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            || prefix == "ipfs"
        {
            return invalid(
                "media.id_alias_prefix",
                "must use only A-Z a-z 0-9 _ - (the media ID grammar) and end before the CID",
            );
        }
        if self
            .thumbnails
            .sizes
            .iter()
            .any(|s| s.width == 0 || s.height == 0 || s.width > 4096 || s.height > 4096)
        {
            return invalid("thumbnails.sizes", "widths and heights must be 1 to 4096");
        }
        let upload = &self.upload;
        if upload.enabled && upload.store.is_none() {
            return invalid(
                "upload.store",
                "an [upload.store] is needed when uploads are on",
            );
        }
        if let Some(store) = &upload.store {
            if store.url.scheme() != "http" && store.url.scheme() != "https"
                || store.url.host().is_none()
            {
                return invalid("upload.store.url", "must be an http:// or https:// URL");
            }
            if let Some(value) = &store.authorization {
                if http::HeaderValue::from_str(value).is_err() {
                    return invalid("upload.store.authorization", "not a valid header value");
                }
            }
            if store.replication_min < 0
                || store.replication_max < 0
                || (store.replication_max > 0 && store.replication_min > store.replication_max)
            {
                return invalid(
                    "upload.store.replication_min",
                    "must be 0 or more and not exceed replication_max",
                );
            }
        }
        if upload.media_id_form == MediaIdForm::Alias && self.media.id_alias_prefix.is_empty() {
            return invalid(
                "upload.media_id_form",
                "alias needs media.id_alias_prefix; use msc2706 or set a prefix",
            );
        }
        if upload.max_bytes.is_some_and(|b| b.as_u64() == 0) {
            return invalid("upload.max_bytes", "must be more than zero");
        }
        if upload.store_timeout.is_zero() || upload.rate.window.is_zero() {
            return invalid(
                "upload.store_timeout",
                "store_timeout and rate.window must be more than zero",
            );
        }
        for remote in &upload.remote_pins {
            if !matches!(remote.endpoint.scheme(), "http" | "https") {
                return invalid(
                    "upload.remote_pins.endpoint",
                    "must be an http:// or https:// URL",
                );
            }
            if http::HeaderValue::from_str(&format!("Bearer {}", remote.token)).is_err() {
                return invalid("upload.remote_pins.token", "not a valid header value");
            }
            if remote.timeout.is_zero() || remote.queue == 0 {
                return invalid(
                    "upload.remote_pins.timeout",
                    "timeout and queue must be more than zero",
                );
            }
        }
        if upload.pin_find_timeout.is_zero() || upload.pin_timeout.is_zero() {
            return invalid(
                "upload.pin_find_timeout",
                "pin_find_timeout and pin_timeout must be more than zero",
            );
        }
        if self.thumbnails.render_timeout.is_zero() {
            return invalid("thumbnails.render_timeout", "must be more than 0");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid("log.level", "not a valid tracing filter");
        }
        Ok(())
    }

    /// The configuration as the startup log shows it. Nothing in it is secret yet; when a key
    /// that is (gateway credentials) arrives, it is redacted here.
    pub fn summary(&self) -> String {
        // Authorization values are secrets: only whether one is set is shown.
        let gateways: Vec<String> = self
            .gateways
            .iter()
            .map(|g| {
                let mode = match g.effective_mode() {
                    GatewayMode::Trusted => "trusted",
                    GatewayMode::Trustless => "trustless",
                };
                let auth = if g.authorization.is_some() {
                    " auth=<redacted>"
                } else {
                    ""
                };
                format!("{} ({mode}{auth})", g.url)
            })
            .collect();
        format!(
            "listen={:?} homeserver={} gateways={:?} cache.max_bytes={} cache.max_item_bytes={} media.max_bytes={} media.legacy_unauthenticated={} denylist.paths={:?}",
            self.server.listen.addrs(),
            self.homeserver.url,
            gateways,
            self.cache.max_bytes.display().iec(),
            self.cache.item_limit().display().iec(),
            self.media.max_bytes.display().iec(),
            self.media.legacy_unauthenticated,
            self.denylist.paths,
        )
    }
}

fn env() -> Env {
    Env::prefixed(ENV_PREFIX).split("__")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The smallest valid configuration (also the base of other modules' tests).
    pub(crate) const MINIMAL: &str = r#"
        [server]
        listen = "127.0.0.1:8009"
        [homeserver]
        url = "http://127.0.0.1:8008"
        [[gateways]]
        url = "http://127.0.0.1:8080"
    "#;

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.cache.max_bytes, ByteSize::mib(512));
        assert_eq!(c.media.max_bytes, ByteSize::mib(100));
        assert!(c.media.legacy_unauthenticated);
        assert_eq!(c.media.default_timeout, Duration::from_secs(20));
        assert_eq!(c.auth.token_cache_ttl, Duration::from_secs(60));
        assert_eq!(c.server.listen.addrs().len(), 1);
    }

    #[test]
    fn human_sizes_durations_and_address_lists() {
        let text = MINIMAL.replace(
            "listen = \"127.0.0.1:8009\"",
            "listen = [\"127.0.0.1:8009\", \"[::1]:8009\"]\nshutdown_grace = \"2m 5s\"",
        ) + "[cache]\nmax_bytes = \"1 GiB\"\nmax_item_bytes = \"10MB\"\n";
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.server.listen.addrs().len(), 2);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(125));
        assert_eq!(c.cache.max_bytes, ByteSize::gib(1));
        assert_eq!(c.cache.item_limit(), ByteSize::mb(10));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml(&(MINIMAL.to_owned() + "[cache]\nmax_byte = \"1GiB\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_byte"), "{err}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = Config::from_toml(&(MINIMAL.to_owned() + "[media]\nmax_bytes = \"lots\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("media.max_bytes"), "{err}");
        let err = Config::from_toml(&MINIMAL.replace("http://127.0.0.1:8008", "ftp://x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("homeserver.url"), "{err}");
    }

    /// A small cache alone is a valid config: the item limit follows it (issue #16).
    #[test]
    fn the_item_limit_follows_a_small_cache() {
        let c =
            Config::from_toml(&(MINIMAL.to_owned() + "[cache]\nmax_bytes = \"8MiB\"\n")).unwrap();
        assert_eq!(c.cache.item_limit(), ByteSize::mib(1));
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.cache.item_limit(), ByteSize::mib(64));
        let c =
            Config::from_toml(&(MINIMAL.to_owned() + "[cache]\nmax_bytes = \"8GiB\"\n")).unwrap();
        assert_eq!(c.cache.item_limit(), ByteSize::mib(64));
    }

    #[test]
    fn item_limit_cannot_exceed_cache() {
        let err = Config::from_toml(
            &(MINIMAL.to_owned() + "[cache]\nmax_bytes = \"1MiB\"\nmax_item_bytes = \"2MiB\"\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cache.max_item_bytes"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API returns its own large error type
    fn environment_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", MINIMAL)?;
            jail.set_env("IPFS_MEDIA_PROXY_CACHE__MAX_BYTES", "1GiB");
            jail.set_env("IPFS_MEDIA_PROXY_MEDIA__LEGACY_UNAUTHENTICATED", "false");
            jail.set_env(
                "IPFS_MEDIA_PROXY_GATEWAYS",
                r#"[{url="http://127.0.0.1:9999"}]"#,
            );
            let c = Config::load(Path::new("c.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.cache.max_bytes, ByteSize::gib(1));
            assert!(!c.media.legacy_unauthenticated);
            assert_eq!(c.gateways[0].url.as_str(), "http://127.0.0.1:9999/");
            Ok(())
        });
    }

    #[test]
    fn gateway_modes_default_by_address_and_secrets_are_redacted() {
        let text = MINIMAL.to_owned()
            + "[[gateways]]\nurl = \"https://trustless.example\"\nauthorization = \"Bearer hunter2\"\n"
            + "[[gateways]]\nurl = \"http://[::1]:8080\"\n[[gateways]]\nurl = \"http://localhost:1\"\nmode = \"trustless\"\n";
        let c = Config::from_toml(&text).unwrap();
        let modes: Vec<_> = c.gateways.iter().map(|g| g.effective_mode()).collect();
        assert_eq!(
            modes,
            [
                GatewayMode::Trusted,
                GatewayMode::Trustless,
                GatewayMode::Trusted,
                GatewayMode::Trustless
            ]
        );
        assert!(!c.summary().contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(c.summary().contains("auth=<redacted>"));
    }

    #[test]
    fn upload_is_off_by_default_and_checked_when_on() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert!(!c.upload.enabled);
        assert_eq!(c.upload.profile, ImportProfile::UnixfsV1_2025);
        assert_eq!(c.upload.media_id_form, MediaIdForm::Alias);
        let err = Config::from_toml(&(MINIMAL.to_owned() + "[upload]\nenabled = true\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("upload.store"), "{err}");
        let text = MINIMAL.to_owned()
            + "[upload]\nenabled = true\nprofile = \"kubo-v1-256k\"\n"
            + "[upload.store]\nkind = \"cluster\"\nurl = \"http://127.0.0.1:9094\"\n"
            + "authorization = \"Basic c2VjcmV0\"\nreplication_min = 2\nreplication_max = 3\n"
            + "[upload.rate]\nrequests = 5\n";
        let c = Config::from_toml(&text).unwrap();
        let store = c.upload.store.as_ref().unwrap();
        assert_eq!(store.kind, StoreKind::Cluster);
        assert_eq!(c.upload.rate.requests, 5);
        assert_eq!(c.upload.rate.bytes, ByteSize::gib(1));
        assert!(!format!("{c:?}").contains("c2VjcmV0"));
        let err = Config::from_toml(&text.replace("kubo-v1-256k", "kubo-v0"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("upload.profile"), "{err}");
        let err = Config::from_toml(&text.replace("replication_min = 2", "replication_min = 4"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("replication_min"), "{err}");
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../config/ipfs-media-proxy.toml");
        Config::from_toml(text).unwrap();
    }
}

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
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenylistConfig {
    /// Files of blocked CIDs: plain (one CID per line) or the IPFS compact denylist format.
    /// Relative paths are relative to the configuration file's directory.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// How often the files are looked at for changes; "0s" turns that off (SIGHUP still
    /// reloads them).
    #[serde(default = "defaults::denylist_watch", with = "humantime_serde")]
    pub watch_interval: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `/metrics`, `/health`, `/ready`; off when absent. Keep it on loopback.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// One address or a list of them.
    pub listen: Listen,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Time a client has to send its request headers.
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Threads serving connections, each with a runtime of its own; 0: one per CPU.
    #[serde(default)]
    pub workers: usize,
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
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Base URL of an IPFS gateway: content is fetched from `{url}/ipfs/{cid}`.
    pub url: Url,
    /// `trusted` (path gateway, bytes taken as they come) or `trustless` (blocks and CARs,
    /// every byte checked against the CID). Default: trusted for loopback, else trustless.
    #[serde(default)]
    pub mode: Option<GatewayMode>,
    /// Longest wait for the gateway's response headers, and longest pause between two reads.
    #[serde(default = "defaults::gateway_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// `Authorization` header value for a private gateway. Secret: never logged.
    #[serde(default)]
    pub authorization: Option<String>,
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
#[serde(deny_unknown_fields)]
pub struct RetrievalConfig {
    /// When the best gateway has not answered within this, the next one is asked too.
    #[serde(default = "defaults::hedge_delay", with = "humantime_serde")]
    pub hedge_delay: Duration,
    /// How long a gateway caught serving a bad block is asked last.
    #[serde(default = "defaults::bench_time", with = "humantime_serde")]
    pub bench_time: Duration,
    /// How often every gateway is probed (`GET /ipfs/bafkqaaa?format=raw`); "0s" turns it off.
    #[serde(default = "defaults::probe_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// The most blocks one verified (trustless) walk of a file may take, whatever its size
    /// justifies; a DAG needing more is refused (502 `M_UNKNOWN`).
    #[serde(default = "default_max_dag_blocks")]
    pub max_dag_blocks: u64,
}

fn default_max_dag_blocks() -> u64 {
    crate::ipfs::walk::DEFAULT_MAX_BLOCKS
}

impl Default for RetrievalConfig {
    fn default() -> Self {
        Self {
            hedge_delay: defaults::hedge_delay(),
            bench_time: defaults::bench_time(),
            probe_interval: defaults::probe_interval(),
            max_dag_blocks: default_max_dag_blocks(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Total bytes of media held in memory.
    #[serde(default = "defaults::cache_max_bytes")]
    pub max_bytes: ByteSize,
    /// Media larger than this is streamed through without being kept.
    #[serde(default = "defaults::cache_max_item_bytes")]
    pub max_item_bytes: ByteSize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaConfig {
    /// Larger ipfs media is refused with 502 `M_TOO_LARGE`.
    #[serde(default = "defaults::media_max_bytes")]
    pub max_bytes: ByteSize,
    /// Serve ipfs media on the unauthenticated `/_matrix/media/*` routes.
    #[serde(default = "defaults::yes")]
    pub legacy_unauthenticated: bool,
    /// Wait for content when the client sends no `timeout_ms`.
    #[serde(default = "defaults::default_wait", with = "humantime_serde")]
    pub default_timeout: Duration,
    /// Upper bound on a client's `timeout_ms`.
    #[serde(default = "defaults::max_wait", with = "humantime_serde")]
    pub max_timeout: Duration,
    /// A second, spec-grammar form of ipfs media IDs (`ipfs_<cid>`); empty turns it off.
    #[serde(default = "defaults::alias_prefix")]
    pub id_alias_prefix: String,
    /// A `Range` of uncached media starting more than this beyond what the shared fetch has
    /// delivered (beyond byte 0 when none runs) is fetched on its own.
    #[serde(default = "defaults::range_fetch_threshold")]
    pub range_fetch_threshold: ByteSize,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailsConfig {
    /// Make thumbnails of ipfs images; off, thumbnail requests go to the homeserver.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Render the exact requested size instead of choosing among `sizes`.
    #[serde(default)]
    pub dynamic: bool,
    /// The sizes thumbnails are made at (Synapse's defaults).
    #[serde(default = "defaults::thumbnail_sizes")]
    pub sizes: Vec<ThumbnailSizeConfig>,
    /// Images with more pixels are not thumbnailed (decompression bombs).
    #[serde(default = "defaults::max_pixels")]
    pub max_pixels: u64,
    /// Larger sources are not thumbnailed.
    #[serde(default = "defaults::thumbnail_source_bytes")]
    pub max_source_bytes: ByteSize,
    /// Thumbnails rendered at once; 0 means one per CPU.
    #[serde(default)]
    pub max_concurrent: usize,
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

impl Default for ThumbnailsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dynamic: false,
            sizes: defaults::thumbnail_sizes(),
            max_pixels: defaults::max_pixels(),
            max_source_bytes: defaults::thumbnail_source_bytes(),
            max_concurrent: 0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesConfig {
    /// Add `m.ipfs` (and `io.t2bot.ipfs`) to the homeserver's capabilities answer.
    #[serde(default)]
    pub advertise_ipfs: bool,
    /// The server name clients should put in the `mxc://` URIs of content they add to IPFS.
    #[serde(default)]
    pub preferred_origin: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// How long an access token the homeserver accepted is trusted without asking again.
    #[serde(default = "defaults::token_ttl", with = "humantime_serde")]
    pub token_cache_ttl: Duration,
    /// How many accepted tokens are remembered at most.
    #[serde(default = "defaults::token_entries")]
    pub token_cache_entries: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter (`info`, `ipfs_media_proxy=debug`, ...); `RUST_LOG` wins when set.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

mod defaults {
    use super::*;
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn gateway_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn hedge_delay() -> Duration {
        Duration::from_secs(2)
    }
    pub fn bench_time() -> Duration {
        Duration::from_secs(300)
    }
    pub fn probe_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub fn cache_max_bytes() -> ByteSize {
        ByteSize::mib(512)
    }
    pub fn cache_max_item_bytes() -> ByteSize {
        ByteSize::mib(64)
    }
    pub fn media_max_bytes() -> ByteSize {
        ByteSize::mib(100)
    }
    pub fn range_fetch_threshold() -> ByteSize {
        ByteSize::mib(4)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn default_wait() -> Duration {
        Duration::from_secs(20)
    }
    pub fn max_wait() -> Duration {
        Duration::from_secs(60)
    }
    pub fn token_ttl() -> Duration {
        Duration::from_secs(60)
    }
    pub fn token_entries() -> u64 {
        10_000
    }
    pub fn thumbnail_sizes() -> Vec<ThumbnailSizeConfig> {
        let size = |width, height, method| ThumbnailSizeConfig {
            width,
            height,
            method,
        };
        vec![
            size(32, 32, ThumbnailMethod::Crop),
            size(96, 96, ThumbnailMethod::Crop),
            size(320, 240, ThumbnailMethod::Scale),
            size(640, 480, ThumbnailMethod::Scale),
            size(800, 600, ThumbnailMethod::Scale),
        ]
    }
    pub fn max_pixels() -> u64 {
        32 * 1024 * 1024
    }
    pub fn thumbnail_source_bytes() -> ByteSize {
        ByteSize::mib(64)
    }
    pub fn alias_prefix() -> String {
        crate::media::media_id::DEFAULT_ALIAS_PREFIX.to_owned()
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
    pub fn denylist_watch() -> Duration {
        Duration::from_secs(5)
    }
}

impl Default for DenylistConfig {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            watch_interval: defaults::denylist_watch(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: defaults::cache_max_bytes(),
            max_item_bytes: defaults::cache_max_item_bytes(),
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_bytes: defaults::media_max_bytes(),
            legacy_unauthenticated: true,
            default_timeout: defaults::default_wait(),
            max_timeout: defaults::max_wait(),
            id_alias_prefix: defaults::alias_prefix(),
            range_fetch_threshold: defaults::range_fetch_threshold(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            token_cache_ttl: defaults::token_ttl(),
            token_cache_entries: defaults::token_entries(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: defaults::log_level(),
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
        if self.cache.max_item_bytes > self.cache.max_bytes {
            return invalid("cache.max_item_bytes", "must not exceed cache.max_bytes");
        }
        if self.cache.max_item_bytes.as_u64() > u64::from(u32::MAX) {
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
            self.cache.max_item_bytes.display().iec(),
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
        assert_eq!(c.cache.max_item_bytes, ByteSize::mb(10));
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
    fn shipped_example_config_is_valid() {
        let text = include_str!("../config/ipfs-media-proxy.toml");
        Config::from_toml(text).unwrap();
    }
}

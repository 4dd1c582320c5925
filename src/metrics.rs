//! Prometheus metrics, named by Prometheus conventions (`ipfs_media_proxy_*`, base units,
//! `_total`, `_seconds`, `_bytes`). Label values come from small fixed sets (route kinds,
//! status classes, outcomes, configured gateway URLs): never a CID, user or path.
//!
//! One process-wide registry, like a global recorder: the counters are touched from the hot
//! path of every module, and threading a handle through each would add nothing.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayOutcome {
    pub gateway: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GatewayLabel {
    pub gateway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOutcome {
    pub store: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteStatus {
    pub service: String,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RemoteService {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    pub worker: String,
}

type Seconds = Family<RouteOnly, Histogram, fn() -> Histogram>;
type GatewaySeconds = Family<GatewayLabel, Histogram, fn() -> Histogram>;
type StoreSeconds = Family<StoreOutcome, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub request_duration: Seconds,
    pub response_bytes: Family<RouteOnly, Counter>,
    pub in_flight: Gauge,
    pub cache_lookups: Family<Outcome, Counter>,
    pub cache_evictions: Counter,
    pub cache_entries: Gauge<i64, AtomicI64>,
    pub cache_bytes: Gauge<i64, AtomicI64>,
    pub gateway_requests: Family<GatewayOutcome, Counter>,
    pub gateway_duration: GatewaySeconds,
    pub verification_failures: Family<GatewayLabel, Counter>,
    pub token_checks: Family<Outcome, Counter>,
    pub token_cache_hits: Counter,
    pub thumbnails_rendered: Counter<u64, AtomicU64>,
    pub thumbnail_renders_started: Counter,
    pub thumbnails_made_ahead: Counter,
    pub thumbnail_refusals: Family<Outcome, Counter>,
    pub denylist_refusals: Counter,
    pub denylist_rules: Gauge<i64, AtomicI64>,
    pub denylist_reloads: Family<Outcome, Counter>,
    pub config_reloads: Family<Outcome, Counter>,
    pub connections: Family<WorkerLabel, Counter>,
    pub connections_refused: Counter,
    pub connection_timeouts: Family<Outcome, Counter>,
    pub fetch_bytes_held: Gauge<i64, AtomicI64>,
    pub fetch_budget_events: Family<Outcome, Counter>,
    pub uploads: Family<Outcome, Counter>,
    pub pins: Family<Outcome, Counter>,
    pub remote_pins: Family<RemoteStatus, Gauge<i64, AtomicI64>>,
    pub remote_pinned: Family<RemoteService, Counter>,
    pub remote_oldest_unpinned: Family<RemoteService, Gauge<i64, AtomicI64>>,
    pub remote_reconciliations: Family<RemoteStatus, Counter>,
    pub upload_bytes: Counter,
    pub store_requests: Family<StoreOutcome, Counter>,
    pub store_duration: StoreSeconds,
}

fn latency() -> Histogram {
    // 0.5 ms to ~65 s: cache hits through cold fetches.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("ipfs_media_proxy");
    let m = Metrics {
        requests: Family::default(),
        request_duration: Family::new_with_constructor(latency as fn() -> Histogram),
        response_bytes: Family::default(),
        in_flight: Gauge::default(),
        cache_lookups: Family::default(),
        cache_evictions: Counter::default(),
        cache_entries: Gauge::default(),
        cache_bytes: Gauge::default(),
        gateway_requests: Family::default(),
        gateway_duration: Family::new_with_constructor(latency as fn() -> Histogram),
        verification_failures: Family::default(),
        connections: Family::default(),
        connections_refused: Counter::default(),
        connection_timeouts: Family::default(),
        uploads: Family::default(),
        pins: Family::default(),
        remote_pins: Family::default(),
        remote_pinned: Family::default(),
        remote_oldest_unpinned: Family::default(),
        remote_reconciliations: Family::default(),
        upload_bytes: Counter::default(),
        store_requests: Family::default(),
        store_duration: Family::new_with_constructor(latency as fn() -> Histogram),
        token_checks: Family::default(),
        token_cache_hits: Counter::default(),
        thumbnails_rendered: Counter::default(),
        thumbnail_renders_started: Counter::default(),
        thumbnails_made_ahead: Counter::default(),
        thumbnail_refusals: Family::default(),
        denylist_refusals: Counter::default(),
        denylist_rules: Gauge::default(),
        denylist_reloads: Family::default(),
        config_reloads: Family::default(),
        fetch_bytes_held: Gauge::default(),
        fetch_budget_events: Family::default(),
        registry: Registry::default(),
    };
    registry.register(
        "requests",
        "Requests answered, by route kind and status class",
        m.requests.clone(),
    );
    registry.register(
        "request_duration_seconds",
        "Time from request to the end of the response body",
        m.request_duration.clone(),
    );
    registry.register(
        "response_bytes",
        "Response body bytes sent",
        m.response_bytes.clone(),
    );
    registry.register(
        "in_flight_requests",
        "Requests being answered now",
        m.in_flight.clone(),
    );
    registry.register(
        "cache_lookups",
        "ipfs media lookups: hit, miss, joined a fetch",
        m.cache_lookups.clone(),
    );
    registry.register(
        "cache_evictions",
        "Items the cache let go to stay within its bound",
        m.cache_evictions.clone(),
    );
    registry.register(
        "cache_entries",
        "Items held in the cache",
        m.cache_entries.clone(),
    );
    registry.register(
        "cache_held_bytes",
        "Bytes held in the cache",
        m.cache_bytes.clone(),
    );
    registry.register(
        "gateway_requests",
        "Gateway fetches by gateway and outcome",
        m.gateway_requests.clone(),
    );
    registry.register(
        "gateway_request_duration_seconds",
        "Time until a gateway delivered (or failed)",
        m.gateway_duration.clone(),
    );
    registry.register(
        "verification_failures",
        "Blocks from a gateway that did not match their CID",
        m.verification_failures.clone(),
    );
    registry.register(
        "token_checks",
        "Access-token checks asked of the homeserver",
        m.token_checks.clone(),
    );
    registry.register(
        "token_cache_hits",
        "Access tokens accepted from memory",
        m.token_cache_hits.clone(),
    );
    registry.register(
        "thumbnails_rendered",
        "Thumbnails made for the request that asked",
        m.thumbnails_rendered.clone(),
    );
    registry.register(
        "thumbnails_made_ahead",
        "Thumbnails of other configured sizes made from a requested one's decode (thumbnails.all_sizes)",
        m.thumbnails_made_ahead.clone(),
    );
    registry.register(
        "thumbnail_renders_started",
        "Thumbnail renders that got a render slot",
        m.thumbnail_renders_started.clone(),
    );
    registry.register(
        "thumbnail_refusals",
        "Thumbnail renders refused for load: the queue full, or the render timeout",
        m.thumbnail_refusals.clone(),
    );
    registry.register(
        "denylist_refusals",
        "Requests refused because their CID is on a denylist",
        m.denylist_refusals.clone(),
    );
    registry.register(
        "denylist_rules",
        "Denylist rules in force",
        m.denylist_rules.clone(),
    );
    registry.register(
        "denylist_reloads",
        "Denylist reloads (file change or SIGHUP), by outcome",
        m.denylist_reloads.clone(),
    );
    registry.register(
        "fetch_held_bytes",
        "Bytes held by running fetches outside the cache (bounded by cache.max_fetch_bytes)",
        m.fetch_bytes_held.clone(),
    );
    registry.register(
        "fetch_budget",
        "Fetches refused (outcome=refused) or no longer kept for the cache (outcome=degraded) because cache.max_fetch_bytes was reached",
        m.fetch_budget_events.clone(),
    );
    registry.register(
        "config_reloads",
        "Configuration reloads on SIGHUP, by outcome",
        m.config_reloads.clone(),
    );
    registry.register(
        "connections",
        "Client connections accepted, by the connection worker serving them",
        m.connections.clone(),
    );
    registry.register(
        "connections_refused",
        "Client connections closed at once because server.max_connections were open",
        m.connections_refused.clone(),
    );
    registry.register(
        "connection_timeouts",
        "Client connections closed for silence (first_byte_timeout) or idleness (idle_timeout)",
        m.connection_timeouts.clone(),
    );
    registry.register(
        "uploads",
        "Uploads stored on IPFS, by outcome (stored, refused, too_large, rate_limited, blocked, store_error, aborted)",
        m.uploads.clone(),
    );
    registry.register(
        "pins",
        "Pin requests (POST .../pin/{cid}), by outcome (pinned, refused, invalid, not_found, too_large, rate_limited, blocked, store_error)",
        m.pins.clone(),
    );
    registry.register(
        "remote_pins",
        "CIDs requested from a remote pinning service and not yet pinned there, by service and status (queued, pinning, failed)",
        m.remote_pins.clone(),
    );
    registry.register(
        "remote_pinned",
        "CIDs a remote pinning service reported pinned, by service",
        m.remote_pinned.clone(),
    );
    registry.register(
        "remote_oldest_unpinned_seconds",
        "How long the oldest CID not yet pinned on a remote pinning service has waited, by service",
        m.remote_oldest_unpinned.clone(),
    );
    registry.register(
        "remote_pin_reconciliations",
        "Reconciliation passes against a remote pinning service, by service and outcome (status label: ok, error)",
        m.remote_reconciliations.clone(),
    );
    registry.register(
        "upload_bytes",
        "Bytes of uploads stored on IPFS",
        m.upload_bytes.clone(),
    );
    registry.register(
        "store_requests",
        "Requests to the upload store, by store kind and outcome",
        m.store_requests.clone(),
    );
    registry.register(
        "store_request_duration_seconds",
        "Time a request to the upload store took, by store kind and outcome",
        m.store_duration.clone(),
    );
    Metrics { registry, ..m }
});

/// The per-route series, looked up once: the request path then touches no label map (no
/// hashing, no lock) for them.
pub struct RouteSeries {
    /// Indexed by status class (1xx..5xx).
    pub requests: [Counter; 5],
    pub duration: Histogram,
    pub bytes: Counter,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl RouteSeries {
    pub fn new(route: &'static str) -> Self {
        let m = &*METRICS;
        RouteSeries {
            requests: CLASSES.map(|status_class| {
                m.requests
                    .get_or_create(&RouteLabels {
                        route,
                        status_class,
                    })
                    .clone()
            }),
            duration: m
                .request_duration
                .get_or_create(&RouteOnly { route })
                .clone(),
            bytes: m.response_bytes.get_or_create(&RouteOnly { route }).clone(),
        }
    }

    pub fn record(&self, status: u16, seconds: f64, bytes: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].inc();
        self.duration.observe(seconds);
        self.bytes.inc_by(bytes);
    }
}

/// `2xx`, `4xx`, ...: a bounded label.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry)
        .expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_conventions() {
        METRICS
            .requests
            .get_or_create(&RouteLabels {
                route: "download",
                status_class: "2xx",
            })
            .inc();
        let text = render();
        assert!(
            text.contains(
                "ipfs_media_proxy_requests_total{route=\"download\",status_class=\"2xx\"}"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE ipfs_media_proxy_request_duration_seconds histogram"));
        assert!(text.contains("ipfs_media_proxy_cache_held_bytes"));
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(416), "4xx");
        assert_eq!(status_class(504), "5xx");
    }
}

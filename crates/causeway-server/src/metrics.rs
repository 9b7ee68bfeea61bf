//! Prometheus metrics, grouped per subsystem, served at `GET /metrics`.
//!
//! Counters and histograms are updated on the hot paths with atomic operations only;
//! gauges that mirror state (keys, epoch, disk) are refreshed when scraped, except how
//! far each shard peer is behind, which its replication loop sets as it computes it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

/// The single-key route's request counters for its usual methods and statuses, and its
/// latency histogram, once first used (clones share the family's series).
#[derive(Default)]
struct KeyRoute {
    counters: [std::sync::OnceLock<Counter>; 9],
    latency: std::sync::OnceLock<Histogram>,
}

impl KeyRoute {
    /// The counter slot of a `keys` request with this method and status, if it has one.
    fn slot(route: &str, method: &str, status: u16) -> Option<usize> {
        if route != "keys" {
            return None;
        }
        let m = match method {
            "GET" => 0,
            "PUT" => 1,
            "DELETE" => 2,
            _ => return None,
        };
        let s = match status {
            200 => 0,
            201 => 1,
            404 => 2,
            _ => return None,
        };
        Some(m * 3 + s)
    }
}

pub struct Metrics {
    registry: Registry,
    /// The single-key route's series, taken from the families once (see [`Self::count`]).
    key_route: KeyRoute,
    pub requests: Family<RouteLabels, Counter>,
    pub latency: Family<RouteOnly, Histogram>,
    pub proxied: Family<OutcomeLabels, Counter>,
    pub read_fetches: Family<OutcomeLabels, Counter>,
    pub sync_rounds: Family<OutcomeLabels, Counter>,
    pub sync_batch_versions: Histogram,
    pub sync_lag_seconds: Histogram,
    pub versions_repaired: Counter,
    /// Versions (and their bytes) each shard peer has not acknowledged yet.
    pub behind_versions: Family<PeerLabels, Gauge>,
    pub behind_bytes: Family<PeerLabels, Gauge>,
    /// For how long (seconds) each shard peer has been behind (0 when it is not).
    pub behind_seconds: Family<PeerLabels, Gauge>,
    pub migrated_out: Counter,
    pub tombstones_collected: Counter,
    pub commit_batches: Counter,
    /// Every HTTP answer, and those that were client (4xx) or server (5xx) errors.
    pub answers: Counter,
    pub client_errors: Counter,
    pub server_errors: Counter,
    /// Bytes of replication messages sent to shard peers.
    pub replication_bytes: Counter,
    pub view_epoch: Gauge,
    pub keys: Gauge,
    pub storage_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("causeway");
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteOnly, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        let proxied = Family::<OutcomeLabels, Counter>::default();
        let read_fetches = Family::<OutcomeLabels, Counter>::default();
        let sync_rounds = Family::<OutcomeLabels, Counter>::default();
        let sync_batch_versions = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        let sync_lag_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        let versions_repaired = Counter::default();
        let behind_versions = Family::<PeerLabels, Gauge>::default();
        let behind_bytes = Family::<PeerLabels, Gauge>::default();
        let behind_seconds = Family::<PeerLabels, Gauge>::default();
        let migrated_out = Counter::default();
        let tombstones_collected = Counter::default();
        let commit_batches = Counter::default();
        let answers = Counter::default();
        let client_errors = Counter::default();
        let server_errors = Counter::default();
        let replication_bytes = Counter::default();
        let view_epoch = Gauge::default();
        let keys = Gauge::default();
        let storage_bytes = Gauge::default();
        registry.register(
            "http_requests",
            "Client and operational HTTP requests",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            latency.clone(),
        );
        registry.register(
            "proxied_requests",
            "Key requests forwarded to another shard",
            proxied.clone(),
        );
        registry.register(
            "read_fetches",
            "Reads that fetched a newer version from a peer",
            read_fetches.clone(),
        );
        registry.register(
            "replication_sync_rounds",
            "Replication rounds to shard peers",
            sync_rounds.clone(),
        );
        registry.register(
            "replication_batch_versions",
            "Versions per replication message",
            sync_batch_versions.clone(),
        );
        registry.register(
            "replication_lag_seconds",
            "Age of the oldest write in a replication batch when sent",
            sync_lag_seconds.clone(),
        );
        registry.register(
            "anti_entropy_repairs",
            "Versions sent in full (repair) transfers to peers",
            versions_repaired.clone(),
        );
        registry.register(
            "replication_behind_versions",
            "Versions held here that a shard peer has not acknowledged",
            behind_versions.clone(),
        );
        registry.register(
            "replication_behind_bytes",
            "Approximate bytes of the versions a shard peer has not acknowledged",
            behind_bytes.clone(),
        );
        registry.register(
            "replication_behind_seconds",
            "For how long each shard peer has been behind (0 when it is not)",
            behind_seconds.clone(),
        );
        registry.register(
            "migrated_keys",
            "Keys handed to new owners by view changes",
            migrated_out.clone(),
        );
        registry.register(
            "tombstones_collected",
            "Tombstones removed once every replica had them",
            tombstones_collected.clone(),
        );
        registry.register(
            "commit_batches",
            "Durable commit batches (syncs)",
            commit_batches.clone(),
        );
        registry.register("answers", "HTTP answers of any route", answers.clone());
        registry.register(
            "client_errors",
            "HTTP answers with a 4xx status",
            client_errors.clone(),
        );
        registry.register(
            "server_errors",
            "HTTP answers with a 5xx status",
            server_errors.clone(),
        );
        registry.register(
            "replication_bytes",
            "Bytes of replication messages sent to shard peers",
            replication_bytes.clone(),
        );
        registry.register("view_epoch", "Current view epoch", view_epoch.clone());
        registry.register("keys", "Live keys held by this node", keys.clone());
        registry.register("storage_bytes", "Bytes used on disk", storage_bytes.clone());
        Metrics {
            registry,
            key_route: KeyRoute::default(),
            requests,
            latency,
            proxied,
            read_fetches,
            sync_rounds,
            sync_batch_versions,
            sync_lag_seconds,
            versions_repaired,
            behind_versions,
            behind_bytes,
            behind_seconds,
            migrated_out,
            tombstones_collected,
            commit_batches,
            answers,
            client_errors,
            server_errors,
            replication_bytes,
            view_epoch,
            keys,
            storage_bytes,
        }
    }

    /// Counts one answered request of `route` and observes its latency. The single-key
    /// route's usual series are looked up in their families once and kept: a family
    /// lookup takes its lock and hashes the labels, on every request of the hot path.
    /// A series appears in `/metrics` only once a request counted in it, either way.
    pub fn count(&self, route: &'static str, method: &'static str, status: u16, seconds: f64) {
        let labels = || RouteLabels {
            route,
            method,
            status,
        };
        match KeyRoute::slot(route, method, status) {
            Some(i) => {
                self.key_route.counters[i]
                    .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                    .inc();
                self.key_route
                    .latency
                    .get_or_init(|| self.latency.get_or_create(&RouteOnly { route }).clone())
                    .observe(seconds);
            }
            None => {
                self.requests.get_or_create(&labels()).inc();
                self.latency
                    .get_or_create(&RouteOnly { route })
                    .observe(seconds);
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("write to String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, start: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(start))
    }

    #[test]
    fn a_kept_series_counts_in_its_family_and_shows_only_once_used() {
        let m = Metrics::new();
        let text = m.encode();
        assert!(
            !text.contains(r#"route="keys""#),
            "nothing counted yet:\n{text}"
        );
        m.count("keys", "GET", 200, 0.001);
        m.count("keys", "GET", 200, 0.001);
        m.count("keys", "GET", 503, 0.001);
        m.count("keys", "PATCH", 405, 0.001);
        m.count("health", "GET", 200, 0.001);
        // The family's own series, whichever way it was reached.
        m.requests
            .get_or_create(&RouteLabels {
                route: "keys",
                method: "GET",
                status: 200,
            })
            .inc();
        let text = m.encode();
        let requests = r#"causeway_http_requests_total{route="keys",method="#;
        assert_eq!(
            line(&text, &format!(r#"{requests}"GET",status="200"}}"#)),
            Some(r#"causeway_http_requests_total{route="keys",method="GET",status="200"} 3"#)
        );
        assert!(line(&text, &format!(r#"{requests}"GET",status="503"}} 1"#)).is_some());
        assert!(line(&text, &format!(r#"{requests}"PATCH",status="405"}} 1"#)).is_some());
        assert_eq!(
            line(
                &text,
                r#"causeway_http_request_duration_seconds_count{route="keys"}"#
            ),
            Some(r#"causeway_http_request_duration_seconds_count{route="keys"} 4"#)
        );
        assert!(line(
            &text,
            r#"causeway_http_requests_total{route="health",method="GET",status="200"} 1"#
        )
        .is_some());
        assert!(!text.contains(r#"method="DELETE""#), "{text}");
    }
}

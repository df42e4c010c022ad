//! Prometheus metrics, owned by the application (no global recorder), rendered by
//! `GET /metrics` in the text exposition format.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use ward_storage::PoolStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    /// The route template (`/v1/users/{id}`), never the raw path: ids stay out of labels.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pool_size: Gauge<i64>,
    pool_idle: Gauge<i64>,
    pool_max: Gauge<i64>,
    /// Always 1; its `version` label tells dashboards which build answers.
    _build: Family<BuildLabels, Gauge<u64, AtomicU64>>,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    pub fn new() -> Self {
        Self::with_key_metrics(None)
    }

    /// Metrics including the data-key cache's and key store's counters.
    pub fn with_key_metrics(keys: Option<&ward_keys::CacheMetrics>) -> Self {
        Self::with_sources(|registry| {
            if let Some(keys) = keys {
                keys.register(registry);
            }
        })
    }

    /// Metrics including those `register` adds (other modules' counters).
    pub fn with_sources(register: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("ward");
        register(&mut registry);
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        let pool_size = Gauge::default();
        let pool_idle = Gauge::default();
        let pool_max = Gauge::default();
        let build = Family::<BuildLabels, Gauge<u64, AtomicU64>>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        registry.register("http_requests", "HTTP requests answered, by route and status", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by route and status",
            latency.clone(),
        );
        registry.register("db_pool_connections", "Database connections currently open", pool_size.clone());
        registry.register("db_pool_idle_connections", "Database connections open and idle", pool_idle.clone());
        registry.register("db_pool_max_connections", "Configured pool ceiling", pool_max.clone());
        registry.register("build_info", "Ward build information", build.clone());
        Self { registry, requests, latency, pool_size, pool_idle, pool_max, _build: build }
    }

    /// Renders every metric, refreshing the pool gauges first.
    pub fn render(&self, pool: PoolStats) -> String {
        self.pool_size.set(i64::from(pool.size));
        self.pool_idle.set(i64::from(pool.idle));
        self.pool_max.set(i64::from(pool.max));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

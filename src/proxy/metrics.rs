//! The proxy's Prometheus metrics (`zgp_*`), encoded by `prometheus-client`. They are
//! updated in one place, `super::observe`, from each connection's outcome; the admin
//! endpoint ([`super::admin`]) serves them.

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::outcome::{BackendErrorKind, Closed, Direction, RejectReason};
use super::routes::RouteName;

/// Label values are the lower-case names operators query by (`route="zmq"`), spelled by
/// each type's `as_str`.
macro_rules! label_values {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                use std::fmt::Write;
                encoder.write_str(self.as_str())
            }
        }
    )*};
}

label_values!(RouteName, RejectReason, Closed, Direction, BackendErrorKind);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: RouteName,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: RejectReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub route: RouteName,
    pub outcome: Closed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub route: RouteName,
    pub direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendErrorLabels {
    pub route: RouteName,
    pub kind: BackendErrorKind,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// The proxy's metrics. All names start with `zgp_`.
pub struct Metrics {
    registry: Registry,
    ready: AtomicBool,
    pub accepted: Counter,
    pub handed_over: Counter,
    pub accept_errors: Counter,
    pub rejected: Family<ReasonLabels, Counter>,
    pub closed: Family<ClosedLabels, Counter>,
    pub active: Family<RouteLabels, Gauge>,
    pub bytes: Family<BytesLabels, Counter>,
    pub detect_seconds: Histogram,
    pub connect_seconds: Family<RouteLabels, Histogram>,
    pub backend_errors: Family<BackendErrorLabels, Counter>,
    /// How long routed connections lasted, by route.
    pub duration_seconds: Family<RouteLabels, Histogram>,
    /// `--max-connections` in force (after fitting it to the open-file limit).
    pub max_connections: Gauge,
    /// Config reloads, by result (`ok`, `rejected`).
    pub reloads: Family<ResultLabels, Counter>,
    /// Unix time of the last successful reload (0: none yet).
    pub last_reload_success: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

fn duration_histogram() -> Histogram {
    // 1 ms … ~4.6 h: connections live from a gossip round to days.
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("zgp");
        let m = Metrics {
            registry: Registry::default(),
            ready: AtomicBool::new(false),
            accepted: Counter::default(),
            handed_over: Counter::default(),
            accept_errors: Counter::default(),
            rejected: Family::default(),
            closed: Family::default(),
            active: Family::default(),
            bytes: Family::default(),
            detect_seconds: latency_histogram(),
            connect_seconds: Family::new_with_constructor(latency_histogram),
            backend_errors: Family::default(),
            duration_seconds: Family::new_with_constructor(duration_histogram),
            max_connections: Gauge::default(),
            reloads: Family::default(),
            last_reload_success: Gauge::default(),
        };
        registry.register(
            "connections_accepted",
            "Connections accepted",
            m.accepted.clone(),
        );
        registry.register(
            "connections_handed_over",
            "Connections the accepting thread handed to another because it was saturated \
             (the per-core scheduler); the rest it served itself",
            m.handed_over.clone(),
        );
        registry.register(
            "accept_errors",
            "Accepts that failed for want of resources (EMFILE, ENFILE, ENOBUFS), each retried after a back-off",
            m.accept_errors.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections closed before reaching a backend, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "connections_closed",
            "Routed connections that ended, by route and outcome",
            m.closed.clone(),
        );
        registry.register(
            "connections_active",
            "Connections being relayed, by route",
            m.active.clone(),
        );
        registry.register(
            "bytes",
            "Bytes relayed, by route and direction",
            m.bytes.clone(),
        );
        registry.register(
            "detect_seconds",
            "Time from accept to a protocol decision",
            m.detect_seconds.clone(),
        );
        registry.register(
            "backend_connect_seconds",
            "Time to connect to a backend, by route",
            m.connect_seconds.clone(),
        );
        registry.register(
            "backend_errors",
            "Failed backend connections, by route and kind",
            m.backend_errors.clone(),
        );
        m.register_operations(&mut registry);
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The process- and operations-level metrics (beside the per-connection ones).
    fn register_operations(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "connection_duration_seconds",
            "How long routed connections lasted, by route",
            m.duration_seconds.clone(),
        );
        registry.register(
            "max_connections",
            "Connections served at once before new ones are refused (--max-connections, fitted to the open-file limit)",
            m.max_connections.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP), by result: ok, rejected",
            m.reloads.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration reload (0: none)",
            m.last_reload_success.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: crate::GIT_COMMIT,
            })
            .set(1);
        registry.register(
            "build_info",
            "The build: version and git commit (always 1)",
            build,
        );
        registry.register_collector(Box::new(super::process::ProcessCollector));
    }
}

impl Metrics {
    /// The proxy's metrics plus `extra`, read at every scrape: a program that embeds the
    /// proxy (grpc_server's mux) adds its own.
    pub fn with_collector(extra: Box<dyn prometheus_client::collector::Collector>) -> Metrics {
        let mut m = Metrics::default();
        m.registry.register_collector(extra);
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Listening and not draining: what `/readyz` reports.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

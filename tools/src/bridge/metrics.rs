//! The bridge's metrics (`zgp_bridge_*`), read from [`BridgeStats`] at every scrape, and
//! its readiness: what `zmq_bridge --metrics-listen` serves while stage 3 runs, so the
//! riskiest stage is watched live rather than through a summary printed at exit.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

use super::*;
use zmq_grpc_proxy::proxy::admin::Exposition;
use zmq_grpc_proxy::proxy::scrape::{encode_counter, encode_gauge};

/// What `/metrics` and `/readyz` show for a bridge.
#[derive(Debug)]
pub struct BridgeMetrics {
    registry: Registry,
    stats: Arc<BridgeStats>,
}

impl BridgeMetrics {
    pub fn new(stats: Arc<BridgeStats>) -> Self {
        let mut registry = Registry::with_prefix("zgp");
        registry.register_collector(Box::new(Counts(Arc::clone(&stats))));
        BridgeMetrics { registry, stats }
    }
}

impl Exposition for BridgeMetrics {
    fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn is_ready(&self) -> bool {
        self.stats.ready.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct Counts(Arc<BridgeStats>);

impl Collector for Counts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let e = &mut encoder;
        encode_counter(
            e,
            "bridge_received",
            "ZMQ messages read and handed to a lane",
            get(&s.received),
        )?;
        encode_counter(
            e,
            "bridge_delivered",
            "Messages the gRPC server acknowledged",
            get(&s.delivered),
        )?;
        encode_counter(
            e,
            "bridge_retried",
            "Calls that failed and were tried again",
            get(&s.failed_attempts),
        )?;
        encode_counter(
            e,
            "bridge_dead_lettered",
            "Messages the server rejected for good",
            get(&s.dead_lettered),
        )?;
        encode_counter(
            e,
            "bridge_malformed",
            "Frames that were not a Message (payload message)",
            get(&s.malformed),
        )?;
        encode_gauge(
            e,
            "bridge_in_flight",
            "Messages read and not yet delivered or dead-lettered",
            s.in_flight() as f64,
        )?;
        let oldest = s.oldest_undelivered().map_or(0.0, |d| d.as_secs_f64());
        encode_gauge(
            e,
            "bridge_oldest_undelivered_seconds",
            "Age of the oldest message read and not yet delivered (0: none)",
            oldest,
        )
    }
}

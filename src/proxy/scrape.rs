//! Values read at scrape time: [`prometheus_client::collector::Collector`]s that report
//! counters and gauges kept elsewhere (the process's `/proc` figures, grpc_server's and
//! zmq_bridge's message counts) write each one with these two functions.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Writes one counter into a scrape; for [`prometheus_client::collector::Collector`]s that
/// read their values at scrape time from counters kept elsewhere.
pub fn encode_counter<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstCounter<N>: EncodeMetric,
{
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// As [`encode_counter`], for a gauge.
pub fn encode_gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

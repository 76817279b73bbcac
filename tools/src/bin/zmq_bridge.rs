//! `zmq_bridge`: takes zmq_pull's place and turns each ZMQ message into a gRPC call.

use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::{bind_metrics, exit_usage};
use zmq_grpc_proxy::proxy::admin;
use zmq_grpc_proxy_tools::args::ZmqBridgeArgs;
use zmq_grpc_proxy_tools::bridge::metrics::BridgeMetrics;
use zmq_grpc_proxy_tools::bridge::{Bridge, BridgeConfig, BridgeError};

fn main() -> anyhow::Result<()> {
    let args = ZmqBridgeArgs::parse();
    args.log.init();
    let stop = zmq_grpc_proxy::shutdown::flag()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let config = BridgeConfig {
        bind: args.bind,
        grpc: args.grpc,
        lanes: args.max_in_flight as usize,
        timeout: Duration::from_millis(args.timeout_ms),
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        max_message_bytes: usize::try_from(args.max_message_bytes).unwrap_or(usize::MAX),
        payload: args.payload,
    };
    let bridge = match runtime.block_on(async { Bridge::bind(config) }) {
        Ok(b) => b,
        Err(e @ (BridgeError::Bind { .. } | BridgeError::Url { .. })) => exit_usage(e),
        Err(e) => return Err(e.into()),
    };
    if let Some(addr) = &args.metrics_listen {
        let metrics = std::sync::Arc::new(BridgeMetrics::new(bridge.stats()));
        let _runtime = runtime.enter();
        admin::spawn(bind_metrics(addr), metrics)?;
    }
    let stats = bridge.run(runtime.handle(), &stop)?;
    println!("zmq_bridge summary: {stats}");
    Ok(())
}

//! `zmq_bridge`: takes zmq_pull's place and turns each ZMQ message into a gRPC call.

use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::{exit_usage, LogArgs};
use zmq_grpc_proxy::migrate::zmq_bridge::metrics::BridgeMetrics;
use zmq_grpc_proxy::migrate::zmq_bridge::{
    Bridge, BridgeConfig, BridgeError, Payload, DEFAULT_MAX_MESSAGE_BYTES,
};
use zmq_grpc_proxy::proxy::admin;

/// Binds a ZMQ PULL socket and delivers every message from zmq_push to grpc_server as a
/// unary Send call: in order per sender, retried until acknowledged, reading ZMQ only as fast
/// as the gRPC side takes messages. A message the server rejects for good (invalid, too
/// large, ...) is dead-lettered: logged with its sender and sequence, counted, not retried.
/// Prints a summary line on stdout when it stops.
#[derive(Debug, Parser)]
#[command(version = zmq_grpc_proxy::VERSION)]
struct Args {
    /// ZMQ endpoint to bind (tcp://HOST:PORT), where zmq_pull used to be.
    #[arg(long, env = "ZMQ_BRIDGE_BIND", default_value = "tcp://127.0.0.1:7001")]
    bind: String,
    /// gRPC server to deliver to (http://HOST:PORT).
    #[arg(long, env = "ZMQ_BRIDGE_GRPC", default_value = "http://127.0.0.1:7002")]
    grpc: String,
    /// Calls in flight at once (one per lane; a sender always uses the same lane).
    #[arg(long, env = "ZMQ_BRIDGE_MAX_IN_FLIGHT", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_in_flight: u64,
    /// Milliseconds allowed per call before it counts as failed and is retried.
    #[arg(long, env = "ZMQ_BRIDGE_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// On SIGINT/SIGTERM, milliseconds allowed to deliver messages already read.
    #[arg(long, env = "ZMQ_BRIDGE_DRAIN_TIMEOUT_MS", default_value_t = 10000)]
    drain_timeout_ms: u64,
    /// Longest ZMQ message accepted, in bytes (default: what grpc_server accepts). A peer
    /// that sends a longer one is disconnected by libzmq before the message is read.
    #[arg(long, env = "ZMQ_BRIDGE_MAX_MESSAGE_BYTES",
          default_value_t = DEFAULT_MAX_MESSAGE_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
    max_message_bytes: u64,
    /// message: each frame is a zgproxy.v1.Message, delivered with Send (others counted
    /// malformed); opaque: every message, all parts and the sender's address, forwarded
    /// byte for byte with Gossip, lanes keyed by peer address.
    #[arg(long, env = "ZMQ_BRIDGE_PAYLOAD", value_enum, default_value_t = Payload::Message)]
    payload: Payload,
    /// Serve /metrics (Prometheus: received, delivered, retried, dead-lettered, in flight,
    /// age of the oldest undelivered message), /healthz and /readyz (reading, not stopping)
    /// on this address (HOST:PORT).
    #[arg(long, env = "ZMQ_BRIDGE_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
        let listener = match runtime.block_on(tokio::net::TcpListener::bind(addr)) {
            Ok(l) => l,
            Err(e) => exit_usage(format_args!("cannot listen on {addr} for metrics: {e}")),
        };
        let metrics = std::sync::Arc::new(BridgeMetrics::new(bridge.stats()));
        // Serves until the process exits, so /readyz can report the drain.
        runtime.spawn(admin::serve(listener, metrics, std::future::pending()));
    }
    let stats = bridge.run(runtime.handle(), &stop)?;
    println!("zmq_bridge summary: {stats}");
    Ok(())
}

//! `grpc_server`: the gRPC server of the demo.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::{exit_usage, LogArgs};
use zmq_grpc_proxy::migrate::mux::{self, MuxConfig};
use zmq_grpc_proxy::peers::grpc_server::{self, IngestCollector, IngestService};
use zmq_grpc_proxy::proxy::admin;
use zmq_grpc_proxy::proxy::metrics::Metrics;
use zmq_grpc_proxy::proxy::BackendAddr;

/// Serves the Ingest service (unary Send, client-streaming SendStream) plus grpc.health.v1
/// and server reflection; logs every message and prints a summary line on stdout at exit.
#[derive(Debug, Parser)]
#[command(version = zmq_grpc_proxy::VERSION)]
struct Args {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "GRPC_SERVER_BIND", default_value = "127.0.0.1:7002")]
    bind: String,
    /// Also accept ZeroMQ on the same port and forward it to this ZMQ server (HOST:PORT):
    /// migration stage two, one port, gRPC answered here.
    #[arg(long, env = "GRPC_SERVER_ZMQ_FORWARD")]
    zmq_forward: Option<BackendAddr>,
    /// On SIGINT/SIGTERM: stop accepting, let calls in flight (and, with --zmq-forward,
    /// forwarded connections) finish for this many milliseconds, then cancel the rest and
    /// exit 0. A second signal exits at once (130).
    #[arg(long, env = "GRPC_SERVER_DRAIN_TIMEOUT_MS",
          default_value_t = grpc_server::DEFAULT_DRAIN_TIMEOUT_MS)]
    drain_timeout_ms: u64,
    /// Serve /metrics (Prometheus: messages received and foreign, and with --zmq-forward
    /// the connections per protocol, zgp_connections_*{route="zmq"|"grpc"}), /healthz and
    /// /readyz (listening, not draining) on this address (HOST:PORT).
    #[arg(long, env = "GRPC_SERVER_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let listener = match tokio::net::TcpListener::bind(&args.bind).await {
        Ok(l) => l,
        Err(e) => exit_usage(format_args!("cannot bind {}: {e}", args.bind)),
    };
    let service = IngestService::default();
    let metrics = Arc::new(Metrics::with_collector(Box::new(IngestCollector(
        service.clone(),
    ))));
    if let Some(addr) = &args.metrics_listen {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => exit_usage(format_args!("cannot listen on {addr} for metrics: {e}")),
        };
        // Serves until the process exits, so /readyz can report the drain.
        tokio::spawn(admin::serve(
            listener,
            Arc::clone(&metrics),
            std::future::pending(),
        ));
    }
    let signal = zmq_grpc_proxy::shutdown::signal_twice_exits();
    let drain_timeout = Duration::from_millis(args.drain_timeout_ms);
    match args.zmq_forward {
        None => {
            // The mux reports its own readiness; here it is listening from now on.
            metrics.set_ready(true);
            let shutdown = async {
                signal.await;
                metrics.set_ready(false);
            };
            grpc_server::serve(listener, service.clone(), drain_timeout, shutdown).await?
        }
        Some(zmq_backend) => {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, %zmq_backend, "forwarding ZeroMQ on the gRPC port");
            }
            let grpc = grpc_server::router(service.clone()).await;
            let mut config = MuxConfig::new(zmq_backend);
            config.limits.drain_timeout = drain_timeout;
            config.metrics = Arc::clone(&metrics);
            mux::serve(listener, grpc, config, signal).await?
        }
    }
    println!("grpc_server summary: {}", service.summary());
    Ok(())
}

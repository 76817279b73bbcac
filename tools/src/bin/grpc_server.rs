//! `grpc_server`: the gRPC server of the demo.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::{bind_metrics, exit_usage};
use zmq_grpc_proxy::migrate::mux::{self, MuxConfig};
use zmq_grpc_proxy::proxy::admin;
use zmq_grpc_proxy::proxy::metrics::Metrics;
use zmq_grpc_proxy_tools::args::GrpcServerArgs;
use zmq_grpc_proxy_tools::peers::grpc_server::{self, IngestCollector, IngestService};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = GrpcServerArgs::parse();
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
        admin::spawn(bind_metrics(addr), Arc::clone(&metrics))?;
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
            grpc_server::run(listener, service.clone(), drain_timeout, shutdown).await?
        }
        Some(zmq_backend) => {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, %zmq_backend, "forwarding ZeroMQ on the gRPC port");
            }
            let grpc = grpc_server::router(service.clone()).await;
            let mut config = MuxConfig::new(zmq_backend);
            config.limits.drain_timeout = drain_timeout;
            config.metrics = Arc::clone(&metrics);
            mux::run(listener, grpc, config, signal).await?
        }
    }
    println!("grpc_server summary: {}", service.summary());
    Ok(())
}

//! `grpc_client`: the gRPC client of the demo and a load generator.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::exit_usage;
use zmq_grpc_proxy_tools::args::GrpcClientArgs;
use zmq_grpc_proxy_tools::peers::grpc_client::{self, ClientConfig};
use zmq_grpc_proxy_tools::peers::message::default_sender;

#[tokio::main]
async fn main() -> ExitCode {
    let args = GrpcClientArgs::parse();
    args.log.init();
    let config = ClientConfig {
        connect: args.connect,
        count: args.count,
        concurrency: args.concurrency as usize,
        size: args.size,
        interval: Duration::from_millis(args.interval_ms),
        sender: args.sender.unwrap_or_else(|| default_sender("grpc_client")),
        mode: args.mode,
        timeout: Duration::from_millis(args.timeout_ms),
    };
    let report = match grpc_client::run(config, zmq_grpc_proxy::shutdown::signal()).await {
        Ok(r) => r,
        Err(e) => exit_usage(e),
    };
    println!("grpc_client summary: {report}");
    if report.failed > 0 {
        if let Some(error) = &report.first_error {
            eprintln!(
                "error: {} of {} calls failed; first failure: {error}",
                report.failed, report.sent
            );
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

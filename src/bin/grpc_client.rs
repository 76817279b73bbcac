//! `grpc_client`: the gRPC client of the demo and a load generator.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::{exit_usage, LogArgs};
use zmq_grpc_proxy::peers::grpc_client::{self, CallMode, ClientConfig};
use zmq_grpc_proxy::peers::message::default_sender;

/// Sends numbered protobuf messages to the Ingest service; prints sent / acknowledged /
/// failed and latency percentiles (unary) or the number of streams (stream) on stdout, and
/// exits 1 if any call failed.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server URL (http://HOST:PORT), normally the proxy.
    #[arg(
        long,
        env = "GRPC_CLIENT_CONNECT",
        default_value = "http://127.0.0.1:7000"
    )]
    connect: String,
    /// Messages to send in total, then exit (default: send until SIGINT/SIGTERM).
    #[arg(long, env = "GRPC_CLIENT_COUNT")]
    count: Option<u64>,
    /// Concurrent workers, sharing one HTTP/2 connection.
    #[arg(long, env = "GRPC_CLIENT_CONCURRENCY", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Payload bytes per message.
    #[arg(long, env = "GRPC_CLIENT_SIZE", default_value_t = 64)]
    size: usize,
    /// Milliseconds between messages, per worker (0: back to back).
    #[arg(long, env = "GRPC_CLIENT_INTERVAL_MS", default_value_t = 100)]
    interval_ms: u64,
    /// unary: one Send call per message (summary has latency percentiles); stream: one
    /// SendStream call per worker (summary counts streams; no per-message latency).
    #[arg(long, env = "GRPC_CLIENT_MODE", value_enum, default_value_t = CallMode::Unary)]
    mode: CallMode,
    /// Sender name carried in each message (default: grpc_client-<pid>).
    #[arg(long, env = "GRPC_CLIENT_SENDER")]
    sender: Option<String>,
    /// Milliseconds allowed per unary call and for connecting.
    #[arg(long, env = "GRPC_CLIENT_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
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

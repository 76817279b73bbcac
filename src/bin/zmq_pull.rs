//! `zmq_pull`: the ZeroMQ PULL server of the demo.

use clap::Parser;
use zmq_grpc_proxy::cli::{exit_usage, LogArgs};
use zmq_grpc_proxy::peers::zmq_pull::{PullError, Puller};

/// Binds a ZMQ PULL socket, logs every message (sequence, sender, size) and prints a summary
/// line on stdout when it stops.
#[derive(Debug, Parser)]
#[command(version = zmq_grpc_proxy::VERSION)]
struct Args {
    /// ZMQ endpoint to bind (tcp://HOST:PORT; tcp://HOST:* picks a free port).
    #[arg(long, env = "ZMQ_PULL_BIND", default_value = "tcp://127.0.0.1:7001")]
    bind: String,
    /// Exit 0 after this many messages (default: run until SIGINT/SIGTERM).
    #[arg(long, env = "ZMQ_PULL_COUNT")]
    count: Option<u64>,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let stop = zmq_grpc_proxy::shutdown::flag()?;
    let puller = match Puller::bind(&args.bind) {
        Ok(p) => p,
        Err(e @ PullError::Bind { .. }) => exit_usage(e),
        Err(e) => return Err(e.into()),
    };
    let summary = puller.run(args.count, &stop)?;
    println!("zmq_pull summary: {summary}");
    Ok(())
}

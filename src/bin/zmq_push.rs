//! `zmq_push`: the ZeroMQ PUSH client of the demo.

use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::{exit_usage, LogArgs};
use zmq_grpc_proxy::mesh::sender::{Mode, SenderConfig};
use zmq_grpc_proxy::peers::message::default_sender;
use zmq_grpc_proxy::peers::zmq_push::{self, PushConfig, PushError};

/// Connects a ZMQ PUSH socket and sends numbered protobuf messages; prints a summary line on
/// stdout when it stops.
#[derive(Debug, Parser)]
#[command(version = zmq_grpc_proxy::VERSION)]
struct Args {
    /// ZMQ endpoint to connect to (tcp://HOST:PORT), normally the proxy.
    #[arg(long, env = "ZMQ_PUSH_CONNECT", default_value = "tcp://127.0.0.1:7000")]
    connect: String,
    /// Send this many messages, then exit (default: send until SIGINT/SIGTERM).
    #[arg(long, env = "ZMQ_PUSH_COUNT")]
    count: Option<u64>,
    /// Payload bytes per message.
    #[arg(long, env = "ZMQ_PUSH_SIZE", default_value_t = 64)]
    size: usize,
    /// Milliseconds between messages (0: as fast as the socket takes them).
    #[arg(long, env = "ZMQ_PUSH_INTERVAL_MS", default_value_t = 100)]
    interval_ms: u64,
    /// Sender name carried in each message (default: zmq_push-<pid>).
    #[arg(long, env = "ZMQ_PUSH_SENDER")]
    sender: Option<String>,
    /// Milliseconds queued messages may take to be delivered at exit.
    #[arg(long, env = "ZMQ_PUSH_LINGER_MS", default_value_t = 10000)]
    linger_ms: u64,
    /// Send over gRPC (Ingest.Gossip) when the peer takes it, over ZeroMQ otherwise, checked
    /// per connection and re-checked; a fresh ZeroMQ socket per message, Habitat-style.
    #[arg(long, env = "ZMQ_PUSH_PREFER_GRPC")]
    prefer_grpc: bool,
    /// With --prefer-grpc: seconds a "ZeroMQ only" verdict is trusted before the peer is
    /// checked again.
    #[arg(long, env = "ZMQ_PUSH_RECHECK_S", default_value_t = 30)]
    recheck_s: u64,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    let stop = zmq_grpc_proxy::shutdown::flag()?;
    let config = PushConfig {
        connect: args.connect,
        count: args.count,
        size: args.size,
        interval: Duration::from_millis(args.interval_ms),
        sender: args.sender.unwrap_or_else(|| default_sender("zmq_push")),
        linger: Duration::from_millis(args.linger_ms),
    };
    let result = if args.prefer_grpc {
        let sender = SenderConfig {
            ttl: Duration::from_secs(args.recheck_s),
            linger: config.linger,
            ..SenderConfig::new(Mode::PreferGrpc)
        };
        zmq_grpc_proxy::mesh::push::run(&config, sender, &stop)
    } else {
        zmq_push::run(&config, &stop)
    };
    match result {
        Ok(summary) => {
            println!("zmq_push summary: {summary}");
            Ok(())
        }
        Err(e @ (PushError::Connect { .. } | PushError::Address { .. })) => exit_usage(e),
        Err(e) => Err(e.into()),
    }
}

//! `zmq_push`: the ZeroMQ PUSH client of the demo.

use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::exit_usage;
use zmq_grpc_proxy_tools::args::ZmqPushArgs;
use zmq_grpc_proxy_tools::mesh::sender::{Mode, SenderConfig};
use zmq_grpc_proxy_tools::peers::message::default_sender;
use zmq_grpc_proxy_tools::peers::zmq_push::{self, PushConfig, PushError};

fn main() -> anyhow::Result<()> {
    let args = ZmqPushArgs::parse();
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
        zmq_grpc_proxy_tools::mesh::push::run(&config, sender, &stop)
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

//! `zmq_pull`: the ZeroMQ PULL server of the demo.

use clap::Parser;
use zmq_grpc_proxy::cli::exit_usage;
use zmq_grpc_proxy_tools::args::ZmqPullArgs;
use zmq_grpc_proxy_tools::peers::zmq_pull::{PullError, Puller};

fn main() -> anyhow::Result<()> {
    let args = ZmqPullArgs::parse();
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

//! `gossip_mesh`: a Habitat-style gossip mesh on 127.0.0.1, rolled from ZeroMQ to gRPC.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::exit_usage;
use zmq_grpc_proxy_tools::args::GossipMeshArgs;
use zmq_grpc_proxy_tools::mesh::rollout::{self, MeshConfig};

fn main() -> anyhow::Result<ExitCode> {
    let args = GossipMeshArgs::parse();
    args.log.init();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let config = MeshConfig {
        members: args.members,
        fanout: args.fanout,
        round: Duration::from_millis(args.round_ms),
        duration: Duration::from_secs(args.seconds),
        rollout: args.rollout,
        stage: args.stage,
        seed,
        rumors_per_round: args.rumors_per_round,
    };
    if let Err(e) = config.validate() {
        exit_usage(e);
    }
    let _ = zmq_grpc_proxy::cli::raise_fd_limit();
    let stop = zmq_grpc_proxy::shutdown::flag()?;
    let report = rollout::run(&config, &stop, |stage| {
        println!("gossip_mesh stage: {stage}");
    })?;
    println!("{}", report.table());
    println!("gossip_mesh summary: {report}");
    Ok(match report.ok() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

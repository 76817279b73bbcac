//! `gossip_mesh`: a Habitat-style gossip mesh on 127.0.0.1, rolled from ZeroMQ to gRPC.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::{exit_usage, LogArgs};
use zmq_grpc_proxy::mesh::member::Stage;
use zmq_grpc_proxy::mesh::rollout::{self, MeshConfig};

/// Runs N gossip members on 127.0.0.1, each receiving on its advertised port and pushing
/// rumors Butterfly's way (a fresh connection per peer per round, fanout in chunks, 500 ms
/// send timeout, 1000 ms linger, rumors re-sent until cool). With --rollout, members are
/// restarted one at a time through the stages zmq -> both -> prefer-grpc -> grpc while rumors
/// keep flowing. Prints one line per stage and a table; exits 1 if a rumor did not reach
/// every member by the end of its stage.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Members in the mesh.
    #[arg(long, env = "GOSSIP_MESH_MEMBERS", default_value_t = 12)]
    members: usize,
    /// Peers per gossip round (Butterfly: 5).
    #[arg(long, env = "GOSSIP_MESH_FANOUT", default_value_t = 5)]
    fanout: usize,
    /// Milliseconds per gossip round (Butterfly: 1000).
    #[arg(long, env = "GOSSIP_MESH_ROUND_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    round_ms: u64,
    /// Seconds the whole run lasts, shared equally by the stages.
    #[arg(long, env = "GOSSIP_MESH_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Upgrade the members one at a time (restarting each) through every stage.
    #[arg(long, env = "GOSSIP_MESH_ROLLOUT")]
    rollout: bool,
    /// Without --rollout: the stage every member runs throughout.
    #[arg(long, env = "GOSSIP_MESH_STAGE", value_enum, default_value_t = Stage::Zmq)]
    stage: Stage,
    /// Seed for every random choice (peer shuffles, rollout order, rumor origins); default:
    /// from the clock, printed in the summary so a run can be replayed.
    #[arg(long, env = "GOSSIP_MESH_SEED")]
    seed: Option<u64>,
    /// New rumors per round, each from a member picked at random.
    #[arg(long, env = "GOSSIP_MESH_RUMORS_PER_ROUND", default_value_t = 1)]
    rumors_per_round: u32,
    #[command(flatten)]
    log: LogArgs,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
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

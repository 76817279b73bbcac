//! Every binary's command line, in one place: the clap `Args` of the demo peers, the bridge
//! and the mesh (the proxy's own, [`zmq_grpc_proxy::config::ProxyArgs`], lives with the config file
//! it merges with), and [`commands`], which returns all seven as `clap::Command`s.
//!
//! The binaries in `src/bin` parse these and call the library; the man pages and shell
//! completions of the Debian package are generated from [`commands`]
//! (`examples/gen_assets.rs`), so what `--help` says and what `man` says cannot drift apart.
//! The flags, their environment variables, help texts and defaults are a contract with
//! scripts and operators: add to them, never rename or remove.
//!
//! This module sits at the edge: it builds on [`zmq_grpc_proxy::config`], [`crate::peers`],
//! [`zmq_grpc_proxy::migrate`] and [`crate::mesh`] for their value types and defaults, and nothing in
//! the library builds on it.

// Help texts name placeholders like `<pid>` as `--help` prints them; they are not HTML.
#![allow(rustdoc::invalid_html_tags)]

use clap::{CommandFactory, Parser};

use crate::bridge::{Payload, DEFAULT_MAX_MESSAGE_BYTES};
use crate::mesh::stage::Stage;
use crate::peers::grpc_client::CallMode;
use crate::peers::grpc_server;
use zmq_grpc_proxy::cli::LogArgs;
use zmq_grpc_proxy::proxy::BackendAddr;

/// Connects a ZMQ PUSH socket and sends numbered protobuf messages; prints a summary line on
/// stdout when it stops.
#[derive(Debug, Parser)]
#[command(version = zmq_grpc_proxy::VERSION)]
pub struct ZmqPushArgs {
    /// ZMQ endpoint to connect to (tcp://HOST:PORT), normally the proxy.
    #[arg(long, env = "ZMQ_PUSH_CONNECT", default_value = "tcp://127.0.0.1:7000")]
    pub connect: String,
    /// Send this many messages, then exit (default: send until SIGINT/SIGTERM).
    #[arg(long, env = "ZMQ_PUSH_COUNT")]
    pub count: Option<u64>,
    /// Payload bytes per message.
    #[arg(long, env = "ZMQ_PUSH_SIZE", default_value_t = 64)]
    pub size: usize,
    /// Milliseconds between messages (0: as fast as the socket takes them).
    #[arg(long, env = "ZMQ_PUSH_INTERVAL_MS", default_value_t = 100)]
    pub interval_ms: u64,
    /// Sender name carried in each message (default: zmq_push-<pid>).
    #[arg(long, env = "ZMQ_PUSH_SENDER")]
    pub sender: Option<String>,
    /// Milliseconds queued messages may take to be delivered at exit.
    #[arg(long, env = "ZMQ_PUSH_LINGER_MS", default_value_t = 10000)]
    pub linger_ms: u64,
    /// Send over gRPC (Ingest.Gossip) when the peer takes it, over ZeroMQ otherwise, checked
    /// per connection and re-checked; a fresh ZeroMQ socket per message, Habitat-style.
    #[arg(long, env = "ZMQ_PUSH_PREFER_GRPC")]
    pub prefer_grpc: bool,
    /// With --prefer-grpc: seconds a "ZeroMQ only" verdict is trusted before the peer is
    /// checked again.
    #[arg(long, env = "ZMQ_PUSH_RECHECK_S", default_value_t = 30)]
    pub recheck_s: u64,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Binds a ZMQ PULL socket, logs every message (sequence, sender, size) and prints a summary
/// line on stdout when it stops.
#[derive(Debug, Parser)]
#[command(version = zmq_grpc_proxy::VERSION)]
pub struct ZmqPullArgs {
    /// ZMQ endpoint to bind (tcp://HOST:PORT; tcp://HOST:* picks a free port).
    #[arg(long, env = "ZMQ_PULL_BIND", default_value = "tcp://127.0.0.1:7001")]
    pub bind: String,
    /// Exit 0 after this many messages (default: run until SIGINT/SIGTERM).
    #[arg(long, env = "ZMQ_PULL_COUNT")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Sends numbered protobuf messages to the Ingest service; prints sent / acknowledged /
/// failed and latency percentiles (unary) or the number of streams (stream) on stdout, and
/// exits 1 if any call failed.
#[derive(Debug, Parser)]
#[command(version = zmq_grpc_proxy::VERSION)]
pub struct GrpcClientArgs {
    /// Server URL (http://HOST:PORT), normally the proxy.
    #[arg(
        long,
        env = "GRPC_CLIENT_CONNECT",
        default_value = "http://127.0.0.1:7000"
    )]
    pub connect: String,
    /// Messages to send in total, then exit (default: send until SIGINT/SIGTERM).
    #[arg(long, env = "GRPC_CLIENT_COUNT")]
    pub count: Option<u64>,
    /// Concurrent workers, sharing one HTTP/2 connection.
    #[arg(long, env = "GRPC_CLIENT_CONCURRENCY", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// Payload bytes per message.
    #[arg(long, env = "GRPC_CLIENT_SIZE", default_value_t = 64)]
    pub size: usize,
    /// Milliseconds between messages, per worker (0: back to back).
    #[arg(long, env = "GRPC_CLIENT_INTERVAL_MS", default_value_t = 100)]
    pub interval_ms: u64,
    /// unary: one Send call per message (summary has latency percentiles); stream: one
    /// SendStream call per worker (summary counts streams; no per-message latency).
    #[arg(long, env = "GRPC_CLIENT_MODE", value_enum, default_value_t = CallMode::Unary)]
    pub mode: CallMode,
    /// Sender name carried in each message (default: grpc_client-<pid>).
    #[arg(long, env = "GRPC_CLIENT_SENDER")]
    pub sender: Option<String>,
    /// Milliseconds allowed per unary call and for connecting.
    #[arg(long, env = "GRPC_CLIENT_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Serves the Ingest service (unary Send, client-streaming SendStream) plus grpc.health.v1
/// and server reflection; logs every message and prints a summary line on stdout at exit.
#[derive(Debug, Parser)]
#[command(version = zmq_grpc_proxy::VERSION)]
pub struct GrpcServerArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "GRPC_SERVER_BIND", default_value = "127.0.0.1:7002")]
    pub bind: String,
    /// Also accept ZeroMQ on the same port and forward it to this ZMQ server (HOST:PORT):
    /// migration stage two, one port, gRPC answered here.
    #[arg(long, env = "GRPC_SERVER_ZMQ_FORWARD")]
    pub zmq_forward: Option<BackendAddr>,
    /// On SIGINT/SIGTERM: stop accepting, let calls in flight (and, with --zmq-forward,
    /// forwarded connections) finish for this many milliseconds, then cancel the rest and
    /// exit 0. A second signal exits at once (130).
    #[arg(long, env = "GRPC_SERVER_DRAIN_TIMEOUT_MS",
          default_value_t = grpc_server::DEFAULT_DRAIN_TIMEOUT_MS)]
    pub drain_timeout_ms: u64,
    /// Serve /metrics (Prometheus: messages received and foreign, and with --zmq-forward
    /// the connections per protocol, zgp_connections_*{route="zmq"|"grpc"}), /healthz and
    /// /readyz (listening, not draining) on this address (HOST:PORT).
    #[arg(long, env = "GRPC_SERVER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Binds a ZMQ PULL socket and delivers every message from zmq_push to grpc_server as a
/// unary Send call: in order per sender, retried until acknowledged, reading ZMQ only as fast
/// as the gRPC side takes messages. A message the server rejects for good (invalid, too
/// large, ...) is dead-lettered: logged with its sender and sequence, counted, not retried.
/// Prints a summary line on stdout when it stops.
#[derive(Debug, Parser)]
#[command(version = zmq_grpc_proxy::VERSION)]
pub struct ZmqBridgeArgs {
    /// ZMQ endpoint to bind (tcp://HOST:PORT), where zmq_pull used to be.
    #[arg(long, env = "ZMQ_BRIDGE_BIND", default_value = "tcp://127.0.0.1:7001")]
    pub bind: String,
    /// gRPC server to deliver to (http://HOST:PORT).
    #[arg(long, env = "ZMQ_BRIDGE_GRPC", default_value = "http://127.0.0.1:7002")]
    pub grpc: String,
    /// Calls in flight at once (one per lane; a sender always uses the same lane).
    #[arg(long, env = "ZMQ_BRIDGE_MAX_IN_FLIGHT", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_in_flight: u64,
    /// Milliseconds allowed per call before it counts as failed and is retried.
    #[arg(long, env = "ZMQ_BRIDGE_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
    /// On SIGINT/SIGTERM, milliseconds allowed to deliver messages already read.
    #[arg(long, env = "ZMQ_BRIDGE_DRAIN_TIMEOUT_MS", default_value_t = 10000)]
    pub drain_timeout_ms: u64,
    /// Longest ZMQ message accepted, in bytes (default: what grpc_server accepts). A peer
    /// that sends a longer one is disconnected by libzmq before the message is read.
    #[arg(long, env = "ZMQ_BRIDGE_MAX_MESSAGE_BYTES",
          default_value_t = DEFAULT_MAX_MESSAGE_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
    pub max_message_bytes: u64,
    /// message: each frame is a zgproxy.v1.Message, delivered with Send (others counted
    /// malformed); opaque: every message, all parts and the sender's address, forwarded
    /// byte for byte with Gossip, lanes keyed by peer address.
    #[arg(long, env = "ZMQ_BRIDGE_PAYLOAD", value_enum, default_value_t = Payload::Message)]
    pub payload: Payload,
    /// Serve /metrics (Prometheus: received, delivered, retried, dead-lettered, in flight,
    /// age of the oldest undelivered message), /healthz and /readyz (reading, not stopping)
    /// on this address (HOST:PORT).
    #[arg(long, env = "ZMQ_BRIDGE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Runs N gossip members on 127.0.0.1, each receiving on its advertised port and pushing
/// rumors Butterfly's way (a fresh connection per peer per round, fanout in chunks, 500 ms
/// send timeout, 1000 ms linger, rumors re-sent until cool). With --rollout, members are
/// restarted one at a time through the stages zmq -> both -> prefer-grpc -> grpc while rumors
/// keep flowing. Prints one line per stage and a table; exits 1 if a rumor did not reach
/// every member by the end of its stage.
#[derive(Debug, Parser)]
#[command(version = zmq_grpc_proxy::VERSION)]
pub struct GossipMeshArgs {
    /// Members in the mesh.
    #[arg(long, env = "GOSSIP_MESH_MEMBERS", default_value_t = 12)]
    pub members: usize,
    /// Peers per gossip round (Butterfly: 5).
    #[arg(long, env = "GOSSIP_MESH_FANOUT", default_value_t = 5)]
    pub fanout: usize,
    /// Milliseconds per gossip round (Butterfly: 1000).
    #[arg(long, env = "GOSSIP_MESH_ROUND_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub round_ms: u64,
    /// Seconds the whole run lasts, shared equally by the stages.
    #[arg(long, env = "GOSSIP_MESH_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// Upgrade the members one at a time (restarting each) through every stage.
    #[arg(long, env = "GOSSIP_MESH_ROLLOUT")]
    pub rollout: bool,
    /// Without --rollout: the stage every member runs throughout.
    #[arg(long, env = "GOSSIP_MESH_STAGE", value_enum, default_value_t = Stage::Zmq)]
    pub stage: Stage,
    /// Seed for every random choice (peer shuffles, rollout order, rumor origins); default:
    /// from the clock, printed in the summary so a run can be replayed.
    #[arg(long, env = "GOSSIP_MESH_SEED")]
    pub seed: Option<u64>,
    /// New rumors per round, each from a member picked at random.
    #[arg(long, env = "GOSSIP_MESH_RUMORS_PER_ROUND", default_value_t = 1)]
    pub rumors_per_round: u32,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Every binary's command line, in the order of Cargo.toml: each is exactly the parser its
/// binary runs, but named after the binary (`proxy`, `zmq_push`, …). The binaries' own
/// parsers keep the package's name, `zmq-grpc-proxy`, which their `--version` prints.
pub fn commands() -> Vec<clap::Command> {
    [
        ("proxy", zmq_grpc_proxy::config::command()),
        ("zmq_push", ZmqPushArgs::command()),
        ("zmq_pull", ZmqPullArgs::command()),
        ("grpc_client", GrpcClientArgs::command()),
        ("grpc_server", GrpcServerArgs::command()),
        ("zmq_bridge", ZmqBridgeArgs::command()),
        ("gossip_mesh", GossipMeshArgs::command()),
    ]
    .into_iter()
    .map(|(bin, command)| command.name(bin).bin_name(bin))
    .collect()
}

/// The name the Debian package installs a binary as. `proxy` is too generic a command for
/// `/usr/bin` on a shared system, so the proxy is `/usr/bin/zmq-grpc-proxy` (its man page
/// `zmq-grpc-proxy(1)`, the name the systemd unit runs); the demo and load tools keep their
/// names, in `/usr/lib/zmq-grpc-proxy/bin`. Cargo.toml's `[package.metadata.deb]` installs
/// them so, and `tests/assets.rs` checks that it does.
pub fn installed_name(bin: &str) -> &str {
    match bin {
        "proxy" => "zmq-grpc-proxy",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_well_formed() {
        for command in commands() {
            command.debug_assert();
        }
    }
}

//! `zmq_push --prefer-grpc`: the demo sender's numbered messages sent through the
//! [`DualSender`], so one sender can be pointed at a ZeroMQ-only peer, a mux peer or a
//! gRPC-only peer, or at a peer that changes under it.
//!
//! A message the sender proves was not delivered (timeout, refused, peer restarting) is
//! tried again, on whatever protocol the peer then takes, until it goes or the run is
//! stopped; one whose outcome is unknown is counted and never sent twice. So with no
//! `unknown`, every sequence number reaches the peer at most once, and — ZeroMQ's queue
//! dying with a stopped peer aside — exactly once.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tracing::{info, warn};

use super::delivery::{Delivery, Via};
use super::sender::{DualSender, Mode, SenderConfig};
use super::stats::SenderStats;
use crate::peers::message::build;
use crate::peers::zmq_push::{wait_until, PushConfig, PushError, PushSummary, Schedule};

/// Pause before trying again a message that provably did not go.
const RETRY: Duration = Duration::from_millis(100);

/// `tcp://HOST:PORT` (or `HOST:PORT`) as a socket address.
pub fn peer_address(endpoint: &str) -> Result<SocketAddr, PushError> {
    let bad = |reason: String| PushError::Address {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let hostport = endpoint.strip_prefix("tcp://").unwrap_or(endpoint);
    hostport
        .to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("resolves to no address".into()))
}

/// Sends like [`crate::peers::zmq_push::run`], over gRPC where the peer takes it.
pub fn run(
    config: &PushConfig,
    sender_config: SenderConfig,
    stop: &AtomicBool,
) -> Result<PushSummary, PushError> {
    let peer = peer_address(&config.connect)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let sender = DualSender::new(
        SenderConfig {
            mode: Mode::PreferGrpc,
            ..sender_config
        },
        Arc::new(SenderStats::default()),
    );
    info!(%peer, sender = %config.sender, "sending over gRPC where the peer takes it");
    let started = Instant::now();
    let mut summary = PushSummary::default();
    let mut schedule = Schedule::new(config, stop);
    'messages: while schedule.wait_turn(summary.sent) {
        let frame = build(&config.sender, summary.sent, config.size).encode_to_vec();
        let outcome = loop {
            let outcomes = runtime.block_on(sender.send(peer, vec![vec![frame.clone()]]));
            match outcomes.first() {
                Some(Delivery::NotSent(why)) => {
                    summary.retried += 1;
                    info!(sequence = summary.sent, reason = ?why, "not sent; trying again");
                    if !wait_until(Instant::now() + RETRY, stop) {
                        break 'messages;
                    }
                }
                Some(done) => break *done,
                None => unreachable!("one outcome per message"),
            }
        };
        match outcome {
            Delivery::Sent(Via::Grpc) => summary.via_grpc += 1,
            Delivery::Sent(Via::Zmq) => summary.via_zmq += 1,
            _ => {
                warn!(sequence = summary.sent, "outcome unknown; not sent again");
                summary.unknown += 1;
            }
        }
        info!(
            sequence = summary.sent,
            size = frame.len(),
            ?outcome,
            "sent"
        );
        summary.sent += 1;
        summary.bytes += frame.len() as u64;
    }
    summary.elapsed = started.elapsed();
    info!(
        sent = summary.sent,
        "done sending; delivering queued ZeroMQ messages"
    );
    drop(runtime);
    drop(sender); // ZeroMQ: waits up to the linger time for queued messages
    Ok(summary)
}

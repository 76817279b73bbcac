//! The ZMQ PUSH client: connects and sends numbered [`Message`](crate::pb::Message)s at an interval.
//!
//! Sends use a short timeout so a full queue (no peer yet, or a slow one) never blocks the
//! shutdown check. On exit, queued messages get up to `linger` to reach the peer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use tracing::info;

use crate::peers::message::build;

const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct PushConfig {
    /// ZMQ endpoint to connect to, e.g. `tcp://127.0.0.1:7000`.
    pub connect: String,
    /// Send this many messages, then exit; `None` sends until stopped.
    pub count: Option<u64>,
    /// Payload bytes per message.
    pub size: usize,
    /// Pause between messages.
    pub interval: Duration,
    /// Sender name carried in every message.
    pub sender: String,
    /// How long queued messages may take to be delivered at exit.
    pub linger: Duration,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushSummary {
    /// Messages that left the sender: `grpc + zmq + unknown`.
    pub sent: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Acknowledged over gRPC (`--prefer-grpc` only).
    pub via_grpc: u64,
    /// Queued over ZeroMQ.
    pub via_zmq: u64,
    /// gRPC calls that failed after the request was written: maybe delivered, not retried.
    pub unknown: u64,
    /// Attempts that provably delivered nothing and were tried again.
    pub retried: u64,
}

impl std::fmt::Display for PushSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "sent={} bytes={} elapsed_s={:.3} rate_per_s={:.1} grpc={} zmq={} unknown={} \
             retried={}",
            self.sent,
            self.bytes,
            secs,
            if secs > 0.0 {
                self.sent as f64 / secs
            } else {
                0.0
            },
            self.via_grpc,
            self.via_zmq,
            self.unknown,
            self.retried,
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: zmq::Error,
    },
    #[error("cannot send to {endpoint}: {reason}")]
    Address { endpoint: String, reason: String },
    #[error("ZMQ socket error: {0}")]
    Socket(#[from] zmq::Error),
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Sleeps until `at` in short steps; false if `stop` was set first.
pub fn wait_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        std::thread::sleep((at - now).min(POLL));
    }
}

/// When each message goes: one every `interval` from the first, until `count` have been
/// sent or `stop` is set. Both senders (ZeroMQ here, [`crate::mesh::push`] over gRPC where
/// the peer takes it) keep this schedule.
pub struct Schedule<'a> {
    next: Instant,
    interval: Duration,
    count: Option<u64>,
    stop: &'a AtomicBool,
}

impl<'a> Schedule<'a> {
    pub fn new(config: &PushConfig, stop: &'a AtomicBool) -> Self {
        Schedule {
            next: Instant::now(),
            interval: config.interval,
            count: config.count,
            stop,
        }
    }

    /// Waits for the turn of message number `sent`, in short steps so a signal is noticed
    /// within POLL; false once all are sent or `stop` is set.
    pub fn wait_turn(&mut self, sent: u64) -> bool {
        if self.count.is_some_and(|c| sent >= c) || !wait_until(self.next, self.stop) {
            return false;
        }
        self.next += self.interval;
        true
    }
}

/// Sends until `config.count` messages are queued or `stop` is set, then lingers.
pub fn run(config: &PushConfig, stop: &AtomicBool) -> Result<PushSummary, PushError> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::PUSH)?;
    socket.set_sndtimeo(POLL.as_millis() as i32)?;
    socket.set_ipv6(config.connect.contains('['))?;
    socket.set_linger(config.linger.as_millis().min(i32::MAX as u128) as i32)?;
    socket
        .connect(&config.connect)
        .map_err(|source| PushError::Connect {
            endpoint: config.connect.clone(),
            source,
        })?;
    info!(endpoint = %config.connect, sender = %config.sender, "connected");

    let started = Instant::now();
    let mut summary = PushSummary::default();
    let mut schedule = Schedule::new(config, stop);
    'messages: while schedule.wait_turn(summary.sent) {
        let frame = build(&config.sender, summary.sent, config.size).encode_to_vec();
        loop {
            match socket.send(frame.as_slice(), 0) {
                Ok(()) => break,
                // Queue full or no peer yet: keep the message, re-check for shutdown.
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {
                    if stop.load(Ordering::Relaxed) {
                        break 'messages;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        info!(sequence = summary.sent, size = frame.len(), "sent");
        summary.sent += 1;
        summary.via_zmq += 1;
        summary.bytes += frame.len() as u64;
    }
    summary.elapsed = started.elapsed();
    info!(
        sent = summary.sent,
        linger_ms = config.linger.as_millis() as u64,
        "done sending; delivering queued messages"
    );
    drop(socket);
    drop(context); // blocks until queued messages are delivered or linger expires
    Ok(summary)
}

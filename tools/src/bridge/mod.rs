//! Stage three of a migration: the old ZMQ server is retired and a bridge takes its place.
//! It binds a ZMQ PULL socket where zmq_pull used to be and turns every message from
//! zmq_push (already the protobuf [`Message`] the gRPC service takes) into a unary `Send`
//! to grpc_server.
//!
//! Delivery is at-least-once and in order per sender, never lossy by choice:
//!
//! * Messages are spread over `lanes` by sender; a lane makes one call at a time, so one
//!   sender's messages reach the server in the order they were pushed.
//! * A call that failed for a reason that can pass is retried, with back-off, until it
//!   succeeds. A lane stuck retrying holds its queue (one message), the reader stops reading
//!   ZMQ when its lane is full, and ZMQ's high-water marks then make the senders wait:
//!   backpressure instead of loss.
//! * A message the server rejects for good is dead-lettered: logged with its sender and
//!   sequence, counted, and not retried, so the messages behind it on its lane move on.
//!   `deliver::verdict` decides which failures those are, from the status code alone: codes that
//!   say *this message* is unacceptable (InvalidArgument, OutOfRange, FailedPrecondition,
//!   NotFound, AlreadyExists, and ResourceExhausted when it is about the message's size).
//!   Everything that says something about the server or the path to it (Unavailable,
//!   DeadlineExceeded, Cancelled, Aborted, Internal, Unknown, DataLoss, Unimplemented,
//!   Unauthenticated, PermissionDenied, a quota's ResourceExhausted) is retried: it would
//!   fail every message alike, and dead-lettering would then throw the whole stream away
//!   during an outage, a wrong deployment or a credentials problem, where holding it with
//!   backpressure loses nothing.
//! * Frames longer than `max_message_bytes` (by default the gRPC server's own limit) never
//!   reach a lane: libzmq drops the connection of the peer that sends one
//!   (`ZMQ_MAXMSGSIZE`), before the bridge reads or buffers it.
//! * A call the server carried out but whose answer was lost (the server stopped in
//!   between) is sent again: at most one duplicate per lane per failure.
//!
//! With [`Payload::Opaque`] the bridge does not interpret messages at all: every ZMQ message
//! (all its parts, and the peer address ZMQ reports for it, `ZMQ_MSG` property
//! "Peer-Address") is forwarded byte for byte as one `Gossip` call, lanes keyed by that peer
//! address, so one peer's order is kept — what a mesh of opaque, possibly encrypted frames
//! (Habitat's `Wire` envelopes) needs. The same retry and dead-letter rules apply.
//!
//! On SIGINT/SIGTERM the bridge stops reading, delivers what it has already read (for up
//! to the drain timeout) and exits. Messages still queued inside ZMQ at that point are
//! dropped with the socket, as with any PULL server that stops.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tracing::{debug, info, warn};

use crate::pb::ingest_client::IngestClient;
use crate::pb::{Frames, Message};

const POLL: Duration = Duration::from_millis(100);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest sender name or server error message written to the log (both come from the
/// network).
const MAX_LOGGED_CHARS: usize = 256;

/// The default for [`BridgeConfig::max_message_bytes`]: what the gRPC server accepts.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = crate::peers::grpc_server::MAX_MESSAGE_BYTES;

/// What the bridge takes a ZMQ message to be.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    /// One frame holding a `zgproxy.v1.Message`, delivered with `Send`; other frames are
    /// counted `malformed` and skipped.
    #[default]
    Message,
    /// Anything: every message, all its parts and the sender's address, delivered as it
    /// is with `Gossip`.
    Opaque,
}

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// ZMQ endpoint to bind (where zmq_push connects).
    pub bind: String,
    /// gRPC server URL.
    pub grpc: String,
    /// Calls in flight at once; also how many senders are served in parallel.
    pub lanes: usize,
    /// Deadline per call.
    pub timeout: Duration,
    /// At shutdown, how long already-read messages may take to be delivered.
    pub drain_timeout: Duration,
    /// Longest ZMQ frame accepted; libzmq disconnects a peer that sends a longer one.
    pub max_message_bytes: usize,
    pub payload: Payload,
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("cannot bind {endpoint}: {source}")]
    Bind {
        endpoint: String,
        source: zmq::Error,
    },
    #[error("invalid gRPC URL `{url}`: {source}")]
    Url {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("ZMQ socket error: {0}")]
    Zmq(#[from] zmq::Error),
    #[error("runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Counts over a bridge's life.
#[derive(Debug, Default)]
pub struct BridgeStats {
    pub received: AtomicU64,
    pub delivered: AtomicU64,
    /// Calls that failed and were retried.
    pub failed_attempts: AtomicU64,
    /// Frames that were not a `Message` (logged and skipped: nothing to deliver).
    pub malformed: AtomicU64,
    /// Messages the server rejected for good (logged, not retried).
    pub dead_lettered: AtomicU64,
    /// Bound and reading; false once a stop was asked for (`/readyz`).
    pub ready: AtomicBool,
    /// Per lane, when the message it is delivering was read from ZMQ: the oldest of these
    /// is the oldest message not yet delivered (those queued behind are younger).
    heads: std::sync::Mutex<std::collections::HashMap<usize, std::time::Instant>>,
}

impl BridgeStats {
    fn heads(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<usize, std::time::Instant>> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long the oldest message read and not yet delivered (or dead-lettered) has
    /// waited; `None` when every lane is idle.
    pub fn oldest_undelivered(&self) -> Option<Duration> {
        self.heads().values().min().map(|at| at.elapsed())
    }

    /// Messages read and not yet delivered or dead-lettered.
    pub fn in_flight(&self) -> u64 {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        get(&self.received).saturating_sub(get(&self.delivered) + get(&self.dead_lettered))
    }
}

impl std::fmt::Display for BridgeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (received, delivered) = (get(&self.received), get(&self.delivered));
        let dead_lettered = get(&self.dead_lettered);
        // Every message received ends up in exactly one of delivered, dead_lettered and
        // undelivered (still in a lane when the drain ended). New keys go at the end.
        write!(
            f,
            "received={received} delivered={delivered} undelivered={} failed_attempts={} \
             malformed={} dead_lettered={dead_lettered}",
            received.saturating_sub(delivered + dead_lettered),
            get(&self.failed_attempts),
            get(&self.malformed)
        )
    }
}

/// A bound bridge, ready to run.
pub struct Bridge {
    stats: Arc<BridgeStats>,
    socket: zmq::Socket,
    _context: zmq::Context,
    endpoint: String,
    channel: Channel,
    config: BridgeConfig,
}

impl Bridge {
    /// Binds the PULL socket and prepares the (lazily connecting) gRPC channel. Must be
    /// called inside a tokio runtime.
    pub fn bind(config: BridgeConfig) -> Result<Bridge, BridgeError> {
        let channel = Endpoint::from_shared(config.grpc.clone())
            .map_err(|source| BridgeError::Url {
                url: config.grpc.clone(),
                source,
            })?
            .connect_timeout(config.timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let context = zmq::Context::new();
        let socket = context.socket(zmq::PULL)?;
        socket.set_rcvtimeo(POLL.as_millis() as i32)?;
        socket.set_maxmsgsize(i64::try_from(config.max_message_bytes).unwrap_or(i64::MAX))?;
        socket.set_ipv6(config.bind.contains('['))?;
        socket
            .bind(&config.bind)
            .map_err(|source| BridgeError::Bind {
                endpoint: config.bind.clone(),
                source,
            })?;
        let endpoint = socket
            .get_last_endpoint()?
            .unwrap_or_else(|_| config.bind.clone());
        Ok(Bridge {
            stats: Arc::default(),
            socket,
            _context: context,
            endpoint,
            channel,
            config,
        })
    }

    /// The live counts, for an admin endpoint ([`metrics::BridgeMetrics`]).
    pub fn stats(&self) -> Arc<BridgeStats> {
        Arc::clone(&self.stats)
    }

    /// Reads ZMQ on this (blocking) thread and delivers on `runtime` until `stop` is set,
    /// then drains. Returns the final counts.
    pub fn run(
        self,
        runtime: &tokio::runtime::Handle,
        stop: &AtomicBool,
    ) -> Result<Arc<BridgeStats>, BridgeError> {
        let stats = Arc::clone(&self.stats);
        let lanes = self.config.lanes.max(1);
        let mut senders = Vec::with_capacity(lanes);
        let mut workers = Vec::with_capacity(lanes);
        for lane in 0..lanes {
            // Capacity 1: a lane holds the message in flight plus one; the reader blocks on
            // the next, which is what stops it reading ZMQ while the server is away.
            let (tx, rx) = mpsc::channel::<(Item, Instant)>(1);
            senders.push(tx);
            let client = IngestClient::new(self.channel.clone());
            workers.push(runtime.spawn(deliver(
                lane,
                rx,
                client,
                self.config.timeout,
                Arc::clone(&stats),
            )));
        }
        // State first, then the line that announces it (tests and operators act on it).
        stats.ready.store(true, Ordering::Relaxed);
        info!(endpoint = %self.endpoint, grpc = %self.config.grpc, lanes,
              max_message_bytes = self.config.max_message_bytes,
              payload = ?self.config.payload, "listening");

        // After a stop request, what peers already sent is still read and delivered: the
        // reading ends once the socket has been quiet for one poll (or at the drain
        // timeout), so messages a sender counted as sent are not left in the queue.
        let mut reading_until: Option<tokio::time::Instant> = None;
        loop {
            if reading_until.is_none() && stop.load(Ordering::Relaxed) {
                let until = tokio::time::Instant::now() + self.config.drain_timeout;
                reading_until = Some(until);
                stats.ready.store(false, Ordering::Relaxed);
                info!("stop requested; reading what peers have already sent");
            }
            if reading_until.is_some_and(|t| tokio::time::Instant::now() >= t) {
                warn!("drain timeout reached while peers were still sending");
                break;
            }
            let item = match self.read(&stats) {
                Ok(Some(item)) => item,
                Ok(None) => continue,
                Err(zmq::Error::EAGAIN) if reading_until.is_some() => break,
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            stats.received.fetch_add(1, Ordering::Relaxed);
            let lane = &senders[lane_of(item.lane_key(), lanes)];
            let read_at = Instant::now();
            if !runtime.block_on(self.hand_to_lane(lane, (item, read_at), stop)) {
                // Not ready from here on (a lane's worker is gone, or the drain ran out):
                // state first, then the line.
                stats.ready.store(false, Ordering::Relaxed);
                warn!("stopping with a message read but not handed to a lane");
                break;
            }
        }

        drop(senders);
        runtime.block_on(self.drain(workers));
        Ok(stats)
    }

    /// Reads one ZMQ message; `None` if it was skipped (malformed in `Message` mode).
    fn read(&self, stats: &BridgeStats) -> Result<Option<Item>, zmq::Error> {
        if self.config.payload == Payload::Message {
            let frame = self.socket.recv_bytes(0)?;
            return Ok(match Message::decode(frame.as_slice()) {
                Ok(m) => Some(Item::Message(m)),
                Err(e) => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    warn!(size = frame.len(), error = %e, "frame is not a Message; skipped");
                    None
                }
            });
        }
        let mut first = self.socket.recv_msg(0)?;
        let peer_address = first.gets("Peer-Address").unwrap_or_default().to_owned();
        let mut parts = vec![first.to_vec()];
        // The other parts of a message arrive with its first: no wait, no timeout.
        while self.socket.get_rcvmore()? {
            parts.push(self.socket.recv_bytes(0)?);
        }
        Ok(Some(Item::Frames(Frames {
            parts,
            peer_address,
        })))
    }

    /// Waits while the lane is busy: backpressure onto ZMQ, never a drop. A stop request
    /// does not abandon the message already read: it gets the drain time. `false` if the
    /// message could not be handed over.
    async fn hand_to_lane(
        &self,
        lane: &mpsc::Sender<(Item, Instant)>,
        message: (Item, Instant),
        stop: &AtomicBool,
    ) -> bool {
        let mut give_up_at = None;
        loop {
            match tokio::time::timeout(POLL, lane.reserve()).await {
                Ok(Ok(slot)) => {
                    slot.send(message);
                    return true;
                }
                Ok(Err(_)) => return false, // the lane's worker is gone
                Err(_) if stop.load(Ordering::Relaxed) => {
                    let at = *give_up_at.get_or_insert_with(|| {
                        tokio::time::Instant::now() + self.config.drain_timeout
                    });
                    if tokio::time::Instant::now() >= at {
                        return false;
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// After reading stops: lets the lanes deliver what was read, up to the drain timeout.
    async fn drain(&self, workers: Vec<tokio::task::JoinHandle<()>>) {
        let drain_timeout = self.config.drain_timeout;
        info!(
            drain_timeout_ms = drain_timeout.as_millis() as u64,
            "stopped reading; delivering what was read"
        );
        let all = async {
            for w in workers {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(drain_timeout, all).await.is_err() {
            warn!("drain timeout reached with messages undelivered");
        }
    }
}

mod deliver;
pub mod metrics;

use deliver::{deliver, lane_of, Item};

//! The dual-stack sender: per peer address, gRPC when the peer takes it, ZeroMQ otherwise,
//! learnt without losing or duplicating a message.
//!
//! The rule is that a message moves to the other protocol only on *proof* that the peer
//! never saw it:
//!
//! * every gRPC connection is checked before a request byte is written
//!   ([`super::capability`]); a connection refused by the check (ZMTP answer, refused, silent)
//!   carried nothing. That holds for the channel's reconnects too, which go through the
//!   same check: a peer rolled back to ZeroMQ-only is found at the next connection, and
//!   the call fails with the check's error in its source chain.
//! * `UNIMPLEMENTED` comes from a gRPC server that has no `Gossip` method: no handler ran.
//! * hyper's `Canceled` error ("connection closed", "connection was not ready") is raised
//!   only for a request the HTTP/2 connection never took: the message gets one more try,
//!   on a new (checked) connection. That is what a peer that just stopped looks like.
//! * a ZeroMQ send that times out never queued the message (`immediate` is on).
//!
//! Any other gRPC failure (deadline, reset, connection lost mid-call) may come after the
//! peer took the message: it is reported [`Delivery::Unknown`] and never retried here, on
//! either protocol. The verdict is cached per peer: gRPC for as long as the channel works
//! (each new connection re-checks), ZeroMQ for `ttl`, after which the next send checks
//! again, so an upgraded peer is noticed; a ZeroMQ send that times out clears it at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use tracing::{debug, info};

use super::capability::{CheckError, CheckingConnector};
use super::delivery::{Delivery, NotSent, Parts, Via};
use super::proof::{find_check_error, proof, Proof};
use super::stats::SenderStats;
use super::zmq_send::{push_batch, PushOptions};
use crate::pb::ingest_client::IngestClient;
use crate::pb::Frames;

/// Which protocols a sender may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// ZeroMQ only, Butterfly's way; never checks.
    Zmq,
    /// gRPC where the peer takes it, ZeroMQ otherwise.
    PreferGrpc,
    /// gRPC only; a ZeroMQ-only peer gets nothing.
    Grpc,
}

#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub mode: Mode,
    /// How long a "ZeroMQ only" verdict is trusted before the peer is checked again.
    pub ttl: Duration,
    /// Deadline per gRPC call; ZeroMQ send timeout (Butterfly: 500 ms).
    pub send_timeout: Duration,
    /// ZeroMQ linger (Butterfly: 1000 ms).
    pub linger: Duration,
    /// Time allowed to connect and check a peer.
    pub check_timeout: Duration,
}

impl SenderConfig {
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

    pub fn new(mode: Mode) -> Self {
        let zmq = PushOptions::default();
        SenderConfig {
            mode,
            ttl: Self::DEFAULT_TTL,
            send_timeout: zmq.send_timeout,
            linger: zmq.linger,
            check_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone)]
enum Path {
    Grpc(IngestClient<Channel>),
    Zmq { since: Instant },
}

/// The result of connecting to a peer and checking it.
enum Connected {
    Grpc(Channel),
    Zmq,
    Failed(String),
}

/// Sends messages to peers over whatever each one takes. Share it behind an `Arc`.
pub struct DualSender {
    config: SenderConfig,
    /// Made at the first ZeroMQ send: a gRPC-only sender never starts libzmq's threads.
    zmq: std::sync::OnceLock<zmq::Context>,
    peers: Mutex<HashMap<SocketAddr, Path>>,
    stats: Arc<SenderStats>,
}

impl std::fmt::Debug for DualSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualSender")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DualSender {
    pub fn new(config: SenderConfig, stats: Arc<SenderStats>) -> Self {
        DualSender {
            config,
            zmq: std::sync::OnceLock::new(),
            peers: Mutex::default(),
            stats,
        }
    }

    /// What the sender currently believes about `peer`.
    pub fn known(&self, peer: SocketAddr) -> Option<Via> {
        self.peers().get(&peer).map(|p| match p {
            Path::Grpc(_) => Via::Grpc,
            Path::Zmq { .. } => Via::Zmq,
        })
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Path>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, peer: SocketAddr) {
        self.peers().remove(&peer);
    }

    /// Sends `messages` to `peer`, in order; one outcome per message.
    pub async fn send(&self, peer: SocketAddr, messages: Vec<Parts>) -> Vec<Delivery> {
        if messages.is_empty() {
            return Vec::new();
        }
        if self.config.mode == Mode::Zmq {
            return self.send_zmq(peer, messages).await;
        }
        let mut outcomes = Vec::with_capacity(messages.len());
        let mut rest = messages;
        // A second pass only for messages a closed connection never took (see `Proof`).
        for pass in 0..2 {
            let done = match self.path(peer).await {
                Ok(Path::Grpc(client)) => {
                    let (done, unwritten) = self.send_grpc(peer, client, rest).await;
                    match unwritten {
                        Some(unwritten) if pass == 0 => {
                            outcomes.extend(done);
                            rest = unwritten;
                            continue;
                        }
                        Some(unwritten) => {
                            outcomes.extend(done);
                            self.not_sent(unwritten.len(), NotSent::Unreachable)
                        }
                        None => done,
                    }
                }
                Ok(Path::Zmq { .. }) if self.config.mode == Mode::Grpc => {
                    self.not_sent(rest.len(), NotSent::NoCommonProtocol)
                }
                Ok(Path::Zmq { .. }) => self.send_zmq(peer, rest).await,
                Err(why) => self.not_sent(rest.len(), why),
            };
            outcomes.extend(done);
            break;
        }
        outcomes
    }

    fn not_sent(&self, n: usize, why: NotSent) -> Vec<Delivery> {
        self.stats.not_sent.fetch_add(n as u64, Ordering::Relaxed);
        vec![Delivery::NotSent(why); n]
    }

    /// The cached verdict, or a fresh one from connecting and checking.
    async fn path(&self, peer: SocketAddr) -> Result<Path, NotSent> {
        match self.peers().get(&peer) {
            Some(p @ Path::Grpc(_)) => return Ok(p.clone()),
            Some(p @ Path::Zmq { since }) if since.elapsed() < self.config.ttl => {
                return Ok(p.clone())
            }
            _ => {}
        }
        let path = match self.connect(peer).await {
            Connected::Grpc(channel) => Path::Grpc(IngestClient::new(channel)),
            Connected::Zmq => Path::Zmq {
                since: Instant::now(),
            },
            Connected::Failed(error) => {
                debug!(%peer, %error, "peer not reachable");
                self.forget(peer);
                return Err(NotSent::Unreachable);
            }
        };
        let was = self.known(peer);
        self.peers().insert(peer, path.clone());
        let now = self.known(peer);
        if was != now {
            info!(%peer, via = ?now, "peer protocol learnt");
        }
        Ok(path)
    }

    /// Connects and checks; the channel reconnects through the same check later.
    async fn connect(&self, peer: SocketAddr) -> Connected {
        let connector = CheckingConnector {
            addr: peer,
            timeout: self.config.check_timeout,
            stats: Arc::clone(&self.stats),
        };
        let endpoint = Endpoint::from_shared(format!("http://{peer}"))
            .expect("an http:// URL with a socket address is valid");
        match endpoint.connect_with_connector(connector).await {
            Ok(channel) => Connected::Grpc(channel),
            Err(e) => match find_check_error(&e) {
                Some(CheckError::Zmtp { .. }) => Connected::Zmq,
                Some(check) => Connected::Failed(check.to_string()),
                None => Connected::Failed(e.to_string()),
            },
        }
    }

    /// The outcomes so far, and the messages a closed connection never took, if that is
    /// how it ended: those may go again, over a new connection.
    async fn send_grpc(
        &self,
        peer: SocketAddr,
        mut client: IngestClient<Channel>,
        messages: Vec<Parts>,
    ) -> (Vec<Delivery>, Option<Vec<Parts>>) {
        let mut outcomes = Vec::with_capacity(messages.len());
        for (i, parts) in messages.iter().enumerate() {
            // A copy goes out: if the call proves impossible, the message goes over ZeroMQ.
            let mut request = tonic::Request::new(Frames {
                parts: parts.clone(),
                peer_address: String::new(),
            });
            request.set_timeout(self.config.send_timeout);
            match client.gossip(request).await {
                Ok(_) => {
                    self.stats.sent_grpc.fetch_add(1, Ordering::Relaxed);
                    outcomes.push(Delivery::Sent(Via::Grpc));
                }
                Err(status) => {
                    let rest = messages[i..].to_vec();
                    let proved = proof(&status);
                    if let Proof::NeverWritten = proved {
                        debug!(%peer, "the connection closed before taking the request");
                        self.forget(peer);
                        return (outcomes, Some(rest));
                    }
                    outcomes.extend(self.after_grpc_failure(peer, &status, proved, rest).await);
                    return (outcomes, None);
                }
            }
        }
        (outcomes, None)
    }

    /// `rest` is the message whose call failed, then those not tried yet; `proved` is what
    /// `status` proves.
    async fn after_grpc_failure(
        &self,
        peer: SocketAddr,
        status: &tonic::Status,
        proved: Proof,
        rest: Vec<Parts>,
    ) -> Vec<Delivery> {
        // Whatever happened, the next send starts from a fresh, checked connection.
        self.forget(peer);
        match proved {
            Proof::GrpcRefused => {
                self.peers().insert(
                    peer,
                    Path::Zmq {
                        since: Instant::now(),
                    },
                );
                if self.config.mode == Mode::Grpc {
                    return self.not_sent(rest.len(), NotSent::NoCommonProtocol);
                }
                info!(%peer, error = %short(status.message()),
                      "gRPC refused before the message was written: sending it over ZeroMQ");
                self.stats
                    .fell_back
                    .fetch_add(rest.len() as u64, Ordering::Relaxed);
                self.send_zmq(peer, rest).await
            }
            Proof::NotConnected | Proof::NeverWritten => {
                debug!(%peer, error = %short(status.message()), "peer not reachable");
                self.not_sent(rest.len(), NotSent::Unreachable)
            }
            Proof::Nothing => {
                debug!(%peer, code = ?status.code(), error = %short(status.message()),
                       "gRPC call failed after its request was written: outcome unknown");
                self.stats.unknown.fetch_add(1, Ordering::Relaxed);
                let mut outcomes = vec![Delivery::Unknown];
                outcomes.extend(self.not_sent(rest.len() - 1, NotSent::Unreachable));
                outcomes
            }
        }
    }

    async fn send_zmq(&self, peer: SocketAddr, messages: Vec<Parts>) -> Vec<Delivery> {
        let context = self.zmq.get_or_init(zmq::Context::new).clone();
        let stats = Arc::clone(&self.stats);
        let options = PushOptions {
            send_timeout: self.config.send_timeout,
            linger: self.config.linger,
        };
        let n = messages.len();
        let outcomes = tokio::task::spawn_blocking(move || {
            push_batch(&context, peer, &messages, options, &stats)
        })
        .await
        .unwrap_or_else(|_| vec![Delivery::NotSent(NotSent::Unreachable); n]);
        if outcomes.contains(&Delivery::NotSent(NotSent::Timeout)) && self.config.mode != Mode::Zmq
        {
            // Maybe the peer moved on to gRPC only: check again at the next send.
            self.forget(peer);
        }
        outcomes
    }
}

/// At most 200 characters of a message that came from the network, for the log.
fn short(s: &str) -> &str {
    crate::text::first_chars(s, 200)
}

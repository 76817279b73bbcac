//! One mesh member: its rumors (kept across restarts), and each incarnation of it — the
//! receiver on its advertised port and the gossip loop — running on a runtime of its own,
//! so that stopping an incarnation ends every connection it had, as a process exit would.
//!
//! The gossip loop is Butterfly's push loop: every round it takes the next chunk of
//! `fanout` peers from a shuffled list of all the others (a new shuffle once the list is
//! used up), sends each of them its hot rumors over one fresh connection (ZeroMQ) or the
//! peer's channel (gRPC), waits for the chunk, cools what it sent whether it arrived or
//! not, and sleeps until the next round.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::book::{Coverage, Received};
use super::delivery::Via;
use super::receive::{self, Inbox, MeshError, Receiver};
use super::rumor::{Frame, Receipt, RumorId, Store};
use super::sender::{DualSender, SenderConfig};
use super::stage::Stage;
use super::stats::SenderStats;

/// What every member shares: where the others are, and the ledger.
#[derive(Debug)]
pub struct Mesh {
    pub members: usize,
    pub fanout: usize,
    pub round: Duration,
    pub seed: u64,
    /// Each member's advertised address, set when it first binds; never changes.
    pub addrs: Vec<OnceLock<SocketAddr>>,
    pub coverage: Coverage,
    pub received: Received,
    pub sender_stats: Arc<SenderStats>,
    /// The stage now running, for attributing new rumors.
    pub stage: AtomicUsize,
}

impl Mesh {
    pub fn new(members: usize, fanout: usize, round: Duration, seed: u64) -> Self {
        Mesh {
            members,
            fanout,
            round,
            seed,
            addrs: (0..members).map(|_| OnceLock::new()).collect(),
            coverage: Coverage::new(members),
            received: Received::default(),
            sender_stats: Arc::default(),
            stage: AtomicUsize::new(0),
        }
    }
}

/// A member's identity and memory.
#[derive(Debug)]
pub struct Member {
    pub index: usize,
    pub mesh: Arc<Mesh>,
    store: Mutex<Store>,
    next_seq: AtomicU64,
    incarnations: AtomicU64,
}

impl Member {
    pub fn new(index: usize, mesh: Arc<Mesh>) -> Self {
        Member {
            index,
            mesh,
            store: Mutex::default(),
            next_seq: AtomicU64::new(0),
            incarnations: AtomicU64::new(0),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a new rumor here.
    pub fn originate(&self) -> RumorId {
        let id = RumorId {
            origin: self.index as u16,
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
        };
        let stage = self.mesh.stage.load(Ordering::Relaxed);
        self.mesh.coverage.originated(id, stage);
        self.store().insert(id, self.mesh.members);
        id
    }

    /// One message as received from the network, over either protocol.
    pub fn on_message(&self, parts: &[Vec<u8>], via: Via) {
        let r = &self.mesh.received;
        match via {
            Via::Zmq => &r.via_zmq,
            Via::Grpc => &r.via_grpc,
        }
        .fetch_add(1, Ordering::Relaxed);
        let frame = match parts {
            [one] => Frame::decode(one),
            _ => None,
        };
        let Some(frame) = frame else {
            r.foreign.fetch_add(1, Ordering::Relaxed);
            warn!(
                member = self.index,
                parts = parts.len(),
                "not a rumor frame"
            );
            return;
        };
        let receipt = self.store().receive(&frame, self.mesh.members);
        match receipt {
            Receipt::New(id) => {
                self.mesh.coverage.received(id, self.index);
                r.new.fetch_add(1, Ordering::Relaxed);
            }
            Receipt::Redundant => {
                r.redundant.fetch_add(1, Ordering::Relaxed);
            }
            Receipt::Duplicate => {
                r.duplicates.fetch_add(1, Ordering::Relaxed);
                warn!(
                    member = self.index,
                    from = frame.from,
                    send_id = frame.send_id,
                    "duplicate send"
                );
            }
        }
    }
}

/// A running incarnation of a member, on its own thread and runtime.
#[derive(Debug)]
pub struct Incarnation {
    pub port: u16,
    pub stage: Stage,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Incarnation {
    /// Starts `member` as `stage` on `port` (`None`: any free port) and returns once it is
    /// listening.
    pub fn start(
        member: Arc<Member>,
        stage: Stage,
        port: Option<u16>,
    ) -> Result<Incarnation, MeshError> {
        let index = member.index;
        let io = |what, source| MeshError::Io {
            member: index,
            what,
            source,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| io("runtime", e))?;
        let cancel = CancellationToken::new();
        let (ready, listening) = std::sync::mpsc::channel();
        let stop = cancel.clone();
        let thread = std::thread::Builder::new()
            .name(format!("member-{index}"))
            .spawn(move || {
                runtime.block_on(run(member, stage, port, stop, ready));
                // Every task of this incarnation (connections included) ends here.
                runtime.shutdown_background();
            })
            .map_err(|e| io("thread", e))?;
        let port = listening
            .recv()
            .map_err(|_| MeshError::Gone { member: index })??;
        Ok(Incarnation {
            port,
            stage,
            cancel,
            thread: Some(thread),
        })
    }

    /// Stops it: gossip ends, the port closes, every connection of it is dropped.
    pub fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Incarnation {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn run(
    member: Arc<Member>,
    stage: Stage,
    port: Option<u16>,
    cancel: CancellationToken,
    ready: std::sync::mpsc::Sender<Result<u16, MeshError>>,
) {
    let receiver = match receive::start(&member, stage, port).await {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], receiver.port()));
    let _ = member.mesh.addrs[member.index].set(addr);
    let _ = ready.send(Ok(receiver.port()));
    let incarnation = member.incarnations.fetch_add(1, Ordering::Relaxed);
    let sender = Arc::new(DualSender::new(
        SenderConfig::new(stage.sender_mode()),
        Arc::clone(&member.mesh.sender_stats),
    ));
    let seed = member.mesh.seed ^ (member.index as u64) << 32 ^ incarnation;
    gossip(&member, &sender, seed, &cancel).await;
    Receiver::stop(receiver).await;
    // ZeroMQ's context waits up to the linger time for queued sends: not on this thread.
    std::thread::spawn(move || drop(sender));
}

async fn gossip(
    member: &Arc<Member>,
    sender: &Arc<DualSender>,
    seed: u64,
    stop: &CancellationToken,
) {
    let mesh = &member.mesh;
    let mut rng = super::rng::Rng::new(seed);
    let mut check_list: Vec<usize> = Vec::new();
    let mut next = tokio::time::Instant::now();
    loop {
        if check_list.is_empty() {
            check_list = (0..mesh.members).filter(|&p| p != member.index).collect();
            rng.shuffle(&mut check_list);
        }
        let take = mesh.fanout.min(check_list.len());
        let mut sends = JoinSet::new();
        for peer in check_list.drain(..take) {
            let Some(&addr) = mesh.addrs[peer].get() else {
                continue;
            };
            let (rumors, frames) = {
                let mut store = member.store();
                let hot = store.hot_for(peer);
                let frames = store.frames(member.index as u16, &hot);
                (hot, frames)
            };
            if rumors.is_empty() {
                continue;
            }
            let sender = Arc::clone(sender);
            sends.spawn(async move {
                let messages = frames.into_iter().map(|f| vec![f]).collect();
                let outcomes = sender.send(addr, messages).await;
                debug!(%addr, ?outcomes, "sent rumors");
                (peer, rumors)
            });
        }
        let chunk_done = async {
            while let Some(done) = sends.join_next().await {
                if let Ok((peer, rumors)) = done {
                    member.store().cool(peer, &rumors);
                }
            }
        };
        tokio::select! {
            _ = chunk_done => {}
            _ = stop.cancelled() => return,
        }
        next = (next + mesh.round).max(tokio::time::Instant::now());
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.cancelled() => return,
        }
    }
}

impl Inbox for Member {
    fn index(&self) -> usize {
        self.index
    }

    fn on_message(&self, parts: &[Vec<u8>], via: Via) {
        Member::on_message(self, parts, via)
    }
}

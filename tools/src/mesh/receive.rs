//! A member's receiving side, per stage, always on its advertised port (the port peers
//! dial, which Butterfly cannot change):
//!
//! * `zmq`: a ZeroMQ PULL socket bound on it, read by a thread.
//! * `both` / `prefer-grpc`: the in-process mux ([`zmq_grpc_proxy::migrate::mux::run`]) on it;
//!   gRPC `Gossip` calls are answered here, ZMTP connections are relayed to a PULL socket
//!   of the same member on a private port nobody advertises.
//! * `grpc`: only the gRPC server.
//!
//! A restarted member binds the same port again; the old incarnation has closed it, but the
//! rebind is retried for a moment in case the kernel is slower than the restart.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::delivery::Via;
use super::stage::Stage;
use crate::peers::grpc_server::{self, GossipSink, IngestService};
use zmq_grpc_proxy::migrate::mux::{self, MuxConfig};

/// Where a receiver hands what it got: the member ([`super::member::Member`] is one).
pub trait Inbox: Send + Sync + 'static {
    /// The member's index, for logs and errors.
    fn index(&self) -> usize;
    /// One message, with the protocol that carried it.
    fn on_message(&self, parts: &[Vec<u8>], via: Via);
}

#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("member {member}: cannot listen on {addr}: {reason}")]
    Bind {
        member: usize,
        addr: String,
        reason: String,
    },
    #[error("member {member}: {what}: {source}")]
    Io {
        member: usize,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("member {member} stopped before it was listening")]
    Gone { member: usize },
}

/// How long a rebind of the advertised port is retried.
const REBIND: Duration = Duration::from_secs(2);
/// How long a stopping server may take to close its connections before they are dropped.
const STOP: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_millis(100);

/// The receiving side of one incarnation.
#[derive(Debug)]
pub struct Receiver {
    port: u16,
    zmq: Option<ZmqThread>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Receiver {
    /// The advertised port.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn stop(self) {
        if let Some((stop, server)) = self.server {
            let _ = stop.send(());
            let abort = server.abort_handle();
            if tokio::time::timeout(STOP, server).await.is_err() {
                abort.abort();
            }
        }
        if let Some(zmq) = self.zmq {
            let _ = tokio::task::spawn_blocking(move || zmq.stop()).await;
        }
    }
}

pub async fn start<M: Inbox>(
    member: &Arc<M>,
    stage: Stage,
    port: Option<u16>,
) -> Result<Receiver, MeshError> {
    if stage == Stage::Zmq {
        let zmq = ZmqThread::bind(member, port)?;
        return Ok(Receiver {
            port: zmq.port,
            zmq: Some(zmq),
            server: None,
        });
    }
    let listener = bind_tcp(member.index(), port).await?;
    let port = listener
        .local_addr()
        .map_err(|source| MeshError::Io {
            member: member.index(),
            what: "listener address",
            source,
        })?
        .port();
    let router = grpc_server::router(service(member)).await;
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async {
        let _ = stopped.await;
    };
    if stage == Stage::Grpc {
        let server = tokio::spawn(async move {
            if let Err(e) = zmq_grpc_proxy::router::run(listener, router, STOP, shutdown).await {
                warn!(error = %e, "gRPC server failed");
            }
        });
        return Ok(Receiver {
            port,
            zmq: None,
            server: Some((stop, server)),
        });
    }
    let zmq = ZmqThread::bind(member, None)?;
    let backend = format!("127.0.0.1:{}", zmq.port)
        .parse()
        .expect("an IPv4 address and port is a backend address");
    let mut config = MuxConfig::new(backend);
    config.limits.drain_timeout = STOP;
    let server = tokio::spawn(async move {
        if let Err(e) = mux::run(listener, router, config, shutdown).await {
            warn!(error = %e, "mux failed");
        }
    });
    Ok(Receiver {
        port,
        zmq: Some(zmq),
        server: Some((stop, server)),
    })
}

fn service<M: Inbox>(member: &Arc<M>) -> IngestService {
    let member = Arc::clone(member);
    IngestService::with_gossip_sink(GossipSink::new(move |frames| {
        member.on_message(&frames.parts, Via::Grpc)
    }))
}

async fn bind_tcp(member: usize, port: Option<u16>) -> Result<TcpListener, MeshError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0)));
    let deadline = Instant::now() + REBIND;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => {
                return Err(MeshError::Bind {
                    member,
                    addr: addr.to_string(),
                    reason: e.to_string(),
                })
            }
        }
    }
}

/// A PULL socket read by its own thread (libzmq is blocking), handing every message to
/// the member.
#[derive(Debug)]
struct ZmqThread {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl ZmqThread {
    fn bind<M: Inbox>(member: &Arc<M>, port: Option<u16>) -> Result<ZmqThread, MeshError> {
        let endpoint = match port {
            Some(p) => format!("tcp://127.0.0.1:{p}"),
            None => "tcp://127.0.0.1:*".to_owned(),
        };
        let bind_error = |e: zmq::Error| MeshError::Bind {
            member: member.index(),
            addr: endpoint.clone(),
            reason: e.to_string(),
        };
        let context = zmq::Context::new();
        let socket = context.socket(zmq::PULL).map_err(bind_error)?;
        socket
            .set_rcvtimeo(POLL.as_millis() as i32)
            .map_err(bind_error)?;
        let deadline = Instant::now() + REBIND;
        loop {
            match socket.bind(&endpoint) {
                Ok(()) => break,
                Err(zmq::Error::EADDRINUSE) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(bind_error(e)),
            }
        }
        let bound = socket
            .get_last_endpoint()
            .map_err(bind_error)?
            .unwrap_or_default();
        let port = bound
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| bind_error(zmq::Error::EINVAL))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, member) = (Arc::clone(&stop), Arc::clone(member));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match socket.recv_multipart(0) {
                    Ok(parts) => member.on_message(&parts, Via::Zmq),
                    Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => {}
                    Err(e) => {
                        warn!(member = member.index(), error = %e, "ZMQ receive failed");
                        break;
                    }
                }
            }
            drop(socket);
            drop(context); // closes the port before the thread is joined
            debug!(member = member.index(), port, "ZMQ receiver stopped");
        });
        Ok(ZmqThread { port, stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

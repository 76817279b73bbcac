//! Stage two of a migration: one process, one port, both protocols. gRPC connections are
//! answered by a tonic server in this process; ZeroMQ connections are forwarded to the
//! old ZMQ server, exactly as the standalone proxy does.
//!
//! It is the proxy with one route changed: [`run`] runs [`crate::proxy::run`] (the same
//! accept loop, detector, connect, replay and relay) with the gRPC route set to
//! [`Target::Local`]. A detected gRPC connection is handed to tonic as a [`PrefixedStream`]
//! that first returns the bytes detection consumed, then reads the socket: tonic sees the
//! whole HTTP/2 preface, as if it had accepted the connection itself.
//!
//! One signal stops both sides at once, and both drain for `limits.drain_timeout`:
//! forwarded ZeroMQ connections as the proxy drains them (reset at the timeout), gRPC
//! calls through [`run_on`] (cancelled at the timeout).
//!
//! `TCP_NODELAY` is set on the listener before serving starts, so every socket accepted
//! from it inherits the option, and again on each connection handed to tonic. Linux copies
//! the option when the handshake completes, before `accept`, so a connection that arrives
//! before the listener has it would keep Nagle on for life.
//!
//! Embedding it in a plain tonic server (here one serving only the standard health
//! service; any `Router` will do). This needs nothing but the crate's core: with
//! `default-features = false` there is no clap in the build (and libzmq and the demo peers
//! live in the tools crate).
//!
//! ```
//! use std::time::Duration;
//! use zmq_grpc_proxy::migrate::mux::{run, MuxConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! // gRPC: your services, answered here.
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! let grpc = tonic::transport::Server::builder().add_service(health);
//! // ZeroMQ: forwarded to the old server, on the same port.
//! let mut config = MuxConfig::new("127.0.0.1:7001".parse()?);
//! // Serve until the shutdown future resolves (a signal, in a real server), then let
//! // open calls and connections finish for up to the drain timeout.
//! config.limits.drain_timeout = Duration::from_secs(5);
//! let shutdown = tokio::time::sleep(Duration::from_millis(10));
//! run(listener, grpc, config, shutdown).await?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::proxy::metrics::Metrics;
use crate::proxy::prefixed::PrefixedStream;
use crate::proxy::{self, BackendAddr, Limits, LocalServer, ProxyConfig, Routes, Target};
use crate::router::run_on;

/// Settings for [`run`]: where ZeroMQ goes, and the proxy's [`Limits`] (its defaults
/// unless changed).
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// Where ZeroMQ connections are forwarded.
    pub zmq_backend: BackendAddr,
    pub limits: Limits,
    /// The proxy's counters for this port (connections per route: `zmq` forwarded, `grpc`
    /// answered here), for an admin endpoint to serve.
    pub metrics: std::sync::Arc<Metrics>,
}

impl MuxConfig {
    pub fn new(zmq_backend: BackendAddr) -> Self {
        MuxConfig {
            zmq_backend,
            limits: Limits::default(),
            metrics: std::sync::Arc::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("accepting connections: {0}")]
    Io(#[from] io::Error),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
}

/// Serves `grpc` and forwards ZeroMQ to `config.zmq_backend`, all on `listener`, until
/// `shutdown` resolves; then stops accepting and drains both sides at once for
/// `config.limits.drain_timeout`: forwarded connections still open then are reset, gRPC
/// calls still open are cancelled. Returns when every connection has ended.
pub async fn run(
    listener: TcpListener,
    grpc: tonic::transport::server::Router,
    config: MuxConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MuxError> {
    // Bounded: if tonic stops taking connections, detection tasks wait rather than pile up.
    let (to_grpc, incoming) = tokio::sync::mpsc::channel::<PrefixedStream<TcpStream>>(128);
    let mut proxy_config = ProxyConfig::new(Routes {
        zmq: Target::Backend(config.zmq_backend),
        grpc: Target::Local(LocalServer(to_grpc)),
        fallback: None,
        proxy_protocol: Vec::new(),
        tls: None,
        accept_proxy_protocol: Vec::new(),
    });
    proxy_config.limits = config.limits;
    proxy_config.metrics = std::sync::Arc::clone(&config.metrics);
    socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    // The one shutdown, seen by both sides; also set if either side ends on its own (an
    // error), so the other never outlives it.
    let stop = CancellationToken::new();
    let signal = async {
        tokio::select! {
            () = shutdown => stop.cancel(),
            () = stop.cancelled() => {}
        }
    };
    let accept = async {
        let result = proxy::run(listener, proxy_config, stop.cancelled()).await;
        stop.cancel();
        result
    };
    // For connections accepted before the listener had the option (see the module docs).
    let incoming = ReceiverStream::new(incoming).map(|stream| {
        if let Err(e) = stream.get_ref().set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        stream
    });
    let grpc = async {
        let served = run_on(
            grpc,
            incoming,
            config.limits.drain_timeout,
            stop.cancelled(),
        )
        .await;
        stop.cancel();
        served
    };
    let ((), accepted, served) = tokio::join!(signal, accept, grpc);
    accepted?;
    served?;
    Ok(())
}

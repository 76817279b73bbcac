//! Stage two of a migration: one process, one port, both protocols. gRPC connections are
//! answered by a tonic server in this process; ZeroMQ connections are forwarded to the
//! old ZMQ server, exactly as the standalone proxy does.
//!
//! It is the proxy with one route changed: [`serve`] runs [`crate::proxy::run`] (the same
//! accept loop, detector, connect, replay and relay) with the gRPC route set to
//! [`Route::Local`]. A detected gRPC connection is handed to tonic as a [`PrefixedStream`]
//! that first returns the bytes detection consumed, then reads the socket: tonic sees the
//! whole HTTP/2 preface, as if it had accepted the connection itself.
//!
//! ```
//! use std::time::Duration;
//! use zmq_grpc_proxy::grpc_server::{router, IngestService};
//! use zmq_grpc_proxy::mux::{serve, MuxConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! // gRPC: the Ingest service (and health, reflection), answered here.
//! let grpc = router(IngestService::default()).await;
//! // ZeroMQ: forwarded to the old zmq_pull server.
//! let config = MuxConfig::new("127.0.0.1:7001".parse()?);
//! // Serve until the shutdown future resolves (a signal, in a real server).
//! let shutdown = tokio::time::sleep(Duration::from_millis(10));
//! serve(listener, grpc, config, shutdown).await?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::proxy::{self, BackendAddr, LocalServer, ProxyConfig, Route, RouteTable, Routes};
use crate::relay::SpliceMode;

/// A connection whose first bytes were already read (by detection), replayed to its reader
/// before the rest of the socket. Like hyper-util's `Rewind` or linkerd's `PrefixedIo`.
#[derive(Debug)]
pub struct PrefixedStream {
    prefix: Vec<u8>,
    consumed: usize,
    inner: TcpStream,
}

impl PrefixedStream {
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Self {
        PrefixedStream {
            prefix,
            consumed: 0,
            inner,
        }
    }
}

impl AsyncRead for PrefixedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.consumed < this.prefix.len() {
            let rest = &this.prefix[this.consumed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.consumed += n;
            if this.consumed == this.prefix.len() {
                this.prefix = Vec::new();
                this.consumed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PrefixedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for PrefixedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Settings for [`serve`]; the defaults match the proxy binary's.
#[derive(Debug, Clone)]
pub struct MuxConfig {
    /// Where ZeroMQ connections are forwarded.
    pub zmq_backend: BackendAddr,
    pub detect_timeout: Duration,
    pub connect_timeout: Duration,
    pub drain_timeout: Duration,
    pub max_connections: u32,
    pub splice: SpliceMode,
}

impl MuxConfig {
    pub fn new(zmq_backend: BackendAddr) -> Self {
        MuxConfig {
            zmq_backend,
            detect_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(10),
            max_connections: 50_000,
            splice: SpliceMode::Auto,
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
/// `shutdown` resolves; then stops accepting, lets forwarded connections drain and lets
/// tonic finish its in-flight calls.
pub async fn serve(
    listener: TcpListener,
    grpc: tonic::transport::server::Router,
    config: MuxConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MuxError> {
    // Bounded: if tonic stops taking connections, detection tasks wait rather than pile up.
    let (to_grpc, incoming) = tokio::sync::mpsc::channel::<PrefixedStream>(128);
    let proxy_config = ProxyConfig {
        routes: std::sync::Arc::new(RouteTable::new(Routes {
            zmq: Route::Backend(config.zmq_backend),
            grpc: Route::Local(LocalServer(to_grpc)),
            fallback: None,
            proxy_protocol: Vec::new(),
            tls: None,
        })),
        detect_timeout: config.detect_timeout,
        connect_timeout: config.connect_timeout,
        drain_timeout: config.drain_timeout,
        max_connections: config.max_connections,
        splice: config.splice,
        metrics: Default::default(),
    };
    let (stop_grpc, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let accept = async {
        let result = proxy::run(listener, proxy_config, shutdown).await;
        let _ = stop_grpc.send(());
        result
    };
    let incoming = ReceiverStream::new(incoming).map(Ok::<_, io::Error>);
    let grpc = grpc.serve_with_incoming_shutdown(incoming, async {
        let _ = grpc_stopped.await;
    });
    let (accepted, served) = tokio::join!(accept, grpc);
    accepted?;
    served?;
    Ok(())
}

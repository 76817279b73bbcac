//! Serving a tonic router the way every server of this project needs, split in two so the
//! mux (stage 2) can reuse the second half:
//!
//! * [`accept`] takes connections off the listener and sets `TCP_NODELAY` on each. tonic's
//!   own `tcp_nodelay` applies only to listeners it binds itself, never to a stream of
//!   connections it is handed, and without it small gRPC frames wait behind Nagle.
//! * [`run_on`] runs the router on any stream of connections and bounds the stop:
//!   tonic's graceful shutdown waits for every open call, so one client holding a stream
//!   open would keep the server up forever. Each connection is wrapped so that it can be
//!   cut: at the drain timeout every read and write fails, hyper ends the connection and
//!   its calls, and the server returns.
//!
//! [`run`] joins the two for a plain listener.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;
use tracing::{debug, info, warn};

/// Serves `router` on `listener` until `shutdown` resolves; then closes the port, lets
/// in-flight calls finish for up to `drain_timeout`, cancels the rest and returns.
pub async fn run(
    listener: TcpListener,
    router: tonic::transport::server::Router,
    drain_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    // Small: tonic takes connections as fast as they come; the bound only matters if it
    // stops taking them, and then accepting waits too.
    let (to_grpc, incoming) = mpsc::channel(16);
    let (closed_tx, closed) = oneshot::channel::<()>();
    // Set if tonic returns on its own (an error): then the port closes too.
    let grpc_ended = CancellationToken::new();
    let accepting = async {
        let stop = async {
            tokio::select! {
                () = shutdown => {}
                () = grpc_ended.cancelled() => {}
            }
        };
        accept(listener, to_grpc, stop).await;
        let _ = closed_tx.send(());
    };
    // The drain starts once the port is closed, so "draining" is never logged while new
    // connections are still being taken.
    let serving = async {
        let closed = async {
            let _ = closed.await;
        };
        let served = run_on(router, ReceiverStream::new(incoming), drain_timeout, closed).await;
        grpc_ended.cancel();
        served
    };
    let ((), served) = tokio::join!(accepting, serving);
    served
}

/// Takes connections off `listener` and hands them to `to_grpc` with `TCP_NODELAY` set,
/// until `shutdown` resolves or the receiver is gone; then closes the port. Accept errors
/// never end it: a failed handshake is skipped, running out of descriptors is backed off
/// (5 ms doubling to 1 s).
pub async fn accept(
    listener: TcpListener,
    to_grpc: mpsc::Sender<TcpStream>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                if to_grpc.send(stream).await.is_err() {
                    break; // the gRPC server has stopped
                }
            }
            Err(e) if crate::proxy::server::is_per_connection_error(&e) => {
                debug!(error = %e, "accept: connection failed before it was accepted");
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
    // State first: the port is closed before the line that says so.
    drop(listener);
    info!("stopped accepting; port closed");
}

/// Serves `router` on the connections `incoming` yields until `shutdown` resolves; then
/// stops taking connections, tells clients to open no new calls (HTTP/2 GOAWAY), lets the
/// calls in flight finish for up to `drain_timeout`, cuts every connection still open and
/// returns once they are all closed.
pub async fn run_on<IO>(
    router: tonic::transport::server::Router,
    incoming: impl Stream<Item = IO>,
    drain_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
{
    let cut = CancellationToken::new();
    let open = Arc::new(AtomicUsize::new(0));
    let incoming = {
        let (cut, open) = (cut.clone(), Arc::clone(&open));
        incoming.map(move |io| Ok::<_, io::Error>(Cuttable::new(io, &cut, &open)))
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    });
    tokio::pin!(serving, shutdown);
    tokio::select! {
        served = &mut serving => return served,
        () = &mut shutdown => {}
    }
    let _ = stop.send(());
    let drain_timeout_ms = drain_timeout.as_millis() as u64;
    info!(
        open = open.load(Ordering::Relaxed),
        drain_timeout_ms, "draining in-flight gRPC calls"
    );
    if let Ok(served) = tokio::time::timeout(drain_timeout, &mut serving).await {
        info!("all gRPC calls finished");
        return served;
    }
    // Counted before the cut: cut connections close (and uncount) on other threads at once.
    let cutting = open.load(Ordering::Relaxed);
    cut.cancel();
    warn!(
        open = cutting,
        drain_timeout_ms, "drain timeout reached; cancelling the gRPC calls still open"
    );
    let served = serving.await;
    info!("all gRPC connections closed");
    served
}

/// A connection served by tonic that can be cut from outside: once `cut` is cancelled,
/// every read and write fails. tonic spawns each connection's task itself and keeps no
/// handle to it, so failing its I/O is the one way to end it: hyper sees the error, ends
/// the connection and the calls on it, and drops (closes) the socket.
struct Cuttable<IO> {
    io: IO,
    cut: CancellationToken,
    /// Registered only when the I/O is about to wait, so a busy connection never touches
    /// the token's shared state.
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    open: Arc<AtomicUsize>,
}

impl<IO> Cuttable<IO> {
    fn new(io: IO, cut: &CancellationToken, open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Cuttable {
            io,
            cut: cut.clone(),
            cancelled: Box::pin(cut.clone().cancelled_owned()),
            open: Arc::clone(open),
        }
    }

    /// Runs one I/O operation unless the connection is cut, and wakes the task when it is
    /// cut while the operation waits.
    fn poll_io<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>>
    where
        IO: Unpin,
    {
        let cut = || {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "cancelled at the drain timeout",
            )
        };
        if self.cut.is_cancelled() {
            return Poll::Ready(Err(cut()));
        }
        match op(Pin::new(&mut self.io), cx) {
            Poll::Pending => match self.cancelled.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(cut())),
                Poll::Pending => Poll::Pending,
            },
            ready => ready,
        }
    }
}

impl<IO> Drop for Cuttable<IO> {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Cuttable<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(cx, |io, cx| io.poll_read(cx, buf))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Cuttable<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_io(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_io(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_io(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing is allowed even after the cut: it only ends the connection sooner.
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Cuttable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn accepted_connections_have_nodelay_and_the_port_closes_at_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (to_grpc, mut incoming) = mpsc::channel(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let accepting = tokio::spawn(accept(listener, to_grpc, async {
            let _ = stopped.await;
        }));
        let _client = TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.recv().await.unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY off on an accepted socket"
        );

        stop.send(()).unwrap();
        accepting.await.unwrap();
        assert!(incoming.recv().await.is_none());
        assert_eq!(
            TcpStream::connect(addr).await.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionRefused)
        );
    }

    #[tokio::test]
    async fn a_cut_connection_fails_the_read_it_waits_on_and_every_io_after() {
        let (near, mut far) = tokio::io::duplex(64);
        let (cut, open) = (CancellationToken::new(), Arc::new(AtomicUsize::new(0)));
        let mut conn = Cuttable::new(near, &cut, &open);
        assert_eq!(open.load(Ordering::Relaxed), 1);

        // Data flows until the cut...
        far.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        conn.write_all(b"pong").await.unwrap();
        far.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");

        // ...a read waiting for data is woken by it and fails...
        let waiting = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            let read = conn.read(&mut buf).await.map_err(|e| e.kind());
            (read, conn)
        });
        tokio::task::yield_now().await;
        cut.cancel();
        let (read, mut conn) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the cut did not wake the waiting read")
            .unwrap();
        assert_eq!(read, Err(io::ErrorKind::ConnectionAborted));
        // ...and so does everything after it, even with data waiting.
        far.write_all(b"late").await.unwrap();
        assert!(conn.read(&mut buf).await.is_err());
        assert!(conn.write(b"x").await.is_err());
        drop(conn);
        assert_eq!(open.load(Ordering::Relaxed), 0);
    }
}

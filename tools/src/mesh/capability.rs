//! The capability check: does the peer at an address take gRPC (HTTP/2), or only ZeroMQ?
//! Learnt on the very connection that will carry the calls, before one request byte is
//! written, so a wrong guess can never deliver half a message or a garbage one.
//!
//! The client sends the 24-byte HTTP/2 preface and reads:
//!
//! * a SETTINGS frame, the server's connection preface (RFC 9113 §3.4): HTTP/2. The
//!   connection is handed to the gRPC client as a [`CheckedStream`], which swallows the
//!   client's own 24-byte preface (the server already has it) and replays what the server
//!   sent. On the wire the server sees an ordinary preface, its SETTINGS frame merely a
//!   round trip later. (Sending a SETTINGS frame with the probe and waiting for its ACK
//!   would be no proof more and costs more: a server with Nagle on holds the ACK back until
//!   the client's delayed ACK, 40 ms.)
//! * the ZMTP signature (`FF`, 8 bytes, `7F`): libzmq sends it as soon as it accepts, so a
//!   ZeroMQ-only peer answers at once. It never gets a message out of our 24 bytes: a
//!   first byte other than `FF` makes libzmq read a ZMTP 1.0 identity frame of `0x50` = 80
//!   bytes, which never completes.
//! * anything else, EOF or silence: neither; the caller decides. (A server that waits for
//!   the client's SETTINGS before sending its own would look silent; servers send theirs
//!   first.)
//!
//! Through the mux or the proxy the preface is detected as HTTP/2 and reaches the gRPC
//! server, so "takes gRPC" means exactly that the gRPC side of whatever owns the port
//! answers. It costs one round trip per new connection (measured in tests/mesh.rs).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

use super::stats::SenderStats;
use zmq_grpc_proxy::proxy::prefixed::PrefixedStream;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const SETTINGS: u8 = 4;
const ACK: u8 = 1;
/// A SETTINGS frame larger than this is not a server preface we believe.
const MAX_SETTINGS: usize = 6 * 64;

/// What the peer's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    NeedMore,
    /// A whole SETTINGS frame, first: HTTP/2.
    Http2,
    /// The ZMTP 2.0+ signature.
    Zmtp,
    /// Neither.
    Other,
}

/// Classifies the bytes a peer sent after our preface. Pure; decides at the first byte
/// that rules HTTP/2 or ZMTP out.
pub fn classify(buf: &[u8]) -> Answer {
    match buf.first() {
        None => return Answer::NeedMore,
        Some(0xFF) if buf.len() < 10 => return Answer::NeedMore,
        Some(0xFF) if buf[9] == 0x7F => return Answer::Zmtp,
        Some(0xFF) => return Answer::Other,
        // A SETTINGS frame's length fits in 16 bits: its first byte is 0.
        Some(0) => {}
        Some(_) => return Answer::Other,
    }
    if buf.len() < FRAME_HEADER {
        return Answer::NeedMore;
    }
    let len = usize::from(buf[1]) << 8 | usize::from(buf[2]);
    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
    let settings = buf[3] == SETTINGS && buf[4] & ACK == 0 && stream == 0;
    if !settings || len % 6 != 0 || len > MAX_SETTINGS {
        return Answer::Other;
    }
    if buf.len() < FRAME_HEADER + len {
        return Answer::NeedMore;
    }
    Answer::Http2
}

/// Why a connection was not handed to the gRPC client. Every variant means the same for
/// delivery: no request was written, so the peer has seen nothing.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{addr} speaks ZeroMQ (ZMTP greeting), not gRPC")]
    Zmtp { addr: SocketAddr },
    #[error("{addr} answered neither HTTP/2 nor ZMTP")]
    Unrecognised { addr: SocketAddr },
    #[error("{addr} closed the connection before answering")]
    Closed { addr: SocketAddr },
    #[error("{addr} did not answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("reading {addr}'s answer: {source}")]
    Io { addr: SocketAddr, source: io::Error },
}

/// Runs the exchange on `stream`; on HTTP/2 returns the bytes to replay to the client.
pub async fn exchange<S>(stream: &mut S, addr: SocketAddr) -> Result<Vec<u8>, CheckError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io = |source| CheckError::Io { addr, source };
    stream.write_all(PREFACE).await.map_err(io)?;
    let mut buf = Vec::with_capacity(256);
    loop {
        if stream.read_buf(&mut buf).await.map_err(io)? == 0 {
            return Err(CheckError::Closed { addr });
        }
        match classify(&buf) {
            Answer::NeedMore => continue,
            Answer::Http2 => return Ok(buf),
            Answer::Zmtp => return Err(CheckError::Zmtp { addr }),
            Answer::Other => return Err(CheckError::Unrecognised { addr }),
        }
    }
}

/// Connects to `addr` and checks it, all within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<CheckedStream<TcpStream>, CheckError> {
    let attempt = async {
        let mut tcp = TcpStream::connect(addr)
            .await
            .map_err(|source| CheckError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        let replay = exchange(&mut tcp, addr).await?;
        Ok(CheckedStream::new(replay, tcp))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(CheckError::Timeout { addr, timeout }))
}

/// A checked HTTP/2 connection: replays the server's first bytes and drops the client's
/// preface, which the server has already had from the check.
#[derive(Debug)]
pub struct CheckedStream<I> {
    inner: PrefixedStream<I>,
    /// Preface bytes still to be swallowed.
    skip: usize,
}

impl<I> CheckedStream<I> {
    /// `io` after a successful [`exchange`] that returned `replay`.
    pub fn new(replay: Vec<u8>, io: I) -> Self {
        CheckedStream {
            inner: PrefixedStream::new(replay, io),
            skip: PREFACE.len(),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CheckedStream<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CheckedStream<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.skip > 0 {
            let n = this.skip.min(buf.len());
            let expected = &PREFACE[PREFACE.len() - this.skip..][..n];
            if buf[..n] != *expected {
                let e = "the gRPC client did not open with the HTTP/2 preface";
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            this.skip -= n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The connector the gRPC channel to one peer uses for every connection it makes, first
/// and after any reconnect: each one is checked before the channel may write a request.
#[derive(Debug, Clone)]
pub struct CheckingConnector {
    pub addr: SocketAddr,
    pub timeout: Duration,
    pub stats: Arc<SenderStats>,
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TokioIo<CheckedStream<TcpStream>>, CheckError>> + Send>>;

impl tower_service::Service<Uri> for CheckingConnector {
    type Response = TokioIo<CheckedStream<TcpStream>>;
    type Error = CheckError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (addr, timeout, stats) = (self.addr, self.timeout, Arc::clone(&self.stats));
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = connect(addr, timeout).await;
            let counter = match &result {
                Ok(_) => &stats.grpc_connections,
                Err(CheckError::Zmtp { .. }) => &stats.checks_found_zmq,
                Err(_) => &stats.checks_failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            stats.record_check(started.elapsed());
            result.map(TokioIo::new)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER_SETTINGS: [u8; 15] = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
    const SETTINGS_ACK: [u8; 9] = [0, 0, 0, 4, 1, 0, 0, 0, 0];
    const WINDOW_UPDATE: [u8; 13] = [0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0x0f, 0, 1];

    #[test]
    fn answers_are_decided_on_exactly_the_bytes_that_decide_them() {
        let mut h2 = SERVER_SETTINGS.to_vec();
        h2.extend_from_slice(&WINDOW_UPDATE);
        let zmtp = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F, 3];
        let cases: [(&[u8], usize, Answer); 4] = [
            (&h2, SERVER_SETTINGS.len(), Answer::Http2),
            (&[0, 0, 0, 4, 0, 0, 0, 0, 0], 9, Answer::Http2), // empty SETTINGS
            (&zmtp, 10, Answer::Zmtp),
            (&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7E], 10, Answer::Other),
        ];
        for (bytes, decided_at, answer) in cases {
            for n in 0..decided_at {
                assert_eq!(classify(&bytes[..n]), Answer::NeedMore, "{n} of {bytes:?}");
            }
            for n in decided_at..=bytes.len() {
                assert_eq!(classify(&bytes[..n]), answer, "{n} of {bytes:?}");
            }
        }
    }

    #[test]
    fn anything_but_a_settings_frame_first_is_not_http2() {
        for bytes in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            &SETTINGS_ACK,                      // an ACK is not a server preface
            &WINDOW_UPDATE,                     // not SETTINGS
            &[0, 0, 5, 4, 0, 0, 0, 0, 0],       // length not a multiple of 6
            &[0, 0, 6, 4, 0, 0, 0, 0, 1],       // on a stream
            &[0, 0xff, 0xfc, 4, 0, 0, 0, 0, 0], // absurdly long
            &[1],                               // a length over 64 KiB
        ] {
            assert_eq!(classify(bytes), Answer::Other, "{bytes:?}");
        }
    }

    #[tokio::test]
    async fn the_client_sees_the_server_from_its_first_byte_and_the_server_one_preface() {
        let (mut near, mut far) = tokio::io::duplex(1024);
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let server = tokio::spawn(async move {
            let mut preface = [0u8; 24];
            far.read_exact(&mut preface).await.unwrap();
            assert_eq!(&preface, PREFACE);
            far.write_all(&SERVER_SETTINGS).await.unwrap();
            far
        });
        let replay = exchange(&mut near, addr).await.unwrap();
        assert_eq!(replay, SERVER_SETTINGS);
        let mut far = server.await.unwrap();

        // What the HTTP/2 client then writes: its preface (dropped), then frames (passed).
        let mut checked = CheckedStream::new(replay, near);
        checked.write_all(&PREFACE[..10]).await.unwrap();
        checked.write_all(&PREFACE[10..]).await.unwrap();
        checked.write_all(b"frames").await.unwrap();
        let mut got = [0u8; 6];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"frames");
        far.write_all(&SETTINGS_ACK).await.unwrap();
        let mut read = [0u8; 24];
        checked.read_exact(&mut read).await.unwrap();
        assert_eq!(read[..15], SERVER_SETTINGS);
        assert_eq!(read[15..], SETTINGS_ACK);
    }

    #[tokio::test]
    async fn a_client_that_does_not_start_with_the_preface_is_refused() {
        let (near, _far) = tokio::io::duplex(64);
        let mut checked = CheckedStream::new(Vec::new(), near);
        let e = checked.write_all(b"GET / HTTP/1.1\r\n").await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}

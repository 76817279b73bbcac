//! [`PrefixedStream`]: a connection whose first bytes were already read (by detection),
//! replayed to its reader before the rest of the stream. Like hyper-util's `Rewind` or
//! linkerd's `PrefixedIo`, and generic over any `AsyncRead + AsyncWrite` for the same
//! reason: whoever takes over a detected connection must see it from its first byte.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads `prefix` first, then `inner`; writes go straight to `inner`.
#[derive(Debug)]
pub struct PrefixedStream<I> {
    prefix: Vec<u8>,
    consumed: usize,
    inner: I,
}

impl<I> PrefixedStream<I> {
    pub fn new(prefix: Vec<u8>, inner: I) -> Self {
        PrefixedStream {
            prefix,
            consumed: 0,
            inner,
        }
    }

    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for PrefixedStream<I> {
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
                // Replayed: give the memory back for the rest of the connection's life.
                this.prefix = Vec::new();
                this.consumed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for PrefixedStream<I> {
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

impl<I: tonic::transport::server::Connected> tonic::transport::server::Connected
    for PrefixedStream<I>
{
    type ConnectInfo = I::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_is_read_first_then_the_stream_and_writes_pass_through() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut s = PrefixedStream::new(b"PRI ".to_vec(), near);
        far.write_all(b"* HTTP/2.0").await.unwrap();
        drop(far.shutdown().await);
        let mut got = Vec::new();
        // A 3-byte buffer: the prefix is replayed across several reads.
        let mut buf = [0u8; 3];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"PRI * HTTP/2.0");
        s.write_all(b"reply").await.unwrap();
        let mut back = [0u8; 5];
        far.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"reply");
    }
}

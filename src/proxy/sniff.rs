//! The first stage of a connection: read its first bytes until the detector (and, for TLS,
//! the ClientHello parser) decides, within the detect timeout. What was read is kept in a
//! [`Prefix`] for the replay.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::detect::{detect, Detection, MAX_PREFIX_LEN};
use super::outcome::{Outcome, RejectReason};
use super::routes::{Routes, Sniffed};
use super::tls::{self, Hello};

/// Bytes buffered while detecting: room for the longest signature and a little more. It
/// lives in every connection's set-up future, so it is kept small; whatever a client sends
/// beyond it stays in the socket and is relayed after the replay.
const PREFIX_BUF_LEN: usize = 64;
const _: () = assert!(PREFIX_BUF_LEN >= MAX_PREFIX_LEN);

/// The bytes read while detecting: a small inline buffer, or the whole ClientHello when TLS
/// is routed (it can be up to a TLS record long).
pub(super) struct Prefix {
    buf: [u8; PREFIX_BUF_LEN],
    filled: usize,
    hello: Vec<u8>,
}

impl Prefix {
    pub(super) fn new() -> Self {
        Prefix {
            buf: [0; PREFIX_BUF_LEN],
            filled: 0,
            hello: Vec::new(),
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        if self.hello.is_empty() {
            &self.buf[..self.filled]
        } else {
            &self.hello
        }
    }

    pub(super) fn len(&self) -> usize {
        self.bytes().len()
    }

    /// The first read of a connection: what the client has sent so far, without waiting
    /// (the socket is non-blocking), possibly before the socket is registered with the
    /// runtime. Nothing there yet is fine; a closed or failed connection is its outcome.
    pub(super) fn read_now(&mut self, client: &impl std::os::fd::AsFd) -> Result<(), Outcome> {
        use std::io::Read;
        match (&*socket2::SockRef::from(client)).read(&mut self.buf[self.filled..]) {
            Ok(0) => Err(Outcome::rejected(
                RejectReason::ClosedEarly,
                self.filled,
                None,
            )),
            Ok(n) => {
                self.filled += n;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(Outcome::read_error(&e)),
        }
    }
}

/// Reads until the detector (and, for TLS, the ClientHello parser) decides, or the deadline.
/// `read_already`: [`Prefix::read_now`] was tried (otherwise it is tried first here).
pub(super) async fn sniff(
    client: &mut TcpStream,
    routes: &Routes,
    prefix: &mut Prefix,
    read_already: bool,
    deadline: tokio::time::Instant,
) -> Result<Sniffed, Outcome> {
    let detected = tokio::time::timeout_at(deadline, read_prefix(client, prefix, read_already));
    let detected = detected.await;
    match detected {
        Err(_elapsed) => Ok(Sniffed::Silent),
        Ok(Ok(Detection::Matched(protocol))) => Ok(Sniffed::Protocol(protocol)),
        Ok(Ok(_)) if routes.routes_tls() && tls::starts_like_tls(prefix.bytes()) => {
            // TLS needs its whole ClientHello (SNI and ALPN sit near its end), read on
            // within what is left of the detect timeout.
            match tokio::time::timeout_at(deadline, read_client_hello(client, prefix)).await {
                Err(_elapsed) => Ok(Sniffed::Silent),
                Ok(hello) => hello,
            }
        }
        Ok(Ok(_)) => Ok(Sniffed::Unrecognised),
        Ok(Err(outcome)) => Err(outcome),
    }
}

/// Reads until the detector decides: `Matched` or `NoMatch`. The bytes stay in `prefix`
/// (valid even if this future is dropped by the detect timeout).
async fn read_prefix(
    client: &mut TcpStream,
    prefix: &mut Prefix,
    read_already: bool,
) -> Result<Detection, Outcome> {
    // Clients send their prefix right after the handshake, so by the time the connection is
    // accepted it has often arrived: read it directly first (the socket is non-blocking),
    // and wait for readiness only if it has not. That saves a trip through the event loop.
    if !read_already {
        prefix.read_now(client)?;
    }
    loop {
        if prefix.filled > 0 {
            match detect(&prefix.buf[..prefix.filled]) {
                // A full buffer must never turn into a zero-length read that spins
                // (unreachable while PREFIX_BUF_LEN >= MAX_PREFIX_LEN).
                Detection::NeedMore if prefix.filled < PREFIX_BUF_LEN => {}
                Detection::NeedMore => return Ok(Detection::NoMatch),
                decided => return Ok(decided),
            }
        }
        let n = client
            .read(&mut prefix.buf[prefix.filled..])
            .await
            .map_err(|e| Outcome::read_error(&e))?;
        if n == 0 {
            return Err(Outcome::rejected(
                RejectReason::ClosedEarly,
                prefix.filled,
                None,
            ));
        }
        prefix.filled += n;
    }
}

/// Reads on until `prefix.hello` holds a whole ClientHello message.
async fn read_client_hello(
    client: &mut TcpStream,
    prefix: &mut Prefix,
) -> Result<Sniffed, Outcome> {
    prefix.hello.extend_from_slice(&prefix.buf[..prefix.filled]);
    loop {
        match tls::parse(&prefix.hello) {
            Hello::Parsed(hello) => return Ok(Sniffed::Tls(hello)),
            Hello::NotTls => return Ok(Sniffed::Unrecognised),
            Hello::NeedMore => {}
        }
        // Straight into the buffer (no chunk on the stack of every connection's set-up),
        // never past the cap; a read cut short by the deadline appends nothing.
        let want = tls::MAX_HELLO_BYTES - prefix.hello.len();
        let n = client
            .read_buf(&mut bytes::BufMut::limit(&mut prefix.hello, want))
            .await
            .map_err(|e| Outcome::read_error(&e))?;
        if n == 0 {
            return Err(Outcome::rejected(
                RejectReason::ClosedEarly,
                prefix.len(),
                None,
            ));
        }
    }
}

//! Moving bytes both ways between the client and its backend until both directions end.
//!
//! Each direction waits for its source socket to become readable and only then touches a
//! buffer, so an idle connection owns no buffer at all. Two engines move the bytes:
//!
//! * **copy**: read into a per-thread 64 KiB buffer and write straight out. Bytes the
//!   destination cannot take yet are moved to a small heap buffer owned by the connection
//!   until they are written (backpressure), and freed after.
//! * **splice** (Linux): `splice(2)` socket → pipe → socket, so the payload never enters
//!   user space. It costs a pipe (two descriptors) per busy direction, so with
//!   [`SpliceMode::Auto`] a direction switches to it only once a read fills the whole copy
//!   buffer, i.e. for bulk transfers; small request/response traffic stays on copy.
//!
//! A FIN is forwarded as a FIN (`shutdown(Write)`) and the other direction carries on; the
//! relay ends when both directions have. The last FIN is not forwarded here: the relay is
//! over and its owner closes both sockets, which sends it (one system call fewer per
//! connection). An error in either direction ends both at once.
//!
//! System calls are most of a connection's cost (BENCHMARKS.md, Performance II), so the copy
//! engine also avoids the read that can only say EAGAIN: a read shorter than the buffer has
//! drained the socket, and clears its readiness (see `read_draining`).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Bytes moved per read, and the size of the per-thread copy buffer.
const CHUNK: usize = 64 * 1024;

thread_local! {
    static BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; CHUNK].into_boxed_slice());
}

/// Whether the relay uses Linux `splice(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpliceMode {
    /// Copy small traffic; splice a direction once it carries bulk data.
    #[default]
    Auto,
    /// Splice every direction from its first byte.
    On,
    /// Always copy through user space.
    Off,
}

impl SpliceMode {
    pub const ALL: [SpliceMode; 3] = [SpliceMode::Auto, SpliceMode::On, SpliceMode::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            SpliceMode::Auto => "auto",
            SpliceMode::On => "on",
            SpliceMode::Off => "off",
        }
    }
}

impl std::str::FromStr for SpliceMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        SpliceMode::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("`{s}` is not a splice mode (auto, on, off)"))
    }
}

impl std::fmt::Display for SpliceMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Relays until both directions are finished, or either fails. Await it by `&mut` to
/// read [`Relay::to_backend`] and [`Relay::to_client`] afterwards, whatever the outcome.
///
/// It is a hand-written future rather than two `async` loops because it lives in every
/// open connection: it holds two socket references and two small `Direction`s, and it
/// waits through the sockets' own read/write waker slots (each direction uses the reader
/// slot of its source and the writer slot of its destination, so no slot is shared).
pub struct Relay<'a> {
    client: &'a TcpStream,
    backend: &'a TcpStream,
    up: Direction,
    down: Direction,
}

impl<'a> Relay<'a> {
    pub fn new(client: &'a TcpStream, backend: &'a TcpStream, mode: SpliceMode) -> Self {
        Relay {
            client,
            backend,
            up: Direction::new(mode),
            down: Direction::new(mode),
        }
    }

    /// Bytes relayed from the client to the backend so far.
    pub fn to_backend(&self) -> u64 {
        self.up.moved
    }

    /// Bytes relayed from the backend to the client so far.
    pub fn to_client(&self) -> u64 {
        self.down.moved
    }
}

impl Future for Relay<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.up.done {
            let last = this.down.done;
            ready_or_err(this.up.poll(cx, this.client, this.backend, last))?;
        }
        if !this.down.done {
            let last = this.up.done;
            ready_or_err(this.down.poll(cx, this.backend, this.client, last))?;
        }
        if this.up.done && this.down.done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

/// Turns a direction's `Ready(Err)` into an early return; `Pending` and `Ready(Ok)` (which
/// the direction records in `done`) carry on to the other direction.
fn ready_or_err(p: Poll<io::Result<()>>) -> io::Result<()> {
    match p {
        Poll::Ready(Err(e)) => Err(e),
        _ => Ok(()),
    }
}

/// One direction's state: bytes the destination has not taken yet, and the engine.
struct Direction {
    mode: SpliceMode,
    splicing: bool,
    done: bool,
    moved: u64,
    /// Copy engine: bytes read but not yet written, owned only under backpressure.
    pending: Vec<u8>,
    /// Splice engine: the pipe, and how many bytes wait in it.
    pipe: Option<splice::Pipe>,
    in_pipe: usize,
}

impl Direction {
    fn new(mode: SpliceMode) -> Self {
        Direction {
            mode,
            splicing: mode == SpliceMode::On && splice::AVAILABLE,
            done: false,
            moved: 0,
            pending: Vec::new(),
            pipe: None,
            in_pipe: 0,
        }
    }

    /// `last`: the other direction is over, so this one's end is the relay's.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        last: bool,
    ) -> Poll<io::Result<()>> {
        loop {
            // Never read more until what was read has been written: that is the
            // backpressure that keeps a fast sender from filling the proxy's memory.
            if !self.pending.is_empty() || self.in_pipe > 0 {
                ready!(to.poll_write_ready(cx))?;
                match self.flush(to) {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            ready!(from.poll_read_ready(cx))?;
            let step = if self.splicing {
                self.splice_step(from, to)
            } else {
                self.copy_step(from, to)
            };
            match step {
                Ok(0) => {
                    // Half-close: tell the destination no more is coming; the other
                    // direction carries on. It may already be gone (ENOTCONN), which is not
                    // this direction's failure. The last direction leaves it to the close.
                    if !last {
                        let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                    }
                    self.done = true;
                    self.pending = Vec::new();
                    self.pipe = None;
                    return Poll::Ready(Ok(()));
                }
                Ok(n) => {
                    self.moved += n as u64;
                    if self.mode == SpliceMode::Auto && n == CHUNK && splice::AVAILABLE {
                        self.splicing = true;
                    }
                }
                // Readiness was stale; the try_* call cleared it, so the next poll waits.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Reads once into the per-thread buffer and writes as much as the destination takes
    /// now; the rest moves to `pending`. Returns bytes read (0 at end of stream).
    fn copy_step(&mut self, from: &TcpStream, to: &TcpStream) -> io::Result<usize> {
        BUFFER.with_borrow_mut(|buf| {
            let n = read_draining(from, buf)?;
            let mut written = 0;
            while written < n {
                match to.try_write(&buf[written..n]) {
                    Ok(k) => written += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            // The thread's buffer cannot wait for the destination: another connection on
            // this thread will need it. What is left moves to this connection.
            self.pending.extend_from_slice(&buf[written..n]);
            Ok(n)
        })
    }

    fn splice_step(&mut self, from: &TcpStream, to: &TcpStream) -> io::Result<usize> {
        let pipe = match &mut self.pipe {
            Some(p) => p,
            None => match splice::Pipe::new() {
                Ok(pipe) => self.pipe.insert(pipe),
                // Out of descriptors (EMFILE/ENFILE) or pipe memory: a healthy transfer
                // must not fail for want of an optimisation. Copy this direction instead.
                Err(e) => {
                    tracing::debug!(error = %e, "no pipe for splice(2); copying instead");
                    self.splicing = false;
                    self.mode = SpliceMode::Off;
                    return self.copy_step(from, to);
                }
            },
        };
        let n = pipe.fill(from)?;
        self.in_pipe = n;
        if n > 0 {
            // Whatever the destination does not take now waits in the pipe.
            match pipe.drain(to, n) {
                Ok(k) => self.in_pipe -= k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Writes what is waiting; Ok once all of it is written.
    fn flush(&mut self, to: &TcpStream) -> io::Result<()> {
        if let (Some(pipe), left @ 1..) = (&mut self.pipe, self.in_pipe) {
            self.in_pipe -= pipe.drain(to, left)?;
            return Ok(());
        }
        let k = to.try_write(&self.pending)?;
        self.pending.drain(..k);
        if self.pending.is_empty() {
            // Backpressure is over: give the memory back rather than keep it while idle.
            self.pending = Vec::new();
        }
        Ok(())
    }
}

/// Reads once into `buf`. A read shorter than `buf` has emptied the socket's receive queue,
/// so it also clears the socket's read readiness (as tokio's own `poll_read` does, and
/// `try_read` does not): the next poll then waits for the next edge instead of trying a
/// read that can only fail with EAGAIN. That is one system call fewer per message.
///
/// Clearing is safe against a race: tokio clears the readiness only if no readiness event
/// has arrived since it was observed, so bytes that land after the read still wake us.
fn read_draining(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    let read = from.try_io(Interest::READABLE, || {
        use std::io::Read;
        got = (&*socket2::SockRef::from(from)).read(buf)?;
        if got > 0 && got < buf.len() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(got)
    });
    match read {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

#[cfg(target_os = "linux")]
mod splice {
    //! `splice(2)` through a pipe, with `rustix` doing the system calls safely.

    use std::io;
    use std::os::fd::OwnedFd;

    use rustix::pipe::{pipe_with, PipeFlags, SpliceFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::CHUNK;

    pub const AVAILABLE: bool = true;

    /// A kernel pipe used as the buffer between two sockets. It is only ever filled when
    /// empty, so "would block" while filling always means the socket had nothing to read.
    pub struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            let (read, write) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
            Ok(Pipe { read, write })
        }

        /// Splices what `from` has (up to one chunk) into the empty pipe; 0 at end of stream.
        pub fn fill(&mut self, from: &TcpStream) -> io::Result<usize> {
            from.try_io(Interest::READABLE, || splice(from, &self.write, CHUNK))
        }

        /// Splices up to `len` bytes from the pipe into `to`; returns how many went.
        pub fn drain(&mut self, to: &TcpStream, len: usize) -> io::Result<usize> {
            to.try_io(Interest::WRITABLE, || splice(&self.read, to, len))
        }
    }

    fn splice(
        from: impl std::os::fd::AsFd,
        to: impl std::os::fd::AsFd,
        len: usize,
    ) -> io::Result<usize> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        Ok(rustix::pipe::splice(from, None, to, None, len, flags)?)
    }
}

#[cfg(not(target_os = "linux"))]
mod splice {
    //! No splice(2) here: every direction copies.
    use std::io;
    use tokio::net::TcpStream;

    pub const AVAILABLE: bool = false;

    pub enum Pipe {}

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "splice(2) is Linux-only",
            ))
        }
        pub fn fill(&mut self, _: &TcpStream) -> io::Result<usize> {
            match *self {}
        }
        pub fn drain(&mut self, _: &TcpStream, _: usize) -> io::Result<usize> {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests;

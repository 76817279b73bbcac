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
//! relay ends when both directions have. An error in either direction ends both at once.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpStream;

/// Bytes moved per read, and the size of the per-thread copy buffer.
const CHUNK: usize = 64 * 1024;

thread_local! {
    static BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; CHUNK].into_boxed_slice());
}

/// Whether the relay uses Linux `splice(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SpliceMode {
    /// Copy small traffic; splice a direction once it carries bulk data.
    #[default]
    Auto,
    /// Splice every direction from its first byte.
    On,
    /// Always copy through user space.
    Off,
}

/// Bytes moved in each direction so far; readable even if the relay ended with an error.
#[derive(Debug, Default)]
pub struct Counts {
    pub to_backend: AtomicU64,
    pub to_client: AtomicU64,
}

/// Relays until both directions are finished, or either fails.
pub async fn relay(
    client: &TcpStream,
    backend: &TcpStream,
    mode: SpliceMode,
    counts: &Counts,
) -> io::Result<()> {
    tokio::try_join!(
        one_way(client, backend, mode, &counts.to_backend),
        one_way(backend, client, mode, &counts.to_client),
    )?;
    Ok(())
}

/// What one read-and-forward step did.
enum Step {
    /// `from` reached end of stream.
    Eof,
    /// `moved` bytes were read; `left` of them still wait in `pending` (copy) or in the
    /// pipe (splice) for the destination to accept them.
    Moved {
        moved: usize,
        left: usize,
        pending: Option<Vec<u8>>,
    },
}

async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    mode: SpliceMode,
    moved_total: &AtomicU64,
) -> io::Result<()> {
    let mut pipe: Option<splice::Pipe> = None;
    let mut splicing = mode == SpliceMode::On && splice::AVAILABLE;
    loop {
        from.readable().await?;
        let step = if splicing {
            let pipe = match &mut pipe {
                Some(p) => p,
                None => pipe.insert(splice::Pipe::new()?),
            };
            pipe.fill_and_drain(from, to)
        } else {
            copy_step(from, to)
        };
        let (moved, left, pending) = match step {
            Ok(Step::Eof) => {
                // Half-close: tell the destination no more is coming, keep the other way open.
                // It may already be gone (ENOTCONN), which is not this direction's failure.
                let _ = socket2::SockRef::from(to).shutdown(Shutdown::Write);
                return Ok(());
            }
            Ok(Step::Moved {
                moved,
                left,
                pending,
            }) => (moved, left, pending),
            // Readiness was stale; `try_read`/`try_io` has cleared it, so wait again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        moved_total.fetch_add(moved as u64, Ordering::Relaxed);
        if left > 0 {
            match (&mut pipe, pending) {
                (_, Some(bytes)) => write_pending(to, &bytes).await?,
                (Some(pipe), None) => pipe.drain_all(to, left).await?,
                (None, None) => unreachable!("pending bytes are in a buffer or a pipe"),
            }
        }
        if mode == SpliceMode::Auto && moved == CHUNK && splice::AVAILABLE {
            splicing = true;
        }
    }
}

/// Reads once into the per-thread buffer and writes as much as the destination takes now.
fn copy_step(from: &TcpStream, to: &TcpStream) -> io::Result<Step> {
    BUFFER.with_borrow_mut(|buf| {
        let n = from.try_read(buf)?;
        if n == 0 {
            return Ok(Step::Eof);
        }
        let mut written = 0;
        while written < n {
            match to.try_write(&buf[written..n]) {
                Ok(k) => written += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        // The thread's buffer cannot be held across an await: another connection on this
        // thread will need it. What is left moves to the connection's own allocation.
        let pending = (written < n).then(|| buf[written..n].to_vec());
        Ok(Step::Moved {
            moved: n,
            left: n - written,
            pending,
        })
    })
}

async fn write_pending(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(k) => bytes = &bytes[k..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(target_os = "linux")]
mod splice {
    //! The one place with `unsafe`: three libc calls (`pipe2`, and `splice` in and out),
    //! on descriptors this module owns or borrows for the duration of the call.

    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::{Step, CHUNK};

    pub const AVAILABLE: bool = true;

    /// A kernel pipe used as the buffer between two sockets. It is only ever filled when
    /// empty, so "would block" while filling always means the socket had nothing to read.
    pub struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            let mut fds = [0; 2];
            // SAFETY: `fds` is a valid array of two c_ints for pipe2 to fill.
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
            Ok(unsafe {
                Pipe {
                    read: OwnedFd::from_raw_fd(fds[0]),
                    write: OwnedFd::from_raw_fd(fds[1]),
                }
            })
        }

        /// Splices what `from` has into the pipe, then as much as `to` takes out of it.
        pub fn fill_and_drain(&mut self, from: &TcpStream, to: &TcpStream) -> io::Result<Step> {
            let n = from.try_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), self.write.as_raw_fd(), CHUNK)
            })?;
            if n == 0 {
                return Ok(Step::Eof);
            }
            let mut left = n;
            while left > 0 {
                match to.try_io(Interest::WRITABLE, || {
                    splice(self.read.as_raw_fd(), to.as_raw_fd(), left)
                }) {
                    Ok(k) => left -= k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(Step::Moved {
                moved: n,
                left,
                pending: None,
            })
        }

        /// Waits for `to` and splices the `left` bytes still in the pipe into it.
        pub async fn drain_all(&mut self, to: &TcpStream, mut left: usize) -> io::Result<()> {
            while left > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || {
                    splice(self.read.as_raw_fd(), to.as_raw_fd(), left)
                }) {
                    Ok(k) => left -= k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }

    fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
        // SAFETY: both descriptors are open for the duration of the call (owned by the
        // pipe or borrowed from a live TcpStream); null offsets are valid for sockets and
        // pipes.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod splice {
    //! No splice(2) here: every direction copies.
    use std::io;
    use tokio::net::TcpStream;

    use super::Step;

    pub const AVAILABLE: bool = false;

    pub enum Pipe {}

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "splice(2) is Linux-only",
            ))
        }
        pub fn fill_and_drain(&mut self, _: &TcpStream, _: &TcpStream) -> io::Result<Step> {
            match *self {}
        }
        pub async fn drain_all(&mut self, _: &TcpStream, _: usize) -> io::Result<()> {
            match *self {}
        }
    }
}

//! Throwaway io_uring prototype of zmq-grpc-proxy's data path (issue 13 experiment).
//!
//! One thread per core, each with its own ring (SINGLE_ISSUER | DEFER_TASKRUN) and its own
//! SO_REUSEPORT listener armed with one multishot accept. Per connection: recv until the
//! prefix decides (ZMTP signature 0xFF .. 0x7F in 10 bytes, or the 24-byte HTTP/2 preface),
//! socket() + TCP_NODELAY (2 plain syscalls), connect linked to the send of the prefix,
//! then two independent recv -> send loops. A FIN from one side becomes a shutdown(WR) of
//! the other (IORING_OP_SHUTDOWN); when both directions have ended both sockets are closed
//! (IORING_OP_CLOSE, the last FIN is the close's). Errors: shutdown(RDWR) both sockets so
//! that pending operations complete, then close once nothing is in flight.
//!
//! Not done (the real proxy does): detect timeout, fallback route, TLS/SNI routing, PROXY
//! protocol, idle timeouts, TCP keepalive, max-connections / fd budget, splice, metrics,
//! admin endpoint, reload, logging, graceful drain.

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const BUF: usize = 64 * 1024;
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const ACCEPT: u64 = u64::MAX;
const IGNORE: u64 = u64::MAX - 1;
// op kinds, low 8 bits of user_data
const RECV_CLIENT: u64 = 1;
const RECV_BACKEND: u64 = 2;
const SEND_BACKEND: u64 = 3;
const SEND_CLIENT: u64 = 4;
const CONNECT: u64 = 5;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Route {
    Zmq,
    Grpc,
}

enum Detect {
    More,
    Reject,
    Route(Route),
}

fn detect(b: &[u8]) -> Detect {
    if b.is_empty() {
        return Detect::More;
    }
    if b[0] == 0xFF {
        // Route on exactly the 10-byte signature: libzmq waits after it.
        if b.len() < 10 {
            return Detect::More;
        }
        return if b[9] == 0x7F {
            Detect::Route(Route::Zmq)
        } else {
            Detect::Reject
        };
    }
    let n = b.len().min(H2_PREFACE.len());
    if b[..n] != H2_PREFACE[..n] {
        return Detect::Reject;
    }
    if n == H2_PREFACE.len() {
        Detect::Route(Route::Grpc)
    } else {
        Detect::More
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Reading,
    Writing,
    Done,
}

struct Dir {
    buf: Box<[u8]>,
    len: usize,
    off: usize,
    st: St,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Detect,
    Connecting,
    Relay,
}

struct Conn {
    client: RawFd,
    backend: RawFd,
    phase: Phase,
    c2b: Dir,
    b2c: Dir,
    pending: u32,
    aborting: bool,
    live: bool,
}

impl Conn {
    fn new() -> Self {
        let d = || Dir {
            buf: vec![0u8; BUF].into_boxed_slice(),
            len: 0,
            off: 0,
            st: St::Reading,
        };
        Conn {
            client: -1,
            backend: -1,
            phase: Phase::Detect,
            c2b: d(),
            b2c: d(),
            pending: 0,
            aborting: false,
            live: false,
        }
    }
}

struct Worker {
    ring: IoUring,
    listener: RawFd,
    conns: Vec<Conn>,
    free: Vec<u32>,
    zmq: SockAddr,
    grpc: SockAddr,
}

fn ud(idx: u32, op: u64) -> u64 {
    ((idx as u64) << 8) | op
}

impl Worker {
    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every buffer and address an entry points to lives in `self.conns` (boxed,
            // never freed while an op is in flight) or in `self.zmq` / `self.grpc`.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            self.ring.submit().expect("submit");
        }
    }

    fn arm_accept(&mut self) {
        let e = opcode::AcceptMulti::new(types::Fd(self.listener))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(ACCEPT);
        self.push(e);
    }

    fn alloc(&mut self) -> u32 {
        if let Some(i) = self.free.pop() {
            return i;
        }
        self.conns.push(Conn::new());
        (self.conns.len() - 1) as u32
    }

    fn recv(&mut self, idx: u32, from_client: bool) {
        let c = &mut self.conns[idx as usize];
        let (fd, d, op) = if from_client {
            (c.client, &mut c.c2b, RECV_CLIENT)
        } else {
            (c.backend, &mut c.b2c, RECV_BACKEND)
        };
        // In the detect phase the client's bytes accumulate after what was read already.
        let start = if from_client && c.phase == Phase::Detect { d.len } else { 0 };
        if start == 0 {
            d.len = 0;
        }
        d.off = 0;
        d.st = St::Reading;
        let ptr = unsafe { d.buf.as_mut_ptr().add(start) };
        let len = (BUF - start) as u32;
        c.pending += 1;
        let e = opcode::Recv::new(types::Fd(fd), ptr, len)
            .build()
            .user_data(ud(idx, op));
        self.push(e);
    }

    fn send(&mut self, idx: u32, to_backend: bool, flags: squeue::Flags) {
        let c = &mut self.conns[idx as usize];
        let (fd, d, op) = if to_backend {
            (c.backend, &mut c.c2b, SEND_BACKEND)
        } else {
            (c.client, &mut c.b2c, SEND_CLIENT)
        };
        d.st = St::Writing;
        let ptr = unsafe { d.buf.as_ptr().add(d.off) };
        let len = (d.len - d.off) as u32;
        c.pending += 1;
        let e = opcode::Send::new(types::Fd(fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .flags(flags)
            .user_data(ud(idx, op));
        self.push(e);
    }

    fn abort(&mut self, idx: u32) {
        let c = &mut self.conns[idx as usize];
        if c.aborting {
            return;
        }
        c.aborting = true;
        // Wakes whatever is still pending on either socket (recv -> 0, send -> EPIPE).
        unsafe {
            libc::shutdown(c.client, libc::SHUT_RDWR);
            if c.backend >= 0 {
                libc::shutdown(c.backend, libc::SHUT_RDWR);
            }
        }
    }

    /// Frees the slot once nothing is in flight and the connection is over.
    fn maybe_finish(&mut self, idx: u32) {
        let c = &mut self.conns[idx as usize];
        let over = c.aborting || (c.c2b.st == St::Done && c.b2c.st == St::Done);
        if !over || c.pending > 0 {
            return;
        }
        let (a, b) = (c.client, c.backend);
        c.live = false;
        c.client = -1;
        c.backend = -1;
        self.push(opcode::Close::new(types::Fd(a)).build().user_data(IGNORE));
        if b >= 0 {
            self.push(opcode::Close::new(types::Fd(b)).build().user_data(IGNORE));
        }
        self.free.push(idx);
    }

    /// One direction read EOF: FIN the other side, unless the other direction is over too
    /// (then the close sends it).
    fn dir_eof(&mut self, idx: u32, from_client: bool) {
        let c = &mut self.conns[idx as usize];
        let (d, other, peer) = if from_client {
            (&mut c.c2b, c.b2c.st, c.backend)
        } else {
            (&mut c.b2c, c.c2b.st, c.client)
        };
        d.st = St::Done;
        if other != St::Done {
            // A plain syscall, not IORING_OP_SHUTDOWN: the kernel always punts that opcode to
            // an io-wq worker thread (v1 did; 14.5% of the process's samples were those
            // workers waking, shutting down and sleeping again).
            unsafe { libc::shutdown(peer, libc::SHUT_WR) };
        }
    }

    fn connect(&mut self, idx: u32, route: Route) {
        let addr = match route {
            Route::Zmq => &self.zmq,
            Route::Grpc => &self.grpc,
        };
        let fam = addr.family() as i32;
        let (aptr, alen) = (addr.as_ptr() as *const libc::sockaddr, addr.len());
        let fd = unsafe { libc::socket(fam, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            self.abort(idx);
            return;
        }
        let one: libc::c_int = 1;
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
        }
        let c = &mut self.conns[idx as usize];
        c.backend = fd;
        c.phase = Phase::Connecting;
        c.pending += 1;
        let e = opcode::Connect::new(types::Fd(fd), aptr, alen)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(ud(idx, CONNECT));
        self.push(e);
        // The prefix, linked: sent as soon as the connect completes, no round trip here.
        self.conns[idx as usize].c2b.off = 0;
        self.send(idx, true, squeue::Flags::empty());
    }

    fn on_cqe(&mut self, user_data: u64, res: i32, flags: u32) {
        if user_data == IGNORE {
            return;
        }
        if user_data == ACCEPT {
            if res >= 0 {
                let idx = self.alloc();
                let c = &mut self.conns[idx as usize];
                c.client = res;
                c.backend = -1;
                c.phase = Phase::Detect;
                c.c2b.len = 0;
                c.c2b.st = St::Reading;
                c.b2c.st = St::Reading;
                c.b2c.len = 0;
                c.pending = 0;
                c.aborting = false;
                c.live = true;
                self.recv(idx, true);
            }
            if !io_uring::cqueue::more(flags) {
                self.arm_accept();
            }
            return;
        }
        let idx = (user_data >> 8) as u32;
        let op = user_data & 0xFF;
        {
            let c = &mut self.conns[idx as usize];
            debug_assert!(c.live);
            c.pending -= 1;
            if c.aborting {
                return self.maybe_finish(idx);
            }
        }
        match op {
            RECV_CLIENT if self.conns[idx as usize].phase == Phase::Detect => {
                if res <= 0 {
                    self.abort(idx);
                } else {
                    let c = &mut self.conns[idx as usize];
                    c.c2b.len += res as usize;
                    match detect(&c.c2b.buf[..c.c2b.len]) {
                        Detect::More if c.c2b.len < BUF => self.recv(idx, true),
                        Detect::More | Detect::Reject => self.abort(idx),
                        Detect::Route(r) => self.connect(idx, r),
                    }
                }
            }
            RECV_CLIENT | RECV_BACKEND => {
                let from_client = op == RECV_CLIENT;
                if res < 0 {
                    self.abort(idx);
                } else if res == 0 {
                    self.dir_eof(idx, from_client);
                } else {
                    let c = &mut self.conns[idx as usize];
                    let d = if from_client { &mut c.c2b } else { &mut c.b2c };
                    d.len = res as usize;
                    d.off = 0;
                    self.send(idx, from_client, squeue::Flags::empty());
                }
            }
            SEND_BACKEND | SEND_CLIENT => {
                let to_backend = op == SEND_BACKEND;
                if res < 0 {
                    self.abort(idx);
                } else {
                    let c = &mut self.conns[idx as usize];
                    let d = if to_backend { &mut c.c2b } else { &mut c.b2c };
                    d.off += res as usize;
                    if d.off < d.len {
                        self.send(idx, to_backend, squeue::Flags::empty());
                    } else {
                        if to_backend && c.phase == Phase::Connecting {
                            // The connect CQE comes first for a link; be safe either way.
                            c.phase = Phase::Relay;
                        }
                        self.recv(idx, to_backend);
                    }
                }
            }
            CONNECT => {
                if res < 0 {
                    self.abort(idx);
                } else {
                    let c = &mut self.conns[idx as usize];
                    if c.phase == Phase::Connecting {
                        c.phase = Phase::Relay;
                    }
                    self.recv(idx, false);
                }
            }
            _ => unreachable!(),
        }
        self.maybe_finish(idx);
    }

    fn run(&mut self) -> ! {
        self.arm_accept();
        let mut batch: Vec<(u64, i32, u32)> = Vec::with_capacity(1024);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => panic!("io_uring_enter: {e}"),
            }
            batch.clear();
            batch.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(u, r, f) in &batch {
                self.on_cqe(u, r, f);
            }
        }
    }
}

fn listener(addr: SocketAddr) -> RawFd {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.set_tcp_nodelay(true).unwrap(); // inherited by accepted sockets
    s.bind(&addr.into()).unwrap();
    s.listen(4096).unwrap();
    s.into_raw_fd()
}

fn main() {
    let mut listen = None;
    let mut zmq = None;
    let mut grpc = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned();
        match args[i].as_str() {
            "--listen" => listen = v,
            "--zmq-backend" => zmq = v,
            "--grpc-backend" => grpc = v,
            _ => {
                i += 1; // other flags ignored
                continue;
            }
        }
        i += 2;
    }
    let listen: SocketAddr = listen.expect("--listen").parse().expect("--listen ADDR");
    let zmq: SocketAddr = zmq.expect("--zmq-backend").parse().expect("--zmq-backend ADDR");
    let grpc: SocketAddr = grpc.expect("--grpc-backend").parse().expect("--grpc-backend ADDR");
    let threads: usize = std::env::var("URING_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let entries: u32 = 4096;
    // Bind every listener before serving, so the port is fully set up when it answers.
    let fds: Vec<RawFd> = (0..threads).map(|_| listener(listen)).collect();
    let mut handles = Vec::new();
    for fd in fds {
        handles.push(std::thread::spawn(move || {
            let ring = IoUring::builder()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_cqsize(entries * 4)
                .build(entries)
                .expect("io_uring setup");
            let mut w = Worker {
                ring,
                listener: fd,
                conns: Vec::new(),
                free: Vec::new(),
                zmq: zmq.into(),
                grpc: grpc.into(),
            };
            w.run()
        }));
    }
    for h in handles {
        let _ = h.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn detects() {
        let sig = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];
        assert!(matches!(detect(&sig[..9]), Detect::More));
        assert!(matches!(detect(&sig), Detect::Route(Route::Zmq)));
        assert!(matches!(detect(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Detect::Reject));
        assert!(matches!(detect(b"PRI * HTTP"), Detect::More));
        assert!(matches!(detect(H2_PREFACE), Detect::Route(Route::Grpc)));
        assert!(matches!(detect(b"POST /"), Detect::Reject));
        assert!(matches!(detect(b"P"), Detect::More));
    }
}

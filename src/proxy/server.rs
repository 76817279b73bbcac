//! The accept loop, the connection limit and the drain.
//!
//! Every accepted connection gets its own task (a client that never speaks only ever holds
//! up itself), tracked by a [`TaskTracker`]. On shutdown the listener closes at once (the
//! port refuses new connections), readiness is cleared, and [`run`] waits for the tracked
//! tasks up to the drain timeout; then it cancels `cut`, every connection still open is
//! reset and observed, and `run` returns only once no connection task is left.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::conn;
use super::observe;
use super::settings::ProxyConfig;
use super::sweep::Sweeper;

/// Serves `listener` until `shutdown` resolves, then stops accepting (the port closes) and
/// drains: open connections get `config.limits.drain_timeout` to finish, then are reset.
/// Returns once every connection task has ended.
///
/// Binaries bind the listener and pass a signal future; tests bind port 0 and pass a
/// oneshot. Connections are spawned on the caller's runtime. Accept errors (out of file
/// descriptors, aborted handshakes) are logged and retried with back-off: they never end
/// the proxy.
pub async fn run(
    listener: TcpListener,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(config.limits.max_connections, 1));
    let source = Source::Listener {
        listener: listener.into_std()?,
        helpers: Vec::new(),
        load: None,
    };
    run_shared(source, config, shared, TaskTracker::new(), shutdown).await
}

/// What the threads of one process share: one set of connection permits, so
/// `--max-connections` stays a limit for the process, and the count of threads still
/// draining, so that "all connections closed" is logged once, by the last of them, when it
/// is true of the whole process.
pub(super) struct Shared {
    permits: Arc<Semaphore>,
    max_connections: u32,
    threads: usize,
    draining: AtomicUsize,
}

impl Shared {
    pub(super) fn new(max_connections: u32, threads: usize) -> Self {
        Shared {
            permits: Arc::new(Semaphore::new(max_connections as usize)),
            max_connections,
            threads,
            draining: AtomicUsize::new(threads),
        }
    }

    /// The process's connection permits, one per open connection.
    #[cfg(test)]
    pub(super) fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// Connections open in the whole process (each holds a permit).
    fn open(&self) -> usize {
        self.max_connections as usize - self.permits.available_permits()
    }
}

/// Where one thread's connections come from.
pub(super) enum Source {
    /// It accepts them from the listener. While it is saturated (`load`), it hands new
    /// ones to the least busy of `helpers` instead of serving them itself.
    Listener {
        listener: std::net::TcpListener,
        helpers: Vec<Helper>,
        load: Option<Arc<Load>>,
    },
    /// The accepting thread hands them over; the thread serves until it stops doing so.
    Handed(mpsc::UnboundedReceiver<Accepted>),
}

/// A connection accepted on one thread for another to serve, with its permit.
pub(super) struct Accepted {
    client: std::net::TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
}

impl Accepted {
    #[cfg(test)]
    pub(super) fn new(
        client: std::net::TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        Accepted {
            client,
            peer,
            permit,
        }
    }
}

/// Another thread the accepting one may hand connections to: its inbox, and its tracker,
/// whose length says how many connections it is serving.
pub(super) struct Helper {
    pub(super) inbox: mpsc::UnboundedSender<Accepted>,
    pub(super) tracker: TaskTracker,
}

/// Whether the accepting thread has work waiting: its runtime's park and unpark hooks
/// record when it last came out of idleness. A thread that has not been idle once for
/// [`Load::SATURATED`] is saturated: everything it takes on now waits behind what it has.
#[derive(Debug)]
pub struct Load {
    base: Instant,
    /// Nanoseconds after `base` at which it last unparked, plus one; 0 while parked.
    busy_since: AtomicU64,
}

impl Load {
    /// Busy this long without a moment of idleness: new connections go to other threads.
    pub const SATURATED: Duration = Duration::from_millis(1);

    pub fn new() -> Self {
        Load {
            base: Instant::now(),
            busy_since: AtomicU64::new(0),
        }
    }

    /// The runtime's `on_thread_unpark` hook: work has arrived.
    pub fn unparked(&self) {
        let now = self.base.elapsed().as_nanos() as u64;
        self.busy_since.store(now + 1, Ordering::Relaxed);
    }

    /// The runtime's `on_thread_park` hook: nothing left to do.
    pub fn parked(&self) {
        self.busy_since.store(0, Ordering::Relaxed);
    }

    /// Whether the thread has been busy for [`Load::SATURATED`] or more, at `now`.
    pub fn saturated_at(&self, now: Instant) -> bool {
        match self.busy_since.load(Ordering::Relaxed) {
            0 => false,
            since => {
                let now = now.saturating_duration_since(self.base).as_nanos() as u64 + 1;
                now.saturating_sub(since) >= Self::SATURATED.as_nanos() as u64
            }
        }
    }
}

impl Default for Load {
    fn default() -> Self {
        Load::new()
    }
}

/// [`run`] as one of the threads that share `shared` (`--scheduler per-core`), serving the
/// connections from `source` and tracking them in `tracker`.
pub(super) async fn run_shared(
    source: Source,
    config: ProxyConfig,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = Arc::new(Server {
        permits: Arc::clone(&shared.permits),
        shared,
        sweeper: Sweeper::new(config.limits.idle_timeout, config.limits.tcp_keepalive),
        config,
        next_id: AtomicU64::new(1),
        tracker,
        refusals: Default::default(),
    });
    let (listener, helpers, load) = match source {
        Source::Listener {
            listener,
            helpers,
            load,
        } => (listener, helpers, load),
        Source::Handed(inbox) => {
            // Until the accepting thread stops accepting and drops its end; whatever it
            // handed over before is in the inbox and is served.
            tokio::select! {
                _ = serve_handed(inbox, &server) => {}
                _ = server.sweeper.tick() => {}
            }
            tokio::select! {
                _ = server.drain() => {}
                _ = server.sweeper.tick() => {}
            }
            return Ok(());
        }
    };
    let addr = listener.local_addr()?;
    set_inherited_options(&listener);
    let metrics = &server.config.metrics;
    metrics
        .max_connections
        .set(i64::from(server.config.limits.max_connections));
    // State first, then the line that announces it.
    server.config.metrics.set_ready(true);
    let routes = server.config.routes.current();
    let max_connections = server.config.limits.max_connections;
    match server.shared.threads {
        1 => info!(%addr, zmq_backend = %routes.zmq, grpc_backend = %routes.grpc,
                   max_connections, "listening"),
        // Per-core: the threads that serve this listener.
        threads => info!(%addr, zmq_backend = %routes.zmq, grpc_backend = %routes.grpc,
                         max_connections, threads, "listening"),
    }
    let delay = server.config.limits.shutdown_delay;
    let stop = async {
        shutdown.await;
        if !delay.is_zero() {
            // Not ready first, so balancers polling /readyz stop sending; keep accepting
            // what they still send until the delay is over, then close the port.
            server.config.metrics.set_ready(false);
            info!(
                shutdown_delay_ms = delay.as_millis() as u64,
                "shutdown requested: not ready; still accepting until the shutdown delay ends"
            );
            tokio::time::sleep(delay).await;
        }
    };
    let handoff = Handoff { helpers, load };
    tokio::select! {
        _ = accept_loop(listener, handoff, &server, stop) => {}
        _ = server.sweeper.tick() => {}
    }
    // Idle connections are still closed while draining.
    tokio::select! {
        _ = server.drain() => {}
        _ = server.sweeper.tick() => {}
    }
    Ok(())
}

/// Serves what the accepting thread hands over, until it stops.
async fn serve_handed(mut inbox: mpsc::UnboundedReceiver<Accepted>, server: &Arc<Server>) {
    while let Some(accepted) = inbox.recv().await {
        server.serve(accepted.client, accepted.peer, accepted.permit);
    }
}

/// The accepting thread's choice, per connection: serve it here, or, while this thread is
/// saturated, hand it to the helper serving the fewest connections.
struct Handoff {
    helpers: Vec<Helper>,
    load: Option<Arc<Load>>,
}

impl Handoff {
    /// Hands `accepted` over if this thread is saturated and a helper takes it; otherwise
    /// gives it back to be served here.
    fn hand_over(&self, accepted: Accepted) -> Option<Accepted> {
        let Some(load) = &self.load else {
            return Some(accepted);
        };
        if self.helpers.is_empty() || !load.saturated_at(Instant::now()) {
            return Some(accepted);
        }
        let helper = self.helpers.iter().min_by_key(|h| h.tracker.len())?;
        // A helper that has stopped gives the connection back.
        helper.inbox.send(accepted).err().map(|e| e.0)
    }
}

/// What the accept loop shares with the connection tasks.
struct Server {
    config: ProxyConfig,
    /// One permit per open connection (the process's, `shared.permits`).
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    tracker: TaskTracker,
    /// Wakes connections to check for idleness, and to be reset at the drain timeout.
    sweeper: Sweeper,
    refusals: std::sync::Mutex<Refusals>,
}

impl Server {
    fn open_connections(&self) -> usize {
        self.tracker.len()
    }

    /// A connection just accepted: refused at the limit, else handed to another thread
    /// (see [`Handoff`]) or served here.
    fn admit(self: &Arc<Self>, client: std::net::TcpStream, peer: SocketAddr, handoff: &Handoff) {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            // Closing at once tells the client to go elsewhere now, rather than after a
            // queue it cannot see.
            drop(client);
            observe::refused(&self.config.metrics);
            let mut refusals = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
            refusals.note(peer, self.config.limits.max_connections);
            return;
        };
        let accepted = Accepted {
            client,
            peer,
            permit,
        };
        if let Some(Accepted {
            client,
            peer,
            permit,
        }) = handoff.hand_over(accepted)
        {
            self.serve(client, peer, permit);
        } else {
            self.config.metrics.handed_over.inc();
        }
    }

    /// Serves one connection on this thread, holding `permit` until it ends.
    fn serve(
        self: &Arc<Self>,
        client: std::net::TcpStream,
        peer: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // route, backend and the local port toward the backend are filled in as they
        // become known, so every line of the connection can be matched to the backend's log.
        let span = tracing::info_span!(
            "conn",
            id,
            %peer,
            client = tracing::field::Empty,
            route = tracing::field::Empty,
            backend = tracing::field::Empty,
            local_port = tracing::field::Empty,
        );
        let server = Arc::clone(self);
        self.tracker.spawn(
            async move {
                conn::handle(client, peer, &server.config, &server.sweeper).await;
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Waits up to the drain timeout for every connection task, then resets the rest and
    /// waits for them to be observed.
    async fn drain(&self) {
        self.tracker.close();
        let timeout = self.config.limits.drain_timeout;
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_err()
        {
            let open = self.open_connections();
            self.sweeper.cut();
            warn!(
                open,
                drain_timeout_ms = timeout.as_millis() as u64,
                "drain timeout reached; resetting remaining connections"
            );
            self.tracker.wait().await;
        }
        if self.shared.draining.fetch_sub(1, Ordering::AcqRel) == 1 {
            info!("all connections closed");
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    handoff: Handoff,
    server: &Arc<Server>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // Accepted sockets are not registered with the runtime here (as `TcpListener::accept`
    // would) but by the connection, after it has read what the client already sent
    // (`conn`): registering a socket with data waiting reports it readable, and the relay
    // would later spend a read (EAGAIN) and a wake-up on bytes detection already took.
    let listener = match register(listener) {
        Ok(listener) => listener,
        Err(e) => {
            warn!(error = %e, "cannot register the listener with the runtime; not accepting");
            return;
        }
    };
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            // Shutdown first: once asked to stop, no further connection is taken on.
            biased;
            _ = &mut shutdown => break,
            accepted = listener.async_io(Interest::READABLE, accept_now) => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                backoff = Duration::ZERO;
                server.config.metrics.accepted.inc();
                server.admit(client, peer, &handoff);
            }
            Err(e) if is_per_connection_error(&e) => {
                debug!(error = %e, "accept: connection failed before it was accepted");
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: the process or system is out of resources. Slow
                // down instead of spinning; established connections keep being served.
                server.config.metrics.accept_errors.inc();
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
    // State first: the port is closed, the other threads told that nothing more comes
    // (they drain what they have), and readiness cleared before "draining" is logged.
    drop(listener);
    drop(handoff);
    server.config.metrics.set_ready(false);
    info!(
        open = server.shared.open(),
        drain_timeout_ms = server.config.limits.drain_timeout.as_millis() as u64,
        "stopped accepting; draining open connections"
    );
}

/// The listener, registered for readability with the runtime that accepts from it.
#[allow(unsafe_code)]
fn register(listener: std::net::TcpListener) -> std::io::Result<AsyncFd<std::net::TcpListener>> {
    // SAFETY: `AsyncFd` owns the listener, which owns its descriptor: it stays open and
    // is the one `as_raw_fd` returns until the `AsyncFd` is dropped. (tokio has no safe
    // constructor left: `AsyncFd::new` is deprecated for types that cannot promise this.)
    unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }.map_err(|e| e.into())
}

/// One `accept4(2)`: the connection non-blocking and close-on-exec, and who it is from.
fn accept_now(
    listener: &std::net::TcpListener,
) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    use rustix::net::{acceptfrom_with, SocketFlags};
    let (fd, peer) = acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
    // A TCP listener's peers are IP addresses; anything else concerns this connection only.
    let peer = peer
        .and_then(|peer| SocketAddr::try_from(peer).ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "accepted a connection without an IP peer address",
            )
        })?;
    Ok((std::net::TcpStream::from(fd), peer))
}

/// Binds `addr` (the first address it resolves to) for [`run`], with the options accepted
/// sockets inherit already set, so that no connection, however early, misses them.
/// `reuse_port` lets several processes share the port (the kernel spreads connections).
pub fn bind(addr: &str, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("address resolves to nothing"))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    set_inherited_options(&socket);
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepted sockets inherit TCP_NODELAY from the listener (Linux): one syscall fewer per
/// connection than setting it on each. Set before "listening" is logged; a binary that can
/// should also set it before `listen()` (see `bin/proxy.rs`), for connections that arrive
/// before `run` starts. Keepalive is not inherited but armed per connection once it has
/// lived through a sweep ([`super::sweep`]), so short connections never pay for it.
pub fn set_inherited_options(listener: &impl std::os::fd::AsFd) {
    let socket = socket2::SockRef::from(listener);
    if let Err(e) = socket.set_tcp_nodelay(true) {
        warn!(error = %e, "cannot set TCP_NODELAY on the listener");
    }
}

/// Whether a failed accept concerns only the connection being accepted (it went away
/// meanwhile), so the loop takes the next one at once; anything else is a shortage of
/// resources, met with a back-off. `serve` accepts by the same rule.
pub(crate) fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Connections refused at `--max-connections`, logged at most once a second so an overload
/// does not also become a logging storm.
#[derive(Default)]
struct Refusals {
    total: u64,
    since_log: u64,
    last_log: Option<Instant>,
}

impl Refusals {
    fn note(&mut self, peer: SocketAddr, max_connections: u32) {
        self.total += 1;
        self.since_log += 1;
        debug!(%peer, "rejected: at max connections");
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            warn!(
                rejected = self.since_log,
                rejected_total = self.total,
                max_connections,
                "rejecting connections: at --max-connections"
            );
            self.since_log = 0;
            self.last_log = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio::sync::{mpsc, Semaphore};
    use tokio_util::task::TaskTracker;

    use super::{Accepted, Handoff, Helper, Load};

    #[test]
    fn a_thread_is_saturated_only_after_a_millisecond_without_idling() {
        let load = Load::new();
        let now = Instant::now();
        assert!(
            !load.saturated_at(now + Duration::from_secs(1)),
            "never unparked"
        );
        load.unparked();
        let unparked = Instant::now();
        assert!(!load.saturated_at(unparked));
        assert!(load.saturated_at(unparked + Load::SATURATED + Duration::from_micros(50)));
        load.parked();
        assert!(
            !load.saturated_at(unparked + Duration::from_secs(1)),
            "idle again"
        );
    }

    /// A connection pair on loopback: the accepted end, as the accept loop has it.
    fn accepted(permits: &Arc<Semaphore>) -> (Accepted, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (client, peer) = l.accept().unwrap();
        let permit = Arc::clone(permits).try_acquire_owned().unwrap();
        let accepted = Accepted {
            client,
            peer,
            permit,
        };
        (accepted, c)
    }

    #[tokio::test]
    async fn a_saturated_thread_hands_over_to_the_least_busy_helper_else_keeps_it() {
        let permits = Arc::new(Semaphore::new(8));
        let (busy, idle) = (TaskTracker::new(), TaskTracker::new());
        busy.spawn(std::future::pending::<()>());
        let (to_busy, mut at_busy) = mpsc::unbounded_channel();
        let (to_idle, mut at_idle) = mpsc::unbounded_channel();
        let load = Arc::new(Load::new());
        let handoff = Handoff {
            helpers: vec![
                Helper {
                    inbox: to_busy,
                    tracker: busy.clone(),
                },
                Helper {
                    inbox: to_idle,
                    tracker: idle.clone(),
                },
            ],
            load: Some(Arc::clone(&load)),
        };
        // Keeping up (it idles between bursts): served here.
        load.parked();
        let (a, _c1) = accepted(&permits);
        let kept = handoff.hand_over(a);
        assert!(kept.is_some());
        // Busy for longer than SATURATED: to the helper serving fewer connections.
        load.unparked();
        std::thread::sleep(Load::SATURATED * 2);
        let (a, _c2) = accepted(&permits);
        assert!(handoff.hand_over(a).is_none());
        let handed = at_idle.try_recv().expect("the idle helper got it");
        assert!(at_busy.try_recv().is_err());
        assert_eq!(
            permits.available_permits(),
            8 - 2,
            "the permit travels with it"
        );
        drop((kept, handed));
        assert_eq!(permits.available_permits(), 8);
        // A helper that has stopped gives it back, to be served here.
        drop(at_idle);
        drop(at_busy);
        let (a, _c3) = accepted(&permits);
        assert!(handoff.hand_over(a).is_some());
    }
}

//! The proxy: accept, detect, connect, replay, relay, log.
//!
//! Every accepted connection gets its own task, so a client that never speaks (or a backend
//! that never answers) only ever holds up itself. In that task, data flows one way:
//!
//! ```text
//! client ─► read prefix (≤ detect timeout) ─► detect() ─► route ─► connect backend
//!        (≤ connect timeout) ─► write the prefix bytes ─► relay both ways until both close
//! ```
//!
//! The prefix is *replayed*, not re-read: the bytes consumed while detecting are the start
//! of the client's stream, and the backend must see them first. The relay
//! ([`crate::relay`]) propagates half-close (a client's FIN becomes a FIN to the backend
//! while the reply keeps flowing back) and turns a reset on one side into a reset on the
//! other. A route can also be a server in this process ([`Route::Local`]), which is how
//! [`crate::mux`] serves gRPC itself while ZMQ is still forwarded.

use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn, Instrument};

use crate::detect::{detect, Detection, Protocol, MAX_PREFIX_LEN};
use crate::metrics::{
    BackendErrorKind, BackendErrorLabels, BytesLabels, ClosedLabels, Direction, Metrics, Outcome,
    ReasonLabels, RejectReason, RouteLabel, RouteLabels,
};
use crate::mux::PrefixedStream;
use crate::relay::{Relay, SpliceMode};
use crate::tls::{self, ClientHello, Hello};

/// A backend address as `HOST:PORT` (`127.0.0.1:7001`, `[::1]:7001`, `zmq-pull.svc:7001`).
/// Names are resolved at each connect, so a backend that moves is followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr(String);

impl BackendAddr {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BackendAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST:PORT"))?;
        let host_ok = if let Some(inner) = host.strip_prefix('[') {
            inner
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !host.is_empty() && !host.contains(':')
        };
        if !host_ok {
            return Err(format!("`{s}`: bad host `{host}` (IPv6 goes in brackets)"));
        }
        match port.parse::<u16>() {
            Ok(p) if p != 0 => Ok(BackendAddr(s.to_owned())),
            _ => Err(format!("`{s}`: bad port `{port}`")),
        }
    }
}

/// Where the connections of one detected protocol go.
#[derive(Debug, Clone)]
pub enum Route {
    /// Spliced to a TCP backend.
    Backend(BackendAddr),
    /// Handed, with the bytes detection read, to a server in this process: see
    /// [`crate::mux`], which serves gRPC this way while ZMQ is still forwarded.
    Local(LocalServer),
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Backend(addr) => addr.fmt(f),
            Route::Local(_) => f.write_str("local"),
        }
    }
}

/// The receiving end is a server's stream of incoming connections.
#[derive(Debug, Clone)]
pub struct LocalServer(pub tokio::sync::mpsc::Sender<PrefixedStream>);

/// Where each kind of connection goes. Replaced as a whole on reload (see [`RouteTable`]).
#[derive(Debug, Clone)]
pub struct Routes {
    /// Where connections starting with a ZMTP signature go.
    pub zmq: Route,
    /// Where connections starting with the HTTP/2 preface go.
    pub grpc: Route,
    /// Where connections that match nothing (or say nothing within the detect timeout) go;
    /// `None` closes them.
    pub fallback: Option<Route>,
    /// Routes whose backends get a PROXY protocol v2 header before the client's bytes.
    pub proxy_protocol: Vec<RouteLabel>,
    /// TLS connections, by SNI and ALPN; `None` treats TLS like any unrecognised protocol.
    pub tls: Option<TlsRoutes>,
}

/// One TLS rule: every condition given must hold. `sni` is a host name, or `*.domain` for
/// any name under it; `alpn` must be among the protocols the client offers (e.g. `h2` for
/// gRPC over TLS).
#[derive(Debug, Clone)]
pub struct TlsRule {
    pub sni: Option<String>,
    pub alpn: Option<String>,
    pub backend: Route,
}

/// TLS rules, tried in order, and the backend for a ClientHello no rule matches.
#[derive(Debug, Clone, Default)]
pub struct TlsRoutes {
    pub rules: Vec<TlsRule>,
    pub default: Option<Route>,
}

impl TlsRoutes {
    fn pick(&self, hello: &ClientHello) -> Option<&Route> {
        let sni_ok = |pattern: &str| {
            let sni = hello.sni.as_deref().unwrap_or("");
            let pattern = pattern.to_ascii_lowercase();
            match pattern.strip_prefix("*.") {
                Some(domain) => sni
                    .strip_suffix(domain)
                    .is_some_and(|h| h.ends_with('.') && h.len() > 1),
                None => sni == pattern,
            }
        };
        self.rules
            .iter()
            .find(|r| {
                r.sni.as_deref().is_none_or(sni_ok)
                    && r.alpn.as_ref().is_none_or(|a| hello.alpn.contains(a))
            })
            .map(|r| &r.backend)
            .or(self.default.as_ref())
    }
}

impl Routes {
    /// Both protocols to TCP backends, no fallback, no PROXY headers.
    pub fn to_backends(zmq: BackendAddr, grpc: BackendAddr) -> Self {
        Routes {
            zmq: Route::Backend(zmq),
            grpc: Route::Backend(grpc),
            fallback: None,
            proxy_protocol: Vec::new(),
            tls: None,
        }
    }

    fn route(&self, protocol: Protocol) -> &Route {
        match protocol {
            Protocol::Zmtp => &self.zmq,
            Protocol::Http2 => &self.grpc,
        }
    }
}

/// The routes in force. Each connection takes a snapshot when it is accepted, so a reload
/// swaps the routes for new connections atomically while open ones finish on the old.
#[derive(Debug)]
pub struct RouteTable(std::sync::RwLock<Arc<Routes>>);

impl RouteTable {
    pub fn new(routes: Routes) -> Self {
        RouteTable(std::sync::RwLock::new(Arc::new(routes)))
    }

    pub fn current(&self) -> Arc<Routes> {
        Arc::clone(&self.0.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn replace(&self, routes: Routes) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routes);
    }
}

/// Everything the proxy needs to know, validated before it starts.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where connections go; shared with whoever reloads it.
    pub routes: Arc<RouteTable>,
    /// How long a client has to send enough bytes for a decision.
    pub detect_timeout: Duration,
    /// How long connecting to a backend may take.
    pub connect_timeout: Duration,
    /// After shutdown is requested, how long open connections may take to finish.
    pub drain_timeout: Duration,
    /// Connections served at once; more are closed at accept, never queued.
    pub max_connections: u32,
    /// Whether the relay uses splice(2).
    pub splice: SpliceMode,
    /// Counters and histograms, also served by [`crate::metrics::serve`] when enabled.
    pub metrics: Arc<Metrics>,
}

/// Bytes buffered while detecting: room for the longest signature and a little more. It
/// lives in every connection's task, so it is kept small; whatever a client sends beyond it
/// stays in the socket and is relayed after the replay.
const PREFIX_BUF_LEN: usize = 64;
const _: () = assert!(PREFIX_BUF_LEN >= MAX_PREFIX_LEN);

/// Serves `listener` until `shutdown` resolves, then stops accepting (the port closes) and
/// waits up to `config.drain_timeout` for open connections before returning.
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
    let shared = Arc::new(Shared::new(config));
    shared.announce(&listener)?;
    shared.config.metrics.set_ready(true);
    accept_loop(listener, &shared, shutdown).await;
    shared.config.metrics.set_ready(false);
    shared.drain().await;
    Ok(())
}

/// What the accept loop shares with the connection tasks: the configuration, the
/// connection limit (open connections are the permits taken), the ids.
struct Shared {
    config: ProxyConfig,
    /// One permit per open connection.
    permits: Arc<Semaphore>,
    next_id: AtomicU64,
    overload: std::sync::Mutex<Overload>,
    /// Notified when the last open connection finishes.
    idle: tokio::sync::Notify,
}

impl Shared {
    fn new(config: ProxyConfig) -> Self {
        Shared {
            idle: tokio::sync::Notify::new(),
            permits: Arc::new(Semaphore::new(config.max_connections as usize)),
            config,
            next_id: AtomicU64::new(1),
            overload: Default::default(),
        }
    }

    fn announce(&self, listener: &TcpListener) -> std::io::Result<()> {
        let c = &self.config;
        let routes = c.routes.current();
        info!(addr = %listener.local_addr()?, zmq_backend = %routes.zmq,
              grpc_backend = %routes.grpc, max_connections = c.max_connections,
              "listening");
        Ok(())
    }

    fn open_connections(&self) -> usize {
        self.config.max_connections as usize - self.permits.available_permits()
    }

    /// Waits up to the drain timeout for every open connection to finish.
    async fn drain(&self) {
        let all_closed = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                // Register before checking, so a notification in between is not missed.
                idle.as_mut().enable();
                if self.open_connections() == 0 {
                    return;
                }
                idle.await;
            }
        };
        match tokio::time::timeout(self.config.drain_timeout, all_closed).await {
            Ok(_) => info!("all connections closed"),
            Err(_) => warn!(
                open = self.open_connections(),
                "drain timeout reached; closing remaining connections"
            ),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: &Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux), one syscall fewer per
    // connection than setting it on each.
    if let Err(e) = socket2::SockRef::from(&listener).set_tcp_nodelay(true) {
        warn!(error = %e, "cannot set TCP_NODELAY on the listener");
    }
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                backoff = Duration::ZERO;
                shared.config.metrics.accepted.inc();
                let Ok(permit) = Arc::clone(&shared.permits).try_acquire_owned() else {
                    shared
                        .config
                        .metrics
                        .rejected
                        .get_or_create(&ReasonLabels {
                            reason: RejectReason::MaxConnections,
                        })
                        .inc();
                    // Closing at once tells the client to go elsewhere now, rather than
                    // after a queue it cannot see.
                    drop(client);
                    let mut overload = shared.overload.lock().unwrap_or_else(|p| p.into_inner());
                    overload.rejected(peer, shared.config.max_connections);
                    continue;
                };
                let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                // route, backend and the local port toward the backend are filled in as they
                // become known, so every line of the connection can be matched to the
                // backend's own log.
                let span = tracing::info_span!(
                    "conn",
                    id,
                    %peer,
                    route = tracing::field::Empty,
                    backend = tracing::field::Empty,
                    local_port = tracing::field::Empty,
                );
                let shared = Arc::clone(shared);
                tokio::spawn(
                    async move {
                        handle(client, &shared.config).await;
                        drop(permit);
                        if shared.open_connections() == 0 {
                            shared.idle.notify_waiters();
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) if is_per_connection_error(&e) => {
                debug!(error = %e, "accept: connection failed before it was accepted");
            }
            Err(e) => {
                // EMFILE/ENFILE/ENOBUFS: the process or system is out of resources. Slow
                // down instead of spinning; established connections keep being served.
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
    drop(listener);
    info!(
        open = shared.open_connections(),
        drain_timeout_ms = shared.config.drain_timeout.as_millis() as u64,
        "stopped accepting; draining open connections"
    );
}

/// Counts connections refused at `--max-connections`, logging at most once a second so an
/// overload does not also become a logging storm.
#[derive(Default)]
struct Overload {
    total: u64,
    since_log: u64,
    last_log: Option<Instant>,
}

impl Overload {
    fn rejected(&mut self, peer: std::net::SocketAddr, max_connections: u32) {
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

fn is_per_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    )
}

/// Why a connection ended before it reached a backend.
#[derive(Debug, thiserror::Error)]
enum Rejected {
    #[error("no decision within the detect timeout ({0} bytes received)")]
    DetectTimeout(usize),
    #[error("unrecognised protocol")]
    NoMatch,
    #[error("client closed before a decision ({0} bytes received)")]
    EarlyEof(usize),
    #[error("reading from client: {0}")]
    Read(std::io::Error),
}

/// What detection found: one of the two protocols, or a TLS ClientHello to route by.
enum Detected {
    Protocol(Protocol),
    Tls(ClientHello),
}

/// Reads until `buf` (starting with `initial`) holds a whole ClientHello record.
async fn read_client_hello(
    client: &mut TcpStream,
    initial: &[u8],
    buf: &mut Vec<u8>,
) -> Result<ClientHello, Rejected> {
    buf.extend_from_slice(initial);
    loop {
        match tls::parse(buf) {
            Hello::Parsed(hello) => return Ok(hello),
            Hello::NotTls => return Err(Rejected::NoMatch),
            Hello::NeedMore => {}
        }
        let mut chunk = [0u8; 2048];
        let want = (tls::MAX_RECORD - buf.len()).min(chunk.len());
        let n = client
            .read(&mut chunk[..want])
            .await
            .map_err(Rejected::Read)?;
        if n == 0 {
            return Err(Rejected::EarlyEof(buf.len()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl Rejected {
    fn reason(&self) -> RejectReason {
        match self {
            Rejected::DetectTimeout(_) => RejectReason::DetectTimeout,
            Rejected::NoMatch => RejectReason::Unrecognised,
            Rejected::EarlyEof(_) => RejectReason::ClosedEarly,
            Rejected::Read(_) => RejectReason::ReadError,
        }
    }
}

/// Reads until the detector decides. `filled` counts the prefix bytes in `buf`, which the
/// caller replays; it stays valid if this future is dropped by the detect timeout.
async fn read_prefix(
    client: &mut TcpStream,
    buf: &mut [u8; PREFIX_BUF_LEN],
    filled: &mut usize,
) -> Result<Protocol, Rejected> {
    // Clients send their prefix right after the handshake, so by the time the connection is
    // accepted it has often arrived: read it directly first (the socket is non-blocking),
    // and wait for readiness only if it has not. That saves a trip through the event loop
    // on most connections.
    let mut first = Some(read_now(client, buf));
    loop {
        let n = match first.take() {
            Some(Ok(n)) => n,
            Some(Err(e)) if e.kind() != std::io::ErrorKind::WouldBlock => {
                return Err(Rejected::Read(e))
            }
            _ => client
                .read(&mut buf[*filled..])
                .await
                .map_err(Rejected::Read)?,
        };
        if n == 0 {
            return Err(Rejected::EarlyEof(*filled));
        }
        *filled += n;
        match detect(&buf[..*filled]) {
            Detection::Matched(protocol) => return Ok(protocol),
            Detection::NoMatch => return Err(Rejected::NoMatch),
            // Unreachable while PREFIX_BUF_LEN >= MAX_PREFIX_LEN, but a full buffer must
            // never turn into a zero-length read that spins.
            Detection::NeedMore if *filled == buf.len() => return Err(Rejected::NoMatch),
            Detection::NeedMore => {}
        }
    }
}

fn read_now(client: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    (&*socket2::SockRef::from(client)).read(buf)
}

/// One connection, start to finish: set up (detect, connect, replay), relay, log.
async fn handle(client: TcpStream, config: &ProxyConfig) {
    let started = Instant::now();
    let routes = config.routes.current();
    // The set-up phase is boxed: its futures (timers, address lookup, the prefix buffer)
    // are several times the size of the relay's, and only the relay phase lasts, so every
    // open connection's task stays small for the price of one short-lived allocation.
    let Some(Opened {
        client,
        upstream,
        route,
        backend,
        prefix_len,
    }) = Box::pin(open(client, config, &routes, started)).await
    else {
        return;
    };

    let metrics = &config.metrics;
    let active = metrics.active.get_or_create_owned(&RouteLabels { route });
    active.inc();
    let mut relay = Relay::new(&client, &upstream, config.splice);
    let result = (&mut relay).await;
    active.dec();
    let duration_ms = started.elapsed().as_millis() as u64;
    let bytes_to_backend = relay.to_backend() + prefix_len as u64;
    let bytes_to_client = relay.to_client();
    for (direction, n) in [
        (Direction::ToBackend, bytes_to_backend),
        (Direction::ToClient, bytes_to_client),
    ] {
        metrics
            .bytes
            .get_or_create(&BytesLabels { route, direction })
            .inc_by(n);
    }
    let outcome = if result.is_ok() {
        Outcome::Ok
    } else {
        Outcome::Error
    };
    metrics
        .closed
        .get_or_create(&ClosedLabels { route, outcome })
        .inc();
    match result {
        Ok(()) => info!(
            %route, %backend, bytes_to_backend, bytes_to_client, duration_ms,
            "closed"
        ),
        Err(e) => {
            // One side reset (or failed): reset the other too, so an abrupt end is not
            // disguised as an orderly FIN. Zero linger makes the close below send RST.
            let _ = client.set_zero_linger();
            let _ = upstream.set_zero_linger();
            info!(%route, %backend, bytes_to_backend, bytes_to_client, duration_ms,
                  error = %e, "closed with error")
        }
    }
}

/// A connection that reached its backend, with the prefix already replayed.
struct Opened<'c> {
    client: TcpStream,
    upstream: TcpStream,
    route: RouteLabel,
    backend: &'c BackendAddr,
    prefix_len: usize,
}

/// Detects the protocol, connects to its backend and replays the prefix. Every way this
/// can fail is logged here, once; `None` means the client has been dealt with.
async fn open<'r>(
    mut client: TcpStream,
    config: &ProxyConfig,
    routes: &'r Routes,
    started: Instant,
) -> Option<Opened<'r>> {
    let mut prefix = [0u8; PREFIX_BUF_LEN];
    let mut prefix_len = 0;
    let detected = tokio::time::timeout(
        config.detect_timeout,
        read_prefix(&mut client, &mut prefix, &mut prefix_len),
    )
    .await
    .unwrap_or(Err(Rejected::DetectTimeout(prefix_len)));
    let duration_ms = || started.elapsed().as_millis() as u64;
    let metrics = &config.metrics;
    // TLS needs its whole ClientHello (SNI and ALPN sit near its end), so it is read on
    // into a buffer of its own, within what is left of the detect timeout.
    let mut hello_bytes = Vec::new();
    let detected = match detected {
        Err(Rejected::NoMatch)
            if routes.tls.is_some() && tls::starts_like_tls(&prefix[..prefix_len]) =>
        {
            let deadline = tokio::time::Instant::from_std(started) + config.detect_timeout;
            let read = read_client_hello(&mut client, &prefix[..prefix_len], &mut hello_bytes);
            match tokio::time::timeout_at(deadline, read).await {
                Ok(Ok(hello)) => Ok(Detected::Tls(hello)),
                Ok(Err(rejected)) => Err(rejected),
                Err(_) => Err(Rejected::DetectTimeout(hello_bytes.len())),
            }
        }
        other => other.map(Detected::Protocol),
    };
    let (route, target) = match (detected, &routes.fallback) {
        (Ok(Detected::Protocol(protocol)), _) => {
            metrics
                .detect_seconds
                .observe(started.elapsed().as_secs_f64());
            (RouteLabel::from(protocol), routes.route(protocol))
        }
        (Ok(Detected::Tls(hello)), fallback) => {
            metrics
                .detect_seconds
                .observe(started.elapsed().as_secs_f64());
            let tls_routes = routes
                .tls
                .as_ref()
                .expect("TLS is only detected when routed");
            match (tls_routes.pick(&hello), fallback) {
                (Some(route), _) => (RouteLabel::Tls, route),
                (None, Some(fallback)) => (RouteLabel::Fallback, fallback),
                (None, None) => {
                    let reason = RejectReason::Unrecognised;
                    metrics
                        .rejected
                        .get_or_create(&ReasonLabels { reason })
                        .inc();
                    info!(route = %"none", sni = ?hello.sni, alpn = ?hello.alpn,
                          duration_ms = duration_ms(), "closed: no TLS route matches");
                    return None;
                }
            }
        }
        (Err(Rejected::NoMatch | Rejected::DetectTimeout(_)), Some(fallback)) => {
            (RouteLabel::Fallback, fallback)
        }
        (Err(reason), _) => {
            metrics
                .rejected
                .get_or_create(&ReasonLabels {
                    reason: reason.reason(),
                })
                .inc();
            // A client that connects and leaves without a byte is a port probe or a TCP
            // health check, not news; everything else rejected is worth a line.
            if let Rejected::EarlyEof(0) = reason {
                debug!(route = %"none", reason = %reason, duration_ms = duration_ms(), "closed");
            } else {
                info!(route = %"none", reason = %reason, duration_ms = duration_ms(), "closed");
            }
            return None;
        }
    };
    let span = tracing::Span::current();
    span.record("route", route.to_string());
    let closed = |outcome| {
        metrics
            .closed
            .get_or_create(&ClosedLabels { route, outcome })
            .inc()
    };
    let backend = match target {
        Route::Backend(addr) => addr,
        Route::Local(LocalServer(server)) => {
            closed(Outcome::Local);
            let conn = PrefixedStream::new(prefix[..prefix_len].to_vec(), client);
            match server.send(conn).await {
                Ok(()) => debug!(%route, "handed to the local server"),
                Err(_) => info!(%route, "closed: the local server has stopped"),
            }
            return None;
        }
    };
    span.record("backend", backend.as_str());
    debug!(%route, %backend, prefix_len, "detected");

    let connecting = Instant::now();
    let connect = TcpStream::connect(backend.as_str());
    let backend_error = |kind| {
        let labels = BackendErrorLabels { route, kind };
        metrics.backend_errors.get_or_create(&labels).inc();
        closed(Outcome::BackendUnavailable);
    };
    let mut upstream = match tokio::time::timeout(config.connect_timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            backend_error(match e.kind() {
                std::io::ErrorKind::ConnectionRefused => BackendErrorKind::Refused,
                _ => BackendErrorKind::Other,
            });
            warn!(%route, %backend, error = %e, duration_ms = duration_ms(),
                  "closed: backend connect failed");
            return None;
        }
        Err(_) => {
            backend_error(BackendErrorKind::Timeout);
            warn!(%route, %backend,
                  connect_timeout_ms = config.connect_timeout.as_millis() as u64,
                  "closed: backend connect timed out");
            return None;
        }
    };
    metrics
        .connect_seconds
        .get_or_create(&RouteLabels { route })
        .observe(connecting.elapsed().as_secs_f64());
    if !span.is_disabled() {
        if let Ok(local) = upstream.local_addr() {
            span.record("local_port", local.port());
        }
    }
    // Small ZMQ/gRPC frames must not wait for Nagle's algorithm on the backend hop; the
    // client socket inherited TCP_NODELAY from the listener.
    let _ = upstream.set_nodelay(true);
    #[cfg(not(target_os = "linux"))]
    let _ = client.set_nodelay(true);
    debug!(%route, %backend, "connected");

    // Replay: the bytes detection consumed are the start of the client's stream, preceded
    // by a PROXY header for backends that want to know who the client really is.
    let read: &[u8] = if hello_bytes.is_empty() {
        &prefix[..prefix_len]
    } else {
        &hello_bytes
    };
    let prefix_len = read.len();
    let mut opening = Vec::new();
    let replay: &[u8] = if routes.proxy_protocol.contains(&route) {
        if let (Ok(peer), Ok(dialled)) = (client.peer_addr(), client.local_addr()) {
            crate::proxy_protocol::write_header(&mut opening, peer, dialled);
        }
        opening.extend_from_slice(read);
        &opening
    } else {
        read
    };
    if let Err(e) = upstream.write_all(replay).await {
        closed(Outcome::Error);
        let _ = client.set_zero_linger();
        let _ = upstream.set_zero_linger();
        info!(%route, %backend, error = %e, duration_ms = duration_ms(),
              "closed with error");
        return None;
    }
    Some(Opened {
        client,
        upstream,
        route,
        backend,
        prefix_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses_are_validated() {
        for ok in [
            "127.0.0.1:7001",
            "[::1]:7001",
            "localhost:1",
            "zmq.svc.local:65535",
        ] {
            assert!(ok.parse::<BackendAddr>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "7001",
            "127.0.0.1",
            "127.0.0.1:0",
            "host:99999",
            "::1:7001",
            ":7001",
            "[::1:7001",
        ] {
            assert!(bad.parse::<BackendAddr>().is_err(), "{bad}");
        }
    }
}
#[cfg(test)]
mod size_tests {
    /// Every open connection holds one of these futures for its whole life; their size is
    /// most of the proxy's memory per idle connection (BENCHMARKS.md), so growth here is a
    /// regression even when every other test passes.
    #[test]
    fn connection_futures_stay_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
                .await
                .unwrap();
            let (s, _) = l.accept().await.unwrap();
            let relay = crate::relay::Relay::new(&c, &s, Default::default());
            assert!(
                std::mem::size_of_val(&relay) <= 192,
                "relay: {}",
                std::mem::size_of_val(&relay)
            );
            drop(relay);
            let cfg = super::ProxyConfig {
                routes: std::sync::Arc::new(super::RouteTable::new(super::Routes::to_backends(
                    "127.0.0.1:1".parse().unwrap(),
                    "127.0.0.1:1".parse().unwrap(),
                ))),
                detect_timeout: std::time::Duration::from_secs(1),
                connect_timeout: std::time::Duration::from_secs(1),
                drain_timeout: std::time::Duration::from_secs(1),
                max_connections: 1,
                splice: Default::default(),
                metrics: Default::default(),
            };
            let handle = super::handle(s, &cfg);
            let size = std::mem::size_of_val(&handle);
            assert!(size <= 448, "connection task future: {size} bytes");
        });
    }
}

//! One connection, top to bottom. Data flows one way through small stages:
//!
//! ```text
//! who (the client: a trusted balancer's PROXY header, or the socket)
//!   ─► sniff (read prefix ≤ detect timeout, detect, TLS read-on) ─► decide (pure, routes.rs)
//!   ─► connect (≤ connect timeout; `original`: the redirect's destination)
//!   ─► replay (PROXY header + prefix) ─► relay ─► Outcome
//! ```
//!
//! Every stage returns a value; [`handle`] hands the one [`Outcome`] to
//! [`super::observe::closed`], which logs and counts it. No stage logs its own failure.
//!
//! The prefix is *replayed*, not re-read: the bytes consumed while detecting are the start
//! of the client's stream and the backend must see them first. The set-up phase is boxed:
//! its futures (timers, address lookup, the prefix buffer) are several times the size of
//! the relay's, and only the relay phase lasts, so an open connection's task stays small.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::observe;
use super::outcome::{BackendErrorKind, Outcome, RejectReason, RelayEnd};
use super::prefixed::PrefixedStream;
use super::proxy_protocol;
use super::relay::Relay;
use super::routes::{decide, BackendAddr, Decision, LocalServer, RouteName, Routes, Sniffed};
use super::routes::{Target, Unrouted};
use super::settings::{Limits, ProxyConfig};
use super::sniff::{sniff, Prefix};
use super::sweep::{Sweeper, Verdict};

/// Serves one accepted connection until it ends, then observes its outcome. `sweeper`
/// tells it when it has been idle too long or the drain timeout has cut it: it is reset.
///
/// The set-up phase is allocated here, before the task starts, and freed when it ends; the
/// task itself holds only what the relay phase needs.
pub(super) fn handle<'a>(
    client: std::net::TcpStream,
    peer: SocketAddr,
    config: &'a ProxyConfig,
    sweeper: &'a Sweeper,
) -> impl std::future::Future<Output = ()> + 'a {
    let started = Instant::now();
    let setup = Box::pin(async move {
        tokio::select! {
            opened = open(client, peer, config, started) => opened,
            _ = sweeper.cut_done() => Err(Outcome::rejected(RejectReason::DrainTimeout, 0, None)),
        }
    });
    async move {
        let outcome = relay(setup.await, config, sweeper).await;
        observe::closed(&config.metrics, &outcome, started.elapsed());
    }
}

/// A connection that reached its backend, with the prefix already replayed.
struct Opened {
    client: TcpStream,
    upstream: TcpStream,
    route: RouteName,
    backend: BackendAddr,
    replayed: u32,
}

/// Set-up: sniff, decide, connect, replay. `Err` is the outcome of a connection that ends
/// here.
async fn open(
    client: std::net::TcpStream,
    peer: SocketAddr,
    config: &ProxyConfig,
    started: Instant,
) -> Result<Opened, Outcome> {
    let routes = &*config.routes.current();
    let deadline = tokio::time::Instant::from_std(started) + config.limits.detect_timeout;
    let mut prefix = Prefix::new();
    // Clients send their first bytes right after the handshake, so by the time the
    // connection is accepted they have often arrived: read them now, before the socket is
    // registered with the runtime, so that registering it reports it readable only if more
    // has come since (see `sniff`). A trusted balancer's PROXY header is read first.
    let read_already = !routes.expects_proxy_header(peer.ip());
    if read_already {
        prefix.read_now(&client)?;
    }
    let mut client = TcpStream::from_std(client).map_err(|e| Outcome::read_error(&e))?;
    let who = who(&mut client, peer, routes, deadline).await?;
    let sniffed = sniff(&mut client, routes, &mut prefix, read_already, deadline).await?;
    let (route, target) = match decide(routes, &sniffed) {
        Decision::Route(route, target) => (route, target),
        Decision::Close(why) => return Err(unrouted(why, &sniffed, prefix.len())),
    };
    let span = tracing::Span::current();
    span.record("route", tracing::field::display(route));
    let backend = match target {
        Target::Backend(addr) if addr.is_original() => {
            original_backend(&client).map_err(|detail| {
                Outcome::rejected(RejectReason::NotRedirected, prefix.len(), Some(detail))
            })?
        }
        Target::Backend(addr) => addr.clone(),
        Target::Local(server) => {
            span.record("backend", tracing::field::display("local"));
            observe::routed(&config.metrics, route, started.elapsed(), None);
            // Boxed: only local routes take this path, and its future (520 bytes) would
            // otherwise size every connection's set-up.
            return Err(Box::pin(hand_over(server, route, client, prefix)).await);
        }
    };
    span.record("backend", tracing::field::display(&backend));
    let detected = started.elapsed();
    // A backend that wants a PROXY header never gets a byte without one: such a route
    // exists only if `who` took the addresses for it.
    let header = match who {
        Who::Addresses { client, dialled } if routes.proxy_protocol.contains(&route) => {
            Some((client, dialled))
        }
        _ => None,
    };
    let mut opening = opening(header, prefix.bytes());
    let upstream = connect(&backend, config.limits.connect_timeout, &mut opening)
        .await
        .map_err(|(kind, error)| Outcome::BackendUnavailable {
            route,
            backend: backend.clone(),
            kind,
            error,
        })?;
    if !span.is_disabled() {
        if let Ok(local) = upstream.local_addr() {
            span.record("local_port", local.port());
        }
    }
    let connect = started.elapsed() - detected;
    observe::routed(&config.metrics, route, detected, Some(connect));
    let mut opened = Opened {
        client,
        upstream,
        route,
        backend,
        replayed: prefix.len() as u32,
    };
    match opened.upstream.write_all(&opening[opening.sent..]).await {
        Ok(()) => Ok(opened),
        Err(e) => Err(ended(&opened, 0, 0, RelayEnd::Error(e))),
    }
}

/// Who the client is, as far as the backends need to know.
enum Who {
    /// No route sends a PROXY header: nothing more than the socket's peer is needed.
    Peer,
    /// Some route sends a PROXY header: the client (from a trusted balancer's own header,
    /// or the socket) and the address it dialled.
    Addresses {
        client: SocketAddr,
        dialled: SocketAddr,
    },
}

/// Who the client is, and the address it dialled when some route's PROXY header will need
/// it. From a trusted load balancer both come from the PROXY header it sends first;
/// otherwise from the socket, taken now while the connection is surely established: a
/// client that resets later must not make the header go missing (or be replaced by one it
/// sent itself).
async fn who(
    client: &mut TcpStream,
    peer: SocketAddr,
    routes: &Routes,
    deadline: tokio::time::Instant,
) -> Result<Who, Outcome> {
    let dialled = |client: &TcpStream| client.local_addr().map_err(|e| Outcome::read_error(&e));
    if routes.expects_proxy_header(peer.ip()) {
        let header = proxy_protocol::read_header(client);
        return match tokio::time::timeout_at(deadline, header).await {
            Ok(Ok(Some((source, dialled)))) => {
                tracing::Span::current().record("client", tracing::field::display(source));
                Ok(Who::Addresses {
                    client: source,
                    dialled,
                })
            }
            // LOCAL / UNKNOWN: the balancer speaking for itself (a health check).
            Ok(Ok(None)) => Ok(Who::Addresses {
                client: peer,
                dialled: dialled(client)?,
            }),
            Ok(Err(e)) => Err(Outcome::rejected(
                RejectReason::Unrecognised,
                0,
                Some(e.to_string()),
            )),
            Err(_) => Err(Outcome::rejected(
                RejectReason::DetectTimeout,
                0,
                Some("no PROXY header".into()),
            )),
        };
    }
    if routes.proxy_protocol.is_empty() {
        return Ok(Who::Peer);
    }
    Ok(Who::Addresses {
        client: peer,
        dialled: dialled(client)?,
    })
}

/// What the backend must see first: the PROXY header for backends that want to know who
/// the client is (`(client, dialled)`), then the bytes detection consumed. `sent` counts
/// what [`connect`] already wrote.
struct Opening<'a> {
    bytes: std::borrow::Cow<'a, [u8]>,
    sent: usize,
}

impl std::ops::Deref for Opening<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

fn opening(header: Option<(SocketAddr, SocketAddr)>, prefix: &[u8]) -> Opening<'_> {
    let bytes = match header {
        None => std::borrow::Cow::Borrowed(prefix),
        Some((client, dialled)) => {
            let mut opening = Vec::with_capacity(52 + prefix.len());
            proxy_protocol::write_header(&mut opening, client, dialled);
            opening.extend_from_slice(prefix);
            std::borrow::Cow::Owned(opening)
        }
    };
    Opening { bytes, sent: 0 }
}

/// Connects to `backend` within `timeout`, and sends what of `opening` the new socket
/// takes at once (recorded in `opening.sent`; the caller writes the rest).
///
/// The opening is sent straight after `connect(2)`, before waiting for the socket to
/// become writable, as HAProxy does: on loopback and a LAN the handshake has usually
/// completed inside `connect(2)`, and then the bytes go in the same event-loop turn, with
/// no wait for writability, no `SO_ERROR` check and no connect timer. Only when the kernel
/// cannot take them yet (EAGAIN while the handshake is in flight) does the connection wait
/// for writability and check the socket's error, within the connect timeout. A refused or
/// failed connect reports its error either way.
async fn connect(
    backend: &BackendAddr,
    timeout: Duration,
    opening: &mut Opening<'_>,
) -> Result<TcpStream, (BackendErrorKind, std::io::Error)> {
    let connecting = async {
        // A literal address (the usual case) needs no lookup; a name is resolved first and
        // its addresses are tried in turn, as `TcpStream::connect` would.
        if let Ok(addr) = backend.as_str().parse::<SocketAddr>() {
            return connect_to(addr, opening).await;
        }
        // Boxed: its lookup future would otherwise size every connection's set-up.
        Box::pin(connect_named(backend.as_str(), opening)).await
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err((BackendErrorKind::of(&e), e)),
        Err(_) => {
            let e = std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect timed out after {} ms", timeout.as_millis()),
            );
            Err((BackendErrorKind::Timeout, e))
        }
    }
}

/// A backend given by name: resolved, and its addresses tried in turn.
async fn connect_named(name: &str, opening: &mut Opening<'_>) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host(name).await? {
        match connect_to(addr, opening).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the backend's name resolves to no address",
        )
    }))
}

/// One address: the socket, `connect(2)` and the opening at once ([`start`]), then, only
/// if the handshake was still in flight, the wait for it.
async fn connect_to(addr: SocketAddr, opening: &mut Opening<'_>) -> std::io::Result<TcpStream> {
    let (stream, handshake_done) = start(addr, opening)?;
    if !handshake_done {
        // Boxed: this wait is the exception (a backend across a network), and its future
        // would otherwise size every connection's set-up.
        Box::pin(handshake(&stream)).await?;
    }
    Ok(stream)
}

/// A non-blocking socket with TCP_NODELAY (small ZMQ/gRPC frames must not wait for
/// Nagle's algorithm; the client socket inherited it from the listener; keepalive comes
/// later, if the connection lives long enough, see `arm_keepalive`), `connect(2)`, and as
/// much of the opening as the socket takes. Returns whether the handshake has completed
/// (the socket took bytes).
fn start(addr: SocketAddr, opening: &mut Opening<'_>) -> std::io::Result<(TcpStream, bool)> {
    use socket2::{Domain, Protocol, Socket, Type};
    opening.sent = 0; // a previous address may have taken some before it failed
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
        Err(e) => return Err(e),
    }
    // Written before the socket is registered with the runtime: tokio would not try a
    // write on a socket it has seen no writability event for yet.
    let mut handshake_done = false;
    while opening.sent < opening.len() {
        match socket.send(&opening[opening.sent..]) {
            Ok(n) => {
                opening.sent += n;
                handshake_done = true;
            }
            // Still in the handshake, or the send buffer is full: the rest waits.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The connect failed (refused, unreachable): its error, as connect would say.
            Err(e) => return Err(e),
        }
    }
    Ok((TcpStream::from_std(socket.into())?, handshake_done))
}

/// Waits for a connect still in flight to finish; its error if it failed.
async fn handshake(stream: &TcpStream) -> std::io::Result<()> {
    stream.writable().await?;
    match stream.take_error()? {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Relays until both directions end, either fails, it has been idle too long, or the
/// drain timeout cuts it. It takes the set-up's result as it is, and borrows the sockets in
/// place: moving them out would cost every open connection a second copy in this
/// (long-lived) future.
async fn relay(
    opened: Result<Opened, Outcome>,
    config: &ProxyConfig,
    sweeper: &Sweeper,
) -> Outcome {
    let opened = match opened {
        Err(outcome) => return outcome,
        Ok(ref opened) => opened,
    };
    let mut relay = Relay::new(&opened.client, &opened.upstream, config.limits.splice);
    let mut watch = std::pin::pin!(sweeper.watch());
    // Polled by hand rather than with `select!`: this future lives as long as the
    // connection, and the macro's bookkeeping would add to every open connection. Keepalive
    // is armed out here, so the closure holds no more than the relay and the watch.
    let end = loop {
        let verdict = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = Pin::new(&mut relay).poll(cx) {
                return Poll::Ready(Err(
                    result.map_or_else(RelayEnd::Error, |()| RelayEnd::Clean)
                ));
            }
            let moved = relay.to_backend() + relay.to_client();
            watch.as_mut().poll(cx, moved).map(Ok)
        })
        .await;
        match verdict {
            Err(end) => break end,
            Ok(Verdict::Idle) => break RelayEnd::Idle,
            Ok(Verdict::Cut) => break RelayEnd::DrainTimeout,
            Ok(Verdict::ArmKeepalive) => arm_keepalive(opened, &config.limits),
        }
    };
    let (up, down) = (relay.to_backend(), relay.to_client());
    ended(opened, up, down, end)
}

/// TCP keepalive on both hops of a connection that has lived through a sweep (see
/// [`super::sweep`]): short connections never pay for the kernel's keepalive timers.
fn arm_keepalive(opened: &Opened, limits: &Limits) {
    if let Some(keepalive) = limits.keepalive() {
        for socket in [&opened.client, &opened.upstream] {
            let _ = socket2::SockRef::from(socket).set_tcp_keepalive(&keepalive);
        }
    }
}

/// The outcome of a relayed connection. Anything but a clean end resets both sides, so an
/// abrupt end is never disguised as an orderly FIN: zero linger makes the close send RST.
fn ended(opened: &Opened, up: u64, down: u64, end: RelayEnd) -> Outcome {
    if !matches!(end, RelayEnd::Clean) {
        let _ = opened.client.set_zero_linger();
        let _ = opened.upstream.set_zero_linger();
    }
    Outcome::Relayed {
        route: opened.route,
        backend: opened.backend.clone(),
        to_backend: up + u64::from(opened.replayed),
        to_client: down,
        end,
    }
}

/// Gives the connection, prefix first, to a server in this process, which owns it from
/// here.
async fn hand_over(
    server: &LocalServer,
    route: RouteName,
    client: TcpStream,
    prefix: Prefix,
) -> Outcome {
    let stream = PrefixedStream::new(prefix.bytes().to_vec(), client);
    let delivered = server.0.send(stream).await.is_ok();
    Outcome::Local { route, delivered }
}

/// `--zmq-backend original`: the member's own listener, where the client was going before
/// interception redirected it here. A connection that was not redirected has none (relaying
/// it to our own address would loop), so it is refused with what was found.
fn original_backend(client: &TcpStream) -> Result<BackendAddr, String> {
    match super::intercept::original_dst(client) {
        Ok(Some(dst)) => dst
            .to_string()
            .parse()
            .map_err(|e: String| format!("original destination {dst}: {e}")),
        Ok(None) => Err("no conntrack redirect for this connection".into()),
        Err(e) => Err(format!("reading the original destination: {e}")),
    }
}

fn unrouted(why: Unrouted, sniffed: &Sniffed, received: usize) -> Outcome {
    match (why, sniffed) {
        (Unrouted::Silent, _) => Outcome::rejected(RejectReason::DetectTimeout, received, None),
        (Unrouted::NoTlsRoute, Sniffed::Tls(hello)) => Outcome::rejected(
            RejectReason::Unrecognised,
            received,
            Some(format!("no TLS route matches {}", hello.describe())),
        ),
        _ => Outcome::rejected(RejectReason::Unrecognised, received, None),
    }
}

#[cfg(test)]
mod tests;

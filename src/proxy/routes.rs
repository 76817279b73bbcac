//! Where a connection goes: the routing vocabulary (route names, backend addresses, the route
//! table) and [`decide`], the pure decision from "what the first bytes said" to a route.
//!
//! The decision takes a [`Sniffed`] value and a [`Routes`] table and returns a [`Decision`]:
//! no sockets, no clock, so it is unit-tested on tables like the detector. The pipeline
//! (`super::conn`) does the I/O around it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::detect::Protocol;
use super::prefixed::PrefixedStream;
use super::proxy_protocol::Cidr;
use super::tls::ClientHello;

/// The name of a route, as operators see it in logs, metrics (`route="zmq"`), the
/// `--proxy-protocol` flag and the config file. This is the one place it is spelled.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteName {
    /// Connections that open with a ZMTP signature.
    Zmq,
    /// Connections that open with the HTTP/2 client preface.
    Grpc,
    /// TLS connections, routed by SNI / ALPN.
    Tls,
    /// Connections that matched nothing, sent to the fallback backend.
    Fallback,
}

impl RouteName {
    pub const ALL: [RouteName; 4] = [
        RouteName::Zmq,
        RouteName::Grpc,
        RouteName::Tls,
        RouteName::Fallback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteName::Zmq => "zmq",
            RouteName::Grpc => "grpc",
            RouteName::Tls => "tls",
            RouteName::Fallback => "fallback",
        }
    }
}

impl fmt::Display for RouteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RouteName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        RouteName::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = RouteName::ALL.iter().map(|r| r.as_str()).collect();
                format!("`{s}` is not a route ({})", names.join(", "))
            })
    }
}

impl From<Protocol> for RouteName {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Zmtp => RouteName::Zmq,
            Protocol::Http2 => RouteName::Grpc,
        }
    }
}

/// A backend address as `HOST:PORT` (`127.0.0.1:7001`, `[::1]:7001`, `zmq-pull.svc:7001`).
/// Names are resolved at each connect, so a backend that moves is followed.
/// Shared, not copied: every connection routed to it holds it for its log lines.
///
/// The word `original` ([`BackendAddr::ORIGINAL`]) is the destination each connection
/// dialled before interception redirected it to the proxy (see [`super::intercept`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr(Arc<str>);

impl BackendAddr {
    /// The backend that is, for each connection, the address it originally dialled.
    pub const ORIGINAL: &'static str = "original";

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `original`: read per connection from the redirect, not dialled as is.
    pub fn is_original(&self) -> bool {
        &*self.0 == Self::ORIGINAL
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BackendAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == Self::ORIGINAL {
            return Ok(BackendAddr(s.into()));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("`{s}` is not HOST:PORT (or `original`)"))?;
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
            Ok(p) if p != 0 => Ok(BackendAddr(s.into())),
            _ => Err(format!("`{s}`: bad port `{port}`")),
        }
    }
}

/// Where the connections of one route go.
#[derive(Debug, Clone)]
pub enum Target {
    /// Relayed to a TCP backend.
    Backend(BackendAddr),
    /// Handed, with the bytes detection read, to a server in this process: see
    /// [`crate::migrate::mux`], which serves gRPC this way while ZMQ is still forwarded.
    Local(LocalServer),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Backend(addr) => addr.fmt(f),
            Target::Local(_) => f.write_str("local"),
        }
    }
}

/// The receiving end is a server's stream of incoming connections.
#[derive(Debug, Clone)]
pub struct LocalServer(pub tokio::sync::mpsc::Sender<PrefixedStream<tokio::net::TcpStream>>);

/// Where each kind of connection goes. Replaced as a whole on reload (see [`RouteTable`]).
#[derive(Debug, Clone)]
pub struct Routes {
    /// Where connections starting with a ZMTP signature go.
    pub zmq: Target,
    /// Where connections starting with the HTTP/2 preface go.
    pub grpc: Target,
    /// Where connections that match nothing (or say nothing within the detect timeout) go;
    /// `None` closes them.
    pub fallback: Option<Target>,
    /// Routes whose backends get a PROXY protocol v2 header before the client's bytes.
    pub proxy_protocol: Vec<RouteName>,
    /// TLS connections, by SNI and ALPN; `None` treats TLS like any unrecognised protocol.
    pub tls: Option<TlsRoutes>,
    /// Sources (load balancers) whose connections open with a PROXY v1/v2 header naming
    /// the real client; from anywhere else a PROXY header is unrecognised input.
    pub accept_proxy_protocol: Vec<Cidr>,
}

/// One TLS rule: every condition given must hold. `sni` is a host name, or `*.domain` for
/// any name under it; `alpn` must be among the protocols the client offers (e.g. `h2` for
/// gRPC over TLS).
#[derive(Debug, Clone)]
pub struct TlsRule {
    pub sni: Option<String>,
    pub alpn: Option<String>,
    pub backend: Target,
}

/// TLS rules, tried in order, and the backend for a ClientHello no rule matches.
#[derive(Debug, Clone, Default)]
pub struct TlsRoutes {
    pub rules: Vec<TlsRule>,
    pub default: Option<Target>,
}

impl TlsRoutes {
    fn pick(&self, hello: &ClientHello) -> Option<&Target> {
        let sni = hello.sni.as_deref().unwrap_or("");
        self.rules
            .iter()
            .find(|r| {
                r.sni.as_deref().is_none_or(|p| sni_matches(p, sni))
                    && r.alpn.as_ref().is_none_or(|a| hello.alpn.contains(a))
            })
            .map(|r| &r.backend)
            .or(self.default.as_ref())
    }
}

/// `pattern` is a host name or `*.domain`; `*.example.com` matches `a.example.com` and
/// `a.b.example.com` but not `example.com` itself.
fn sni_matches(pattern: &str, sni: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => sni
            .strip_suffix(domain)
            .is_some_and(|h| h.ends_with('.') && h.len() > 1),
        None => sni == pattern,
    }
}

impl Routes {
    /// Both protocols to TCP backends, no fallback, no PROXY headers.
    pub fn to_backends(zmq: BackendAddr, grpc: BackendAddr) -> Self {
        Routes {
            zmq: Target::Backend(zmq),
            grpc: Target::Backend(grpc),
            fallback: None,
            proxy_protocol: Vec::new(),
            tls: None,
            accept_proxy_protocol: Vec::new(),
        }
    }

    /// Whether a connection from `ip` must open with a PROXY header.
    pub fn expects_proxy_header(&self, ip: std::net::IpAddr) -> bool {
        self.accept_proxy_protocol.iter().any(|c| c.contains(ip))
    }

    /// Whether TLS ClientHellos are worth reading on for.
    pub fn routes_tls(&self) -> bool {
        self.tls.is_some()
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

/// What reading the first bytes found out (see `super::conn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// One of the two protocols the proxy exists for.
    Protocol(Protocol),
    /// A whole TLS ClientHello.
    Tls(ClientHello),
    /// Bytes that match no protocol this table routes.
    Unrecognised,
    /// Too little within the detect timeout.
    Silent,
}

/// Where [`decide`] sends a connection.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'r> {
    Route(RouteName, &'r Target),
    /// Nothing routes it: close it.
    Close(Unrouted),
}

/// Why a connection that was read was not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    /// Nothing within the detect timeout, and no fallback.
    Silent,
    /// Not a protocol the table routes, and no fallback.
    Unrecognised,
    /// TLS that no rule matches, no TLS default and no fallback.
    NoTlsRoute,
}

/// The routing decision: a pure function of what was read and the table in force.
pub fn decide<'r>(routes: &'r Routes, sniffed: &Sniffed) -> Decision<'r> {
    let fallback = || routes.fallback.as_ref().map(|t| (RouteName::Fallback, t));
    let routed = match sniffed {
        Sniffed::Protocol(Protocol::Zmtp) => Some((RouteName::Zmq, &routes.zmq)),
        Sniffed::Protocol(Protocol::Http2) => Some((RouteName::Grpc, &routes.grpc)),
        Sniffed::Tls(hello) => routes
            .tls
            .as_ref()
            .and_then(|t| t.pick(hello))
            .map(|t| (RouteName::Tls, t))
            .or_else(fallback),
        Sniffed::Unrecognised | Sniffed::Silent => fallback(),
    };
    match (routed, sniffed) {
        (Some((name, target)), _) => Decision::Route(name, target),
        (None, Sniffed::Silent) => Decision::Close(Unrouted::Silent),
        (None, Sniffed::Tls(_)) => Decision::Close(Unrouted::NoTlsRoute),
        (None, _) => Decision::Close(Unrouted::Unrecognised),
    }
}

#[cfg(test)]
mod tests;

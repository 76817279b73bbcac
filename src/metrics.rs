//! Prometheus metrics, and the small HTTP endpoint that serves them with `/healthz` and
//! `/readyz`.
//!
//! The text format is produced by `prometheus-client`; the endpoint is a minimal HTTP/1.1
//! responder (one GET, one response, close) because three fixed paths do not justify a web
//! framework on the proxy's runtime.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use crate::detect::Protocol;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RouteLabel {
    Zmq,
    Grpc,
    /// TLS, routed by SNI / ALPN.
    Tls,
    /// Matched nothing; sent to the fallback backend.
    Fallback,
}

impl std::fmt::Display for RouteLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RouteLabel::Zmq => "zmq",
            RouteLabel::Grpc => "grpc",
            RouteLabel::Tls => "tls",
            RouteLabel::Fallback => "fallback",
        })
    }
}

impl From<Protocol> for RouteLabel {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Zmtp => RouteLabel::Zmq,
            Protocol::Http2 => RouteLabel::Grpc,
        }
    }
}

/// Why a connection was closed before reaching a backend.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RejectReason {
    MaxConnections,
    DetectTimeout,
    Unrecognised,
    ClosedEarly,
    ReadError,
}

/// How a routed connection ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Both directions finished normally.
    Ok,
    /// Reset or I/O error on either side.
    Error,
    /// The backend could not be reached.
    BackendUnavailable,
    /// Handed to a server in this process (see `mux`).
    Local,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    ToBackend,
    ToClient,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum BackendErrorKind {
    Refused,
    Timeout,
    Other,
}

/// Label values are the lower-case names operators query by (`route="zmq"`).
macro_rules! label_values {
    ($t:ident { $($v:path => $s:literal),* $(,)? }) => {
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                use std::fmt::Write;
                encoder.write_str(match self { $($v => $s),* })
            }
        }
    };
}

label_values!(RouteLabel { RouteLabel::Zmq => "zmq", RouteLabel::Grpc => "grpc", RouteLabel::Tls => "tls", RouteLabel::Fallback => "fallback" });
label_values!(RejectReason { RejectReason::MaxConnections => "max_connections", RejectReason::DetectTimeout => "detect_timeout", RejectReason::Unrecognised => "unrecognised", RejectReason::ClosedEarly => "closed_early", RejectReason::ReadError => "read_error" });
label_values!(Outcome { Outcome::Ok => "ok", Outcome::Error => "error", Outcome::BackendUnavailable => "backend_unavailable", Outcome::Local => "local" });
label_values!(Direction { Direction::ToBackend => "to_backend", Direction::ToClient => "to_client" });
label_values!(BackendErrorKind { BackendErrorKind::Refused => "refused", BackendErrorKind::Timeout => "timeout", BackendErrorKind::Other => "other" });

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: RouteLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: RejectReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub route: RouteLabel,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub route: RouteLabel,
    pub direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendErrorLabels {
    pub route: RouteLabel,
    pub kind: BackendErrorKind,
}

fn latency_histogram() -> Histogram {
    // 50 µs … ~13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// The proxy's metrics. All names start with `zgp_`.
pub struct Metrics {
    registry: Registry,
    ready: AtomicBool,
    pub accepted: Counter,
    pub rejected: Family<ReasonLabels, Counter>,
    pub closed: Family<ClosedLabels, Counter>,
    pub active: Family<RouteLabels, Gauge>,
    pub bytes: Family<BytesLabels, Counter>,
    pub detect_seconds: Histogram,
    pub connect_seconds: Family<RouteLabels, Histogram>,
    pub backend_errors: Family<BackendErrorLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("zgp");
        let m = Metrics {
            registry: Registry::default(),
            ready: AtomicBool::new(false),
            accepted: Counter::default(),
            rejected: Family::default(),
            closed: Family::default(),
            active: Family::default(),
            bytes: Family::default(),
            detect_seconds: latency_histogram(),
            connect_seconds: Family::new_with_constructor(latency_histogram),
            backend_errors: Family::default(),
        };
        registry.register(
            "connections_accepted",
            "Connections accepted",
            m.accepted.clone(),
        );
        registry.register(
            "connections_rejected",
            "Connections closed before reaching a backend, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "connections_closed",
            "Routed connections that ended, by route and outcome",
            m.closed.clone(),
        );
        registry.register(
            "connections_active",
            "Connections being relayed, by route",
            m.active.clone(),
        );
        registry.register(
            "bytes",
            "Bytes relayed, by route and direction",
            m.bytes.clone(),
        );
        registry.register(
            "detect_seconds",
            "Time from accept to a protocol decision",
            m.detect_seconds.clone(),
        );
        registry.register(
            "backend_connect_seconds",
            "Time to connect to a backend, by route",
            m.connect_seconds.clone(),
        );
        registry.register(
            "backend_errors",
            "Failed backend connections, by route and kind",
            m.backend_errors.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Listening and not draining: what `/readyz` reports.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(metrics_addr = %addr, "serving /metrics, /healthz, /readyz");
    }
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = std::sync::Arc::clone(&metrics);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), respond(stream, &metrics)).await;
        });
    }
}

async fn respond(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let (status, content_type, body) = match (method, path) {
        (b"GET", b"/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        (b"GET", b"/healthz") => ("200 OK", "text/plain", "ok\n".to_owned()),
        (b"GET", b"/readyz") if metrics.is_ready() => {
            ("200 OK", "text/plain", "ready\n".to_owned())
        }
        (b"GET", b"/readyz") => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_owned(),
        ),
        (b"GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

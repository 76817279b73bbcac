//! What the proxy needs to know to run: the route table, the [`Limits`] and the metrics it
//! updates. Every default is defined here, once; the command line (`crate::config`, feature `cli`) and
//! library callers ([`crate::migrate::mux`]) take them from here.

use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;
use super::relay::SpliceMode;
use super::routes::{RouteTable, Routes};

/// Timeouts and limits, with the proxy's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client has to send enough bytes for a decision.
    pub detect_timeout: Duration,
    /// How long connecting to a backend may take.
    pub connect_timeout: Duration,
    /// After shutdown is requested, how long open connections may take to finish; then
    /// they are reset.
    pub drain_timeout: Duration,
    /// Connections served at once; more are closed at accept, never queued.
    pub max_connections: u32,
    /// Whether the relay uses splice(2).
    pub splice: SpliceMode,
    /// A relayed connection with no byte either way for this long is reset on both sides;
    /// `None`: never.
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive on both hops: first probe after this much silence; `None`: off.
    pub tcp_keepalive: Option<Duration>,
    /// On shutdown, how long to keep accepting after readiness fails, so load balancers
    /// polling `/readyz` stop sending before the port closes.
    pub shutdown_delay: Duration,
}

impl Limits {
    pub const DEFAULT_DETECT_TIMEOUT_MS: u64 = 5_000;
    pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 3_000;
    pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 10_000;
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 50_000;
    pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 3_600_000;
    pub const DEFAULT_TCP_KEEPALIVE_MS: u64 = 60_000;
    /// With `--intercept-port`, the shortest shutdown delay: the table is deleted first,
    /// but a handshake the old rule redirected a moment before is still on its way to the
    /// listener (conntrack keeps a flow's NAT decision), so the port stays open a few
    /// round trips longer.
    pub const INTERCEPT_MIN_SHUTDOWN_DELAY: Duration = Duration::from_millis(250);
    /// The largest `max_connections` accepted from any source.
    pub const MAX_MAX_CONNECTIONS: u32 = 1_000_000;

    /// Milliseconds as an optional duration: 0 means off.
    pub fn millis(ms: u64) -> Option<Duration> {
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// The keepalive settings for a socket: probes every sixth of the idle time (at least
    /// a second), six of them, so a dead peer is given up about twice the idle time after
    /// its last sign of life.
    pub fn keepalive(&self) -> Option<socket2::TcpKeepalive> {
        let idle = self.tcp_keepalive?;
        let interval = (idle / 6).max(Duration::from_secs(1));
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(idle)
            .with_interval(interval);
        #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
        let keepalive = keepalive.with_retries(6);
        Some(keepalive)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            detect_timeout: Duration::from_millis(Self::DEFAULT_DETECT_TIMEOUT_MS),
            connect_timeout: Duration::from_millis(Self::DEFAULT_CONNECT_TIMEOUT_MS),
            drain_timeout: Duration::from_millis(Self::DEFAULT_DRAIN_TIMEOUT_MS),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            splice: SpliceMode::default(),
            idle_timeout: Self::millis(Self::DEFAULT_IDLE_TIMEOUT_MS),
            tcp_keepalive: Self::millis(Self::DEFAULT_TCP_KEEPALIVE_MS),
            shutdown_delay: Duration::ZERO,
        }
    }
}

/// Everything [`super::run`] needs, validated before it starts.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where connections go; shared with whoever reloads it.
    pub routes: Arc<RouteTable>,
    pub limits: Limits,
    /// Counters and histograms, also served by [`super::admin::run`] when enabled.
    pub metrics: Arc<Metrics>,
}

impl ProxyConfig {
    /// `routes` with the default limits and fresh metrics.
    pub fn new(routes: Routes) -> Self {
        ProxyConfig {
            routes: Arc::new(RouteTable::new(routes)),
            limits: Limits::default(),
            metrics: Arc::default(),
        }
    }
}

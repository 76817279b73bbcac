//! The proxy: one TCP port, each connection routed by its first bytes.
//!
//! ```text
//! server   accept ─► limit (max connections) ─► spawn, tracked for the drain
//! conn     sniff ─► decide ─► connect ─► replay ─► relay ─► one Outcome
//!            │        │                     │         │          │
//!         detect,   routes             proxy_protocol relay    observe ─► metrics, one log line
//!         tls, io
//! admin    /metrics, /healthz, /readyz
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`server`] | [`run`]: accept loop, `--max-connections`, drain with a task tracker |
//! | [`per_core`] | `--per-core`: [`server`] on one single-threaded runtime per thread, one `SO_REUSEPORT` listener each |
//! | `conn` | the per-connection pipeline, stage by stage; its first stage, reading the prefix, is `sniff` |
//! | [`detect`] | pure: first bytes → ZMTP, HTTP/2, or neither |
//! | [`tls`] | pure: a ClientHello → SNI and ALPN |
//! | [`intercept`] | `--intercept-port`: the nftables table that redirects a member's port here, its fail-open guard, and `SO_ORIGINAL_DST` for `--zmq-backend original` |
//! | [`routes`] | route names, backend addresses, the route table, and the pure [`routes::decide`] |
//! | [`io`] | [`io::PrefixedStream`], the replaying stream handed to in-process servers |
//! | [`relay`] | both directions until both end: readiness-driven copy or `splice(2)` |
//! | [`proxy_protocol`] | the PROXY v2 header for backends that want the client's address |
//! | [`outcome`] | how a connection ended, and the label vocabulary of the metrics |
//! | `observe` | the one place a connection is logged and counted |
//! | [`metrics`], [`admin`] | the Prometheus registry, and the HTTP endpoint that serves it |
//! | [`settings`] | [`ProxyConfig`], [`Limits`] and every default |
//! | [`sweep`] | wakes open connections to check the idle timeout and the drain cut |

pub mod admin;
mod conn;
pub mod detect;
pub mod intercept;
pub mod io;
pub mod metrics;
mod observe;
pub mod outcome;
pub mod per_core;
pub mod process;
pub mod proxy_protocol;
pub mod relay;
pub mod routes;
pub mod scrape;
pub mod server;
pub mod settings;
mod sniff;
pub mod sweep;
pub mod tls;

pub use routes::{
    BackendAddr, LocalServer, RouteName, RouteTable, Routes, Target, TlsRoutes, TlsRule,
};
pub use server::run;
pub use settings::{Limits, ProxyConfig};

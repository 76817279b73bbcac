//! The proxy: one TCP port, each connection routed by its first bytes.
//!
//! ```text
//! server   accept ─► limit (max connections) ─► spawn, tracked for the drain
//! conn     who ─► sniff ─► decide ─► connect ─► replay ─► relay ─► one Outcome
//!           │       │        │         │          │         │         │
//!     PROXY header detect,  routes  intercept  proxy_protocol relay  observe ─► metrics,
//!     from a trusted tls,            (original      (header            one log line
//!     balancer       prefixed       destination)   for backends)
//! admin    /metrics, /healthz, /readyz (metrics, process, scrape)
//! ```
//!
//! | module | what it holds |
//! |---|---|
//! | [`server`] | [`run`]: accept loop, `--max-connections`, drain with a task tracker |
//! | [`per_core`] | `--per-core`: [`server`] on one single-threaded runtime per thread, one `SO_REUSEPORT` listener each |
//! | `conn` | the per-connection pipeline, stage by stage: `who` (the client, from a trusted balancer's PROXY header or the socket), `sniff`, decide, connect, replay, relay |
//! | `sniff` | reading the prefix until the detector (and the TLS reader) can decide |
//! | [`detect`] | pure: first bytes → ZMTP, HTTP/2, or neither |
//! | [`tls`] | pure: a ClientHello → SNI and ALPN |
//! | [`intercept`] | `--intercept-port`: the nftables table that redirects a member's port here, its fail-open guard, and `SO_ORIGINAL_DST` for `--zmq-backend original` |
//! | [`routes`] | route names, backend addresses, the route table, and the pure [`routes::decide`] |
//! | [`prefixed`] | [`prefixed::PrefixedStream`], the replaying stream handed to in-process servers |
//! | [`relay`] | both directions until both end: readiness-driven copy or `splice(2)` |
//! | [`proxy_protocol`] | the PROXY v2 header for backends that want the client's address |
//! | [`outcome`] | how a connection ended, and the label vocabulary of the metrics |
//! | `observe` | the one place a connection is logged and counted |
//! | [`metrics`], [`admin`] | the Prometheus registry, and the HTTP endpoint that serves it |
//! | [`process`] | process metrics read from `/proc` at each scrape (descriptors, memory, CPU) |
//! | [`scrape`] | writing counters and gauges kept elsewhere into a scrape (for collectors here and in the tools) |
//! | [`settings`] | [`ProxyConfig`], [`Limits`] and every default |
//! | [`sweep`] | wakes open connections to check the idle timeout and the drain cut |

pub mod admin;
mod conn;
pub mod detect;
pub mod intercept;
pub mod metrics;
mod observe;
pub mod outcome;
pub mod per_core;
pub mod prefixed;
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

//! zmq-grpc-proxy: one TCP port for ZeroMQ and gRPC.
//!
//! # Layout
//!
//! This crate is the product: the library and the `proxy` binary (in `src/bin`, which only
//! parses flags and calls into it). The demo peers, load generators, bridge and gossip mesh
//! are the `zmq-grpc-proxy-tools` crate in `tools/`, which builds on this one; nothing here
//! depends on it.
//!
//! | module | what it holds |
//! |---|---|
//! | [`proxy`] | the proxy itself; its own map and the connection pipeline are in [`proxy`]'s doc |
//! | [`migrate`] | `mux`: gRPC served in-process, ZeroMQ forwarded, on the same port (migration stage two, embedded by tools' `grpc_server --zmq-forward`) |
//! | [`router`] | serving a tonic router with TCP_NODELAY on every connection and a bounded drain |
//! | `config` | the proxy's flags, environment and TOML file, resolved into a [`proxy::ProxyConfig`], `--check` and reloading on SIGHUP (feature `cli`) |
//! | `cli`, `shutdown` | what every binary shares, here and in tools: logging flags, exit codes, signals (feature `cli`; `shutdown` always) |
//!
//! Data flows one way: `cli`/`config` → [`proxy`] ← [`migrate`] → [`router`]. With
//! `default-features = false` (no `cli`) the library is the embeddable core: no clap and
//! no libzmq.

#![deny(unsafe_code)]

/// The version every binary reports: the crate version and the git commit it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ZGP_GIT_COMMIT"),
    ")"
);

/// The git commit built from (`+dirty` with uncommitted changes; `unknown` outside git).
pub const GIT_COMMIT: &str = env!("ZGP_GIT_COMMIT");

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod config;
pub mod migrate;
pub mod proxy;
pub mod router;
pub mod shutdown;

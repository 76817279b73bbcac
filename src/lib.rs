//! zmq-grpc-proxy: one TCP port for ZeroMQ and gRPC.
//!
//! # Layout
//!
//! The tree follows the data path. Everything the product (`proxy`) runs lives in
//! [`proxy`]; the binaries in `src/bin` only parse flags and call into the library.
//!
//! | module | what it holds |
//! |---|---|
//! | [`proxy`] | the proxy itself: accept loop, limits and drain (`server`), the per-connection pipeline (`conn`), the pure routing decision (`routes`), the prefixed stream (`io`), `relay`, `detect`, `tls`, `proxy_protocol`, the connection `outcome`, `metrics` and the `admin` endpoint |
//! | [`peers`] | the demo peers and load generators: `zmq_push` / `zmq_pull`, `grpc_client` / `grpc_server`, and the `message` they all exchange |
//! | [`migrate`] | the later migration stages: `mux` (gRPC served in-process, ZMQ forwarded on the same port) and `zmq_bridge` |
//! | [`mesh`] | a gossip mesh (Habitat's Butterfly) migrating member by member: the dual-stack sender, `gossip_mesh` |
//! | [`serve`] | serving a tonic router with TCP_NODELAY on every connection and a bounded drain |
//! | [`mesh`] | a gossip mesh migrating member by member: the capability `check`, the dual-stack `sender` (gRPC where the peer takes it, ZeroMQ otherwise), Butterfly-style gossip and the `gossip_mesh` rollout |
//! | [`config`] | the proxy's flags, environment and TOML file, resolved into a [`proxy::ProxyConfig`], and reloading on SIGHUP |
//! | [`cli`], [`shutdown`] | what every binary shares: logging flags, exit codes, signals |
//! | [`args`] | every binary's command line (`clap`), and [`args::commands`], all seven as `clap::Command`s for the man pages and shell completions |
//! | [`pb`] | code generated from `proto/messages.proto` |
//!
//! Data flows one way: [`cli`]/[`config`] → [`proxy`] ← [`migrate`]; [`peers`] depend only
//! on [`pb`] and each other's message helpers; [`mesh`] builds on [`peers`], [`migrate`] and
//! [`proxy`], and nothing builds on it; [`args`] builds on all of them for the binaries'
//! flags, and only the binaries and the asset generator build on it. No two modules import each other.

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

#[cfg(feature = "tools")]
pub mod args;
#[cfg(feature = "tools")]
pub mod cli;
#[cfg(feature = "tools")]
pub mod config;
#[cfg(feature = "tools")]
pub mod mesh;
pub mod migrate;
#[cfg(feature = "tools")]
pub mod peers;
pub mod proxy;
pub mod serve;
pub mod shutdown;

/// Code generated from `proto/messages.proto`.
pub mod pb {
    tonic::include_proto!("zgproxy.v1");

    /// Encoded descriptor set of `proto/`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/messages_descriptor.bin"));
}

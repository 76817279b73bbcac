//! zmq-grpc-proxy's tools: everything around the proxy that is not the proxy. The demo
//! peers and load generators, the ZeroMQ-to-gRPC bridge (the migration's last stage), the
//! gossip mesh that rehearses a Butterfly-style rollout, and every binary's command line.
//! The product, the proxy, is the `zmq_grpc_proxy` crate (the workspace root); this crate
//! builds on it, never the other way.
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`peers`] | the demo peers and load generators: `zmq_push` / `zmq_pull`, `grpc_client` / `grpc_server`, and the `message` they all exchange |
//! | [`bridge`] | `zmq_bridge`: a ZeroMQ PULL endpoint that turns every message into a gRPC call |
//! | [`mesh`] | a gossip mesh (Habitat's Butterfly) migrating member by member: the capability check, the dual-stack sender, Butterfly-style gossip, the `gossip_mesh` rollout |
//! | [`args`] | every binary's command line (`clap`), and [`args::commands`], all seven (the proxy's too) as `clap::Command`s for the man pages and shell completions |
//! | [`text`] | [`text::first_chars`]: what a log line may quote of a value from the network |
//! | [`pb`] | code generated from `proto/messages.proto` |
//!
//! Data flows one way: [`peers`] depend on [`pb`] and the proxy crate; [`bridge`] on
//! [`pb`]; [`mesh`] on [`peers`] and the proxy crate's `migrate::mux`; [`args`] on all of
//! them for the binaries' flags. No two modules import each other.

#![deny(unsafe_code)]

pub mod args;
pub mod bridge;
pub mod mesh;
pub mod peers;
pub mod text;

/// Code generated from `proto/messages.proto`.
pub mod pb {
    tonic::include_proto!("zgproxy.v1");

    /// Encoded descriptor set of `proto/`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/messages_descriptor.bin"));
}

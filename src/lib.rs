//! zmq-grpc-proxy: one TCP port for ZeroMQ and gRPC.
//!
//! The [`proxy`] reads the first bytes of each connection, lets the pure [`detect`]or tell a
//! ZMTP signature from the HTTP/2 client preface, connects to the matching backend, replays
//! the bytes it read and splices both directions. The other modules are the demo peers that
//! exercise it: [`zmq_push`] / [`zmq_pull`] and [`grpc_client`] / [`grpc_server`], all
//! exchanging the same protobuf [`pb::Message`].

pub mod cli;
pub mod config;
pub mod detect;
pub mod grpc_client;
pub mod grpc_server;
pub mod message;
pub mod metrics;
pub mod mux;
pub mod proxy;
pub mod proxy_protocol;
pub mod relay;
pub mod shutdown;
pub mod tls;
pub mod zmq_bridge;
pub mod zmq_pull;
pub mod zmq_push;

/// Code generated from `proto/messages.proto`.
pub mod pb {
    tonic::include_proto!("zgproxy.v1");

    /// Encoded descriptor set of `proto/`, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/messages_descriptor.bin"));
}

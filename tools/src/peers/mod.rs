//! The demo peers and load generators: ZeroMQ `zmq_push` → `zmq_pull` and gRPC
//! `grpc_client` → `grpc_server`, all exchanging [`message`]s whose payloads receivers can
//! verify byte for byte. They stand in for the services on either side of the proxy.

pub mod grpc_client;
pub mod grpc_server;
pub mod message;
pub mod zmq_pull;
pub mod zmq_push;

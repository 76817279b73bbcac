//! The migration stages after the proxy (see MIGRATION.md): [`mux`] serves gRPC in-process
//! and forwards ZeroMQ on the same port; [`zmq_bridge`] replaces the old ZeroMQ server by
//! turning every ZeroMQ message into a gRPC call.

pub mod mux;
#[cfg(feature = "tools")]
pub mod zmq_bridge;

//! The migration stage after the proxy that embeds it (see MIGRATION.md): [`mux`] serves
//! gRPC in-process and forwards ZeroMQ on the same port. The last stage, `zmq_bridge`
//! (every ZeroMQ message turned into a gRPC call), is a tool: `zmq_grpc_proxy_tools::bridge`.

pub mod mux;

//! A gossip mesh moving from ZeroMQ to gRPC member by member (issue 12; Habitat's
//! Supervisor gossip, "Butterfly", is the worked example in MIGRATION.md).
//!
//! | module | what it holds |
//! |---|---|
//! | [`check`] | does a peer take gRPC? the HTTP/2 preface + SETTINGS exchange, on the connection that will carry the calls |
//! | [`sender`] | [`sender::DualSender`]: per peer, gRPC where it is taken, ZeroMQ otherwise, switching only on proof the peer saw nothing |
//! | [`zmq_send`] | Butterfly's ZeroMQ send: a fresh PUSH socket per peer per batch |
//! | [`stats`] | the sender's counters |
//! | [`push`] | `zmq_push --prefer-grpc`: the demo sender through the dual-stack sender |
//!
//! The mesh depends on [`crate::peers`] (the gRPC service), [`crate::migrate`] (the mux) and
//! [`crate::proxy`] (the prefixed stream); none of them depends on it.

pub mod check;
pub mod push;
pub mod sender;
pub mod stats;
pub mod zmq_send;

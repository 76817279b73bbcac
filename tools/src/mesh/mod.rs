//! A gossip mesh moving from ZeroMQ to gRPC member by member (issue 12; Habitat's
//! Supervisor gossip, "Butterfly", is the worked example in MIGRATION.md).
//!
//! | module | what it holds |
//! |---|---|
//! | [`capability`] | does a peer take gRPC? the HTTP/2 preface + SETTINGS exchange, on the connection that will carry the calls |
//! | [`delivery`] | the vocabulary of sending: a message's parts, the protocol that carried it, what became of it ([`delivery::Delivery`]) |
//! | [`sender`] | [`sender::DualSender`]: per peer, gRPC where it is taken, ZeroMQ otherwise, switching only on proof the peer saw nothing |
//! | `proof` | what a failed gRPC call proves about whether the peer saw the message |
//! | [`zmq_send`] | Butterfly's ZeroMQ send: a fresh PUSH socket per peer per batch |
//! | [`stats`] | the sender's counters |
//! | [`push`] | `zmq_push --prefer-grpc`: the demo sender through the dual-stack sender |
//! | [`rumor`] | rumors, their wire frames and Butterfly's heat (pure) |
//! | [`stage`] | the rollout's stages ([`stage::Stage`]): what a member receives and sends in each |
//! | [`receive`] | a member's receiving side per stage, on its advertised port; hands messages to an [`receive::Inbox`] |
//! | [`member`] | a member and its incarnations (it is the receiver's [`receive::Inbox`]) and Butterfly's push loop |
//! | [`book`] | the ledger a run is judged by: who got which rumor when |
//! | [`rollout`] | `gossip_mesh`: N members, the rollout schedule, the per-stage report |
//! | [`rng`] | the seeded generator behind `--seed` |
//!
//! The mesh depends on [`crate::peers`] (the gRPC service), [`zmq_grpc_proxy::migrate`] (the mux) and
//! [`zmq_grpc_proxy::proxy`] (the prefixed stream); none of them depends on it.

pub mod book;
pub mod capability;
pub mod delivery;
pub mod member;
mod proof;
pub mod push;
pub mod receive;
pub mod rng;
pub mod rollout;
pub mod rumor;
pub mod sender;
pub mod stage;
pub mod stats;
pub mod zmq_send;

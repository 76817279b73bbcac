//! The rollout's stages: what a member receives and sends once upgraded to each.

use super::sender::Mode;

/// The rollout stages, in order; each names what a member does once upgraded to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Receives ZeroMQ on its port, sends ZeroMQ.
    Zmq,
    /// Receives both on the same port (the in-process mux), sends ZeroMQ.
    Both,
    /// Receives both, sends gRPC where the peer takes it.
    PreferGrpc,
    /// Receives and sends gRPC only.
    Grpc,
}

impl Stage {
    pub const ROLLOUT: [Stage; 4] = [Stage::Zmq, Stage::Both, Stage::PreferGrpc, Stage::Grpc];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Zmq => "zmq",
            Stage::Both => "both",
            Stage::PreferGrpc => "prefer-grpc",
            Stage::Grpc => "grpc",
        }
    }

    pub fn sender_mode(self) -> Mode {
        match self {
            Stage::Zmq | Stage::Both => Mode::Zmq,
            Stage::PreferGrpc => Mode::PreferGrpc,
            Stage::Grpc => Mode::Grpc,
        }
    }
}

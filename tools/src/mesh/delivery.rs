//! The vocabulary of sending, shared by the senders (`sender`, `zmq_send`), the receivers
//! and the push loop: a message's parts, the protocol that carried it, and what became of
//! it ([`Delivery`]).

/// One message: all its parts, as ZeroMQ would carry them.
pub type Parts = Vec<Vec<u8>>;

/// Which protocol carried a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Grpc,
    Zmq,
}

/// Why a message was not sent. In every case the peer has not seen it: safe to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// The send timeout passed (ZeroMQ: no connection completed its handshake in time).
    Timeout,
    /// Refused, closed, silent, or not a protocol we speak.
    Unreachable,
    /// The peer takes only ZeroMQ and the mode is gRPC only.
    NoCommonProtocol,
}

/// What became of one message handed to a sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// gRPC: acknowledged by the peer. ZeroMQ: queued on a connected socket (ZeroMQ gives
    /// no receipt; lost if the peer stops before reading it).
    Sent(Via),
    /// Provably not seen by the peer.
    NotSent(NotSent),
    /// A gRPC call that failed after its request was written: maybe seen. Not retried.
    Unknown,
}

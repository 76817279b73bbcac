//! What a failed gRPC call proves about whether the peer saw the message (see
//! [`super::sender`] for why only proof moves a message to the other protocol).

use std::error::Error as _;

use tonic::Code;

use super::capability::CheckError;

/// What a failed gRPC call proves.
pub(super) enum Proof {
    /// A (re)connection was checked and found ZeroMQ, or the server lacks `Gossip`.
    GrpcRefused,
    /// A (re)connection failed its check otherwise: nothing was written.
    NotConnected,
    /// The connection closed with the request still queued in the client (hyper's
    /// `Canceled`, raised only for a request the connection never took): not written.
    /// Typical of a peer that stopped just before the call; worth one new connection.
    NeverWritten,
    /// Nothing: the peer may have taken the message.
    Nothing,
}

pub(super) fn proof(status: &tonic::Status) -> Proof {
    if status.code() == Code::Unimplemented {
        return Proof::GrpcRefused;
    }
    match status.source().and_then(find_check_error) {
        Some(CheckError::Zmtp { .. }) => return Proof::GrpcRefused,
        Some(_) => return Proof::NotConnected,
        None => {}
    }
    // Not tonic's own deadline, which is also `Cancelled`: only hyper's canceled error.
    let mut source = status.source();
    while let Some(e) = source {
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return Proof::NeverWritten;
        }
        source = e.source();
    }
    Proof::Nothing
}

pub(super) fn find_check_error<'e>(
    e: &'e (dyn std::error::Error + 'static),
) -> Option<&'e CheckError> {
    let mut source = Some(e);
    while let Some(e) = source {
        if let Some(check) = e.downcast_ref::<CheckError>() {
            return Some(check);
        }
        source = e.source();
    }
    None
}

//! Delivery: one worker per lane sends each message as a unary `Send` (or, opaque, as a
//! `Gossip` call), retrying what can succeed later and dead-lettering what the server
//! refuses for good.

use super::*;

/// One message read from ZMQ, as its lane delivers it.
#[derive(Debug, Clone)]
pub(super) enum Item {
    /// Ours, decoded: delivered with `Send`.
    Message(Message),
    /// Anything, all parts as read: delivered with `Gossip`.
    Frames(Frames),
}

impl Item {
    /// What keeps order: one sender's messages, or one peer's, share a lane.
    pub(super) fn lane_key(&self) -> &str {
        match self {
            Item::Message(m) => &m.sender,
            Item::Frames(f) => &f.peer_address,
        }
    }

    async fn call(
        &self,
        client: &mut IngestClient<Channel>,
        timeout: Duration,
    ) -> Result<(), tonic::Status> {
        match self {
            Item::Message(m) => {
                let mut request = tonic::Request::new(m.clone());
                request.set_timeout(timeout);
                client.send(request).await.map(drop)
            }
            Item::Frames(f) => {
                let mut request = tonic::Request::new(f.clone());
                request.set_timeout(timeout);
                client.gossip(request).await.map(drop)
            }
        }
    }

    /// (sequence, sender or peer, bytes) for the log; opaque messages have no sequence.
    fn describe(&self) -> (u64, &str, usize) {
        match self {
            Item::Message(m) => (m.sequence, &m.sender, m.encoded_len()),
            Item::Frames(f) => (0, &f.peer_address, f.parts.iter().map(Vec::len).sum()),
        }
    }
}

pub(super) fn lane_of(sender: &str, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    sender.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

/// What to do with a message whose call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The failure can pass (the server is away, slow, overloaded, misconfigured): send
    /// the message again, holding the lane.
    Retry,
    /// The server will never accept this message: log it, count it, move on.
    DeadLetter,
}

/// Decides from a failed call's status whether to retry it (see the module docs for why
/// each code goes where it does).
fn verdict(code: Code, message: &str) -> Verdict {
    match code {
        Code::InvalidArgument
        | Code::OutOfRange
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists => Verdict::DeadLetter,
        // grpc-go, grpc-java and grpc-core reject an oversized message with this code
        // (tonic uses OutOfRange); otherwise it is a quota or overload, which passes.
        Code::ResourceExhausted if is_about_size(message) => Verdict::DeadLetter,
        Code::ResourceExhausted
        | Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::PermissionDenied
        | Code::Aborted
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::DataLoss
        | Code::Unauthenticated => Verdict::Retry,
    }
}

/// Whether a ResourceExhausted message is about the message's size rather than a quota.
fn is_about_size(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["larger than max", "exceeds maximum", "too large"]
        .iter()
        .any(|needle| message.contains(needle))
}

/// At most [`MAX_LOGGED_CHARS`] characters of a value that came from the network.
fn truncated(s: &str) -> &str {
    crate::text::first_chars(s, MAX_LOGGED_CHARS)
}

/// One lane: each message is sent, in arrival order, until the server acknowledges it or
/// rejects it for good.
pub(super) async fn deliver(
    lane: usize,
    mut queue: mpsc::Receiver<(Item, Instant)>,
    mut client: IngestClient<Channel>,
    timeout: Duration,
    stats: Arc<BridgeStats>,
) {
    while let Some((item, read_at)) = queue.recv().await {
        stats.heads().insert(lane, read_at);
        let (sequence, sender, size) = item.describe();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let status = match item.call(&mut client, timeout).await {
                Ok(()) => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    debug!(lane, sequence, sender = %truncated(sender), "delivered");
                    break;
                }
                Err(status) => status,
            };
            // The whole status (code, message, source), cut to a loggable length.
            let (code, error) = (status.code(), status.to_string());
            let error = truncated(&error);
            if verdict(code, status.message()) == Verdict::DeadLetter {
                let dead = stats.dead_lettered.fetch_add(1, Ordering::Relaxed) + 1;
                warn!(
                    lane,
                    sequence,
                    sender = %truncated(sender),
                    size,
                    ?code,
                    error = %error,
                    dead_lettered = dead,
                    "dead-lettered: the server rejected the message for good; not retried"
                );
                break;
            }
            let failed = stats.failed_attempts.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                lane,
                sequence,
                sender = %truncated(sender),
                ?code,
                error = %error,
                failed_attempts = failed,
                retry_in_ms = backoff.as_millis() as u64,
                "delivery failed; will retry"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        stats.heads().remove(&lane);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_about_the_message_itself_are_dead_lettered() {
        use Verdict::*;
        let table = [
            // tonic's own size check, server side (the 70 MB case) and client side.
            (Code::OutOfRange, "Error, decoded message length too large: found 70000010 bytes, the limit is: 67108864 bytes", DeadLetter),
            (Code::OutOfRange, "Error, encoded message length too large: found 5 bytes, the limit is: 4 bytes", DeadLetter),
            // Other servers' size checks.
            (Code::ResourceExhausted, "grpc: received message larger than max (70000010 vs. 4194304)", DeadLetter),
            (Code::ResourceExhausted, "gRPC message exceeds maximum size 4194304: 70000010", DeadLetter),
            (Code::ResourceExhausted, "Received message larger than max (70000010 vs. 4194304)", DeadLetter),
            (Code::InvalidArgument, "payload does not match its sequence", DeadLetter),
            (Code::FailedPrecondition, "sequence 7 after 5", DeadLetter),
            (Code::NotFound, "no such topic", DeadLetter),
            (Code::AlreadyExists, "sequence 3 already stored", DeadLetter),
            // A quota or an overload passes.
            (Code::ResourceExhausted, "Quota exceeded for 'writes per minute'", Retry),
            // The server or the path to it: every message would fail alike.
            (Code::Unavailable, "tcp connect error: Connection refused", Retry),
            (Code::DeadlineExceeded, "Deadline expired before operation could complete", Retry),
            (Code::Cancelled, "Timeout expired", Retry),
            (Code::Aborted, "transaction aborted", Retry),
            (Code::Internal, "h2 protocol error: error reading a body from connection", Retry),
            (Code::Unknown, "transport error", Retry),
            (Code::DataLoss, "", Retry),
            (Code::Unimplemented, "unknown service zgproxy.v1.Ingest", Retry),
            (Code::Unauthenticated, "missing token", Retry),
            (Code::PermissionDenied, "not allowed", Retry),
        ];
        for (code, message, want) in table {
            assert_eq!(verdict(code, message), want, "{code:?}: {message}");
        }
    }

    #[test]
    fn logged_network_values_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(MAX_LOGGED_CHARS + 10);
        assert_eq!(truncated(&long).chars().count(), MAX_LOGGED_CHARS);
    }

    #[test]
    fn summary_partitions_what_was_received_and_keeps_key_order() {
        let stats = BridgeStats::default();
        stats.received.store(10, Ordering::Relaxed);
        stats.delivered.store(7, Ordering::Relaxed);
        stats.dead_lettered.store(2, Ordering::Relaxed);
        stats.failed_attempts.store(4, Ordering::Relaxed);
        assert_eq!(
            stats.to_string(),
            "received=10 delivered=7 undelivered=1 failed_attempts=4 malformed=0 dead_lettered=2"
        );
    }
}

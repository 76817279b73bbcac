//! Sending over ZeroMQ the way Habitat's Butterfly does: a fresh PUSH socket per peer per
//! batch (linger 1000 ms, TCP keepalive off, `immediate`, send high-water mark 1000, send
//! timeout 500 ms), each message sent whole (all parts), the socket dropped at the end.
//!
//! What a successful send means is ZeroMQ's: the message was queued on a socket whose
//! connection had completed its handshake (`immediate`), and lingers up to the linger time
//! to reach the peer; it is lost if the peer stops before reading it. What a timeout means
//! is stronger: the message was never queued, so the peer cannot see it. Blocking (libzmq):
//! call it off the async runtime.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::debug;

use super::delivery::{Delivery, NotSent, Parts, Via};
use super::stats::SenderStats;

/// Socket options, Butterfly's by default.
#[derive(Debug, Clone, Copy)]
pub struct PushOptions {
    pub send_timeout: Duration,
    pub linger: Duration,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            send_timeout: Duration::from_millis(500),
            linger: Duration::from_millis(1000),
        }
    }
}

fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

fn socket(
    context: &zmq::Context,
    peer: SocketAddr,
    options: PushOptions,
) -> Result<zmq::Socket, zmq::Error> {
    let socket = context.socket(zmq::PUSH)?;
    socket.set_linger(millis(options.linger))?;
    socket.set_tcp_keepalive(0)?;
    socket.set_immediate(true)?;
    socket.set_sndhwm(1000)?;
    socket.set_sndtimeo(millis(options.send_timeout))?;
    socket.set_ipv6(peer.is_ipv6())?;
    socket.connect(&format!("tcp://{peer}"))?;
    Ok(socket)
}

/// Sends `messages` to `peer` in order on one fresh socket. After the first message that
/// times out, the rest are not tried (they would wait as long for the same peer) and are
/// reported not sent.
pub fn push_batch(
    context: &zmq::Context,
    peer: SocketAddr,
    messages: &[Parts],
    options: PushOptions,
    stats: &SenderStats,
) -> Vec<Delivery> {
    let socket = match socket(context, peer, options) {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, error = %e, "cannot open a ZMQ socket to the peer");
            stats
                .not_sent
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            return vec![Delivery::NotSent(NotSent::Unreachable); messages.len()];
        }
    };
    stats.zmq_connections.fetch_add(1, Ordering::Relaxed);
    let mut outcomes = Vec::with_capacity(messages.len());
    for parts in messages {
        if outcomes.last() == Some(&Delivery::NotSent(NotSent::Timeout)) {
            outcomes.push(Delivery::NotSent(NotSent::Timeout));
            stats.timeouts.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        // libzmq checks the high-water mark on the first part only: a multi-part message
        // is queued whole or not at all.
        let outcome = match socket.send_multipart(parts.iter(), 0) {
            Ok(()) => {
                stats.sent_zmq.fetch_add(1, Ordering::Relaxed);
                Delivery::Sent(Via::Zmq)
            }
            Err(zmq::Error::EAGAIN) => {
                debug!(%peer, "ZMQ send timed out: no connection completed its handshake");
                stats.timeouts.fetch_add(1, Ordering::Relaxed);
                Delivery::NotSent(NotSent::Timeout)
            }
            Err(e) => {
                debug!(%peer, error = %e, "ZMQ send failed");
                stats.not_sent.fetch_add(1, Ordering::Relaxed);
                Delivery::NotSent(NotSent::Unreachable)
            }
        };
        outcomes.push(outcome);
    }
    outcomes
}

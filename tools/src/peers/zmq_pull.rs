//! The ZMQ PULL server: binds, receives whole messages (all parts), verifies and tallies
//! ours ([`Message`](crate::pb::Message), one frame) and counts every other message as `foreign`, so a mesh's
//! opaque frames (or anyone else's) are never dropped silently and `--count` finishes.
//!
//! libzmq is blocking here (the `zmq` crate), so the loop waits on the socket with a short
//! receive timeout and checks the shutdown flag between waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::info;

use crate::peers::message::{classify, Classified, Summary, Tally};

/// How often a blocked receive wakes up to check for shutdown.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct PullConfig {
    /// ZMQ endpoint to bind, e.g. `tcp://127.0.0.1:7001` (`tcp://127.0.0.1:*` picks a port).
    pub bind: String,
    /// Stop after this many messages.
    pub count: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot bind {endpoint}: {source}")]
    Bind {
        endpoint: String,
        source: zmq::Error,
    },
    #[error("ZMQ socket error: {0}")]
    Socket(#[from] zmq::Error),
}

/// A bound PULL socket, ready to receive.
pub struct Puller {
    socket: zmq::Socket,
    _context: zmq::Context,
    endpoint: String,
}

impl Puller {
    pub fn bind(endpoint: &str) -> Result<Self, PullError> {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::PULL)?;
        socket.set_rcvtimeo(POLL.as_millis() as i32)?;
        // Only for IPv6 endpoints: with it on, an IPv4 bind is reported as ::ffff:a.b.c.d.
        socket.set_ipv6(endpoint.contains('['))?;
        socket.bind(endpoint).map_err(|source| PullError::Bind {
            endpoint: endpoint.to_owned(),
            source,
        })?;
        let endpoint = socket
            .get_last_endpoint()?
            .unwrap_or_else(|_| endpoint.to_owned());
        Ok(Puller {
            socket,
            _context: context,
            endpoint,
        })
    }

    /// The endpoint actually bound (with the port filled in when `*` was asked for).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Receives until `count` messages (ours and foreign) arrived or `stop` is set.
    pub fn run(self, count: Option<u64>, stop: &AtomicBool) -> Result<Summary, PullError> {
        let mut tally = Tally::default();
        info!(endpoint = %self.endpoint, "listening");
        while count.is_none_or(|c| tally.total() < c) && !stop.load(Ordering::Relaxed) {
            let parts = match self.socket.recv_multipart(0) {
                Ok(parts) => parts,
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            let size: usize = parts.iter().map(Vec::len).sum();
            match classify(&parts) {
                Classified::Ours(m) => {
                    info!(sequence = m.sequence, sender = %m.sender, size = m.payload.len(), "message");
                    tally.record(&m, size);
                }
                Classified::Foreign => {
                    info!(parts = parts.len(), size, "foreign");
                    tally.record_foreign(size);
                }
            }
        }
        Ok(tally.summary())
    }
}

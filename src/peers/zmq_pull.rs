//! The ZMQ PULL server: binds, decodes each frame as a [`Message`], logs it and tallies it.
//!
//! libzmq is blocking here (the `zmq` crate), so the loop waits on the socket with a short
//! receive timeout and checks the shutdown flag between waits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message as _;
use tracing::{info, warn};

use crate::pb::Message;
use crate::peers::message::{Summary, Tally};

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

    /// Receives until `count` messages arrived or `stop` is set.
    pub fn run(self, count: Option<u64>, stop: &AtomicBool) -> Result<Summary, PullError> {
        let mut tally = Tally::default();
        info!(endpoint = %self.endpoint, "listening");
        while count.is_none_or(|c| tally.received() < c) && !stop.load(Ordering::Relaxed) {
            let frame = match self.socket.recv_bytes(0) {
                Ok(frame) => frame,
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
            match Message::decode(frame.as_slice()) {
                Ok(m) => {
                    info!(sequence = m.sequence, sender = %m.sender, size = m.payload.len(), "message");
                    tally.record(&m, frame.len());
                }
                Err(e) => {
                    warn!(size = frame.len(), error = %e, "frame is not a Message");
                    tally.record_malformed(frame.len());
                }
            }
        }
        Ok(tally.summary())
    }
}

//! Counters of the dual-stack sender, shared by every sender that is handed the same
//! [`SenderStats`] (a mesh's members share one), and read as [`SenderCounts`] snapshots whose
//! differences give the figures for a span of time (a rollout stage).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Live counters; every field only grows.
#[derive(Debug, Default)]
pub struct SenderStats {
    /// Fresh ZMQ PUSH sockets opened (one TCP connection each).
    pub zmq_connections: AtomicU64,
    /// HTTP/2 connections that passed the capability check and carry gRPC.
    pub grpc_connections: AtomicU64,
    /// Checks that found a ZeroMQ-only peer (one TCP connection each, then closed).
    pub checks_found_zmq: AtomicU64,
    /// Checks that found nothing usable: refused, closed, silent, unrecognised.
    pub checks_failed: AtomicU64,
    /// Time spent in checks, and how many (for the mean cost).
    pub check_micros: AtomicU64,
    pub checks: AtomicU64,
    /// Messages acknowledged over gRPC.
    pub sent_grpc: AtomicU64,
    /// Messages queued on a connected ZMQ socket.
    pub sent_zmq: AtomicU64,
    /// Messages given up at the send timeout (provably not sent).
    pub timeouts: AtomicU64,
    /// Messages not sent for any other reason (peer unreachable, no common protocol).
    pub not_sent: AtomicU64,
    /// gRPC calls that failed after the request was written: maybe seen, never retried.
    pub unknown: AtomicU64,
    /// Messages that went over ZMQ after gRPC proved impossible for them (never both).
    pub fell_back: AtomicU64,
}

impl SenderStats {
    pub fn record_check(&self, took: Duration) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        self.check_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> SenderCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SenderCounts {
            zmq_connections: get(&self.zmq_connections),
            grpc_connections: get(&self.grpc_connections),
            checks_found_zmq: get(&self.checks_found_zmq),
            checks_failed: get(&self.checks_failed),
            check_micros: get(&self.check_micros),
            checks: get(&self.checks),
            sent_grpc: get(&self.sent_grpc),
            sent_zmq: get(&self.sent_zmq),
            timeouts: get(&self.timeouts),
            not_sent: get(&self.not_sent),
            unknown: get(&self.unknown),
            fell_back: get(&self.fell_back),
        }
    }
}

/// A snapshot of [`SenderStats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SenderCounts {
    pub zmq_connections: u64,
    pub grpc_connections: u64,
    pub checks_found_zmq: u64,
    pub checks_failed: u64,
    pub check_micros: u64,
    pub checks: u64,
    pub sent_grpc: u64,
    pub sent_zmq: u64,
    pub timeouts: u64,
    pub not_sent: u64,
    pub unknown: u64,
    pub fell_back: u64,
}

impl SenderCounts {
    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &SenderCounts) -> SenderCounts {
        SenderCounts {
            zmq_connections: self.zmq_connections - earlier.zmq_connections,
            grpc_connections: self.grpc_connections - earlier.grpc_connections,
            checks_found_zmq: self.checks_found_zmq - earlier.checks_found_zmq,
            checks_failed: self.checks_failed - earlier.checks_failed,
            check_micros: self.check_micros - earlier.check_micros,
            checks: self.checks - earlier.checks,
            sent_grpc: self.sent_grpc - earlier.sent_grpc,
            sent_zmq: self.sent_zmq - earlier.sent_zmq,
            timeouts: self.timeouts - earlier.timeouts,
            not_sent: self.not_sent - earlier.not_sent,
            unknown: self.unknown - earlier.unknown,
            fell_back: self.fell_back - earlier.fell_back,
        }
    }

    /// Mean time of one capability check, in milliseconds (0 without checks).
    pub fn mean_check_ms(&self) -> f64 {
        if self.checks == 0 {
            return 0.0;
        }
        self.check_micros as f64 / self.checks as f64 / 1000.0
    }
}

//! Counters of the dual-stack sender, shared by every sender that is handed the same
//! [`SenderStats`] (a mesh's members share one), and read as [`SenderCounts`] snapshots whose
//! differences give the figures for a span of time (a rollout stage).

use std::sync::atomic::Ordering;
use std::time::Duration;

/// Declares live counters (`$live`: atomics, every field only grows) and their snapshot
/// (`$counts`) from one list, so a counter cannot be added to one and forgotten in the
/// other, or in `snapshot` and `since`. Used here and by [`super::book::Received`].
macro_rules! counters {
    (
        $(#[doc = $live_doc:literal])* $live:ident,
        $(#[doc = $counts_doc:literal])* $counts:ident {
            $($(#[doc = $doc:literal])* $name:ident,)*
        }
    ) => {
        $(#[doc = $live_doc])*
        #[derive(Debug, Default)]
        pub struct $live {
            $($(#[doc = $doc])* pub $name: std::sync::atomic::AtomicU64,)*
        }

        $(#[doc = $counts_doc])*
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct $counts {
            $($(#[doc = $doc])* pub $name: u64,)*
        }

        impl $live {
            pub fn snapshot(&self) -> $counts {
                $counts {
                    $($name: self.$name.load(std::sync::atomic::Ordering::Relaxed),)*
                }
            }
        }

        impl $counts {
            /// What happened between `earlier` and this snapshot.
            pub fn since(&self, earlier: &$counts) -> $counts {
                $counts {
                    $($name: self.$name - earlier.$name,)*
                }
            }
        }
    };
}
pub(super) use counters;

counters! {
    /// Live counters of the senders; every field only grows.
    SenderStats,
    /// A snapshot of [`SenderStats`].
    SenderCounts {
        /// Fresh ZMQ PUSH sockets opened (one TCP connection each).
        zmq_connections,
        /// HTTP/2 connections that passed the capability check and carry gRPC.
        grpc_connections,
        /// Checks that found a ZeroMQ-only peer (one TCP connection each, then closed).
        checks_found_zmq,
        /// Checks that found nothing usable: refused, closed, silent, unrecognised.
        checks_failed,
        /// Time spent in checks, in microseconds (with `checks`, the mean cost).
        check_micros,
        /// Capability checks made.
        checks,
        /// Messages acknowledged over gRPC.
        sent_grpc,
        /// Messages queued on a connected ZMQ socket.
        sent_zmq,
        /// Messages given up at the send timeout (provably not sent).
        timeouts,
        /// Messages not sent for any other reason (peer unreachable, no common protocol).
        not_sent,
        /// gRPC calls that failed after the request was written: maybe seen, never retried.
        unknown,
        /// Messages that went over ZMQ after gRPC proved impossible for them (never both).
        fell_back,
    }
}

impl SenderStats {
    pub fn record_check(&self, took: Duration) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        self.check_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

impl SenderCounts {
    /// Mean time of one capability check, in milliseconds (0 without checks).
    pub fn mean_check_ms(&self) -> f64 {
        if self.checks == 0 {
            return 0.0;
        }
        self.check_micros as f64 / self.checks as f64 / 1000.0
    }
}

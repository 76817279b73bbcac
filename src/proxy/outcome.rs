//! How a connection ended: one [`Outcome`] per connection, returned by the pipeline
//! (`super::conn`) and observed once (`super::observe`): one log line and the counters.
//!
//! The label enums here are the vocabulary of the metrics (`reason="detect_timeout"`,
//! `outcome="ok"`, …); each value is spelled once, in its `as_str`.

use std::io;

use super::routes::{BackendAddr, RouteName};

/// Why a connection was closed before reaching a backend.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum RejectReason {
    /// Refused at accept: `--max-connections` were already open.
    MaxConnections,
    /// Too few bytes for a decision within the detect timeout.
    DetectTimeout,
    /// Bytes of no routed protocol (or TLS no rule matches).
    Unrecognised,
    /// The client closed before a decision.
    ClosedEarly,
    /// Reading from the client failed.
    ReadError,
    /// Still being detected when the drain timeout ended the proxy.
    DrainTimeout,
    /// Routed to `original` (interception), but the connection was not redirected: it
    /// dialled the proxy's port itself, so it has no original destination to go to.
    NotRedirected,
}

/// How a routed connection ended (the `outcome` label of `zgp_connections_closed_total`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Closed {
    /// Both directions finished normally.
    Ok,
    /// Reset or I/O error on either side.
    Error,
    /// The backend could not be reached.
    BackendUnavailable,
    /// Handed to a server in this process (see `mux`).
    Local,
    /// Still open when the drain timeout expired: reset on both sides.
    DrainTimeout,
    /// No byte either way for the idle timeout: reset on both sides.
    Idle,
}

/// Which way bytes went.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    ToBackend,
    ToClient,
}

/// Why connecting to a backend failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum BackendErrorKind {
    Refused,
    Timeout,
    Other,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MaxConnections => "max_connections",
            RejectReason::DetectTimeout => "detect_timeout",
            RejectReason::Unrecognised => "unrecognised",
            RejectReason::ClosedEarly => "closed_early",
            RejectReason::ReadError => "read_error",
            RejectReason::DrainTimeout => "drain_timeout",
            RejectReason::NotRedirected => "not_redirected",
        }
    }
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Ok => "ok",
            Closed::Error => "error",
            Closed::BackendUnavailable => "backend_unavailable",
            Closed::Local => "local",
            Closed::DrainTimeout => "drain_timeout",
            Closed::Idle => "idle",
        }
    }
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToBackend => "to_backend",
            Direction::ToClient => "to_client",
        }
    }
}

impl BackendErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendErrorKind::Refused => "refused",
            BackendErrorKind::Timeout => "timeout",
            BackendErrorKind::Other => "other",
        }
    }

    pub fn of(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => BackendErrorKind::Refused,
            io::ErrorKind::TimedOut => BackendErrorKind::Timeout,
            _ => BackendErrorKind::Other,
        }
    }
}

/// Everything the observer needs to know about one connection's end.
#[derive(Debug)]
pub enum Outcome {
    /// Closed before a route was chosen. `detail` says what was seen (e.g. the TLS names
    /// that matched no rule), already truncated for the log.
    Rejected {
        reason: RejectReason,
        received: usize,
        detail: Option<String>,
    },
    /// Routed, but the backend could not be reached.
    BackendUnavailable {
        route: RouteName,
        backend: BackendAddr,
        kind: BackendErrorKind,
        error: io::Error,
    },
    /// Handed to a server in this process; `false` if it had stopped taking connections.
    Local { route: RouteName, delivered: bool },
    /// Relayed to `backend` until it ended as `end`.
    Relayed {
        route: RouteName,
        backend: BackendAddr,
        to_backend: u64,
        to_client: u64,
        end: RelayEnd,
    },
}

impl Outcome {
    /// Closed before a route was chosen, after `received` bytes.
    pub fn rejected(reason: RejectReason, received: usize, detail: Option<String>) -> Outcome {
        Outcome::Rejected {
            reason,
            received,
            detail,
        }
    }

    /// Reading from (or about) the client failed before a route was chosen.
    pub fn read_error(e: &io::Error) -> Outcome {
        Outcome::rejected(RejectReason::ReadError, 0, Some(e.to_string()))
    }
}

/// How a relayed connection ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions reached end of stream.
    Clean,
    /// A side reset or failed (including the replay of the prefix); the other was reset.
    Error(io::Error),
    /// Cut at the drain timeout; both sides were reset.
    DrainTimeout,
    /// Nothing moved either way for the idle timeout; both sides were reset.
    Idle,
}

impl Outcome {
    /// The `outcome` label for routed connections; `None` for rejected ones.
    pub fn closed(&self) -> Option<(RouteName, Closed)> {
        match self {
            Outcome::Rejected { .. } => None,
            Outcome::BackendUnavailable { route, .. } => Some((*route, Closed::BackendUnavailable)),
            Outcome::Local { route, .. } => Some((*route, Closed::Local)),
            Outcome::Relayed { route, end, .. } => Some((
                *route,
                match end {
                    RelayEnd::Clean => Closed::Ok,
                    RelayEnd::Error(_) => Closed::Error,
                    RelayEnd::DrainTimeout => Closed::DrainTimeout,
                    RelayEnd::Idle => Closed::Idle,
                },
            )),
        }
    }
}

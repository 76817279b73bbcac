//! The one place a connection's life is logged and counted: [`routed`] when it reaches its
//! backend, [`closed`] with its [`Outcome`] when it ends.
//!
//! Counters first, then the line: tests and operators act on the line, so by the time
//! "closed" is logged every counter (and, last, the `active` gauge) already says so.

use std::time::Duration;

use tracing::{debug, info, warn};

use super::metrics::{
    BackendErrorLabels, BytesLabels, ClosedLabels, Metrics, ReasonLabels, RouteLabels,
};
use super::outcome::{Closed, Direction, Outcome, RejectReason, RelayEnd};
use super::routes::RouteName;

/// The connection reached its backend (or the local server): it is now active.
/// `detect` is the time from accept to the decision, `connect` the backend connect's.
pub fn routed(metrics: &Metrics, route: RouteName, detect: Duration, connect: Option<Duration>) {
    metrics.detect_seconds.observe(detect.as_secs_f64());
    if let Some(connect) = connect {
        let labels = RouteLabels { route };
        let histogram = metrics.connect_seconds.get_or_create(&labels);
        histogram.observe(connect.as_secs_f64());
    }
    metrics.active.get_or_create(&RouteLabels { route }).inc();
    // Route and backend are the connection span's fields: logged once, there.
    info!(detect_ms = detect.as_millis() as u64, "routed");
}

/// A connection refused at accept (`--max-connections`): counted here, logged by the
/// accept loop at most once a second.
pub fn refused(metrics: &Metrics) {
    let reason = RejectReason::MaxConnections;
    metrics
        .rejected
        .get_or_create(&ReasonLabels { reason })
        .inc();
}

/// The connection is over: count it, then log one line.
pub fn closed(metrics: &Metrics, outcome: &Outcome, duration: Duration) {
    count(metrics, outcome, duration);
    log(outcome, duration.as_millis() as u64);
}

fn count(metrics: &Metrics, outcome: &Outcome, duration: Duration) {
    match outcome {
        Outcome::Rejected { reason, .. } => {
            let reason = *reason;
            metrics
                .rejected
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
        Outcome::BackendUnavailable { route, kind, .. } => {
            let labels = BackendErrorLabels {
                route: *route,
                kind: *kind,
            };
            metrics.backend_errors.get_or_create(&labels).inc();
        }
        Outcome::Relayed {
            route,
            to_backend,
            to_client,
            ..
        } => {
            for (direction, n) in [
                (Direction::ToBackend, *to_backend),
                (Direction::ToClient, *to_client),
            ] {
                let labels = BytesLabels {
                    route: *route,
                    direction,
                };
                metrics.bytes.get_or_create(&labels).inc_by(n);
            }
        }
        Outcome::Local { .. } => {}
    }
    if let Some((route, outcome)) = outcome.closed() {
        if outcome != Closed::BackendUnavailable {
            let labels = RouteLabels { route };
            let histogram = metrics.duration_seconds.get_or_create(&labels);
            histogram.observe(duration.as_secs_f64());
        }
        metrics
            .closed
            .get_or_create(&ClosedLabels { route, outcome })
            .inc();
        // Last: a scrape that sees `active` at 0 sees every other counter final. Only a
        // connection whose backend could not be reached was never active.
        if outcome != Closed::BackendUnavailable {
            metrics.active.get_or_create(&RouteLabels { route }).dec();
        }
    }
}

fn log(outcome: &Outcome, duration_ms: u64) {
    match outcome {
        // A client that connects and leaves without a byte is a port probe or a TCP
        // health check, not news; everything else rejected is worth a line.
        Outcome::Rejected {
            reason: RejectReason::ClosedEarly,
            received: 0,
            ..
        } => debug!(route = %"none", reason = %"client closed before sending anything",
                    duration_ms, "closed"),
        Outcome::Rejected {
            reason,
            received,
            detail: None,
        } => info!(route = %"none", reason = %describe(*reason, *received), duration_ms, "closed"),
        Outcome::Rejected {
            reason,
            received,
            detail: Some(detail),
        } => info!(route = %"none", reason = %describe(*reason, *received), %detail, duration_ms,
                   "closed"),
        // Route and backend are in the connection's span: each field is logged once.
        Outcome::BackendUnavailable { error, .. } => {
            warn!(error = %error, duration_ms, "closed: backend connect failed")
        }
        Outcome::Local {
            delivered: true, ..
        } => debug!("handed to the local server"),
        Outcome::Local {
            delivered: false, ..
        } => info!("closed: the local server has stopped"),
        Outcome::Relayed {
            to_backend,
            to_client,
            end,
            ..
        } => {
            let (up, down) = (*to_backend, *to_client);
            match end {
                RelayEnd::Clean => {
                    info!(
                        bytes_to_backend = up,
                        bytes_to_client = down,
                        duration_ms,
                        "closed"
                    )
                }
                RelayEnd::Error(e) => info!(bytes_to_backend = up, bytes_to_client = down,
                                            duration_ms, error = %e, "closed with error"),
                RelayEnd::Idle => info!(
                    bytes_to_backend = up,
                    bytes_to_client = down,
                    duration_ms,
                    "closed: idle timeout (reset both sides)"
                ),
                RelayEnd::DrainTimeout => warn!(
                    bytes_to_backend = up,
                    bytes_to_client = down,
                    duration_ms,
                    "closed: cut at the drain timeout (reset both sides)"
                ),
            }
        }
    }
}

fn describe(reason: RejectReason, received: usize) -> String {
    match reason {
        RejectReason::MaxConnections => "at --max-connections".into(),
        RejectReason::DetectTimeout => {
            format!("no decision within the detect timeout ({received} bytes received)")
        }
        RejectReason::Unrecognised => "unrecognised protocol".into(),
        RejectReason::ClosedEarly => {
            format!("client closed before a decision ({received} bytes received)")
        }
        RejectReason::ReadError => "reading from client failed".into(),
        RejectReason::DrainTimeout => "still detecting at the drain timeout".into(),
        RejectReason::NotRedirected => {
            "not redirected by interception: no original destination to relay to \
             (the proxy's own port was dialled)"
                .into()
        }
    }
}

//! SIGINT/SIGTERM handling, in the two shapes the binaries need: a future for the async
//! ones (proxy, gRPC peers) and a flag for the blocking ZMQ loops, which poll it between
//! short socket timeouts.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Resolves on the first SIGINT or SIGTERM.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        // Without handlers the default action (exit) still applies; never resolve.
        _ => return std::future::pending().await,
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    tracing::info!(signal = name, "shutting down");
}

/// Resolves on the first SIGINT or SIGTERM, after arranging for a second one to end the
/// process at once (exit code 130): the way out of a drain an operator will not wait for.
pub async fn signal_twice_exits() {
    signal().await;
    tokio::spawn(async {
        signal().await;
        tracing::warn!("second signal: exiting without waiting for open connections");
        std::process::exit(130);
    });
}

/// Returns a flag set by the first SIGINT or SIGTERM. A second signal while the flag is
/// already set exits the process at once (code 130), for loops stuck in a long operation.
pub fn flag() -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

//! SIGINT/SIGTERM handling, in the two shapes the binaries need: a future for the async
//! ones (proxy, gRPC peers) and a flag for the blocking ZMQ loops, which poll it between
//! short socket timeouts.

#[cfg(feature = "cli")]
use std::sync::{atomic::AtomicBool, Arc};

/// Returns a future that resolves on the first SIGINT or SIGTERM.
///
/// The handlers are installed by this call, not when the future is first polled: a signal
/// that arrives before the server loop gets round to polling must still be caught, or the
/// default action would kill the process without a clean stop. Call it inside a runtime.
pub fn signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers =
        signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
    async move {
        let Ok((mut int, mut term)) = handlers else {
            // Without handlers the default action (exit) still applies; never resolve.
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down");
    }
}

/// Resolves on the first SIGINT or SIGTERM, after arranging for a second one to end the
/// process at once (exit code 130): the way out of a drain an operator will not wait for.
pub fn signal_twice_exits() -> impl std::future::Future<Output = ()> + Send + 'static {
    let first = signal();
    async move {
        first.await;
        // The handlers stay installed, so this second listener cannot miss the signal.
        let second = signal();
        tokio::spawn(async move {
            second.await;
            tracing::warn!("second signal: exiting without waiting for open connections");
            std::process::exit(130);
        });
    }
}

/// Returns a flag set by the first SIGINT or SIGTERM. A second signal while the flag is
/// already set exits the process at once (code 130), for loops stuck in a long operation.
#[cfg(feature = "cli")]
pub fn flag() -> std::io::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop))?;
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

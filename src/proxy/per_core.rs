//! `--per-core`: the proxy as one single-threaded runtime per worker thread, each accepting
//! from its own `SO_REUSEPORT` listener on the same port, instead of one work-stealing
//! runtime whose threads share one listener.
//!
//! The kernel spreads new connections over the listeners by address hash, and a connection
//! stays on the thread that accepted it. Nothing is handed between threads, so the
//! cross-thread wake-ups (futex, eventfd, a parked worker woken to steal) that the
//! work-stealing runtime pays per connection are gone: in the bench, 11–43% less CPU per
//! connection when connections arrive one at a time (the gossip pattern), and the first
//! bytes reach the backend 20–27% sooner; under a steady stream of connections the
//! saving vanishes (the sleeps move to `epoll_wait`). The price is the lack of stealing: a
//! thread that is busy, or descheduled by a neighbour, cannot give its connections to an
//! idle one, so tail latency under uneven load is worse. Hence opt-in (BENCHMARKS.md,
//! Performance II).
//!
//! Each thread runs `super::server::run_with_permits` with the same [`ProxyConfig`] (routes, metrics)
//! and one shared set of connection permits; one shutdown future stops them all, and each
//! drains its own connections.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{oneshot, watch, Semaphore};
use tracing::error;

use super::server;
use super::settings::ProxyConfig;

/// Serves on `threads` threads until `shutdown` resolves, then drains them all. `first` is
/// the bound listener (bound with `SO_REUSEPORT`, see [`server::bind`]); the other
/// threads bind the same address. Returns once every thread has drained.
///
/// Call it from a runtime of its own (the binary's main thread, which also serves the
/// admin endpoint and reloads): the connection threads build their own.
pub async fn run(
    first: std::net::TcpListener,
    config: ProxyConfig,
    threads: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let addr = first.local_addr()?.to_string();
    let mut listeners = vec![first];
    for _ in 1..threads.max(1) {
        listeners.push(server::bind(&addr, true)?);
    }
    let permits = Arc::new(Semaphore::new(config.limits.max_connections as usize));
    let (stop, stopped) = watch::channel(false);
    let mut ended = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let (done, end) = oneshot::channel();
        let (config, permits, stopped) = (config.clone(), Arc::clone(&permits), stopped.clone());
        std::thread::Builder::new()
            .name(format!("proxy-core-{i}"))
            .spawn(move || {
                let result = serve_on_own_runtime(listener, config, permits, stopped);
                if let Err(e) = &result {
                    error!(error = %e, thread = i, "per-core listener thread failed");
                }
                let _ = done.send(result);
            })?;
        ended.push(end);
    }
    shutdown.await;
    // State first: every thread sees the flag, whenever it next looks.
    let _ = stop.send(true);
    for end in ended {
        end.await
            .map_err(|_| std::io::Error::other("a per-core thread panicked"))??;
    }
    Ok(())
}

/// One thread: its own current-thread runtime, serving `listener` until the stop flag.
fn serve_on_own_runtime(
    listener: std::net::TcpListener,
    config: ProxyConfig,
    permits: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let stop = async move {
            // An error means the sender is gone: stop then too.
            let _ = stopped.wait_for(|&stop| stop).await;
        };
        server::run_with_permits(listener, config, permits, stop).await
    })
}

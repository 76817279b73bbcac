//! `--scheduler per-core` (the default; `--per-core` says the same): the proxy as one
//! single-threaded runtime per worker thread, each accepting from its own `SO_REUSEPORT`
//! listener on the same port, instead of one work-stealing runtime whose threads share one
//! listener (`--scheduler work-stealing`).
//!
//! The kernel spreads new connections over the listeners by address hash, and a connection
//! stays on the thread that accepted it. Nothing is handed between threads, so the
//! cross-thread wake-ups (futex, eventfd, a parked worker woken to steal) that the
//! work-stealing runtime pays per connection are gone: in the bench, 11–43% less CPU per
//! connection when connections arrive one at a time (the gossip pattern), and the first
//! bytes reach the backend 20–27% sooner; under a steady stream of connections the
//! saving vanishes (the sleeps move to `epoll_wait`). The price is the lack of stealing: a
//! thread that is busy, or descheduled by a neighbour, cannot give its connections to an
//! idle one, so tail latency under uneven load is worse. It was opt-in for that reason
//! (BENCHMARKS.md, Performance II) until the shared harness measured both side by side on
//! every scenario (Performance III): per-core spent less CPU per connection and per
//! message and was level or better everywhere else, tail latency included, so it is the
//! default now.
//!
//! Each thread runs `super::server::run_shared` with the same [`ProxyConfig`] (routes,
//! metrics) and one [`server::Shared`]: the connection permits, and the lines about the
//! whole process, logged once when true of all threads; one shutdown future stops them
//! all, and each drains its own connections.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tracing::error;

use super::server;
use super::settings::ProxyConfig;

/// How connections are scheduled over the worker threads (`--scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduler {
    /// A single-threaded runtime per thread, each with its own `SO_REUSEPORT` listener.
    #[default]
    PerCore,
    /// One multi-threaded runtime whose threads share one listener and steal work.
    WorkStealing,
}

impl Scheduler {
    pub const ALL: [Scheduler; 2] = [Scheduler::PerCore, Scheduler::WorkStealing];

    pub fn as_str(self) -> &'static str {
        match self {
            Scheduler::PerCore => "per-core",
            Scheduler::WorkStealing => "work-stealing",
        }
    }
}

impl std::str::FromStr for Scheduler {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Scheduler::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("`{s}` is not a scheduler (per-core, work-stealing)"))
    }
}

impl std::fmt::Display for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    let shared = Arc::new(server::Shared::new(
        config.limits.max_connections,
        listeners.len(),
    ));
    let (stop, stopped) = watch::channel(false);
    let mut ended = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let (done, end) = oneshot::channel();
        let (config, shared, stopped) = (config.clone(), Arc::clone(&shared), stopped.clone());
        std::thread::Builder::new()
            .name(format!("proxy-core-{i}"))
            .spawn(move || {
                let result = serve_on_own_runtime(listener, config, shared, i, stopped);
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
    shared: Arc<server::Shared>,
    index: usize,
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
        server::run_shared(listener, config, shared, index, stop).await
    })
}

//! `--scheduler per-core` (the default; `--per-core` says the same): a single-threaded
//! runtime per worker thread instead of one work-stealing runtime
//! (`--scheduler work-stealing`). A connection is served start to end by one thread, so
//! nothing is handed between threads while it lives: none of the cross-thread wake-ups
//! (futex, eventfd, a parked worker woken to steal) that work stealing pays per
//! connection and per message.
//!
//! One thread accepts, and serves what it accepts itself as long as it keeps up: a thread
//! that goes idle between bursts of work is not saturated, and every connection it serves
//! rather than hands over saves the wake-ups of a second thread. Once it has been busy
//! without a moment of idleness for [`Load::SATURATED`] (its runtime's park hooks tell),
//! it hands each new connection, with its permit, to the other thread serving the fewest
//! connections, until it catches up. Under light load the proxy thus runs on one thread
//! (in the shared harness, the connection churn scenario cost 0.75× HAProxy's CPU per
//! connection on one thread against 0.96× spread evenly over two, at the same rate), and
//! under heavy load on all of them. Connections already being served stay where they are.
//!
//! Earlier designs, measured (BENCHMARKS.md, Performance II and III): a listener per
//! thread with `SO_REUSEPORT` spreads connections evenly by address hash, which pays the
//! second thread's wake-ups at any load; threads sharing one listener pile connections
//! onto whichever is awake, which doubled p99 latency.
//!
//! Each thread runs `super::server::run_shared` with the same [`ProxyConfig`] (routes,
//! metrics) and one `server::Shared`: the connection permits, and the count of threads
//! still draining. One shutdown future stops the accepting thread; the others stop when it
//! does, and each drains its own connections.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;
use tracing::error;

use super::server::{self, Load};
use super::settings::ProxyConfig;

/// How connections are scheduled over the worker threads (`--scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduler {
    /// A single-threaded runtime per thread; one accepts, and hands connections to the others
    /// only while it is saturated.
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

/// Serves on `threads` threads until `shutdown` resolves, then drains them all. `listener`
/// is the bound listener; the first thread accepts from it. Returns once every thread has
/// drained.
///
/// Call it from a runtime of its own (the binary's main thread, which also serves the
/// admin endpoint and reloads): the connection threads build their own.
pub async fn run(
    listener: std::net::TcpListener,
    config: ProxyConfig,
    threads: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let threads = threads.max(1);
    // A socket passed by a service manager may be blocking; accepting must never block.
    listener.set_nonblocking(true)?;
    let shared = Arc::new(server::Shared::new(config.limits.max_connections, threads));
    let (stop, stopped) = watch::channel(false);
    let mut helpers = Vec::new();
    let mut ended = Vec::with_capacity(threads);
    for i in 1..threads {
        let (inbox, handed) = mpsc::unbounded_channel();
        let tracker = TaskTracker::new();
        helpers.push(server::Helper {
            inbox,
            tracker: tracker.clone(),
        });
        let source = server::Source::Handed(handed);
        ended.push(start(
            i,
            source,
            &config,
            &shared,
            tracker,
            stopped.clone(),
            None,
        )?);
    }
    let load = Arc::new(Load::new());
    let source = server::Source::Listener {
        listener,
        helpers,
        load: Some(Arc::clone(&load)),
    };
    ended.insert(
        0,
        start(
            0,
            source,
            &config,
            &shared,
            TaskTracker::new(),
            stopped,
            Some(load),
        )?,
    );
    shutdown.await;
    // State first: the accepting thread sees the flag, whenever it next looks.
    let _ = stop.send(true);
    for end in ended {
        end.await
            .map_err(|_| std::io::Error::other("a per-core thread panicked"))??;
    }
    Ok(())
}

/// Starts thread `i` serving `source`; the receiver says how it ended.
fn start(
    i: usize,
    source: server::Source,
    config: &ProxyConfig,
    shared: &Arc<server::Shared>,
    tracker: TaskTracker,
    stopped: watch::Receiver<bool>,
    load: Option<Arc<Load>>,
) -> std::io::Result<oneshot::Receiver<std::io::Result<()>>> {
    let (done, end) = oneshot::channel();
    let (config, shared) = (config.clone(), Arc::clone(shared));
    std::thread::Builder::new()
        .name(format!("proxy-core-{i}"))
        .spawn(move || {
            let result = serve_on_own_runtime(source, config, shared, tracker, stopped, load);
            if let Err(e) = &result {
                error!(error = %e, thread = i, "per-core thread failed");
            }
            let _ = done.send(result);
        })?;
    Ok(end)
}

/// One thread: its own current-thread runtime, serving `source` until the stop flag (the
/// accepting thread) or until the accepting thread stops handing over (the others).
fn serve_on_own_runtime(
    source: server::Source,
    config: ProxyConfig,
    shared: Arc<server::Shared>,
    tracker: TaskTracker,
    mut stopped: watch::Receiver<bool>,
    load: Option<Arc<Load>>,
) -> std::io::Result<()> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if let Some(load) = load {
        let unparked = Arc::clone(&load);
        builder
            .on_thread_park(move || load.parked())
            .on_thread_unpark(move || unparked.unparked());
    }
    let rt = builder.build()?;
    rt.block_on(async move {
        let stop = async move {
            // An error means the sender is gone: stop then too.
            let _ = stopped.wait_for(|&stop| stop).await;
        };
        server::run_shared(source, config, shared, tracker, stop).await
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::Arc;

    use tokio::sync::{mpsc, watch};
    use tokio_util::task::TaskTracker;

    use super::super::server::{self, Accepted};
    use super::super::{ProxyConfig, Routes};

    /// A helper thread serves what the accepting thread hands it, relays it to the end, and
    /// stops (drained) once the accepting thread drops its end.
    #[test]
    fn a_helper_serves_a_handed_connection_then_stops_when_handing_stops() {
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = backend.local_addr().unwrap();
        let config = ProxyConfig::new(Routes::to_backends(
            addr.to_string().parse().unwrap(),
            addr.to_string().parse().unwrap(),
        ));
        let shared = Arc::new(server::Shared::new(4, 1));
        let (inbox, handed) = mpsc::unbounded_channel();
        let tracker = TaskTracker::new();
        let (_stop, stopped) = watch::channel(false);
        let source = server::Source::Handed(handed);
        let end =
            super::start(1, source, &config, &shared, tracker.clone(), stopped, None).unwrap();

        let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(front.local_addr().unwrap()).unwrap();
        client
            .write_all(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F])
            .unwrap();
        let (accepted, peer) = front.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let permit = Arc::clone(shared.permits()).try_acquire_owned().unwrap();
        let handed = Accepted::new(accepted, peer, permit);
        assert!(inbox.send(handed).is_ok());

        // Relayed by the helper: the backend gets the signature, the client the answer.
        let (mut b, _) = backend.accept().unwrap();
        let mut sig = [0u8; 10];
        b.read_exact(&mut sig).unwrap();
        assert_eq!(sig[9], 0x7F);
        b.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(tracker.len(), 1);

        // Handing stops: the helper keeps serving until the connection ends, then stops.
        drop(inbox);
        drop((client, b));
        let ended = end
            .blocking_recv()
            .expect("the thread reports how it ended");
        assert!(ended.is_ok());
        assert_eq!(tracker.len(), 0);
        assert_eq!(shared.permits().available_permits(), 4);
    }
}

//! What the bench reads besides its own clocks: a process's CPU time and RSS from `/proc`,
//! and the time a connection's first bytes take to reach the backend.
//!
//! CPU is the yardstick that survives a shared 2-core box: throughput and latency move
//! with whatever else the cores are doing, but the CPU time a proxy process spends per
//! connection, per message or per MB moves much less. `/proc/<pid>/stat` utime + stime
//! covers every thread of the process, including threads that have exited since.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{H2_PREFACE, ZMTP_SIGNATURE};

/// CPU time (user + system) the process has used so far, in µs; `None` if it is gone.
pub fn cpu_us(pid: u32) -> Option<f64> {
    zmq_grpc_proxy::proxy::process::cpu_seconds(&pid.to_string()).map(|s| s * 1e6)
}

/// Runs `f` and returns its result with the CPU time `pid` spent meanwhile (µs), if there
/// is a process to watch (not for a direct connection).
pub fn cpu_during<R>(pid: Option<u32>, f: impl FnOnce() -> R) -> (R, Option<f64>) {
    let before = pid.and_then(cpu_us);
    let r = f();
    let after = pid.and_then(cpu_us);
    (r, before.zip(after).map(|(b, a)| a - b))
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Time to first byte at the backend

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap()
}

/// What the stamp server saw since the last [`Stamps::take`]: arrival delays in µs, by
/// protocol.
pub struct Stamps {
    zmtp: Mutex<Histogram<u64>>,
    h2: Mutex<Histogram<u64>>,
}

impl Stamps {
    pub fn new() -> Arc<Self> {
        epoch();
        Arc::new(Stamps {
            zmtp: Mutex::new(histogram()),
            h2: Mutex::new(histogram()),
        })
    }

    fn record(&self, zmtp: bool, us: u64) {
        let h = if zmtp { &self.zmtp } else { &self.h2 };
        h.lock().unwrap().saturating_record(us.max(1));
    }

    /// Takes both histograms, leaving empty ones.
    fn take(&self) -> (Histogram<u64>, Histogram<u64>) {
        let take =
            |h: &Mutex<Histogram<u64>>| std::mem::replace(&mut *h.lock().unwrap(), histogram());
        (take(&self.zmtp), take(&self.h2))
    }
}

/// A backend that reads a prefix (ZMTP signature or HTTP/2 preface, told apart by the first
/// byte) and the 8-byte send time the client put after it, records how long the bytes took
/// to get here, answers one byte and waits for the client to close.
pub async fn stamp_server(listener: TcpListener, stamps: Arc<Stamps>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let stamps = Arc::clone(&stamps);
        tokio::spawn(async move {
            let mut buf = [0u8; H2_PREFACE.len() + 8];
            s.read_exact(&mut buf[..1]).await?;
            let zmtp = buf[0] == ZMTP_SIGNATURE[0];
            let len = if zmtp {
                ZMTP_SIGNATURE.len()
            } else {
                H2_PREFACE.len()
            };
            s.read_exact(&mut buf[1..len + 8]).await?;
            let arrived = now_ns();
            let sent = u64::from_be_bytes(buf[len..len + 8].try_into().unwrap());
            stamps.record(zmtp, arrived.saturating_sub(sent) / 1_000);
            s.write_all(&[1]).await?;
            let _ = s.read(&mut buf).await;
            Ok::<_, std::io::Error>(())
        });
    }
}

/// Arrival delay percentiles, µs: (ZMTP p50, p99, HTTP/2 p50, p99), and connections made.
pub struct FirstByte {
    pub zmtp: (f64, f64),
    pub h2: (f64, f64),
    pub conns: u64,
}

/// One worker per protocol, each connecting one connection at a time for `dur`: sends its
/// prefix and the time just before that write (so the client's own connect is not counted),
/// waits for the backend's byte, closes. Unloaded on purpose: this is the latency a
/// connection sees, not a queue.
pub async fn first_byte(addr: std::net::SocketAddr, stamps: &Stamps, dur: Duration) -> FirstByte {
    stamps.take();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for prefix in [&ZMTP_SIGNATURE[..], &H2_PREFACE[..]] {
        tasks.spawn(async move {
            let mut n = 0u64;
            let mut msg = prefix.to_vec();
            msg.extend_from_slice(&[0; 8]);
            while started.elapsed() < dur {
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                let at = msg.len() - 8;
                msg[at..].copy_from_slice(&now_ns().to_be_bytes());
                s.write_all(&msg).await.unwrap();
                let mut one = [0u8; 1];
                s.read_exact(&mut one).await.unwrap();
                n += 1;
            }
            n
        });
    }
    let mut conns = 0;
    while let Some(n) = tasks.join_next().await {
        conns += n.unwrap();
    }
    let (z, h) = stamps.take();
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
    FirstByte {
        zmtp: (q(&z, 0.5), q(&z, 0.99)),
        h2: (q(&h, 0.5), q(&h, 0.99)),
        conns,
    }
}

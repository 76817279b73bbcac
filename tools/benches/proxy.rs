//! `cargo bench --bench proxy`: the proxy against a direct connection and against HAProxy,
//! measured in the same run, interleaved, medians of `BENCH_RUNS` (default 5) runs, with
//! the CPU time each proxy process spent per unit of work next to the rates.
//!
//! Every scenario runs three times per run: direct to the server, through `proxy`, and
//! through HAProxy 2.6 (tcp mode, `inspect-delay`, `req.payload` rules routing the same two
//! prefixes, `option splice-auto`; installed from Debian if missing). The servers live in
//! this process; the proxies are separate processes, the proxy at its default log level
//! writing to a file (as the shared harness runs it; HAProxy logs nothing by default). Output: a markdown table on stdout (`proxy_parts/report.rs`).
//!
//! CPU per unit of work (per MB, per message, per connection) is the utime + stime of the
//! proxy process (or HAProxy's) read from `/proc/<pid>/stat` before and after the scenario,
//! divided by the work done: on a shared 2-core box it moves far less than the rates do.
//! Connection latency is measured end to end, for both protocols: from the client's write
//! of its prefix to the backend having read it (`fb`: first byte at the backend), which for
//! a proxy spans accept, detection, the backend connect and the replay.
//!
//! Environment: `BENCH_RUNS` (5), `BENCH_PROXY_ARGS` (extra proxy flags, e.g.
//! `--splice off`, to measure one lever), `BENCH_PROXY_BIN` (a saved build of the proxy to
//! measure instead of this tree's), `BENCH_B_ARGS` / `BENCH_B_BIN` (flags / a build for a
//! second proxy, "B", measured in the same runs as the first: the table then also shows
//! B / proxy per run, the steadiest way to see what one lever does), `BENCH_ONLY` (comma-separated scenario keys:
//! tput1,tput8,pp1,pp32,rate,fb,mem,zmq,grpc; `mem` reports at 1,000 held connections and
//! at as many as the fd limit allows).

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "proxy_parts/measure.rs"]
mod measure;
#[path = "proxy_parts/report.rs"]
mod report;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Proc, PATIENCE};
use hdrhistogram::Histogram;
use measure::{cpu_during, rss_kib};
use report::Samples;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ZMTP_SIGNATURE: [u8; 10] = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Target {
    Direct,
    Proxy,
    /// A second proxy configuration (`BENCH_B_ARGS`, `BENCH_B_BIN`), measured in the same
    /// runs for an A/B of one lever: throughput, ping-pong, rate and first-byte only.
    ProxyB,
    Haproxy,
}

/// Where each target accepts connections for the sink, echo and stamp backends, and the
/// process whose CPU time serves each (none for a direct connection).
struct Addrs {
    sink: (SocketAddr, Option<u32>),
    echo: (SocketAddr, Option<u32>),
    stamp: (SocketAddr, Option<u32>),
}

// ---------------------------------------------------------------------------------------
// In-process servers

/// Reads everything, then answers with the byte count (u64, big-endian) and closes.
async fn sink_server(listener: TcpListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            let mut total = 0u64;
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&total.to_be_bytes()).await;
        });
    }
}

/// Echoes everything back.
async fn echo_server(listener: TcpListener) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let (mut r, mut w) = s.into_split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios

/// Sends `per_conn` bytes (after a ZMTP signature) on each of `conns` connections; the
/// sink's count must match exactly. Returns MB/s (10^6 bytes) over all connections.
async fn throughput(addr: SocketAddr, conns: usize, per_conn: u64) -> f64 {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        tasks.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&ZMTP_SIGNATURE).await.unwrap();
            let data = vec![0x5Au8; CHUNK];
            let mut sent = 0u64;
            while sent < per_conn {
                let n = (per_conn - sent).min(CHUNK as u64) as usize;
                s.write_all(&data[..n]).await.unwrap();
                sent += n as u64;
            }
            s.shutdown().await.unwrap();
            let mut count = [0u8; 8];
            s.read_exact(&mut count).await.unwrap();
            let expected = per_conn + ZMTP_SIGNATURE.len() as u64;
            assert_eq!(
                u64::from_be_bytes(count),
                expected,
                "sink received every byte"
            );
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    (per_conn * conns as u64) as f64 / started.elapsed().as_secs_f64() / 1e6
}

struct PingPong {
    msgs: u64,
    msgs_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

/// `conns` connections each bouncing a 64-byte message off the echo server for `dur`.
async fn ping_pong(addr: SocketAddr, conns: usize, dur: Duration) -> PingPong {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let stop = Arc::clone(&stop);
        tasks.spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut sig = [0u8; 10];
            s.write_all(&ZMTP_SIGNATURE).await.unwrap();
            s.read_exact(&mut sig).await.unwrap();
            let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
            let msg = [7u8; 64];
            let mut back = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                s.write_all(&msg).await.unwrap();
                s.read_exact(&mut back).await.unwrap();
                hist.saturating_record(t.elapsed().as_micros().max(1) as u64);
            }
            hist
        });
    }
    let started = Instant::now();
    tokio::time::sleep(dur).await; // the measurement window, not a readiness wait
    stop.store(true, Ordering::Relaxed);
    let mut all = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    while let Some(h) = tasks.join_next().await {
        all.add(h.unwrap()).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    PingPong {
        msgs: all.len(),
        msgs_per_s: all.len() as f64 / secs,
        p50_us: all.value_at_quantile(0.5) as f64,
        p99_us: all.value_at_quantile(0.99) as f64,
    }
}

/// 16 workers: connect, send a ZMTP signature or the HTTP/2 preface (alternating), read the
/// echo, close. Returns connections per second, and connections made.
async fn connection_rate(addr: SocketAddr, workers: usize, dur: Duration) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        tasks.spawn(async move {
            let mut i = w;
            let mut buf = [0u8; 24];
            while !stop.load(Ordering::Relaxed) {
                let prefix: &[u8] = if i % 2 == 0 {
                    &ZMTP_SIGNATURE
                } else {
                    H2_PREFACE
                };
                let mut s = TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                s.write_all(prefix).await.unwrap();
                s.read_exact(&mut buf[..prefix.len()]).await.unwrap();
                assert_eq!(&buf[..prefix.len()], prefix);
                drop(s);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
    }
    let started = Instant::now();
    tokio::time::sleep(dur).await; // the measurement window
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let done = done.load(Ordering::Relaxed);
    (done as f64 / started.elapsed().as_secs_f64(), done)
}

/// RSS growth per held connection, in bytes: at 1,000 connections and at all of them.
struct Memory {
    at_1k: f64,
    at_all: f64,
    errors: usize,
}

/// Opens `n` connections through the target, `burst` at a time (each sends its prefix and
/// reads the echo, so it is relayed end to end), then reports the growth of the proxy's RSS
/// per connection since it started, in bytes, at 1,000 connections and at `n`. The
/// connections stay open while RSS is read. Bursts show what connections in set-up at the
/// same time leave behind; one at a time shows the cost of a held connection alone.
async fn memory_per_connection(addr: SocketAddr, pid: u32, n: usize, burst: usize) -> Memory {
    let before = rss_kib(pid);
    let growth =
        |open: usize| (rss_kib(pid).saturating_sub(before) * 1024) as f64 / open.max(1) as f64;
    let mut open = Vec::with_capacity(n);
    let mut errors = 0;
    let mut at_1k = None;
    for chunk in 0..n.div_ceil(burst) {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..burst.min(n - chunk * burst) {
            tasks.spawn(async move {
                let mut s = TcpStream::connect(addr).await?;
                s.write_all(&ZMTP_SIGNATURE).await?;
                let mut sig = [0u8; 10];
                s.read_exact(&mut sig).await?;
                Ok::<_, std::io::Error>(s)
            });
        }
        while let Some(r) = tasks.join_next().await {
            match r.unwrap() {
                Ok(s) => open.push(s),
                Err(_) => errors += 1,
            }
        }
        if open.len() >= 1_000 && at_1k.is_none() {
            at_1k = Some(growth(open.len()));
        }
    }
    let at_all = growth(open.len());
    drop(open);
    Memory {
        at_1k: at_1k.unwrap_or(at_all),
        at_all,
        errors,
    }
}

// ---------------------------------------------------------------------------------------
// Targets

fn install_haproxy() -> String {
    for path in ["/usr/sbin/haproxy", "/usr/bin/haproxy"] {
        if std::path::Path::new(path).exists() {
            return path.to_owned();
        }
    }
    eprintln!("installing haproxy from Debian");
    let sudo = if is_root() { vec![] } else { vec!["sudo"] };
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.clone();
        all.extend_from_slice(args);
        let ok = Command::new(all[0])
            .args(&all[1..])
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "{all:?} failed");
    };
    run(&["apt-get", "update", "-qq"]);
    run(&[
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-qq",
        "haproxy",
    ]);
    "/usr/sbin/haproxy".to_owned()
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// HAProxy in tcp mode routing the same two prefixes the proxy detects.
fn haproxy_config(fronts: &[(SocketAddr, SocketAddr)], fd_limit: u64) -> String {
    let mut cfg = format!(
        // maxpipes bounds the splice pipe pool (2 fds each) so that maxconn fits in the
        // same descriptor limit the proxy gets; 32 pipes cover every bulk scenario here.
        "global\n    maxconn {}\n    maxpipes 32\n    ulimit-n {fd_limit}\n\ndefaults\n    mode tcp\n    \
         option splice-auto\n    timeout connect 3s\n    timeout client 300s\n    \
         timeout server 300s\n",
        idle_connections(fd_limit) + 20
    );
    for (i, (listen, backend)) in fronts.iter().enumerate() {
        cfg += &format!(
            "\nfrontend f{i}\n    bind {listen}\n    tcp-request inspect-delay 5s\n    \
             acl zmtp req.payload(0,1) -m bin ff\n    acl zmtp_end req.payload(9,1) -m bin 7f\n    \
             acl h2 req.payload(0,24) -m bin 505249202a20485454502f322e300d0a0d0a534d0d0a0d0a\n    \
             tcp-request content accept if zmtp zmtp_end\n    \
             tcp-request content accept if h2\n    \
             use_backend b{i} if zmtp zmtp_end\n    use_backend b{i} if h2\n\
             \nbackend b{i}\n    server s {backend}\n"
        );
    }
    cfg
}

fn spawn_haproxy(bin: &str, cfg: &std::path::Path, ports: &[SocketAddr]) -> std::process::Child {
    let child = Command::new(bin)
        .args(["-db", "-f"])
        .arg(cfg)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start haproxy");
    for &a in ports {
        wait_for_port(a);
    }
    child
}

/// A free port below Linux's ephemeral range (32768+), so that the thousands of outgoing
/// connections the scenarios make can never be holding it when a server binds it later.
fn stable_addr(from: u16) -> SocketAddr {
    (from..32_000)
        .find_map(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
        .and_then(|l| l.local_addr().ok())
        .expect("a free port in 20000..32000")
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the proxy as it runs by default, logging a line per connection to a file, as the
/// shared harness (`../shared/bench/run.sh`) runs it. (It once ran at `warn` here, which
/// made this bench report less CPU per connection than the harness: part of why the two
/// disagreed, BENCHMARKS.md, Performance III.)
fn spawn_proxy(backend: SocketAddr, extra: &[String]) -> (Proc, SocketAddr) {
    // BENCH_PROXY_BIN: another build of the proxy (a saved copy from before a change), so
    // that two builds can be measured one after the other with the same bench binary.
    let bin = std::env::var("BENCH_PROXY_BIN").unwrap_or_else(|_| common::bin("proxy").into());
    spawn_proxy_bin(&bin, backend, extra)
}

fn spawn_proxy_bin(bin: &str, backend: SocketAddr, extra: &[String]) -> (Proc, SocketAddr) {
    let listen = free_addr();
    let backend = backend.to_string();
    let mut args = vec![
        "--listen".to_owned(),
        listen.to_string(),
        "--zmq-backend".into(),
        backend.clone(),
        "--grpc-backend".into(),
        backend,
    ];
    args.extend(extra.iter().cloned());
    let mut cmd = Command::new(bin);
    cmd.args(&args);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info"); // the proxy's default, whatever the bench's own is
    }
    // One folder per bench run, emptied when the run starts (benches are not run in parallel).
    static LOGS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = LOGS.get_or_init(|| {
        let dir = std::env::temp_dir().join("zgp-bench-proxy-logs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a folder for the proxies' logs");
        dir
    });
    let log = dir.join(format!("proxy-{}.log", listen.port()));
    let p = Proc::logging_to("proxy", cmd, &log);
    wait_for_port(listen);
    (p, listen)
}

/// Raises the soft open-file limit as far as allowed (the hard limit can only be raised
/// with CAP_SYS_RESOURCE) and returns it; children inherit it.
fn raise_fd_limits() -> u64 {
    let want = 200_000;
    let _ = rlimit::Resource::NOFILE.set(want, want);
    rlimit::increase_nofile_limit(want).unwrap_or(1024)
}

/// How many idle connections the memory scenario can hold: the proxy budgets three
/// descriptors per connection under the same limit (client, backend, and a share of the
/// splice pipes of `--splice auto`; it lowers `--max-connections` to fit), plus a few dozen
/// of its own.
fn idle_connections(fd_limit: u64) -> usize {
    10_000.min((fd_limit.saturating_sub(200) / 3) as usize / 100 * 100)
}

/// `proxy-bench --echo-server`: an echo server in its own process, so the descriptors of
/// its side of the memory scenario do not count against this process's limit.
fn echo_child() -> (std::process::Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--echo-server")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (
        child,
        line.trim().parse().expect("echo child prints its address"),
    )
}

fn main() {
    let fd_limit = raise_fd_limits();
    if std::env::args().any(|a| a == "--echo-server") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            println!("{}", l.local_addr().unwrap());
            echo_server(l).await
        });
        return;
    }
    // `cargo bench` passes `--bench`; anything else is ignored.
    let idle = idle_connections(fd_limit);
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    let wanted = |k: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == k));
    let extra: Vec<String> = std::env::var("BENCH_PROXY_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let haproxy_bin = install_haproxy();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stamps = measure::Stamps::new();
    let (sink, echo, stamp) = rt.block_on(async {
        let s = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let e = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let f = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addrs = (
            s.local_addr().unwrap(),
            e.local_addr().unwrap(),
            f.local_addr().unwrap(),
        );
        tokio::spawn(sink_server(s));
        tokio::spawn(echo_server(e));
        tokio::spawn(measure::stamp_server(f, Arc::clone(&stamps)));
        addrs
    });

    // Application servers for the end-to-end rows, on fixed ports chosen now so that each
    // run can restart zmq_pull (which exits after --count) behind the same proxies.
    let zmq_app = stable_addr(20_000);
    let grpc_app = stable_addr(zmq_app.port() + 1);
    let grpc_server = Proc::spawn_env(
        "grpc_server",
        &["--bind", &grpc_app.to_string()],
        &[("RUST_LOG", "warn")],
    );
    wait_for_port(grpc_app);

    let (proxy_sink, proxy_sink_addr) = spawn_proxy(sink, &extra);
    let (proxy_echo, proxy_echo_addr) = spawn_proxy(echo, &extra);
    let (proxy_stamp, proxy_stamp_addr) = spawn_proxy(stamp, &extra);
    let (_proxy_zmq, proxy_zmq_addr) = spawn_proxy(zmq_app, &extra);
    let (_proxy_grpc, proxy_grpc_addr) = spawn_proxy(grpc_app, &extra);
    let (mut echo_proc, mem_echo) = echo_child();
    let b_args: Option<Vec<String>> = std::env::var("BENCH_B_ARGS")
        .ok()
        .or_else(|| std::env::var("BENCH_B_BIN").ok().map(|_| String::new()))
        .map(|v| v.split_whitespace().map(str::to_owned).collect());
    let proxy_b = b_args.as_ref().map(|b| {
        let bin = std::env::var("BENCH_B_BIN").unwrap_or_else(|_| common::bin("proxy").into());
        [sink, echo, stamp].map(|backend| spawn_proxy_bin(&bin, backend, b))
    });

    let ha = [
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
    ];
    let cfg_dir = std::env::temp_dir().join(format!("zgp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let cfg_path = cfg_dir.join("haproxy.cfg");
    std::fs::write(
        &cfg_path,
        haproxy_config(
            &[
                (ha[0], sink),
                (ha[1], echo),
                (ha[2], zmq_app),
                (ha[3], grpc_app),
                (ha[4], stamp),
            ],
            fd_limit,
        ),
    )
    .unwrap();
    let mut haproxy = spawn_haproxy(&haproxy_bin, &cfg_path, &ha);

    let ha_pid = Some(haproxy.id());
    let addrs = |t: Target| match t {
        Target::Direct => Addrs {
            sink: (sink, None),
            echo: (echo, None),
            stamp: (stamp, None),
        },
        Target::Proxy => Addrs {
            sink: (proxy_sink_addr, Some(proxy_sink.pid())),
            echo: (proxy_echo_addr, Some(proxy_echo.pid())),
            stamp: (proxy_stamp_addr, Some(proxy_stamp.pid())),
        },
        Target::ProxyB => {
            let [sink, echo, stamp] = proxy_b.as_ref().expect("B is measured only when set");
            Addrs {
                sink: (sink.1, Some(sink.0.pid())),
                echo: (echo.1, Some(echo.0.pid())),
                stamp: (stamp.1, Some(stamp.0.pid())),
            }
        }
        Target::Haproxy => Addrs {
            sink: (ha[0], ha_pid),
            echo: (ha[1], ha_pid),
            stamp: (ha[4], ha_pid),
        },
    };
    let app_addr = |t: Target, zmq: bool| match (t, zmq) {
        (Target::Direct, true) => zmq_app,
        (Target::Direct, false) => grpc_app,
        (Target::Proxy, true) => proxy_zmq_addr,
        (Target::Proxy, false) => proxy_grpc_addr,
        (Target::Haproxy, true) => ha[2],
        (Target::Haproxy, false) => ha[3],
        (Target::ProxyB, _) => unreachable!("B is not measured end to end"),
    };
    let mut targets = vec![Target::Direct, Target::Proxy, Target::Haproxy];
    if proxy_b.is_some() {
        targets.insert(2, Target::ProxyB);
    }

    let mut s = Samples::new();
    let mut mem_errors = 0;
    let window = Duration::from_secs(2);
    for run in 0..runs {
        eprintln!("run {}/{runs}", run + 1);
        // Rotate the order each run so no target always goes first.
        let mut order = targets.clone();
        let n = order.len();
        order.rotate_left(run % n);
        for &t in &order {
            let a = addrs(t);
            // Each scenario is measured with the CPU time of the process serving it.
            let mut r = report::Record {
                samples: &mut s,
                target: t,
            };
            if wanted("tput1") {
                let bytes = 1u64 << 30;
                let (mbs, cpu) =
                    cpu_during(a.sink.1, || rt.block_on(throughput(a.sink.0, 1, bytes)));
                r.per_unit("tput1_cpu", cpu, bytes as f64 / 1e6);
                r.add("tput1", mbs);
            }
            if wanted("tput8") {
                let bytes = 8 * (128u64 << 20);
                let (mbs, cpu) =
                    cpu_during(a.sink.1, || rt.block_on(throughput(a.sink.0, 8, 128 << 20)));
                r.per_unit("tput8_cpu", cpu, bytes as f64 / 1e6);
                r.add("tput8", mbs);
            }
            if wanted("pp1") {
                let (res, cpu) =
                    cpu_during(a.echo.1, || rt.block_on(ping_pong(a.echo.0, 1, window)));
                r.per_unit("pp1_cpu", cpu, res.msgs as f64);
                r.add("pp1", res.msgs_per_s);
                r.add("pp1_p50", res.p50_us);
                r.add("pp1_p99", res.p99_us);
            }
            if wanted("pp32") {
                let (res, cpu) =
                    cpu_during(a.echo.1, || rt.block_on(ping_pong(a.echo.0, 32, window)));
                r.per_unit("pp32_cpu", cpu, res.msgs as f64);
                r.add("pp32", res.msgs_per_s);
                r.add("pp32_p50", res.p50_us);
                r.add("pp32_p99", res.p99_us);
            }
            if wanted("rate") {
                let ((rate, conns), cpu) = cpu_during(a.echo.1, || {
                    rt.block_on(connection_rate(a.echo.0, 16, window))
                });
                r.per_unit("rate_cpu", cpu, conns as f64);
                r.add("rate", rate);
            }
            if wanted("fb") {
                let (res, cpu) = cpu_during(a.stamp.1, || {
                    rt.block_on(measure::first_byte(a.stamp.0, &stamps, window))
                });
                r.per_unit("fb_cpu", cpu, res.conns as f64);
                r.add("fb_zmtp_p50", res.zmtp.0);
                r.add("fb_zmtp_p99", res.zmtp.1);
                r.add("fb_h2_p50", res.h2.0);
                r.add("fb_h2_p99", res.h2.1);
            }
            if t == Target::ProxyB {
                continue;
            }
            if wanted("mem") && t != Target::Direct {
                // A fresh process each time: memory freed by an earlier run and kept by the
                // allocator (or HAProxy's pools) would hide the real cost of a connection.
                let held = |n: usize, burst: usize| {
                    if t == Target::Proxy {
                        let (p, addr) = spawn_proxy(mem_echo, &extra);
                        return rt.block_on(memory_per_connection(addr, p.pid(), n, burst));
                    }
                    let addr = free_addr();
                    let path = cfg_dir.join("haproxy-mem.cfg");
                    std::fs::write(&path, haproxy_config(&[(addr, mem_echo)], fd_limit)).unwrap();
                    let mut h = spawn_haproxy(&haproxy_bin, &path, &[addr]);
                    let m = rt.block_on(memory_per_connection(addr, h.id(), n, burst));
                    let _ = h.kill();
                    let _ = h.wait();
                    m
                };
                let m = held(idle, 500);
                let one_by_one = held(1_000, 1);
                mem_errors += m.errors + one_by_one.errors;
                r.add("mem1k", m.at_1k);
                r.add("mem1k_seq", one_by_one.at_1k);
                r.add("mem", m.at_all);
            }
            if wanted("zmq") {
                r.add("zmq", zmq_end_to_end(zmq_app, app_addr(t, true)));
            }
            if wanted("grpc") {
                r.add("grpc", grpc_end_to_end(app_addr(t, false)));
            }
        }
    }
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    let _ = echo_proc.kill();
    let _ = echo_proc.wait();
    drop(grpc_server);
    drop(proxy_sink);
    let flags = if extra.is_empty() {
        "(defaults)".to_owned()
    } else {
        extra.join(" ")
    };
    report::print(
        &s,
        runs,
        &format!(
            "{runs} interleaved runs. Proxy flags: `{flags}`. Memory scenario: {idle} idle \
             connections held open, {mem_errors} failed to open."
        ),
    );
}

/// zmq_push → (target) → zmq_pull, 200,000 64-byte messages; rate measured by zmq_pull
/// from first to last arrival.
fn zmq_end_to_end(bind: SocketAddr, via: SocketAddr) -> f64 {
    const N: &str = "200000";
    let mut pull = Proc::spawn_env(
        "zmq_pull",
        &["--bind", &format!("tcp://{bind}"), "--count", N],
        &[("RUST_LOG", "warn,zmq_grpc_proxy_tools::peers::zmq_pull=off")],
    );
    wait_for_port(bind);
    let mut push = Proc::spawn_env(
        "zmq_push",
        &[
            "--connect",
            &format!("tcp://{via}"),
            "--count",
            N,
            "--interval-ms",
            "0",
        ],
        &[("RUST_LOG", "warn")],
    );
    assert!(pull.wait_exit(PATIENCE * 4).success(), "zmq_pull");
    push.wait_exit(PATIENCE);
    assert_eq!(pull.summary_u64("received"), 200_000);
    pull.summary()["rate_per_s"].parse().unwrap()
}

/// grpc_client → (target) → grpc_server, 20,000 unary calls from 8 workers.
fn grpc_end_to_end(via: SocketAddr) -> f64 {
    let mut client = Proc::spawn_env(
        "grpc_client",
        &[
            "--connect",
            &format!("http://{via}"),
            "--count",
            "20000",
            "--concurrency",
            "8",
            "--interval-ms",
            "0",
        ],
        &[("RUST_LOG", "warn")],
    );
    assert!(client.wait_exit(PATIENCE * 4).success(), "grpc_client");
    assert_eq!(client.summary_u64("failed"), 0);
    client.summary()["rate_per_s"].parse().unwrap()
}

//! `cargo bench --bench intercept`: what interception costs per connection, in network
//! namespaces (a redirect needs traffic that arrives on an interface, not over `lo`).
//!
//! Gossip's pattern is connection churn, so the scenario is the connection rate: 16
//! workers in the peers namespace each open a connection to the member, send a 64-byte
//! ZMTP greeting, wait for the member's one-byte answer and close. The member is a plain
//! listener on 9638 in its own namespace. Five paths, interleaved in every run:
//!
//! | path | client dials | through |
//! |---|---|---|
//! | `direct` | member:9638 | nothing |
//! | `proxy` | member:7000 | the proxy, `--zmq-backend 10.99.0.2:9638` (no interception) |
//! | `proxy+intercept` | member:9638 | its table's redirect, the proxy, `--zmq-backend original` |
//! | `haproxy` | member:7100 | HAProxy 2.6, `server 10.99.0.2:9638` |
//! | `haproxy+intercept` | member:9638 | the same redirect rule to HAProxy, `server 0.0.0.0` (its original destination) |
//!
//! Reported per path (median of `BENCH_RUNS` runs, default 5; each `BENCH_SECS`, default 2):
//! connections/s, the proxy process's CPU per connection (utime + stime from `/proc`), and
//! the whole machine's CPU per connection (`/proc/stat`, all cores, every process and
//! softirq: the NAT and conntrack work the kernel does for a redirect is paid there, not in
//! the proxy's process), minus nothing: the load generator's and the listener's share is the
//! same on every path, so the differences are the proxies' and the redirect's.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::{run, Net, GOSSIP_PORT};
use common::{Proc, PATIENCE};

const ZMTP_SIGNATURE: [u8; 10] = common::ZMTP_SIGNATURE;

/// CPU time (user + system) process `pid` has used so far, in µs.
fn cpu_us(pid: u32) -> Option<f64> {
    zmq_grpc_proxy::proxy::process::cpu_seconds(&pid.to_string()).map(|s| s * 1e6)
}

const WORKERS: usize = 16;
const PROXY_PLAIN: u16 = 7000;
const PROXY_INTERCEPT: u16 = 7001;
const HAPROXY_PLAIN: u16 = 7100;
const HAPROXY_INTERCEPT: u16 = 7101;
const HAPROXY_TABLE: &str = "zgpbench_haproxy";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Direct,
    Proxy,
    ProxyIntercept,
    Haproxy,
    HaproxyIntercept,
}

impl Path {
    const ALL: [Path; 5] = [
        Path::Direct,
        Path::Proxy,
        Path::ProxyIntercept,
        Path::Haproxy,
        Path::HaproxyIntercept,
    ];

    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Proxy => "proxy",
            Path::ProxyIntercept => "proxy+intercept",
            Path::Haproxy => "haproxy",
            Path::HaproxyIntercept => "haproxy+intercept",
        }
    }

    fn port(self) -> u16 {
        match self {
            Path::Direct | Path::ProxyIntercept | Path::HaproxyIntercept => GOSSIP_PORT,
            Path::Proxy => PROXY_PLAIN,
            Path::Haproxy => HAPROXY_PLAIN,
        }
    }
}

/// Moves the calling thread into namespace `ns`: sockets it opens from now on live there.
fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns file");
    // SAFETY: setns(2) on a namespace fd we hold open; it affects this thread only.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
}

/// The member's own listener: reads the greeting, answers one byte, waits for the close.
fn member_listener(ns: String, ready: std::sync::mpsc::Sender<()>) {
    std::thread::spawn(move || {
        enter(&ns);
        let l = TcpListener::bind(("0.0.0.0", GOSSIP_PORT)).expect("bind 9638");
        for _ in 0..WORKERS * 2 {
            let l = l.try_clone().unwrap();
            std::thread::spawn(move || loop {
                let Ok((mut c, _)) = l.accept() else { continue };
                let mut buf = [0u8; 64];
                if c.read_exact(&mut buf).is_ok() && c.write_all(b"k").is_ok() {
                    let _ = c.read(&mut buf);
                }
            });
        }
        let _ = ready.send(());
        loop {
            std::thread::park();
        }
    });
}

/// Connections completed by `WORKERS` threads in the peers namespace within `secs`.
fn churn(peers: &str, target: &str, secs: Duration) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut greeting = [0u8; 64];
    greeting[..10].copy_from_slice(&ZMTP_SIGNATURE);
    greeting[10] = 3;
    greeting[12..16].copy_from_slice(b"NULL");
    let threads: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (peers, target) = (peers.to_owned(), target.to_owned());
            let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
            std::thread::spawn(move || {
                enter(&peers);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = TcpStream::connect(&target) else {
                        continue;
                    };
                    let _ = c.set_nodelay(true);
                    let mut b = [0u8; 1];
                    if c.write_all(&greeting).is_ok() && c.read_exact(&mut b).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(secs); // the measured interval
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    done.load(Ordering::Relaxed)
}

/// Busy CPU time of the whole machine so far, in µs (all cores, `/proc/stat`).
fn machine_busy_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal …: all but idle and iowait.
    let busy: f64 = cpu
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    let hz = 100.0; // USER_HZ on Linux
    busy / hz * 1e6
}

fn haproxy_bin() -> String {
    for path in ["/usr/sbin/haproxy", "/usr/bin/haproxy"] {
        if std::path::Path::new(path).exists() {
            return path.into();
        }
    }
    eprintln!("installing haproxy from Debian");
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "haproxy"])
        .status();
    "/usr/sbin/haproxy".into()
}

fn start_haproxy(net: &Net, member_ip: &str) -> Child {
    let cfg = format!(
        "global\n  maxconn 8000\n  nbthread 2\ndefaults\n  mode tcp\n  timeout connect 3s\n  \
         timeout client 30s\n  timeout server 30s\nlisten plain\n  bind 0.0.0.0:{HAPROXY_PLAIN}\n  \
         server member {member_ip}:{GOSSIP_PORT}\nlisten intercept\n  bind 0.0.0.0:{HAPROXY_INTERCEPT}\n  \
         server original 0.0.0.0\n"
    );
    let path = std::env::temp_dir().join(format!("zgp-bench-intercept-{}.cfg", std::process::id()));
    std::fs::write(&path, cfg).unwrap();
    let child = Net::exec(
        &net.members[0],
        &haproxy_bin(),
        &["-db", "-f", path.to_str().unwrap()],
    )
    .stdout(std::process::Stdio::null())
    .spawn()
    .expect("start haproxy");
    wait_listening(&net.members[0], HAPROXY_INTERCEPT);
    child
}

fn wait_listening(ns: &str, port: u16) {
    let deadline = Instant::now() + PATIENCE;
    let filter = format!("sport = :{port}");
    while !run("ip", &["netns", "exec", ns, "ss", "-Htln", &filter]).contains(&port.to_string()) {
        assert!(
            Instant::now() < deadline,
            "nothing listening on {port} in {ns}"
        );
        std::thread::sleep(Duration::from_millis(20)); // polling for the port
    }
}

/// The same redirect the proxy installs, to HAProxy's intercepting port, in a table of the
/// bench's own.
fn haproxy_redirect(ns: &str, on: bool) {
    let rules = if on {
        format!(
            "table inet {HAPROXY_TABLE} {{\n chain prerouting {{\n  type nat hook prerouting priority dstnat; policy accept;\n  \
             meta nfproto ipv4 iifname != \"lo\" tcp dport {GOSSIP_PORT} fib daddr type local redirect to :{HAPROXY_INTERCEPT}\n }}\n}}\n"
        )
    } else {
        format!("delete table inet {HAPROXY_TABLE}\n")
    };
    Net::nft(ns, &rules);
}

fn sysctl(ns: &str, kv: &str) {
    let _ = Net::exec(ns, "sysctl", &["-q", "-w", kv]).status();
}

struct Row {
    rate: Vec<f64>,
    proxy_cpu: Vec<f64>,
    machine_cpu: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let secs = Duration::from_secs_f64(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2.0),
    );
    let net = Net::new(1);
    let (peers, member) = (net.peers.clone(), net.members[0].clone());
    let member_ip = net.ip(0);
    // Churn leaves TIME_WAIT behind: reuse it, and widen the port range, on both sides.
    for ns in [&peers, &member] {
        sysctl(ns, "net.ipv4.tcp_tw_reuse=1");
        sysctl(ns, "net.ipv4.ip_local_port_range=1024 65000");
    }
    let (tx, rx) = std::sync::mpsc::channel();
    member_listener(member.clone(), tx);
    rx.recv().unwrap();
    let proxy_bin = common::bin("proxy");
    let plain_listen = format!("0.0.0.0:{PROXY_PLAIN}");
    let backend = format!("{member_ip}:{GOSSIP_PORT}");
    let quiet = [("RUST_LOG", "warn")];
    let mut plain = Net::exec(
        &member,
        proxy_bin,
        &[
            "--listen",
            &plain_listen,
            "--zmq-backend",
            &backend,
            "--grpc-backend",
            &backend,
        ],
    );
    plain.envs(quiet);
    let plain = Proc::from_command("proxy", plain);
    wait_listening(&member, PROXY_PLAIN);
    let mut haproxy = start_haproxy(&net, &member_ip);
    let mut rows: Vec<Row> = Path::ALL
        .iter()
        .map(|_| Row {
            rate: vec![],
            proxy_cpu: vec![],
            machine_cpu: vec![],
        })
        .collect();
    for run_no in 0..runs {
        for (i, path) in Path::ALL.into_iter().enumerate() {
            // The intercepting proxy lives for its slot only: its table lives as long.
            let intercepting = (path == Path::ProxyIntercept).then(|| {
                let listen = format!("0.0.0.0:{PROXY_INTERCEPT}");
                let port = GOSSIP_PORT.to_string();
                let mut cmd = Net::exec(
                    &member,
                    proxy_bin,
                    &[
                        "--listen",
                        &listen,
                        "--intercept-port",
                        &port,
                        "--zmq-backend",
                        "original",
                        "--grpc-backend",
                        "original",
                    ],
                );
                cmd.env("RUST_LOG", "warn,proxy=info"); // only the "intercepting" line, as quiet as the others
                let p = Proc::from_command("proxy+intercept", cmd);
                p.wait_for_log("intercepting", PATIENCE);
                p
            });
            if path == Path::HaproxyIntercept {
                haproxy_redirect(&member, true);
            }
            let pid = match path {
                Path::Direct => None,
                Path::Proxy => Some(plain.pid()),
                Path::ProxyIntercept => intercepting.as_ref().map(Proc::pid),
                Path::Haproxy | Path::HaproxyIntercept => Some(haproxy.id()),
            };
            let target = format!("{member_ip}:{}", path.port());
            let (cpu0, m0) = (pid.and_then(cpu_us), machine_busy_us());
            let n = churn(&peers, &target, secs);
            let (cpu1, m1) = (pid.and_then(cpu_us), machine_busy_us());
            let row = &mut rows[i];
            row.rate.push(n as f64 / secs.as_secs_f64());
            if let (Some(a), Some(b)) = (cpu0, cpu1) {
                row.proxy_cpu.push((b - a) / n.max(1) as f64);
            }
            row.machine_cpu.push((m1 - m0) / n.max(1) as f64);
            if path == Path::HaproxyIntercept {
                haproxy_redirect(&member, false);
            }
            if let Some(mut p) = intercepting {
                // Every connection went through it: nothing was routed anywhere else.
                p.signal("TERM");
                p.wait_exit(PATIENCE);
            }
            eprintln!(
                "run {}/{runs} {:<18} {:>8.0} conn/s",
                run_no + 1,
                path.name(),
                n as f64 / secs.as_secs_f64()
            );
        }
    }
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    println!(
        "\n## Interception A/B: connection churn, {WORKERS} parallel, medians of {runs} runs of {:.1} s\n",
        secs.as_secs_f64()
    );
    println!("| path | conn/s | proxy CPU µs/conn | machine CPU µs/conn |");
    println!("|---|---:|---:|---:|");
    for (path, row) in Path::ALL.iter().zip(&rows) {
        let cpu = if row.proxy_cpu.is_empty() {
            "—".to_owned()
        } else {
            format!("{:.1}", median(&row.proxy_cpu))
        };
        println!(
            "| {} | {:.0} | {cpu} | {:.1} |",
            path.name(),
            median(&row.rate),
            median(&row.machine_cpu)
        );
    }
    let ratio = |a: &Row, b: &Row, f: fn(&Row) -> &Vec<f64>| {
        let r: Vec<f64> = f(a).iter().zip(f(b)).map(|(x, y)| x / y).collect();
        median(&r)
    };
    let (p, pi, h, hi) = (&rows[1], &rows[2], &rows[3], &rows[4]);
    println!(
        "\nSame-run ratios (median of per-run ratios): proxy+intercept ÷ proxy: CPU/conn {:.2}×, \
         machine CPU/conn {:.2}×, conn/s {:.2}×; proxy+intercept ÷ haproxy+intercept: CPU/conn {:.2}×, \
         conn/s {:.2}×; haproxy+intercept ÷ haproxy: CPU/conn {:.2}×",
        ratio(pi, p, |r| &r.proxy_cpu),
        ratio(pi, p, |r| &r.machine_cpu),
        ratio(pi, p, |r| &r.rate),
        ratio(pi, hi, |r| &r.proxy_cpu),
        ratio(pi, hi, |r| &r.rate),
        ratio(hi, h, |r| &r.proxy_cpu),
    );
    drop(plain);
    drop(net);
}

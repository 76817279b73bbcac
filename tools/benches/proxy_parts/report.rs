//! The markdown table: per scenario, the median over runs for each target with its spread
//! (min–max), and the ratio proxy / HAProxy taken *within each run* (both measured minutes
//! apart on the same box), reported as the median of those per-run ratios with their
//! spread, and in how many runs the target was met.

use std::collections::BTreeMap;

use super::Target;

pub type Samples = BTreeMap<(&'static str, Target), Vec<f64>>;

/// What a target is measured against.
#[derive(Clone, Copy)]
enum Basis {
    Haproxy,
    Direct,
    Value,
}

/// A target from the issue: `proxy ≤ value × basis` (or `≥`).
#[derive(Clone, Copy)]
struct Goal {
    basis: Basis,
    at_most: bool,
    value: f64,
}

impl Goal {
    fn text(self) -> String {
        let cmp = if self.at_most { "≤" } else { "≥" };
        match self.basis {
            Basis::Haproxy => format!("{cmp} {}× HAProxy", self.value),
            Basis::Direct => format!("{cmp} {}× direct", self.value),
            Basis::Value => format!("{cmp} {}", self.value),
        }
    }

    fn met(self, x: f64) -> bool {
        if self.at_most {
            x <= self.value
        } else {
            x >= self.value
        }
    }
}

const fn ha(at_most: bool, value: f64) -> Option<Goal> {
    Some(Goal {
        basis: Basis::Haproxy,
        at_most,
        value,
    })
}

const fn direct(at_most: bool, value: f64) -> Option<Goal> {
    Some(Goal {
        basis: Basis::Direct,
        at_most,
        value,
    })
}

const AT_MOST: bool = true;
const AT_LEAST: bool = false;

/// Every row the bench can report, in print order: key, name, unit, target.
const ROWS: &[(&str, &str, &str, Option<Goal>)] = &[
    (
        "tput1",
        "throughput, 1 connection",
        "MB/s",
        ha(AT_LEAST, 1.3),
    ),
    ("tput1_cpu", "CPU per MB, 1 connection", "µs/MB", None),
    (
        "tput8",
        "throughput, 8 connections",
        "MB/s",
        ha(AT_LEAST, 1.2),
    ),
    (
        "tput8_cpu",
        "CPU per MB, 8 connections",
        "µs/MB",
        ha(AT_MOST, 0.8),
    ),
    ("pp1", "ping-pong 64 B, 1 connection", "msg/s", None),
    ("pp1_p50", "ping-pong 1 conn, p50 RTT", "µs", None),
    ("pp1_p99", "ping-pong 1 conn, p99 RTT", "µs", None),
    ("pp1_cpu", "CPU per message, 1 connection", "µs/msg", None),
    (
        "pp32",
        "ping-pong 64 B, 32 connections",
        "msg/s",
        ha(AT_LEAST, 1.1),
    ),
    ("pp32_p50", "ping-pong 32 conns, p50 RTT", "µs", None),
    (
        "pp32_p99",
        "ping-pong 32 conns, p99 RTT",
        "µs",
        ha(AT_MOST, 0.8),
    ),
    (
        "pp32_cpu",
        "CPU per message, 32 connections",
        "µs/msg",
        ha(AT_MOST, 0.8),
    ),
    (
        "rate",
        "connection rate, 16 parallel",
        "conn/s",
        ha(AT_LEAST, 1.2),
    ),
    (
        "rate_cpu",
        "CPU per connection, 16 parallel",
        "µs/conn",
        ha(AT_MOST, 0.7),
    ),
    (
        "fb_zmtp_p50",
        "first byte at backend, ZMTP, p50",
        "µs",
        None,
    ),
    (
        "fb_zmtp_p99",
        "first byte at backend, ZMTP, p99",
        "µs",
        None,
    ),
    (
        "fb_h2_p50",
        "first byte at backend, HTTP/2, p50",
        "µs",
        None,
    ),
    (
        "fb_h2_p99",
        "first byte at backend, HTTP/2, p99",
        "µs",
        None,
    ),
    ("fb_cpu", "CPU per connection, unloaded", "µs/conn", None),
    (
        "mem1k",
        "RSS per idle connection, 1,000 held, opened 500 at a time",
        "bytes",
        Some(Goal {
            basis: Basis::Value,
            at_most: AT_MOST,
            value: 2048.0,
        }),
    ),
    (
        "mem1k_seq",
        "RSS per idle connection, 1,000 held, opened one at a time",
        "bytes",
        None,
    ),
    ("mem", "RSS per idle connection, all held", "bytes", None),
    (
        "zmq",
        "zmq_push → zmq_pull",
        "msg/s",
        direct(AT_LEAST, 0.95),
    ),
    (
        "grpc",
        "grpc_client → grpc_server (8 workers)",
        "RPC/s",
        direct(AT_LEAST, 0.95),
    ),
];

/// Records the samples of one target in one run.
pub struct Record<'a> {
    pub samples: &'a mut Samples,
    pub target: Target,
}

impl Record<'_> {
    pub fn add(&mut self, key: &'static str, v: f64) {
        self.samples.entry((key, self.target)).or_default().push(v);
    }

    /// CPU µs per unit of work, if there was a process to measure.
    pub fn per_unit(&mut self, key: &'static str, cpu_us: Option<f64>, units: f64) {
        if let Some(us) = cpu_us {
            self.add(key, us / units.max(1.0));
        }
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `median (min–max)`, or just the median for a single run.
fn with_spread(v: &[f64], fmt: impl Fn(f64) -> String) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let (lo, hi) = spread(v);
    if v.len() == 1 {
        fmt(v[0])
    } else {
        format!("{} ({}–{})", fmt(median(v)), fmt(lo), fmt(hi))
    }
}

/// Per-run ratios `a[i] / b[i]`, for the runs that measured both.
fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter(|(_, &b)| b > 0.0)
        .map(|(a, b)| a / b)
        .collect()
}

/// The samples of one scenario key for one target (none if it was not measured).
fn samples<'s>(s: &'s Samples, key: &'static str, t: Target) -> &'s [f64] {
    s.get(&(key, t)).map_or(&[], Vec::as_slice)
}

/// A ratio as the tables print it.
fn times(v: f64) -> String {
    format!("{v:.2}×")
}

pub fn print(s: &Samples, runs: usize, header: &str) {
    let get = |k, t| samples(s, k, t);
    println!();
    println!("{header}");
    println!();
    println!(
        "| scenario | unit | direct | proxy | HAProxy | proxy / direct | proxy / HAProxy | \
         target | met (runs) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---|---|");
    for &(key, name, unit, goal) in ROWS {
        let (d, p, h) = (
            get(key, Target::Direct),
            get(key, Target::Proxy),
            get(key, Target::Haproxy),
        );
        if d.is_empty() && p.is_empty() && h.is_empty() {
            continue;
        }
        let (pd, ph) = (ratios(p, d), ratios(p, h));
        let met = goal.map_or(String::new(), |g| {
            let judged = match g.basis {
                Basis::Haproxy => &ph,
                Basis::Direct => &pd,
                Basis::Value => p,
            };
            let n = judged.iter().filter(|&&r| g.met(r)).count();
            format!("{n} of {}", judged.len())
        });
        println!(
            "| {name} | {unit} | {} | {} | {} | {} | {} | {} | {met} |",
            if d.is_empty() {
                "–".into()
            } else {
                num(median(d))
            },
            with_spread(p, num),
            with_spread(h, num),
            with_spread(&pd, times),
            with_spread(&ph, times),
            goal.map_or(String::new(), Goal::text),
        );
    }
    print_ab(s);
    println!();
    println!(
        "Values: median of {runs} runs (min–max). Ratios: median of the per-run ratios \
         (min–max). CPU: utime + stime of the proxy or HAProxy process over the scenario, \
         from /proc/<pid>/stat."
    );
}

/// The A/B table, when a second proxy configuration was measured in the same runs.
fn print_ab(s: &Samples) {
    let get = |k, t| samples(s, k, t);
    if !s.keys().any(|(_, t)| *t == Target::ProxyB) {
        return;
    }
    println!();
    println!("A/B in the same runs: proxy (A) and proxy B (`BENCH_B_ARGS` / `BENCH_B_BIN`).");
    println!();
    println!("| scenario | unit | A | B | B / A | B / HAProxy |");
    println!("|---|---|---:|---:|---:|---:|");
    for &(key, name, unit, _) in ROWS {
        let (a, b, h) = (
            get(key, Target::Proxy),
            get(key, Target::ProxyB),
            get(key, Target::Haproxy),
        );
        if b.is_empty() {
            continue;
        }
        println!(
            "| {name} | {unit} | {} | {} | {} | {} |",
            with_spread(a, num),
            with_spread(b, num),
            with_spread(&ratios(b, a), times),
            with_spread(&ratios(b, h), times),
        );
    }
}

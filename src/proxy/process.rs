//! Process metrics, read from `/proc/self` at each scrape: open descriptors (against the
//! limit, the resource the proxy runs out of first), resident memory and CPU time.
//! prometheus-client has no process collector, and these are four reads of small files.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::scrape::{encode_counter, encode_gauge};

#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sample) = Sample::read() else {
            return Ok(()); // not Linux, or /proc unavailable: nothing to report
        };
        let e = &mut encoder;
        encode_gauge(
            e,
            "process_open_fds",
            "Open file descriptors",
            sample.open_fds as i64,
        )?;
        let max_fds = sample.max_fds as i64;
        encode_gauge(e, "process_max_fds", "The open-file limit (soft)", max_fds)?;
        let rss = sample.rss_bytes as i64;
        encode_gauge(e, "process_resident_memory_bytes", "Resident memory", rss)?;
        let cpu = sample.cpu_seconds;
        encode_counter(
            e,
            "process_cpu_seconds",
            "CPU time used, user and system",
            cpu,
        )
    }
}

struct Sample {
    open_fds: u64,
    max_fds: u64,
    rss_bytes: u64,
    cpu_seconds: f64,
}

impl Sample {
    fn read() -> Option<Sample> {
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?.0;
        let page = rustix::param::page_size() as u64;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let rss_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(Sample {
            open_fds,
            max_fds,
            rss_bytes: rss_pages * page,
            cpu_seconds: cpu_seconds("self")?,
        })
    }
}

/// CPU time (user + system, every thread, exited ones included) that process `pid` has
/// used, in seconds, from `/proc/<pid>/stat`; `"self"` for this process. `None` if it is
/// gone or there is no `/proc`. The bench reads the proxy's and HAProxy's with it.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) start at `state`; utime and
    // stime are the 12th and 13th of those, in clock ticks.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    Some((utime + stime) as f64 / ticks)
}

//! Network namespaces for the tests and benches that need real addresses: a "peers"
//! namespace with a bridge, and member namespaces each joined to it by a veth pair.
//!
//! ```text
//! peers ns: br0 10.99.0.1, fd99::1 ─┬─ veth ─ member 0: eth0 10.99.0.2, fd99::2
//!                                   ├─ veth ─ member 1: eth0 10.99.0.3, fd99::3
//!                                   └─ …
//! ```
//! Members reach each other over the bridge, so member-to-member traffic arrives on `eth0`
//! as a peer's does. Names are unique to the process and the call; dropping a [`Net`]
//! kills what runs in its namespaces and deletes them (and their links), also when the
//! test fails. Needs root and iproute2; a test that cannot create them fails, saying why.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{sample, Proc, PATIENCE};

/// Butterfly's gossip port: the member's own listener, in every member namespace.
pub const GOSSIP_PORT: u16 = 9638;
/// The intercepting proxy's listen port in each member namespace.
pub const PROXY_PORT: u16 = 7000;
pub const GRPC_PORT: u16 = 7002;
pub const METRICS: &str = "127.0.0.1:9100";
/// The peers namespace's address on the bridge.
pub const PEERS_IP: &str = "10.99.0.1";

/// Runs a command to completion; panics with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (the test needs iproute2 and nftables, and root)")
        });
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces of one test. Dropping it kills what runs in them and deletes them (and
/// with them their veth links), also when the test fails.
pub struct Net {
    pub peers: String,
    pub members: Vec<String>,
}

impl Net {
    pub fn new(members: usize) -> Net {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "zgp{}i{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            peers: format!("{id}p"),
            members: Vec::new(),
        };
        run("ip", &["netns", "add", &net.peers]);
        let p = net.peers.clone();
        run("ip", &["-n", &p, "link", "set", "lo", "up"]);
        run("ip", &["-n", &p, "link", "add", "br0", "type", "bridge"]);
        run(
            "ip",
            &["-n", &p, "addr", "add", "10.99.0.1/24", "dev", "br0"],
        );
        run(
            "ip",
            &["-n", &p, "addr", "add", "fd99::1/64", "dev", "br0", "nodad"],
        );
        run("ip", &["-n", &p, "link", "set", "br0", "up"]);
        for i in 0..members {
            let m = format!("{id}m{i}");
            run("ip", &["netns", "add", &m]);
            net.members.push(m.clone());
            let port = format!("v{i}");
            let args = [
                "link", "add", "name", &port, "netns", &p, "type", "veth", "peer", "name", "eth0",
                "netns", &m,
            ];
            run("ip", &args);
            run(
                "ip",
                &["-n", &p, "link", "set", &port, "master", "br0", "up"],
            );
            let (v4, v6) = (format!("{}/24", net.ip(i)), format!("{}/64", net.ip6(i)));
            run("ip", &["-n", &m, "addr", "add", &v4, "dev", "eth0"]);
            run(
                "ip",
                &["-n", &m, "addr", "add", &v6, "dev", "eth0", "nodad"],
            );
            run("ip", &["-n", &m, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &m, "link", "set", "lo", "up"]);
        }
        net
    }

    pub fn ip(&self, member: usize) -> String {
        format!("10.99.0.{}", member + 2)
    }

    pub fn ip6(&self, member: usize) -> String {
        format!("fd99::{}", member + 2)
    }

    /// `tcp://MEMBER:9638`, the address every peer dials.
    pub fn gossip_endpoint(&self, member: usize) -> String {
        format!("tcp://{}:{GOSSIP_PORT}", self.ip(member))
    }

    /// A command that runs `program` inside namespace `ns` (`ip netns exec` execs it, so
    /// its pid is the program's).
    pub fn exec(ns: &str, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, program]).args(args);
        cmd
    }

    pub fn spawn(ns: &str, name: &str, program: &str, args: &[&str]) -> Proc {
        Proc::from_command(name, Net::exec(ns, program, args))
    }

    /// One of the project's binaries, in `ns`.
    pub fn spawn_bin(ns: &str, name: &str, args: &[&str]) -> Proc {
        Net::spawn(ns, name, super::bin(name), args)
    }

    pub fn ruleset(ns: &str) -> String {
        let out = Net::exec(ns, "nft", &["list", "ruleset"])
            .output()
            .expect("nft");
        assert!(out.status.success(), "nft list ruleset: {:?}", out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies `ruleset` in `ns` with `nft -f -`; panics if nft refuses it.
    pub fn nft(ns: &str, ruleset: &str) {
        use std::io::Write;
        let mut child = Net::exec(ns, "nft", &["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft");
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(ruleset.as_bytes()).expect("write to nft");
        drop(stdin);
        assert!(child.wait().expect("nft").success(), "nft -f -:\n{ruleset}");
    }

    /// The intercepting proxy of a member: ZeroMQ to the member's own listener (the
    /// original destination), gRPC to the member's grpc_server.
    pub fn start_proxy(&self, member: usize, listen: &str, extra: &[&str]) -> Proc {
        let grpc = format!("127.0.0.1:{GRPC_PORT}");
        let port = GOSSIP_PORT.to_string();
        let mut args = vec![
            "--listen",
            listen,
            "--intercept-port",
            &port,
            "--zmq-backend",
            "original",
            "--grpc-backend",
            &grpc,
            "--metrics-listen",
            METRICS,
        ];
        args.extend_from_slice(extra);
        let p = Net::spawn_bin(&self.members[member], "proxy", &args);
        p.wait_for_log("intercepting", PATIENCE);
        p
    }

    /// The proxy's metrics in `ns`, scraped from inside it.
    pub fn scrape(ns: &str) -> String {
        let script = format!(
            "import urllib.request;print(urllib.request.urlopen('http://{METRICS}/metrics').read().decode())"
        );
        let out = Net::exec(ns, "python3", &["-c", &script])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "scrape: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the proxy in `ns` counts `series` at `want` at least; returns the value.
    pub fn wait_counter(ns: &str, series: &str, want: f64) -> f64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = sample(&Net::scrape(ns), series).unwrap_or(0.0);
            if v >= want || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20)); // polling a counter
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.members.iter().chain([&self.peers]) {
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

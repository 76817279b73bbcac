//! Test harness: spawns the real binaries, captures their output, and waits on what they
//! print (a "listening" line, an exit) rather than on the clock.
#![allow(dead_code)]

pub mod netns;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The ZMTP 3 signature a ZeroMQ peer opens with (what the proxy detects).
pub const ZMTP_SIGNATURE: [u8; 10] = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];

/// Generous upper bound for anything that should happen "promptly" on a loaded CI box.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The path of one of the workspace's binaries. Cargo names the binaries of the package a
/// test belongs to (`CARGO_BIN_EXE_*`); the other package's lie beside them in the same
/// target directory, built by the same `cargo test` (or `cargo bench`) at the workspace
/// root, which builds and tests both packages.
pub fn bin(name: &str) -> &'static str {
    let own = match name {
        "proxy" => option_env!("CARGO_BIN_EXE_proxy"),
        "zmq_pull" => option_env!("CARGO_BIN_EXE_zmq_pull"),
        "zmq_push" => option_env!("CARGO_BIN_EXE_zmq_push"),
        "grpc_server" => option_env!("CARGO_BIN_EXE_grpc_server"),
        "grpc_client" => option_env!("CARGO_BIN_EXE_grpc_client"),
        "zmq_bridge" => option_env!("CARGO_BIN_EXE_zmq_bridge"),
        "gossip_mesh" => option_env!("CARGO_BIN_EXE_gossip_mesh"),
        other => panic!("unknown binary {other}"),
    };
    if let Some(path) = own {
        return path;
    }
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("a target directory")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests from the workspace root (`cargo test`), which \
         builds the binaries of both packages",
        path.display()
    );
    Box::leak(path.to_string_lossy().into_owned().into_boxed_str())
}

#[derive(Default)]
struct Output {
    stdout: Vec<String>,
    stderr: Vec<String>,
    closed: usize,
}

/// A running binary. Killed on drop; its output is printed if the test is failing.
pub struct Proc {
    pub name: String,
    child: Child,
    output: Arc<(Mutex<Output>, Condvar)>,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        Self::spawn_env(name, args, &[])
    }

    pub fn spawn_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(bin(name));
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::from_command(name, cmd)
    }

    /// Spawns a prepared command (extra set-up such as `pre_exec`) with captured output.
    pub fn from_command(name: &str, mut cmd: Command) -> Proc {
        cmd.stderr(Stdio::piped());
        Self::from_command_stderr_set(name, cmd)
    }

    /// Spawns a prepared command whose log (stderr) goes to `path` rather than into memory,
    /// at the binary's own default level unless RUST_LOG is set: what a benchmark does for a
    /// process that logs every connection, as the process would run in production.
    #[allow(dead_code)] // benches only
    pub fn logging_to(name: &str, mut cmd: Command, path: &Path) -> Proc {
        let log = std::fs::File::create(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        cmd.stderr(log);
        Self::from_command_stderr_set(name, cmd)
    }

    fn from_command_stderr_set(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        // Tests wait on log lines, so they need info level unless the caller chose one.
        let chosen = cmd.get_envs().any(|(k, _)| k == "RUST_LOG");
        if !chosen && std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let output = Arc::new((Mutex::new(Output::default()), Condvar::new()));
        let out = child.stdout.take().expect("piped stdout");
        pump(out, Arc::clone(&output), true);
        if let Some(err) = child.stderr.take() {
            pump(err, Arc::clone(&output), false);
        }
        Proc {
            name: name.to_owned(),
            child,
            output,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a stderr (log) line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        self.wait_for(within, |o| {
            o.stderr.iter().find(|l| l.contains(needle)).cloned()
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: no log line containing {needle:?} within {within:?}",
                self.name
            )
        })
    }

    /// Counts log lines containing every one of `needles`.
    pub fn count_logs(&self, needles: &[&str]) -> usize {
        let o = self.output.0.lock().unwrap();
        o.stderr
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits for `n` log lines containing every one of `needles`.
    pub fn wait_for_logs(&self, needles: &[&str], n: usize, within: Duration) {
        self.wait_for(within, |o| {
            let c = o
                .stderr
                .iter()
                .filter(|l| needles.iter().all(|x| l.contains(x)))
                .count();
            (c >= n).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: fewer than {n} log lines with {needles:?} within {within:?} (saw {})",
                self.name,
                self.count_logs(needles)
            )
        })
    }

    /// Every log (stderr) line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.output.0.lock().unwrap().stderr.clone()
    }

    /// Waits up to `within` for one more log line than there is now (or for the end).
    pub fn wait_for_new_log(&self, within: Duration) {
        let seen = self.output.0.lock().unwrap().stderr.len();
        self.wait_for(within, |o| (o.stderr.len() > seen).then_some(()));
    }

    /// The address from the binary's "listening" log line (`addr=` or `endpoint=`).
    pub fn listen_addr(&self) -> String {
        let line = self.wait_for_log("listening", PATIENCE);
        line.split_whitespace()
            .find_map(|t| {
                t.strip_prefix("addr=")
                    .or_else(|| t.strip_prefix("endpoint="))
            })
            .unwrap_or_else(|| panic!("{}: no address in {line:?}", self.name))
            .to_owned()
    }

    fn wait_for<T>(&self, within: Duration, mut f: impl FnMut(&Output) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + within;
        let (lock, cv) = &*self.output;
        let mut o = lock.lock().unwrap();
        loop {
            if let Some(t) = f(&o) {
                return Some(t);
            }
            let now = Instant::now();
            if now >= deadline || o.closed == 2 {
                return f(&o);
            }
            o = cv.wait_timeout(o, deadline - now).unwrap().0;
        }
    }

    /// Starts `name` on an address a process that just died was serving (a backend
    /// restarted in place). The dead process's sockets can hold the port for a moment (on
    /// a loaded box the kernel may not have finished their closing handshake yet), and a
    /// bind then fails with "Address already in use": start it again until it is listening,
    /// as a supervisor restarting the service would, within `within`. It returns once the
    /// process is listening.
    pub fn spawn_rebinding(name: &str, args: &[&str], within: Duration) -> Proc {
        let deadline = Instant::now() + within;
        loop {
            let mut p = Proc::spawn(name, args);
            let left = deadline.saturating_duration_since(Instant::now());
            let line = p
                .wait_for(left, |o| {
                    o.stderr
                        .iter()
                        .find(|l| l.contains("listening") || l.contains("already in use"))
                        .cloned()
                })
                .unwrap_or_else(|| panic!("{name}: neither listening nor a bind error"));
            if line.contains("listening") {
                return p;
            }
            p.wait_exit(PATIENCE);
            assert!(Instant::now() < deadline, "{name}: {line}");
            thread::sleep(Duration::from_millis(20)); // polling for the port to be released
        }
    }

    /// Sends a signal by name: "INT", "TERM", "HUP", "KILL", "STOP", "CONT".
    pub fn signal(&self, sig: &str) {
        let number = match sig {
            "INT" => libc::SIGINT,
            "TERM" => libc::SIGTERM,
            "KILL" => libc::SIGKILL,
            "STOP" => libc::SIGSTOP,
            "CONT" => libc::SIGCONT,
            "HUP" => libc::SIGHUP,
            "USR1" => libc::SIGUSR1,
            other => panic!("unknown signal {other}"),
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, number) };
        assert_eq!(rc, 0, "kill -{sig} {}", self.name);
    }

    /// Waits for the process to exit and for its output to be fully read.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}",
                self.name
            );
            thread::sleep(Duration::from_millis(10));
        };
        self.status = Some(status);
        self.wait_for(PATIENCE, |o| (o.closed == 2).then_some(()));
        status
    }

    pub fn stdout(&self) -> String {
        self.output.0.lock().unwrap().stdout.join("\n")
    }

    pub fn stderr(&self) -> String {
        self.output.0.lock().unwrap().stderr.join("\n")
    }

    /// Parses the `NAME summary: k=v ...` line from stdout.
    pub fn summary(&self) -> HashMap<String, String> {
        let out = self.stdout();
        let line = out
            .lines()
            .find(|l| l.contains("summary:"))
            .unwrap_or_else(|| panic!("{}: no summary in stdout {out:?}", self.name));
        parse_kv(line)
    }

    pub fn summary_u64(&self, key: &str) -> u64 {
        let s = self.summary();
        s.get(key)
            .unwrap_or_else(|| panic!("{}: summary has no {key}: {s:?}", self.name))
            .parse()
            .unwrap()
    }
}

pub fn parse_kv(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn pump(
    stream: impl Read + Send + 'static,
    output: Arc<(Mutex<Output>, Condvar)>,
    is_stdout: bool,
) {
    thread::spawn(move || {
        let reader = BufReader::new(stream);
        for line in reader.lines() {
            let Ok(line) = line else { break };
            let (lock, cv) = &*output;
            let mut o = lock.lock().unwrap();
            if is_stdout {
                o.stdout.push(line);
            } else {
                o.stderr.push(line);
            }
            cv.notify_all();
        }
        let (lock, cv) = &*output;
        lock.lock().unwrap().closed += 1;
        cv.notify_all();
    });
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            let o = self.output.0.lock().unwrap();
            eprintln!("----- {} (pid {}) stdout -----", self.name, self.child.id());
            for l in &o.stdout {
                eprintln!("{l}");
            }
            eprintln!("----- {} stderr (last 60 lines) -----", self.name);
            for l in o
                .stderr
                .iter()
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("{l}");
            }
        }
    }
}

/// Runs a client binary to completion and returns it (exited, output collected).
pub fn run_to_end(name: &str, args: &[&str], within: Duration) -> Proc {
    let mut p = Proc::spawn(name, args);
    p.wait_exit(within);
    p
}

/// The three servers of the demo on free ports: zmq_pull, grpc_server and the proxy in
/// front of them.
pub struct Stack {
    pub pull: Proc,
    pub grpc: Proc,
    pub proxy: Proc,
}

impl Stack {
    pub fn start(pull_count: Option<u64>, proxy_args: &[&str]) -> Stack {
        let count = pull_count.map(|c| c.to_string());
        let mut pull_args = vec!["--bind", "tcp://127.0.0.1:*"];
        if let Some(c) = &count {
            pull_args.extend(["--count", c]);
        }
        let pull = Proc::spawn("zmq_pull", &pull_args);
        let grpc = Proc::spawn("grpc_server", &["--bind", "127.0.0.1:0"]);
        let zmq_backend = pull.listen_addr().trim_start_matches("tcp://").to_owned();
        let grpc_backend = grpc.listen_addr();
        let proxy = start_proxy(&zmq_backend, &grpc_backend, proxy_args);
        Stack { pull, grpc, proxy }
    }

    pub fn proxy_addr(&self) -> String {
        self.proxy.listen_addr()
    }

    pub fn zmq_url(&self) -> String {
        format!("tcp://{}", self.proxy_addr())
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.proxy_addr())
    }
}

pub fn start_proxy(zmq_backend: &str, grpc_backend: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--zmq-backend",
        zmq_backend,
        "--grpc-backend",
        grpc_backend,
    ];
    args.extend_from_slice(extra);
    let p = Proc::spawn("proxy", &args);
    p.listen_addr();
    p
}

/// A port that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Proc {
    /// Exit code of a process that has exited (`None` if killed by a signal).
    pub fn wait_status_code(&self) -> Option<i32> {
        self.status.expect("process has exited").code()
    }
}

/// Runs `grpc_client` for `count` back-to-back unary calls through `addr` and checks every
/// one was acknowledged.
pub fn grpc_calls(addr: &str, count: u64) -> Proc {
    let count = count.to_string();
    let url = format!("http://{addr}");
    let args = ["--connect", &url, "--count", &count, "--interval-ms", "0"];
    let out = run_to_end("grpc_client", &args, PATIENCE);
    assert_eq!(
        out.summary_u64("acked").to_string(),
        count,
        "{}",
        out.stderr()
    );
    out
}

/// `GET path` on an HTTP/1.1 endpoint: the whole response, head and body.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
}

/// `GET path`: the status line and the body.
pub fn http_get_status(addr: &str, path: &str) -> (String, String) {
    let response = http_get(addr, path);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The address a process's admin endpoint listens on, from its `metrics_addr=` log line.
pub fn metrics_addr(p: &Proc) -> String {
    let line = p.wait_for_log("metrics_addr=", PATIENCE);
    parse_kv(&line)["metrics_addr"].clone()
}

/// The value of one sample in a Prometheus scrape, e.g.
/// `zgp_connections_closed_total{route="zmq",outcome="ok"}`; `None` if it is not there.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

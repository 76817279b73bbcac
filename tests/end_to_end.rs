//! The demo's data paths, end to end through the real proxy binary, with the real ZMQ and
//! gRPC peers on the other side. Assertions are on what the servers actually received.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn zmq_push_through_proxy_reaches_zmq_pull() {
    let mut stack = Stack::start(Some(500), &[]);
    let url = stack.zmq_url();
    let push = run_to_end(
        "zmq_push",
        &[
            "--connect",
            &url,
            "--count",
            "500",
            "--interval-ms",
            "0",
            "--size",
            "300",
            "--sender",
            "p1",
        ],
        PATIENCE,
    );
    assert_eq!(push.summary_u64("sent"), 500);
    assert!(
        stack.pull.wait_exit(PATIENCE).success(),
        "zmq_pull exits 0 after --count"
    );
    let s = stack.pull.summary();
    assert_eq!(s["received"], "500");
    assert_eq!(s["senders"], "1");
    for k in ["skipped", "repeated", "corrupt", "malformed"] {
        assert_eq!(s[k], "0", "{k}");
    }
    stack
        .proxy
        .wait_for_logs(&["closed", "route=zmq"], 1, PATIENCE);
}

#[test]
fn grpc_client_through_proxy_reaches_grpc_server() {
    let mut stack = Stack::start(None, &[]);
    let url = stack.grpc_url();
    let unary = run_to_end(
        "grpc_client",
        &[
            "--connect",
            &url,
            "--count",
            "300",
            "--concurrency",
            "8",
            "--interval-ms",
            "0",
            "--sender",
            "u",
        ],
        PATIENCE,
    );
    let u = unary.summary();
    assert_eq!(
        (
            u["sent"].as_str(),
            u["acked"].as_str(),
            u["failed"].as_str()
        ),
        ("300", "300", "0")
    );
    assert!(u.contains_key("p50_ms") && u.contains_key("p99_ms"));

    let stream = run_to_end(
        "grpc_client",
        &[
            "--connect",
            &url,
            "--count",
            "200",
            "--concurrency",
            "2",
            "--interval-ms",
            "0",
            "--mode",
            "stream",
            "--size",
            "1000",
            "--sender",
            "s",
        ],
        PATIENCE,
    );
    assert_eq!(stream.summary_u64("acked"), 200);
    assert_eq!(stream.summary_u64("failed"), 0);

    stack.grpc.signal("TERM");
    assert!(stack.grpc.wait_exit(PATIENCE).success());
    let s = stack.grpc.summary();
    assert_eq!(s["received"], "500");
    assert_eq!(s["senders"], "10", "8 unary workers + 2 stream workers");
    for k in ["skipped", "repeated", "corrupt"] {
        assert_eq!(s[k], "0", "{k}");
    }
    stack
        .proxy
        .wait_for_logs(&["closed", "route=grpc"], 2, PATIENCE);
}

#[test]
fn both_protocols_at_once_on_one_port() {
    both_protocols_at_once(&[]);
}

/// The same with the per-core scheduler named explicitly: a runtime per thread, one
/// listener, then a clean exit on SIGTERM once every thread has drained.
#[test]
fn both_protocols_at_once_per_core() {
    // One listener for the threads, announced in one line.
    let (stack, port) = one_listener(&["--per-core", "--threads", "2"], "threads=2");
    // Lines about the whole process come once, when they are true of every thread.
    for line in ["listening", "stopped accepting", "all connections closed"] {
        assert_eq!(stack.proxy.count_logs(&[line]), 1, "{line}");
    }
    assert_eq!(listening_sockets(port), 0);
}

/// The same with the work-stealing scheduler: one runtime, one listener.
#[test]
fn both_protocols_at_once_work_stealing() {
    one_listener(&["--scheduler", "work-stealing", "--threads", "2"], "");
}

/// Both protocols through a proxy started with `args`, whose "listening" line says
/// `announces` (nothing about threads if empty), on one listening socket; then SIGTERM and
/// a clean exit. Returns the stack and the port.
fn one_listener(args: &[&str], announces: &str) -> (Stack, u16) {
    let mut stack = both_protocols_at_once(args);
    let line = stack.proxy.wait_for_log("listening", PATIENCE);
    match announces {
        "" => assert!(!line.contains("threads="), "{line}"),
        field => assert!(line.contains(field), "{line}"),
    }
    let addr = stack.proxy_addr();
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_eq!(listening_sockets(port), 1);
    stack.proxy.signal("TERM");
    assert!(stack.proxy.wait_exit(PATIENCE).success());
    (stack, port)
}

/// TCP sockets listening on `port` (IPv4, any process), from the kernel's own table.
fn listening_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "0A"
        })
        .count()
}

fn both_protocols_at_once(proxy_args: &[&str]) -> Stack {
    let mut stack = Stack::start(Some(800), proxy_args);
    let (zmq, grpc) = (stack.zmq_url(), stack.grpc_url());
    let mut clients: Vec<Proc> = Vec::new();
    for i in 0..2 {
        let sender = format!("push{i}");
        clients.push(Proc::spawn(
            "zmq_push",
            &[
                "--connect",
                &zmq,
                "--count",
                "400",
                "--interval-ms",
                "0",
                "--sender",
                &sender,
            ],
        ));
        let sender = format!("grpc{i}");
        clients.push(Proc::spawn(
            "grpc_client",
            &[
                "--connect",
                &grpc,
                "--count",
                "300",
                "--concurrency",
                "4",
                "--interval-ms",
                "0",
                "--sender",
                &sender,
            ],
        ));
    }
    for c in &mut clients {
        assert!(c.wait_exit(PATIENCE).success(), "{} failed", c.name);
    }
    assert!(stack.pull.wait_exit(PATIENCE).success());
    assert_eq!(stack.pull.summary_u64("received"), 800);
    assert_eq!(stack.pull.summary_u64("skipped"), 0);
    stack.grpc.signal("TERM");
    stack.grpc.wait_exit(PATIENCE);
    assert_eq!(stack.grpc.summary_u64("received"), 600);
    assert_eq!(stack.grpc.summary_u64("corrupt"), 0);
    stack
}

/// libzmq sends its 10-byte signature and then waits for the peer's. The proxy must route
/// on those 10 bytes alone, so the backend's own signature comes back long before the
/// detect timeout (set to a minute here so that waiting for more bytes would show).
#[test]
fn zmtp_signature_alone_is_routed_and_answered() {
    let stack = Stack::start(None, &["--detect-timeout-ms", "60000"]);
    let mut s = TcpStream::connect(stack.proxy_addr()).unwrap();
    s.write_all(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F]).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let started = Instant::now();
    let mut answer = [0u8; 10];
    s.read_exact(&mut answer)
        .expect("zmq_pull's signature through the proxy");
    assert_eq!((answer[0], answer[9]), (0xFF, 0x7F), "{answer:02x?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answered before any timeout"
    );
}

/// A relay in front of the proxy that forwards the first `dribble` bytes from each client
/// one byte per TCP segment, so the proxy sees its prefix in fragments.
fn dribbling_relay(target: String, dribble: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut upstream) = TcpStream::connect(&target) else {
                return;
            };
            upstream.set_nodelay(true).unwrap();
            let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            thread::spawn(move || {
                let _ = std::io::copy(&mut u2, &mut c2);
                let _ = c2.shutdown(Shutdown::Write);
            });
            thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let mut sent = 0;
                while let Ok(n @ 1..) = client.read(&mut buf) {
                    let mut data = &buf[..n];
                    while sent < dribble && !data.is_empty() {
                        if upstream.write_all(&data[..1]).is_err() {
                            return;
                        }
                        sent += 1;
                        data = &data[1..];
                        // Not a readiness wait: spacing the bytes makes each its own segment.
                        thread::sleep(Duration::from_millis(3));
                    }
                    if upstream.write_all(data).is_err() {
                        return;
                    }
                }
                let _ = upstream.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn prefixes_arriving_one_byte_at_a_time_are_routed() {
    let mut stack = Stack::start(Some(20), &["--detect-timeout-ms", "10000"]);
    // 40 bytes covers the ZMTP signature and the whole HTTP/2 preface, plus a little more.
    let relay = dribbling_relay(stack.proxy_addr(), 40);
    let push = run_to_end(
        "zmq_push",
        &[
            "--connect",
            &format!("tcp://{relay}"),
            "--count",
            "20",
            "--interval-ms",
            "0",
        ],
        PATIENCE,
    );
    assert_eq!(push.summary_u64("sent"), 20);
    assert!(stack.pull.wait_exit(PATIENCE).success());
    assert_eq!(stack.pull.summary_u64("received"), 20);

    let grpc = run_to_end(
        "grpc_client",
        &[
            "--connect",
            &format!("http://{relay}"),
            "--count",
            "20",
            "--interval-ms",
            "0",
        ],
        PATIENCE,
    );
    assert_eq!(grpc.summary_u64("acked"), 20, "{}", grpc.stderr());
    stack.grpc.signal("TERM");
    stack.grpc.wait_exit(PATIENCE);
    assert_eq!(stack.grpc.summary_u64("received"), 20);
}

/// Reads until EOF or error; returns how long it took, or None if the proxy kept the
/// connection open past `limit`.
fn time_until_closed(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn garbage_and_silent_clients_are_closed_while_good_clients_work() {
    let detect_ms = 1000;
    let stack = Stack::start(None, &["--detect-timeout-ms", &detect_ms.to_string()]);
    let addr = stack.proxy_addr();
    let limit = Duration::from_millis(detect_ms) + Duration::from_secs(10);

    let silent = TcpStream::connect(&addr).unwrap();
    let mut half_zmtp = TcpStream::connect(&addr).unwrap();
    half_zmtp.write_all(&[0xFF, 0, 0, 0, 0]).unwrap();
    let mut half_h2 = TcpStream::connect(&addr).unwrap();
    half_h2.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let mut http1 = TcpStream::connect(&addr).unwrap();
    http1
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut tls = TcpStream::connect(&addr).unwrap();
    tls.write_all(&[0x16, 0x03, 0x01, 0x00, 0xC8, 0x01])
        .unwrap();

    // While those wait, good clients of both kinds are served.
    let grpc = run_to_end(
        "grpc_client",
        &[
            "--connect",
            &stack.grpc_url(),
            "--count",
            "20",
            "--interval-ms",
            "0",
        ],
        PATIENCE,
    );
    assert_eq!(grpc.summary_u64("acked"), 20);
    let push = run_to_end(
        "zmq_push",
        &[
            "--connect",
            &stack.zmq_url(),
            "--count",
            "20",
            "--interval-ms",
            "0",
        ],
        PATIENCE,
    );
    assert_eq!(push.summary_u64("sent"), 20);
    stack
        .pull
        .wait_for_logs(&["message", "sequence=19"], 1, PATIENCE);

    // Wrong protocols are closed at once, without waiting for the timeout...
    for (name, s) in [("HTTP/1", http1), ("TLS", tls)] {
        let t = time_until_closed(s, limit).unwrap_or_else(|| panic!("{name} left open"));
        assert!(
            t < Duration::from_millis(detect_ms),
            "{name} closed after {t:?}"
        );
    }
    // ...and clients that say too little are closed by it.
    for (name, s) in [
        ("silent", silent),
        ("half ZMTP", half_zmtp),
        ("half preface", half_h2),
    ] {
        assert!(
            time_until_closed(s, limit).is_some(),
            "{name} still open after {limit:?}"
        );
    }
    stack
        .proxy
        .wait_for_logs(&["route=none", "unrecognised protocol"], 2, PATIENCE);
    stack
        .proxy
        .wait_for_logs(&["route=none", "detect timeout"], 3, PATIENCE);
    assert_eq!(stack.pull.count_logs(&["frame is not a Message"]), 0);
}

#[test]
fn grpc_backend_down_fails_fast_then_recovers_on_the_same_proxy() {
    let pull = Proc::spawn("zmq_pull", &["--bind", "tcp://127.0.0.1:*"]);
    let zmq_backend = pull.listen_addr().trim_start_matches("tcp://").to_owned();
    let grpc_backend = format!("127.0.0.1:{}", free_port());
    let proxy = start_proxy(&zmq_backend, &grpc_backend, &[]);
    let url = format!("http://{}", proxy.listen_addr());

    // The client's own timeout is long: failing fast must come from the proxy closing.
    let started = Instant::now();
    let down = run_to_end(
        "grpc_client",
        &[
            "--connect",
            &url,
            "--count",
            "3",
            "--interval-ms",
            "0",
            "--timeout-ms",
            "60000",
        ],
        PATIENCE,
    );
    let took = started.elapsed();
    assert_eq!(
        down.wait_status_code(),
        Some(1),
        "non-zero exit when calls fail"
    );
    assert_eq!(down.summary_u64("failed"), 3);
    assert!(down.stderr().contains("calls failed"), "{}", down.stderr());
    assert!(
        took < Duration::from_secs(20),
        "failed fast, not by timeout: {took:?}"
    );
    let line = proxy.wait_for_log("backend connect failed", PATIENCE);
    assert!(
        line.contains(&grpc_backend),
        "log names the backend: {line}"
    );

    // The backend comes up on that address; the same proxy now serves the next client.
    let grpc = Proc::spawn("grpc_server", &["--bind", &grpc_backend]);
    grpc.listen_addr();
    let up = run_to_end(
        "grpc_client",
        &["--connect", &url, "--count", "10", "--interval-ms", "0"],
        PATIENCE,
    );
    assert_eq!(up.summary_u64("acked"), 10, "{}", up.stderr());
    grpc.wait_for_logs(&["message", "sequence=9"], 1, PATIENCE);
}

//! grpc_server's stop and its sockets, plain and with `--zmq-forward` (stage 2):
//!
//! * SIGTERM with a client stream held open: the port closes at once, the stream gets
//!   `--drain-timeout-ms`, then it is cancelled and the server exits 0;
//! * SIGTERM while a stream that will end is in flight: it finishes, then exit 0;
//! * a second signal while draining: exit 130 at once.

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The two ways grpc_server serves: plain, and answering gRPC while forwarding ZeroMQ
/// (to a port nobody listens on: these tests never send ZeroMQ).
fn modes() -> [(&'static str, Vec<String>); 2] {
    let zmq_forward = format!("127.0.0.1:{}", free_port());
    [
        ("plain", vec![]),
        ("mux", vec!["--zmq-forward".to_owned(), zmq_forward]),
    ]
}

fn start_server(mode_args: &[String], extra: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let mut args = vec!["--bind", "127.0.0.1:0"];
    args.extend(mode_args.iter().map(String::as_str));
    args.extend_from_slice(extra);
    let server = Proc::spawn_env("grpc_server", &args, env);
    let addr = server.listen_addr();
    (server, addr)
}

/// A client-streaming call that stays open until the client is stopped (no --count).
fn held_stream(addr: &str, sender: &str) -> Proc {
    Proc::spawn(
        "grpc_client",
        &[
            "--connect",
            &format!("http://{addr}"),
            "--mode",
            "stream",
            "--interval-ms",
            "20",
            "--sender",
            sender,
        ],
    )
}

/// SIGTERM, then waits for the line saying the port is closed and checks that it is.
fn terminate_and_see_the_port_close(server: &Proc, addr: &str) -> Instant {
    let signalled = Instant::now();
    server.signal("TERM");
    server.wait_for_log("stopped accepting", PATIENCE);
    assert_eq!(
        TcpStream::connect(addr).map_err(|e| e.kind()).err(),
        Some(ErrorKind::ConnectionRefused),
        "{}: port still open while draining",
        server.name
    );
    signalled
}

#[test]
fn sigterm_cancels_a_stream_still_open_at_the_drain_timeout_and_exits_0() {
    const DRAIN_MS: u64 = 1500;
    for (mode, mode_args) in modes() {
        // The env-var form of the flag, to cover it too.
        let drain = DRAIN_MS.to_string();
        let (mut server, addr) = start_server(
            &mode_args,
            &[],
            &[("GRPC_SERVER_DRAIN_TIMEOUT_MS", drain.as_str())],
        );
        let mut client = held_stream(&addr, "held");
        server.wait_for_log("sender=held", PATIENCE);

        let signalled = terminate_and_see_the_port_close(&server, &addr);
        let status = server.wait_exit(PATIENCE);
        let took = signalled.elapsed();
        assert_eq!(status.code(), Some(0), "{mode}");
        // The stream never ends by itself, so the server waited the whole drain timeout,
        // then cancelled it; a loaded machine may add a few seconds, never a stuck server.
        assert!(
            took >= Duration::from_millis(DRAIN_MS)
                && took < Duration::from_millis(DRAIN_MS) + Duration::from_secs(10),
            "{mode}: exited {took:?} after SIGTERM with --drain-timeout-ms {DRAIN_MS}"
        );
        server.wait_for_log("drain timeout reached", PATIENCE);
        assert!(server.summary_u64("received") > 0, "{mode}");
        eprintln!("{mode}: SIGTERM to exit 0 with a stream held open: {took:?} (drain timeout {DRAIN_MS} ms)");

        // The client's call was cut, so it reports failures instead of waiting forever.
        client.signal("TERM");
        assert_eq!(client.wait_exit(PATIENCE).code(), Some(1), "{mode}");
        assert!(client.summary_u64("failed") > 0, "{mode}");
    }
}

#[test]
fn sigterm_lets_a_stream_in_flight_finish_then_exits_0() {
    for (mode, mode_args) in modes() {
        let (mut server, addr) = start_server(&mode_args, &["--drain-timeout-ms", "60000"], &[]);
        // ~2 s of streaming, in flight when the server is told to stop.
        let mut client = Proc::spawn(
            "grpc_client",
            &[
                "--connect",
                &format!("http://{addr}"),
                "--mode",
                "stream",
                "--count",
                "100",
                "--interval-ms",
                "20",
                "--sender",
                "finishing",
            ],
        );
        server.wait_for_log("sender=finishing", PATIENCE);
        terminate_and_see_the_port_close(&server, &addr);

        assert!(
            client.wait_exit(PATIENCE).success(),
            "{mode}: {}",
            client.stderr()
        );
        assert_eq!(client.summary_u64("acked"), 100, "{mode}");
        assert!(server.wait_exit(PATIENCE).success(), "{mode}");
        assert_eq!(server.summary_u64("received"), 100, "{mode}");
        assert_eq!(server.count_logs(&["drain timeout reached"]), 0, "{mode}");
    }
}

#[test]
fn a_second_signal_exits_at_once_with_130() {
    for (mode, mode_args) in modes() {
        let (mut server, addr) = start_server(&mode_args, &["--drain-timeout-ms", "600000"], &[]);
        let _client = held_stream(&addr, "held");
        server.wait_for_log("sender=held", PATIENCE);
        terminate_and_see_the_port_close(&server, &addr);

        let second = Instant::now();
        server.signal("TERM");
        assert_eq!(server.wait_exit(PATIENCE).code(), Some(130), "{mode}");
        let took = second.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "{mode}: {took:?} after the second signal"
        );
    }
}

#[test]
fn drain_timeout_flag_is_in_help_with_its_env_var() {
    let out = Command::new(bin("grpc_server"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--drain-timeout-ms"), "{help}");
    assert!(
        help.contains("[env: GRPC_SERVER_DRAIN_TIMEOUT_MS="),
        "{help}"
    );
    assert!(help.contains("[default: 5000]"), "{help}");
}

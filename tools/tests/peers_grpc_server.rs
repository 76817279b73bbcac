//! grpc_server's stop and its sockets, plain and with `--zmq-forward` (stage 2):
//!
//! * SIGTERM with a client stream held open: the port closes at once, the stream gets
//!   `--drain-timeout-ms`, then it is cancelled and the server exits 0;
//! * SIGTERM while a stream that will end is in flight: it finishes, then exit 0;
//! * a second signal while draining: exit 130 at once;
//! * every accepted connection has `TCP_NODELAY`, checked on the server's own socket.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
        eprintln!("{mode}: second signal to exit 130: {took:?}");
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

/// HTTP/2 client preface and an empty SETTINGS frame.
const H2_OPENING: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[test]
fn accepted_connections_have_tcp_nodelay() {
    for (mode, mode_args) in modes() {
        let (server, addr) = start_server(&mode_args, &[], &[]);
        let mut client = TcpStream::connect(&addr).unwrap();
        client.write_all(H2_OPENING).unwrap();
        // The server's SETTINGS frame: the HTTP/2 server (tonic) owns the connection now.
        let mut frame = [0u8; 9];
        client.set_read_timeout(Some(PATIENCE)).unwrap();
        client.read_exact(&mut frame).unwrap();
        assert_eq!(
            frame[3], 4,
            "{mode}: first frame is not SETTINGS: {frame:?}"
        );

        match server_side_nodelay(server.pid(), &client) {
            Ok(nodelay) => assert!(nodelay, "{mode}: TCP_NODELAY is off on the accepted socket"),
            // Some sandboxes forbid taking another process's descriptor; say so loudly.
            Err(why) => eprintln!("SKIPPED accepted_connections_have_tcp_nodelay ({mode}): {why}"),
        }
    }
}

/// Reads `TCP_NODELAY` on the server's end of `client`, inside the server process: the
/// socket's inode comes from /proc/PID/net/tcp (matched on both ports), its descriptor from
/// /proc/PID/fd, and pidfd_getfd(2) duplicates it into this process.
fn server_side_nodelay(pid: u32, client: &TcpStream) -> Result<bool, String> {
    let (local, peer) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
    let table =
        std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).map_err(|e| e.to_string())?;
    let port_of =
        |field: &str| u16::from_str_radix(field.rsplit(':').next().unwrap_or(""), 16).ok();
    let inode = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| {
            f.len() > 9 && port_of(f[1]) == Some(peer.port()) && port_of(f[2]) == Some(local.port())
        })
        .map(|f| f[9].to_owned())
        .ok_or("the server's socket is not in /proc/PID/net/tcp")?;
    let wanted = format!("socket:[{inode}]");
    let fd: RawFd = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy() == wanted))
        .and_then(|e| e.file_name().to_string_lossy().parse().ok())
        .ok_or("the server holds no descriptor for its socket")?;

    // SAFETY: plain syscalls on integers; every descriptor returned is owned exactly once.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
        if pidfd < 0 {
            return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as RawFd);
        let dup = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        if dup < 0 {
            return Err(format!("pidfd_getfd: {}", std::io::Error::last_os_error()));
        }
        let socket = OwnedFd::from_raw_fd(dup as RawFd);
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let rc = libc::getsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        );
        if rc != 0 {
            return Err(format!("getsockopt: {}", std::io::Error::last_os_error()));
        }
        Ok(value != 0)
    }
}

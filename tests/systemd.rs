//! Running under a service manager: readiness by `sd_notify`, socket activation
//! (`LISTEN_FDS`, with Debian's `systemd-socket-activate` as the manager), and replacing
//! the proxy process on a socket the manager holds without refusing or resetting a
//! connection.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const ZMTP_SIGNATURE: [u8; 10] = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];

/// A backend that echoes every connection.
fn echo_backend() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

/// One ZMQ-looking exchange through `addr`: the signature out, echoed back.
fn exchange(addr: &str) -> std::io::Result<()> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(PATIENCE))?;
    c.write_all(&ZMTP_SIGNATURE)?;
    let mut back = [0u8; 10];
    c.read_exact(&mut back)?;
    assert_eq!(back, ZMTP_SIGNATURE);
    Ok(())
}

#[test]
fn readiness_and_stopping_are_notified() {
    let dir = std::env::temp_dir().join(format!("zgp-notify-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let socket = UnixDatagram::bind(&dir).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let backend = echo_backend();
    let mut proxy = Proc::spawn_env(
        "proxy",
        &["--listen", "127.0.0.1:0", "--zmq-backend", &backend],
        &[("NOTIFY_SOCKET", dir.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 from the proxy");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
    // Ready means serving.
    exchange(&proxy.listen_addr()).unwrap();
    proxy.signal("TERM");
    let n = socket.recv(&mut buf).expect("STOPPING=1 from the proxy");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "STOPPING=1");
    assert!(proxy.wait_exit(PATIENCE).success());
    let _ = std::fs::remove_file(&dir);
}

#[test]
fn socket_activated_by_systemd_socket_activate() {
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        // .ci/run installs it (Debian's systemd package); say so rather than fail here.
        eprintln!("SKIPPED: systemd-socket-activate is not installed");
        return;
    }
    let backend = echo_backend();
    let port = free_port();
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["-l", &format!("127.0.0.1:{port}"), "-E", "RUST_LOG"])
        .arg(bin("proxy"))
        .args(["--listen", "127.0.0.1:1", "--zmq-backend", &backend]);
    let activator = Proc::from_command("systemd-socket-activate", cmd);
    activator.wait_for_log("Listening on", PATIENCE);
    // The first connection starts the proxy, which takes the socket and serves it (its own
    // --listen address is not used).
    exchange(&format!("127.0.0.1:{port}")).unwrap();
    activator.wait_for_log("LISTEN_FDS", PATIENCE);
}

/// Starts a proxy that takes `listener` as systemd would pass it: fd 3, `LISTEN_FDS=1`,
/// `LISTEN_PID` its own pid (set by the shell it execs from).
fn proxy_on(listener: &TcpListener, backend: &str) -> Proc {
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""])
        .arg(bin("proxy"))
        .args(["--zmq-backend", backend, "--drain-timeout-ms", "20000"]);
    // SAFETY: dup2 is async-signal-safe; the child runs nothing else before exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Proc::from_command("proxy", cmd)
}

#[test]
fn the_proxy_is_replaced_without_a_refused_or_reset_connection() {
    let backend = echo_backend();
    // The socket the service manager holds across restarts.
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let mut old = proxy_on(&socket, &backend);
    old.wait_for_log("listening", PATIENCE);

    // A client dialling in a loop for the whole hand-over.
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default()); // ok, refused, reset
    let dialler = {
        let (stop, counts, addr) = (Arc::clone(&stop), Arc::clone(&counts), addr.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let slot = match exchange(&addr) {
                    Ok(()) => 0,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => 1,
                    Err(_) => 2,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let served = |n: u64| {
        let start = counts[0].load(Ordering::Relaxed);
        while counts[0].load(Ordering::Relaxed) < start + n {
            std::thread::sleep(Duration::from_millis(5)); // polling a counter
        }
    };
    served(200);
    // A connection that only the old process can have accepted, kept open across its stop.
    let mut held = TcpStream::connect(&addr).unwrap();
    held.write_all(&ZMTP_SIGNATURE).unwrap();
    let mut back = [0u8; 10];
    held.read_exact(&mut back).unwrap();
    // The new process takes the same socket; then the old one is told to stop.
    let new = proxy_on(&socket, &backend);
    new.wait_for_log("listening", PATIENCE);
    served(50);
    old.signal("TERM");
    old.wait_for_log("draining", PATIENCE);
    served(200);
    // The old process finishes what it had open: the held connection still works.
    held.write_all(b"still here").unwrap();
    let mut more = [0u8; 10];
    held.read_exact(&mut more).unwrap();
    assert_eq!(&more, b"still here");
    drop(held);
    assert!(old.wait_exit(PATIENCE).success(), "{}", old.stderr());
    served(200);
    stop.store(true, Ordering::Relaxed);
    dialler.join().unwrap();
    let [ok, refused, reset] = [0, 1, 2].map(|i| counts[i].load(Ordering::Relaxed));
    println!(
        "hand-over: {} connections attempted, {ok} served, {refused} refused, {reset} reset",
        ok + refused + reset
    );
    assert_eq!((refused, reset), (0, 0), "served {ok}");
    assert!(
        new.count_logs(&["closed", "route=zmq"]) > 0,
        "the new process served some"
    );
}

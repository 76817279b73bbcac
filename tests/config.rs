//! `--config FILE`: the file fills what flags and environment variables do not give, is
//! validated at start, and SIGHUP swaps its routes in atomically — open connections
//! continue on the old route, an invalid file is rejected and the old routes stay.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;

use common::*;

const ZMTP_SIGNATURE: [u8; 10] = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];

fn config_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("zgp-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

fn backend() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap().to_string();
    (l, a)
}

/// Connects through the proxy as a ZMQ client and returns the backend's side.
fn zmq_connection(proxy: &str, backend: &TcpListener) -> (TcpStream, TcpStream) {
    let mut c = TcpStream::connect(proxy).unwrap();
    c.write_all(&ZMTP_SIGNATURE).unwrap();
    let (mut b, _) = backend.accept().unwrap();
    let mut sig = [0u8; 10];
    b.read_exact(&mut sig).unwrap();
    assert_eq!(sig, ZMTP_SIGNATURE);
    (c, b)
}

#[test]
fn the_file_fills_in_and_flags_and_env_override_it() {
    let (a, a_addr) = backend();
    let (b, b_addr) = backend();
    let file = config_file(
        "fill",
        &format!("zmq_backend = \"{a_addr}\"\ngrpc_backend = \"{a_addr}\"\n"),
    );
    let from_file = Proc::spawn(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ],
    );
    zmq_connection(&from_file.listen_addr(), &a);

    let flag_wins = Proc::spawn(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
            "--zmq-backend",
            &b_addr,
        ],
    );
    zmq_connection(&flag_wins.listen_addr(), &b);

    let env_wins = Proc::spawn_env(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ],
        &[("PROXY_ZMQ_BACKEND", &b_addr), ("RUST_LOG", "info")],
    );
    zmq_connection(&env_wins.listen_addr(), &b);
}

#[test]
fn an_invalid_file_at_start_exits_2_and_says_why() {
    for (name, text, expect) in [
        ("typo", "zmq_backnd = \"127.0.0.1:1\"\n", "zmq_backnd"),
        ("bad-addr", "zmq_backend = \"nowhere\"\n", "zmq_backend"),
        ("bad-toml", "zmq_backend = \n", "zmq_backend"),
        (
            "bad-route",
            "proxy_protocol = [\"ssh\"]\n",
            "proxy_protocol",
        ),
    ] {
        let file = config_file(name, text);
        let out = Command::new(bin("proxy"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--config",
                file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expect) || err.to_lowercase().contains(&expect.to_lowercase()),
            "{name}: {err}"
        );
    }
    let out = Command::new(bin("proxy"))
        .args(["--config", "/nonexistent/zgp.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sighup_swaps_routes_while_open_connections_continue_and_rejects_a_bad_file() {
    let (a, a_addr) = backend();
    let (b, b_addr) = backend();
    let file = config_file(
        "reload",
        &format!("zmq_backend = \"{a_addr}\"\ngrpc_backend = \"{a_addr}\"\n"),
    );
    let proxy = Proc::spawn(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ],
    );
    let addr = proxy.listen_addr();

    // A long transfer on the old route, in flight across the reload.
    let (mut old_client, mut old_backend) = zmq_connection(&addr, &a);
    old_client.write_all(&[1u8; 100_000]).unwrap();

    std::fs::write(
        &file,
        format!("zmq_backend = \"{b_addr}\"\ngrpc_backend = \"{b_addr}\"\n"),
    )
    .unwrap();
    proxy.signal("HUP");
    proxy.wait_for_log("reloaded", PATIENCE);
    // New connections take the new route...
    zmq_connection(&addr, &b);
    // ...while the old one carries on, both ways, to the old backend.
    old_client.write_all(&[2u8; 100_000]).unwrap();
    old_client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    old_backend.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 200_000);
    assert!(got[..100_000].iter().all(|&x| x == 1) && got[100_000..].iter().all(|&x| x == 2));
    old_backend.write_all(b"done").unwrap();
    drop(old_backend);
    let mut reply = Vec::new();
    old_client.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"done");

    // An invalid file is rejected with a clear line, and the routes stay as they were.
    std::fs::write(&file, "zmq_backend = 12\n").unwrap();
    proxy.signal("HUP");
    let line = proxy.wait_for_log("reload rejected", PATIENCE);
    assert!(line.contains("zmq_backend"), "{line}");
    zmq_connection(&addr, &b);
}

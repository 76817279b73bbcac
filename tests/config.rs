//! `--config FILE`: the file fills what flags and environment variables do not give, is
//! validated at start, and SIGHUP swaps its routes in atomically — open connections
//! continue on the old route, an invalid file is rejected and the old routes stay.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;

use common::*;

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

#[test]
fn values_from_the_file_are_held_to_the_flags_limits() {
    for (name, text, expect) in [
        ("max", "max_connections = 4000000000\n", "max_connections"),
        ("threads", "threads = 100000\n", "threads"),
        ("detect", "detect_timeout_ms = 0\n", "detect_timeout_ms"),
        (
            "sni",
            "[[tls_route]]\nsni = \"*\"\nbackend = \"127.0.0.1:9\"\n",
            "neither a host name",
        ),
    ] {
        let file = config_file(name, text);
        let out = Command::new(bin("proxy"))
            .args(["--listen", "127.0.0.1:0", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{name}: {err}");
    }
}

/// A proxy started from `text`, and the file's path.
fn proxy_from_file(name: &str, text: &str, extra: &[&str]) -> (Proc, PathBuf) {
    let file = config_file(name, text);
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--config",
        file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let proxy = Proc::spawn("proxy", &args);
    (proxy, file)
}

#[test]
fn a_reload_never_falls_back_to_defaults_for_what_the_file_set() {
    let (a, a_addr) = backend();
    let text = format!("zmq_backend = \"{a_addr}\"\ngrpc_backend = \"{a_addr}\"\n");
    let (proxy, file) = proxy_from_file("truncated", &text, &["--metrics-listen", "127.0.0.1:0"]);
    let addr = proxy.listen_addr();
    let admin = metrics_addr(&proxy);
    // Truncated (say, by a failed deploy): every route would fall back to the built-in
    // defaults. Refused, naming what is missing.
    std::fs::write(&file, "").unwrap();
    proxy.signal("HUP");
    let line = proxy.wait_for_log("reload rejected", PATIENCE);
    assert!(
        line.contains("zmq_backend") && line.contains("grpc_backend"),
        "{line}"
    );
    zmq_connection(&addr, &a);
    // Put back, it reloads.
    std::fs::write(&file, &text).unwrap();
    proxy.signal("HUP");
    proxy.wait_for_log("reloaded", PATIENCE);
    zmq_connection(&addr, &a);
    // Counted before either line was logged.
    let body = http_get(&admin, "/metrics");
    for result in ["rejected", "ok"] {
        let series = format!("zgp_config_reloads_total{{result=\"{result}\"}}");
        assert_eq!(sample(&body, &series), Some(1.0), "{series}\n{body}");
    }
    let last = body
        .lines()
        .find_map(|l| l.strip_prefix("zgp_config_last_reload_success_timestamp_seconds "))
        .unwrap();
    assert!(last.parse::<u64>().unwrap() > 1_700_000_000, "{last}");
}

#[test]
fn sighup_without_a_config_file_is_logged_and_ignored() {
    let (a, a_addr) = backend();
    let mut proxy = start_proxy(&a_addr, &a_addr, &[]);
    let addr = proxy.listen_addr();
    proxy.signal("HUP");
    proxy.wait_for_log("nothing to reload", PATIENCE);
    zmq_connection(&addr, &a);
    proxy.signal("TERM");
    assert!(proxy.wait_exit(PATIENCE).success());
}

#[test]
fn a_config_path_that_blocks_stalls_nothing() {
    let (a, a_addr) = backend();
    let text = format!("zmq_backend = \"{a_addr}\"\n");
    let (proxy, file) = proxy_from_file(
        "fifo",
        &text,
        &["--threads", "1", "--metrics-listen", "127.0.0.1:0"],
    );
    let addr = proxy.listen_addr();
    let admin = metrics_addr(&proxy);
    // The file becomes a FIFO nobody writes: reading it would block for ever.
    std::fs::remove_file(&file).unwrap();
    let made = Command::new("mkfifo").arg(&file).status().unwrap();
    assert!(made.success());
    proxy.signal("HUP");
    let line = proxy.wait_for_log("reload rejected", PATIENCE);
    assert!(line.contains("not a regular file"), "{line}");
    // Serving never stopped: connections and the health check are answered.
    zmq_connection(&addr, &a);
    let (status, _) = http_get_status(&admin, "/healthz");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn check_prints_the_effective_configuration_and_where_each_value_came_from() {
    let file = config_file(
        "check",
        "zmq_backend = \"10.0.0.5:7001\"\n[[tls_route]]\nalpn = \"h2\"\nbackend = \"10.0.0.6:7443\"\n",
    );
    let out = Command::new(bin("proxy"))
        .args(["--check", "--max-connections", "100", "--config"])
        .arg(&file)
        .env("PROXY_DETECT_TIMEOUT_MS", "2000")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
            .to_owned()
    };
    assert!(
        text.starts_with("# proxy ") && text.contains("configuration OK"),
        "{text}"
    );
    for (key, value, source) in [
        ("zmq_backend", "\"10.0.0.5:7001\"", "# file"),
        ("max_connections", "100", "# flag"),
        ("detect_timeout_ms", "2000", "# env"),
        ("grpc_backend", "\"127.0.0.1:7002\"", "# default"),
    ] {
        let l = line(key);
        assert!(l.contains(value) && l.ends_with(source), "{l}");
    }
    assert!(text.contains("[[tls_route]]") && text.contains("alpn = \"h2\""));
    // The output is itself a valid configuration file.
    let again = config_file(
        "check-again",
        &text.replace("[[tls_route]]", "\n[[tls_route]]"),
    );
    let out = Command::new(bin("proxy"))
        .args(["-c", "--config"])
        .arg(&again)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Invalid: exit 2 and say why, binding nothing.
    let bad = config_file("check-bad", "max_connections = 0\n");
    let out = Command::new(bin("proxy"))
        .args(["--check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_connections"));
}

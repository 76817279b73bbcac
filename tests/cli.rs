//! The command-line contract: help, env-var equivalents, exit codes for bad flags and
//! unbindable addresses, and a clean exit 0 on SIGINT/SIGTERM.

mod common;

use std::process::Command;

use common::*;

const BINARIES: [(&str, &[&str]); 7] = [
    (
        "proxy",
        &[
            "--listen",
            "--zmq-backend",
            "--grpc-backend",
            "--detect-timeout-ms",
            "--connect-timeout-ms",
            "--drain-timeout-ms",
            "--max-connections",
            "--threads",
            "--splice",
            "--idle-timeout-ms",
            "--tcp-keepalive-ms",
            "--accept-proxy-protocol",
            "--check",
            "--shutdown-delay-ms",
            "--log-format",
            "PROXY_LISTEN",
        ],
    ),
    (
        "zmq_pull",
        &["--bind", "--count", "--log-format", "ZMQ_PULL_BIND"],
    ),
    (
        "zmq_push",
        &[
            "--connect",
            "--count",
            "--size",
            "--interval-ms",
            "--sender",
            "--linger-ms",
            "--prefer-grpc",
            "ZMQ_PUSH_PREFER_GRPC",
            "ZMQ_PUSH_CONNECT",
        ],
    ),
    (
        "grpc_server",
        &[
            "--bind",
            "--zmq-forward",
            "--drain-timeout-ms",
            "--metrics-listen",
            "GRPC_SERVER_METRICS_LISTEN",
            "--log-format",
            "GRPC_SERVER_BIND",
        ],
    ),
    (
        "zmq_bridge",
        &[
            "--bind",
            "--grpc",
            "--max-in-flight",
            "--timeout-ms",
            "--drain-timeout-ms",
            "--max-message-bytes",
            "--payload",
            "ZMQ_BRIDGE_PAYLOAD",
            "--metrics-listen",
            "ZMQ_BRIDGE_METRICS_LISTEN",
            "ZMQ_BRIDGE_BIND",
        ],
    ),
    (
        "grpc_client",
        &[
            "--connect",
            "--count",
            "--concurrency",
            "--size",
            "--interval-ms",
            "--mode",
            "--timeout-ms",
            "GRPC_CLIENT_CONNECT",
        ],
    ),
    (
        "gossip_mesh",
        &[
            "--members",
            "--fanout",
            "--round-ms",
            "--seconds",
            "--rollout",
            "--seed",
            "GOSSIP_MESH_MEMBERS",
            "GOSSIP_MESH_ROLLOUT",
        ],
    ),
];

#[test]
fn help_lists_every_flag_and_its_env_var() {
    for (name, flags) in BINARIES {
        let out = Command::new(bin(name)).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        for flag in flags {
            assert!(help.contains(flag), "{name} --help lacks {flag}:\n{help}");
        }
        assert!(help.contains("[env: LOG_FORMAT="), "{name}:\n{help}");
    }
}

#[test]
fn bad_flags_print_usage_and_exit_2() {
    for (name, _) in BINARIES {
        let out = Command::new(bin(name))
            .arg("--no-such-flag")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Usage:"),
            "{name}"
        );
    }
    for (name, args) in [
        ("proxy", &["--zmq-backend", "no-port"][..]),
        ("proxy", &["--detect-timeout-ms", "0"]),
        ("zmq_push", &["--count", "-1"]),
        ("grpc_client", &["--mode", "sideways"]),
        ("grpc_client", &["--connect", "not a url", "--count", "1"]),
    ] {
        let out = Command::new(bin(name)).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}");
        assert!(!out.stderr.is_empty(), "{name} {args:?} says why");
    }
}

/// Per-core binds its listeners with SO_REUSEPORT, which would let a second proxy on the
/// same port share it silently; it must be refused like any address in use, unless the
/// operator asked for sharing with --reuse-port.
#[test]
fn a_second_proxy_on_the_same_port_exits_2_unless_reuse_port_is_asked_for() {
    let first = start_proxy("127.0.0.1:9", "127.0.0.1:9", &["--threads", "2"]);
    let addr = first.listen_addr();
    let out = Command::new(bin("proxy"))
        .args(["--listen", &addr, "--zmq-backend", "127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
    // Both asked to share: the second one serves the same port too.
    let a = start_proxy("127.0.0.1:9", "127.0.0.1:9", &["--reuse-port"]);
    let shared = a.listen_addr();
    let b = Proc::spawn(
        "proxy",
        &[
            "--listen",
            &shared,
            "--zmq-backend",
            "127.0.0.1:9",
            "--reuse-port",
        ],
    );
    assert_eq!(b.listen_addr(), shared);
    drop((first, a));
}

#[test]
fn an_address_in_use_exits_2_with_a_clear_message() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let zmq = format!("tcp://{addr}");
    for (name, args) in [
        ("proxy", ["--listen", addr.as_str()]),
        ("grpc_server", ["--bind", addr.as_str()]),
        ("zmq_pull", ["--bind", zmq.as_str()]),
        ("zmq_bridge", ["--bind", zmq.as_str()]),
    ] {
        let out = Command::new(bin(name)).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&addr) && err.contains("in use"),
            "{name}: {err}"
        );
    }
}

#[test]
fn env_vars_stand_in_for_flags() {
    let p = Proc::spawn_env(
        "proxy",
        &[],
        &[
            ("PROXY_LISTEN", "127.0.0.1:0"),
            ("PROXY_ZMQ_BACKEND", "127.0.0.1:9"),
            ("LOG_FORMAT", "json"),
        ],
    );
    let line = p.wait_for_log("listening", PATIENCE);
    let json: serde_json::Value =
        serde_json::from_str(&line).expect("LOG_FORMAT=json gives JSON lines");
    assert_eq!(json["zmq_backend"], "127.0.0.1:9");
    assert_ne!(json["addr"], "127.0.0.1:7000");
}

#[test]
fn long_running_binaries_exit_0_on_sigint_and_sigterm() {
    for sig in ["INT", "TERM"] {
        let mut stack = Stack::start(None, &[]);
        let mut push = Proc::spawn(
            "zmq_push",
            &["--connect", &stack.zmq_url(), "--interval-ms", "5"],
        );
        let mut grpc = Proc::spawn(
            "grpc_client",
            &["--connect", &stack.grpc_url(), "--interval-ms", "5"],
        );
        stack.pull.wait_for_log("message", PATIENCE);
        stack.grpc.wait_for_log("message", PATIENCE);
        for p in [&mut push, &mut grpc] {
            p.signal(sig);
            assert!(p.wait_exit(PATIENCE).success(), "{} on SIG{sig}", p.name);
            assert!(
                p.stdout().contains("summary:"),
                "{} prints a summary",
                p.name
            );
        }
        for p in [&mut stack.proxy, &mut stack.pull, &mut stack.grpc] {
            p.signal(sig);
            assert!(p.wait_exit(PATIENCE).success(), "{} on SIG{sig}", p.name);
        }
        assert!(stack.pull.stdout().contains("summary:"));
        assert!(stack.grpc.stdout().contains("summary:"));
    }
}

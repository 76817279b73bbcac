//! The headless demo script itself, every migration stage, run on free ports with the
//! binaries under test.

mod common;

use std::path::Path;
use std::process::Command;

use common::{bin, free_port};

#[test]
fn headless_demo_stage_1_proxy() {
    run_demo(1);
}

#[test]
fn headless_demo_stage_2_grpc_server_forwards_zmq() {
    run_demo(2);
}

#[test]
fn headless_demo_stage_3_bridge_replaces_zmq_pull() {
    run_demo(3);
}

#[test]
fn headless_demo_stage_4_grpc_only() {
    run_demo(4);
}

/// The mesh rollout through the script: 6 members, 8 s, every rumor everywhere.
#[test]
fn headless_demo_mesh_rollout() {
    let bin_dir = Path::new(bin("gossip_mesh")).parent().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(["--stage", "mesh"])
        .env("BIN_DIR", bin_dir)
        .env("DEMO_SECONDS", "2")
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("demo: OK"), "{stdout}");
    for stage in ["zmq", "both", "prefer-grpc", "grpc"] {
        let row = format!("| {stage} |");
        let line = stdout.lines().find(|l| l.starts_with(&row));
        assert!(
            line.is_some_and(|l| l.ends_with("| yes |")),
            "{row} in {stdout}"
        );
    }
}

/// Runs `scripts/demo.sh --stage N`; the script itself checks that every message sent
/// arrived and exits non-zero otherwise.
fn run_demo(stage: u32) {
    let bin_dir = Path::new(bin("proxy")).parent().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(["--stage", &stage.to_string()])
        .env("BIN_DIR", bin_dir)
        .env("DEMO_SECONDS", "2")
        .env("DEMO_PROXY_PORT", free_port().to_string())
        .env("DEMO_ZMQ_PORT", free_port().to_string())
        .env("DEMO_GRPC_PORT", free_port().to_string())
        .env("DEMO_METRICS_PORT", free_port().to_string())
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("demo: OK"), "{stdout}");
    if stage == 1 {
        // The proxy's per-route counters, read from its /metrics at the end.
        for route in ["zmq", "grpc"] {
            let series =
                format!("zgp_connections_closed_total{{route=\"{route}\",outcome=\"ok\"}} 2");
            assert!(stdout.contains(&series), "{series} in {stdout}");
        }
    }
    let paths: &[&str] = if stage < 4 {
        &["ZMQ:", "gRPC:"]
    } else {
        &["gRPC:"]
    };
    for path in paths {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(path))
            .unwrap_or_else(|| panic!("no {path} line in {stdout}"));
        let numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(numbers[0] > 0 && numbers[1] > 0, "{line}");
    }
}

//! The headless demo script itself, run on free ports with the binaries under test.

mod common;

use std::path::Path;
use std::process::Command;

use common::{bin, free_port};

#[test]
fn headless_demo_carries_traffic_on_both_paths() {
    let bin_dir = Path::new(bin("proxy")).parent().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/demo.sh");
    let out = Command::new("bash")
        .arg(script)
        .env("BIN_DIR", bin_dir)
        .env("DEMO_SECONDS", "2")
        .env("DEMO_PROXY_PORT", free_port().to_string())
        .env("DEMO_ZMQ_PORT", free_port().to_string())
        .env("DEMO_GRPC_PORT", free_port().to_string())
        .output()
        .expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("demo: OK"), "{stdout}");
    for server in ["zmq_pull", "grpc_server"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(server) && l.contains("through the proxy"))
            .unwrap_or_else(|| panic!("no {server} line in {stdout}"));
        let received: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(received > 0, "{line}");
    }
}

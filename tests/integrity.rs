//! Integrity under mixed load: 32 ZMQ and 32 gRPC client processes at once through one proxy
//! port, several MiB each. Receivers verify every payload byte and every per-sender
//! sequence, so a lost, duplicated, corrupted or reordered message fails the test.

mod common;

use std::time::Instant;

use common::*;

const CLIENTS: usize = 32;
const MESSAGES: u64 = 48;
const SIZE: usize = 64 * 1024; // 48 × 64 KiB = 3 MiB per client

#[test]
fn mixed_load_loses_duplicates_corrupts_and_reorders_nothing() {
    mixed_load("auto");
}

#[test]
fn mixed_load_with_splice_on_every_direction() {
    mixed_load("on");
}

#[test]
fn mixed_load_with_copy_only() {
    mixed_load("off");
}

fn mixed_load(splice: &str) {
    let total = CLIENTS as u64 * MESSAGES;
    let mut stack = Stack::start(Some(total), &["--splice", splice]);
    let (zmq, grpc) = (stack.zmq_url(), stack.grpc_url());
    let (count, size) = (MESSAGES.to_string(), SIZE.to_string());
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        // The same flags drive both clients: one schema, two transports.
        for (bin, url, kind) in [("zmq_push", &zmq, "zmq"), ("grpc_client", &grpc, "grpc")] {
            let sender = format!("{kind}-{i}");
            clients.push(Proc::spawn_env(
                bin,
                &[
                    "--connect",
                    url,
                    "--count",
                    &count,
                    "--size",
                    &size,
                    "--interval-ms",
                    "0",
                    "--sender",
                    &sender,
                ],
                &[("RUST_LOG", "warn")],
            ));
        }
    }
    for c in &mut clients {
        assert!(
            c.wait_exit(PATIENCE * 4).success(),
            "{} failed: {}",
            c.name,
            c.stderr()
        );
    }
    assert!(stack.pull.wait_exit(PATIENCE * 4).success());
    let elapsed = started.elapsed();
    stack.grpc.signal("TERM");
    assert!(stack.grpc.wait_exit(PATIENCE).success());

    for (server, summary) in [
        ("zmq_pull", stack.pull.summary()),
        ("grpc_server", stack.grpc.summary()),
    ] {
        assert_eq!(
            summary["received"],
            total.to_string(),
            "{server}: {summary:?}"
        );
        assert_eq!(summary["senders"], CLIENTS.to_string(), "{server}");
        for k in ["skipped", "repeated", "corrupt", "malformed"] {
            assert_eq!(summary[k], "0", "{server}: {k}");
        }
    }
    stack
        .proxy
        .wait_for_logs(&["closed", "route=zmq"], CLIENTS, PATIENCE);
    stack
        .proxy
        .wait_for_logs(&["closed", "route=grpc"], CLIENTS, PATIENCE);
    let mib = 2.0 * total as f64 * SIZE as f64 / (1 << 20) as f64;
    eprintln!(
        "integrity (--splice {splice}): {CLIENTS}+{CLIENTS} clients, {total}+{total} messages, \
         {mib:.0} MiB verified in {elapsed:.2?}"
    );
}

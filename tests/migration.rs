//! The migration stages: grpc_server answering gRPC and forwarding ZeroMQ on one port
//! (stage 2), and zmq_bridge delivering ZMQ messages to grpc_server in place of zmq_pull
//! (stage 3), including across a grpc_server restart.

mod common;

use std::collections::HashMap;

use common::*;

/// Every `message` line a grpc_server logged, as (sender, sequence).
fn messages_logged(server: &Proc) -> Vec<(String, u64)> {
    server
        .stderr()
        .lines()
        .filter(|l| l.contains(" message "))
        .map(|l| {
            let kv = parse_kv(l);
            (kv["sender"].clone(), kv["sequence"].parse().unwrap())
        })
        .collect()
}

#[test]
fn stage_2_grpc_server_answers_grpc_and_forwards_zmq_on_one_port() {
    let mut pull = Proc::spawn(
        "zmq_pull",
        &["--bind", "tcp://127.0.0.1:*", "--count", "300"],
    );
    let zmq_backend = pull.listen_addr().trim_start_matches("tcp://").to_owned();
    let mut server = Proc::spawn(
        "grpc_server",
        &["--bind", "127.0.0.1:0", "--zmq-forward", &zmq_backend],
    );
    let port = server.listen_addr();

    // The same runs that pass through `proxy`.
    let push = run_to_end(
        "zmq_push",
        &[
            "--connect",
            &format!("tcp://{port}"),
            "--count",
            "300",
            "--interval-ms",
            "0",
        ],
        PATIENCE,
    );
    assert_eq!(push.summary_u64("sent"), 300);
    let grpc = run_to_end(
        "grpc_client",
        &[
            "--connect",
            &format!("http://{port}"),
            "--count",
            "300",
            "--concurrency",
            "4",
            "--interval-ms",
            "0",
        ],
        PATIENCE,
    );
    assert_eq!(grpc.summary_u64("acked"), 300, "{}", grpc.stderr());
    let stream = run_to_end(
        "grpc_client",
        &[
            "--connect",
            &format!("http://{port}"),
            "--count",
            "100",
            "--mode",
            "stream",
            "--interval-ms",
            "0",
        ],
        PATIENCE,
    );
    assert_eq!(stream.summary_u64("acked"), 100);

    assert!(pull.wait_exit(PATIENCE).success());
    assert_eq!(pull.summary_u64("received"), 300);
    assert_eq!(pull.summary_u64("corrupt"), 0);
    server.signal("TERM");
    assert!(server.wait_exit(PATIENCE).success());
    assert_eq!(server.summary_u64("received"), 400);
    assert_eq!(server.summary_u64("repeated"), 0);
}

#[test]
fn stage_3_bridge_delivers_every_message_once_in_order() {
    let mut server = Proc::spawn("grpc_server", &["--bind", "127.0.0.1:0"]);
    let grpc = format!("http://{}", server.listen_addr());
    let mut bridge = Proc::spawn(
        "zmq_bridge",
        &["--bind", "tcp://127.0.0.1:*", "--grpc", &grpc],
    );
    let endpoint = bridge.listen_addr();

    let push = run_to_end(
        "zmq_push",
        &[
            "--connect",
            &endpoint,
            "--count",
            "1000",
            "--interval-ms",
            "0",
            "--sender",
            "one",
        ],
        PATIENCE,
    );
    assert_eq!(push.summary_u64("sent"), 1000);
    server.wait_for_log("sequence=999 sender=one", PATIENCE);

    server.signal("TERM");
    assert!(server.wait_exit(PATIENCE).success());
    let s = server.summary();
    // `repeated` counts any sequence lower than one already seen: duplicates and reordering.
    assert_eq!(s["received"], "1000");
    for k in ["skipped", "repeated", "corrupt"] {
        assert_eq!(s[k], "0", "{k}");
    }
    bridge.signal("TERM");
    assert!(bridge.wait_exit(PATIENCE).success());
    let b = bridge.summary();
    assert_eq!(
        (b["received"].as_str(), b["delivered"].as_str()),
        ("1000", "1000")
    );
    assert_eq!(b["failed_attempts"], "0");
}

#[test]
fn stage_3_bridge_loses_nothing_while_grpc_server_restarts() {
    const N: u64 = 1500;
    const LANES: u64 = 4;
    let first = Proc::spawn("grpc_server", &["--bind", "127.0.0.1:0"]);
    let grpc_addr = first.listen_addr();
    let mut bridge = Proc::spawn(
        "zmq_bridge",
        &[
            "--bind",
            "tcp://127.0.0.1:*",
            "--grpc",
            &format!("http://{grpc_addr}"),
            "--max-in-flight",
            &LANES.to_string(),
            "--timeout-ms",
            "2000",
        ],
    );
    let endpoint = bridge.listen_addr();
    // Three senders, ~3 s of traffic each, so the outage lands mid-run.
    let mut pushers: Vec<Proc> = (0..3)
        .map(|i| {
            Proc::spawn(
                "zmq_push",
                &[
                    "--connect",
                    &endpoint,
                    "--count",
                    &(N / 3).to_string(),
                    "--interval-ms",
                    "2",
                    "--sender",
                    &format!("s{i}"),
                    "--linger-ms",
                    "60000",
                ],
            )
        })
        .collect();

    let mut first = first;
    first.wait_for_log("sequence=100 ", PATIENCE);
    first.signal("TERM");
    assert!(first.wait_exit(PATIENCE).success());
    // A real outage of a few seconds: wait until a lane has been failing long enough to be
    // retrying at the 1 s back-off ceiling (≈ 1.5 s in), three times over.
    bridge.wait_for_logs(&["delivery failed", "retry_in_ms=1000"], 3, PATIENCE);

    let second = Proc::spawn_rebinding("grpc_server", &["--bind", &grpc_addr], PATIENCE);
    for p in &mut pushers {
        assert!(p.wait_exit(PATIENCE * 2).success());
        assert_eq!(p.summary_u64("sent"), N / 3);
    }
    for i in 0..3 {
        second.wait_for_log(&format!("sequence={} sender=s{i}", N / 3 - 1), PATIENCE);
    }

    // Everything either server received, by sender and sequence.
    let mut seen: HashMap<(String, u64), u32> = HashMap::new();
    for m in messages_logged(&first)
        .into_iter()
        .chain(messages_logged(&second))
    {
        *seen.entry(m).or_default() += 1;
    }
    for i in 0..3 {
        for seq in 0..N / 3 {
            assert!(
                seen.contains_key(&(format!("s{i}"), seq)),
                "s{i} #{seq} lost"
            );
        }
    }
    let duplicates: u32 = seen.values().map(|c| c - 1).sum();
    // At-least-once: a call the first server carried out but could not answer before it
    // stopped is sent again. At most one such call is in flight per lane, so at most LANES
    // duplicates; a graceful stop usually answers them all and leaves none.
    assert!(duplicates as u64 <= LANES, "{duplicates} duplicates");

    bridge.signal("TERM");
    assert!(bridge.wait_exit(PATIENCE).success());
    let b = bridge.summary();
    assert_eq!(b["received"], N.to_string());
    assert_eq!(b["delivered"], N.to_string());
    assert_eq!(b["undelivered"], "0");
    let failed: u64 = b["failed_attempts"].parse().unwrap();
    assert!(failed >= 5);
    eprintln!(
        "bridge restart: {N} delivered, {failed} failed attempts retried, {duplicates} duplicates"
    );
}

/// A bridge on one lane (`--max-in-flight 1`), so every sender queues behind every other.
fn one_lane_bridge(grpc: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "--bind",
        "tcp://127.0.0.1:*",
        "--grpc",
        grpc,
        "--max-in-flight",
        "1",
    ];
    args.extend_from_slice(extra);
    let bridge = Proc::spawn("zmq_bridge", &args);
    let endpoint = bridge.listen_addr();
    (bridge, endpoint)
}

fn push(endpoint: &str, sender: &str, count: u64, size: usize) -> Proc {
    Proc::spawn(
        "zmq_push",
        &[
            "--connect",
            endpoint,
            "--count",
            &count.to_string(),
            "--size",
            &size.to_string(),
            "--interval-ms",
            "0",
            "--sender",
            sender,
            "--linger-ms",
            "60000",
        ],
    )
}

#[test]
fn stage_3_bridge_dead_letters_a_message_the_server_rejects_and_its_lane_moves_on() {
    let mut server = Proc::spawn("grpc_server", &["--bind", "127.0.0.1:0"]);
    let grpc = format!("http://{}", server.listen_addr());
    // The bridge takes frames up to 100 MB, so a 70 MB one reaches grpc_server, whose limit
    // is 64 MiB: rejected with OutOfRange, however often it is sent.
    let (mut bridge, endpoint) = one_lane_bridge(&grpc, &["--max-message-bytes", "100000000"]);
    let mut big = push(&endpoint, "big", 1, 70_000_000);
    assert!(big.wait_exit(PATIENCE).success());
    // The big message has been tried before the small ones are sent behind it.
    bridge.wait_for_log("sender=big", PATIENCE);
    let mut small = push(&endpoint, "small", 100, 64);
    assert!(small.wait_exit(PATIENCE).success());
    server.wait_for_log("sequence=99 sender=small", PATIENCE);

    let dead = bridge.wait_for_log("dead-lettered", PATIENCE);
    for field in [
        "sequence=0",
        "sender=big",
        "code=OutOfRange",
        "dead_lettered=1",
    ] {
        assert!(dead.contains(field), "{field} missing from {dead:?}");
    }
    assert_eq!(bridge.count_logs(&["delivery failed"]), 0, "retried");
    bridge.signal("TERM");
    assert!(bridge.wait_exit(PATIENCE).success());
    let b = bridge.summary();
    for (key, want) in [
        ("received", "101"),
        ("delivered", "100"),
        ("dead_lettered", "1"),
        ("undelivered", "0"),
        ("failed_attempts", "0"),
    ] {
        assert_eq!(b[key], want, "{key}");
    }
    // New keys go at the end of the summary line.
    assert!(bridge.stdout().trim_end().ends_with("dead_lettered=1"));

    server.signal("TERM");
    assert!(server.wait_exit(PATIENCE).success());
    let s = server.summary();
    assert_eq!(
        (s["received"].as_str(), s["senders"].as_str()),
        ("100", "1")
    );
    for k in ["skipped", "repeated", "corrupt"] {
        assert_eq!(s[k], "0", "{k}");
    }
}

#[test]
fn stage_3_bridge_disconnects_a_peer_that_sends_more_than_max_message_bytes() {
    let mut server = Proc::spawn("grpc_server", &["--bind", "127.0.0.1:0"]);
    let grpc = format!("http://{}", server.listen_addr());
    // The env-var form of the flag, to cover it too.
    let mut bridge = Proc::spawn_env(
        "zmq_bridge",
        &[
            "--bind",
            "tcp://127.0.0.1:*",
            "--grpc",
            &grpc,
            "--max-in-flight",
            "1",
        ],
        &[("ZMQ_BRIDGE_MAX_MESSAGE_BYTES", "1000")],
    );
    let endpoint = bridge.listen_addr();
    // 5,000 bytes: libzmq drops the connection at the frame header, the message with it.
    let mut big = push(&endpoint, "big", 1, 5000);
    assert!(big.wait_exit(PATIENCE).success());
    let mut small = push(&endpoint, "small", 50, 64);
    assert!(small.wait_exit(PATIENCE).success());
    server.wait_for_log("sequence=49 sender=small", PATIENCE);

    bridge.signal("TERM");
    assert!(bridge.wait_exit(PATIENCE).success());
    let b = bridge.summary();
    assert_eq!(
        (b["received"].as_str(), b["delivered"].as_str()),
        ("50", "50")
    );
    server.signal("TERM");
    assert!(server.wait_exit(PATIENCE).success());
    assert_eq!(server.count_logs(&["sender=big"]), 0);
}

#[test]
fn bridge_max_message_bytes_is_in_help_with_its_env_var() {
    let out = std::process::Command::new(bin("zmq_bridge"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--max-message-bytes"), "{help}");
    assert!(
        help.contains("[env: ZMQ_BRIDGE_MAX_MESSAGE_BYTES="),
        "{help}"
    );
    assert!(help.contains("[default: 67108864]"), "{help}");
}

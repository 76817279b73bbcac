//! grpc_client's summary line reports what each mode measured: per-call latency
//! percentiles for unary calls, stream and message counts for streaming (one sample per
//! stream's whole life is not a latency).

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;

/// The keys of a summary line, in the order printed.
fn keys(p: &Proc) -> Vec<String> {
    let out = p.stdout();
    let line = out
        .lines()
        .find(|l| l.contains("summary:"))
        .unwrap_or_else(|| panic!("no summary in {out:?}"))
        .to_owned();
    line.split_whitespace()
        .filter_map(|t| t.split_once('=').map(|(k, _)| k.to_owned()))
        .collect()
}

fn summary_f64(p: &Proc, key: &str) -> f64 {
    p.summary()[key].parse().unwrap()
}

#[test]
fn stream_mode_summary_counts_streams_and_messages_without_percentiles() {
    let mut server = Proc::spawn("grpc_server", &["--bind", "127.0.0.1:0"]);
    let url = format!("http://{}", server.listen_addr());
    // 3 workers, 20 messages each, 10 ms apart: each stream lives at least 190 ms.
    let client = run_to_end(
        "grpc_client",
        &[
            "--connect",
            &url,
            "--count",
            "60",
            "--concurrency",
            "3",
            "--interval-ms",
            "10",
            "--mode",
            "stream",
            "--sender",
            "st",
        ],
        PATIENCE,
    );
    assert_eq!(client.wait_status_code(), Some(0), "{}", client.stderr());
    assert_eq!(
        keys(&client),
        [
            "sent",
            "acked",
            "failed",
            "streams",
            "elapsed_s",
            "rate_per_s"
        ],
        "{}",
        client.stdout()
    );
    for (key, want) in [("sent", 60), ("acked", 60), ("failed", 0), ("streams", 3)] {
        assert_eq!(client.summary_u64(key), want, "{key}");
    }
    let elapsed = summary_f64(&client, "elapsed_s");
    assert!(elapsed >= 0.19, "elapsed_s={elapsed}");
    let rate = summary_f64(&client, "rate_per_s");
    let expected = 60.0 / elapsed;
    assert!(
        (rate - expected).abs() <= expected * 0.01 + 0.1,
        "rate_per_s={rate}, acked/elapsed_s={expected}"
    );

    // What the client counts is what the server received: 3 senders, 60 messages.
    server.signal("TERM");
    assert!(server.wait_exit(PATIENCE).success());
    assert_eq!(server.summary_u64("received"), 60);
    assert_eq!(server.summary_u64("senders"), 3);
}

#[test]
fn unary_summary_keeps_its_keys_in_order() {
    let mut server = Proc::spawn("grpc_server", &["--bind", "127.0.0.1:0"]);
    let url = format!("http://{}", server.listen_addr());
    let client = run_to_end(
        "grpc_client",
        &["--connect", &url, "--count", "20", "--interval-ms", "0"],
        PATIENCE,
    );
    assert_eq!(
        keys(&client),
        [
            "sent",
            "acked",
            "failed",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "elapsed_s",
            "rate_per_s"
        ]
    );
    assert_eq!(client.summary_u64("acked"), 20);
    let (p50, max) = (
        summary_f64(&client, "p50_ms"),
        summary_f64(&client, "max_ms"),
    );
    assert!(0.0 < p50 && p50 <= max, "p50_ms={p50} max_ms={max}");
    server.signal("TERM");
    assert!(server.wait_exit(PATIENCE).success());
}

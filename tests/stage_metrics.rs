//! Migration stages 2 and 3 watched while they run (issue 12, item 4): `--metrics-listen` on
//! grpc_server in mux mode (connections per protocol, messages received) and on zmq_bridge
//! (received, delivered, retried, in flight, age of the oldest undelivered message), with
//! `/readyz`.

mod common;

use common::*;

/// The value of one sample, e.g. `zgp_bridge_delivered_total`; 0 if absent.
fn sample(body: &str, series: &str) -> f64 {
    common::sample(body, series).unwrap_or(0.0)
}

/// Scrapes until `done` holds (a counter reaching a value), or panics after PATIENCE.
fn scrape_until(addr: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let body = http_get_status(addr, "/metrics").1;
        if done(&body) {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}; last scrape:\n{body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20)); // polling a counter
    }
}

#[test]
fn grpc_server_mux_counts_connections_per_protocol_and_messages_live() {
    let mut pull = Proc::spawn("zmq_pull", &["--bind", "tcp://127.0.0.1:*"]);
    let zmq_backend = pull.listen_addr().trim_start_matches("tcp://").to_owned();
    let mut server = Proc::spawn(
        "grpc_server",
        &[
            "--bind",
            "127.0.0.1:0",
            "--zmq-forward",
            &zmq_backend,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let port = server.listen_addr();
    let metrics = metrics_addr(&server);
    assert_eq!(http_get_status(&metrics, "/readyz").0, "HTTP/1.1 200 OK");
    let zmq = [
        "--connect",
        &format!("tcp://{port}"),
        "--count",
        "10",
        "--interval-ms",
        "0",
    ];
    run_to_end("zmq_push", &zmq, PATIENCE);
    grpc_calls(&port, 5);
    let zmq_ok = r#"zgp_connections_closed_total{route="zmq",outcome="ok"}"#;
    let grpc_local = r#"zgp_connections_closed_total{route="grpc",outcome="local"}"#;
    let body = scrape_until(&metrics, "both connections closed, 5 messages", |b| {
        sample(b, zmq_ok) >= 1.0
            && sample(b, grpc_local) >= 1.0
            && sample(b, "zgp_ingest_received_total") == 5.0
    });
    assert_eq!(sample(&body, "zgp_ingest_foreign_total"), 0.0);
    server.signal("TERM");
    assert!(server.wait_exit(PATIENCE).success());
    pull.signal("TERM");
    assert!(pull.wait_exit(PATIENCE).success());
    assert_eq!(pull.summary_u64("received"), 10);
}

/// With the gRPC server down, the bridge's backlog shows up live: messages in flight, an
/// oldest undelivered message that keeps ageing, retries; once the server is up it drains
/// to zero.
#[test]
fn bridge_metrics_show_a_backlog_while_grpc_is_down_and_its_drain() {
    let grpc_port = free_port();
    let grpc_addr = format!("127.0.0.1:{grpc_port}");
    let mut bridge = Proc::spawn(
        "zmq_bridge",
        &[
            "--bind",
            "tcp://127.0.0.1:*",
            "--grpc",
            &format!("http://{grpc_addr}"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--timeout-ms",
            "500",
        ],
    );
    let endpoint = bridge.listen_addr();
    let metrics = metrics_addr(&bridge);
    assert_eq!(http_get_status(&metrics, "/readyz").0, "HTTP/1.1 200 OK");
    let push = [
        "--connect",
        &endpoint,
        "--count",
        "3",
        "--interval-ms",
        "0",
        "--sender",
        "s",
    ];
    run_to_end("zmq_push", &push, PATIENCE);
    let body = scrape_until(&metrics, "a backlog of 3, retried, ageing", |b| {
        sample(b, "zgp_bridge_received_total") == 3.0
            && sample(b, "zgp_bridge_retried_total") >= 2.0
            && sample(b, "zgp_bridge_oldest_undelivered_seconds") > 0.2
    });
    assert_eq!(sample(&body, "zgp_bridge_in_flight"), 3.0);
    assert_eq!(sample(&body, "zgp_bridge_delivered_total"), 0.0);

    let mut server = Proc::spawn("grpc_server", &["--bind", &grpc_addr]);
    server.listen_addr();
    let body = scrape_until(&metrics, "the backlog delivered", |b| {
        sample(b, "zgp_bridge_delivered_total") == 3.0
    });
    assert_eq!(sample(&body, "zgp_bridge_in_flight"), 0.0);
    assert_eq!(sample(&body, "zgp_bridge_oldest_undelivered_seconds"), 0.0);
    bridge.signal("TERM");
    assert!(bridge.wait_exit(PATIENCE).success());
    server.signal("TERM");
    assert!(server.wait_exit(PATIENCE).success());
    assert_eq!(server.summary_u64("received"), 3);
}

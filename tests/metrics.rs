//! The operator's view: /metrics counters move exactly as traffic does, /healthz and
//! /readyz answer (readiness drops while draining), and JSON log lines carry the
//! connection's span (id, peer, route, backend, local port toward the backend).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

/// The value of one sample, e.g. `zgp_connections_closed_total{route="zmq",outcome="ok"}`.
fn sample(body: &str, series: &str) -> f64 {
    common::sample(body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"))
}

#[test]
fn counters_move_exactly_as_traffic_does() {
    let stack = Stack::start(None, &["--metrics-listen", "127.0.0.1:0"]);
    let m = metrics_addr(&stack.proxy);
    assert_eq!(http_get_status(&m, "/healthz").0, "HTTP/1.1 200 OK");
    assert_eq!(http_get_status(&m, "/readyz").0, "HTTP/1.1 200 OK");
    assert!(http_get_status(&m, "/nope").0.contains("404"));

    let (zmq, grpc) = (stack.zmq_url(), stack.grpc_url());
    for i in 0..3 {
        let p = run_to_end(
            "zmq_push",
            &[
                "--connect",
                &zmq,
                "--count",
                "5",
                "--interval-ms",
                "0",
                "--sender",
                &format!("z{i}"),
            ],
            PATIENCE,
        );
        assert_eq!(p.summary_u64("sent"), 5);
    }
    for _ in 0..2 {
        let c = run_to_end(
            "grpc_client",
            &["--connect", &grpc, "--count", "5", "--interval-ms", "0"],
            PATIENCE,
        );
        assert_eq!(c.summary_u64("acked"), 5);
    }
    let mut garbage = TcpStream::connect(stack.proxy_addr()).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    stack
        .proxy
        .wait_for_logs(&["closed", "route=zmq"], 3, PATIENCE);
    stack
        .proxy
        .wait_for_logs(&["closed", "route=grpc"], 2, PATIENCE);
    stack
        .proxy
        .wait_for_logs(&["closed", "unrecognised protocol"], 1, PATIENCE);

    let (status, body) = http_get_status(&m, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(sample(&body, "zgp_connections_accepted_total"), 6.0);
    // Whether any was handed to another thread depends on how busy the first one was.
    let handed = sample(&body, "zgp_connections_handed_over_total");
    assert!((0.0..=6.0).contains(&handed), "{handed}");
    assert_eq!(
        sample(
            &body,
            r#"zgp_connections_closed_total{route="zmq",outcome="ok"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &body,
            r#"zgp_connections_closed_total{route="grpc",outcome="ok"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &body,
            r#"zgp_connections_rejected_total{reason="unrecognised"}"#
        ),
        1.0
    );
    assert_eq!(sample(&body, r#"zgp_connections_active{route="zmq"}"#), 0.0);
    assert_eq!(
        sample(&body, r#"zgp_connections_active{route="grpc"}"#),
        0.0
    );
    assert_eq!(sample(&body, "zgp_detect_seconds_count"), 5.0);
    // One duration per routed connection; the limit, the build and the process itself.
    let duration = |route: &str| {
        let series = format!("zgp_connection_duration_seconds_count{{route=\"{route}\"}}");
        sample(&body, &series)
    };
    assert_eq!((duration("zmq"), duration("grpc")), (3.0, 2.0));
    // --max-connections (default 50,000), fitted to the open-file limit: 2 per connection,
    // 80 in reserve.
    let fitted = ((sample(&body, "zgp_process_max_fds") - 80.0) / 2.0).floor();
    assert_eq!(sample(&body, "zgp_max_connections"), fitted.min(50_000.0));
    let build = body
        .lines()
        .find(|l| l.starts_with("zgp_build_info{"))
        .unwrap();
    assert!(
        build.contains("version=\"0.") && build.ends_with(" 1"),
        "{build}"
    );
    assert!(sample(&body, "zgp_process_open_fds") >= 4.0);
    assert!(sample(&body, "zgp_process_max_fds") >= sample(&body, "zgp_process_open_fds"));
    assert!(sample(&body, "zgp_process_resident_memory_bytes") > 1e6);
    // Present (it may still read 0 at clock-tick granularity).
    assert!(sample(&body, "zgp_process_cpu_seconds_total") >= 0.0);
    assert_eq!(
        sample(&body, r#"zgp_backend_connect_seconds_count{route="zmq"}"#),
        3.0
    );
    assert!(
        sample(
            &body,
            r#"zgp_bytes_total{route="zmq",direction="to_backend"}"#
        ) > 15.0 * 64.0
    );
    assert!(
        sample(
            &body,
            r#"zgp_bytes_total{route="grpc",direction="to_client"}"#
        ) > 0.0
    );
}

#[test]
fn backend_errors_are_counted_by_route_and_kind() {
    let dead = format!("127.0.0.1:{}", free_port());
    let proxy = start_proxy(&dead, &dead, &["--metrics-listen", "127.0.0.1:0"]);
    let m = metrics_addr(&proxy);
    let mut c = TcpStream::connect(proxy.listen_addr()).unwrap();
    c.write_all(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F]).unwrap();
    proxy.wait_for_log("backend connect failed", PATIENCE);
    let body = http_get_status(&m, "/metrics").1;
    assert_eq!(
        sample(
            &body,
            r#"zgp_backend_errors_total{route="zmq",kind="refused"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &body,
            r#"zgp_connections_closed_total{route="zmq",outcome="backend_unavailable"}"#
        ),
        1.0
    );
}

#[test]
fn readiness_drops_while_draining() {
    let stack = Stack::start(
        None,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--drain-timeout-ms",
            "60000",
        ],
    );
    let m = metrics_addr(&stack.proxy);
    let mut held = TcpStream::connect(stack.proxy_addr()).unwrap();
    held.write_all(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F])
        .unwrap();
    let mut sig = [0u8; 10];
    held.read_exact(&mut sig).unwrap();
    stack.proxy.signal("TERM");
    stack.proxy.wait_for_log("draining", PATIENCE);
    assert_eq!(
        http_get_status(&m, "/readyz").0,
        "HTTP/1.1 503 Service Unavailable"
    );
    assert_eq!(
        http_get_status(&m, "/healthz").0,
        "HTTP/1.1 200 OK",
        "alive while draining"
    );
    let body = http_get_status(&m, "/metrics").1;
    assert_eq!(sample(&body, r#"zgp_connections_active{route="zmq"}"#), 1.0);
}

#[test]
fn json_log_lines_parse_and_carry_the_connection_span() {
    let pull = Proc::spawn("zmq_pull", &["--bind", "tcp://127.0.0.1:*"]);
    let zmq_backend = pull.listen_addr().trim_start_matches("tcp://").to_owned();
    let proxy = Proc::spawn_env(
        "proxy",
        &[
            "--listen",
            "127.0.0.1:0",
            "--zmq-backend",
            &zmq_backend,
            "--log-format",
            "json",
        ],
        &[],
    );
    let listening: serde_json::Value =
        serde_json::from_str(&proxy.wait_for_log("listening", PATIENCE)).unwrap();
    let addr = listening["addr"].as_str().unwrap().to_owned();
    let push = run_to_end(
        "zmq_push",
        &[
            "--connect",
            &format!("tcp://{addr}"),
            "--count",
            "3",
            "--interval-ms",
            "0",
        ],
        PATIENCE,
    );
    assert_eq!(push.summary_u64("sent"), 3);
    let line = proxy.wait_for_log("\"closed\"", PATIENCE);
    for l in proxy.stderr().lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
    let closed: serde_json::Value = serde_json::from_str(&line).unwrap();
    // Each field once, as a plain value: the span's fields in "span" only.
    assert!(
        closed.get("spans").is_none() && closed.get("route").is_none(),
        "{closed}"
    );
    assert!(!line.contains("Some("), "{line}");
    let span = &closed["span"];
    assert_eq!(span["route"], "zmq", "{closed}");
    assert_eq!(span["backend"], zmq_backend.as_str());
    assert!(span["id"].is_u64() && span["peer"].is_string(), "{closed}");
    // The local port toward the backend is what the backend logs as its peer's port.
    let local_port = span["local_port"].as_u64().expect("local_port");
    assert!(local_port > 0);
    assert!(closed["bytes_to_backend"].as_u64().unwrap() > 0);
}

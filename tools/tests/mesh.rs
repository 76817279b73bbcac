//! The gossip mesh (issue 12): opaque frames from senders that are not ours, the dual-stack
//! sender against every kind of peer, and `gossip_mesh` rolling a mesh from ZMQ to gRPC.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use zmq_grpc_proxy_tools::mesh::delivery::{Delivery, Via};
use zmq_grpc_proxy_tools::mesh::sender::{DualSender, Mode, SenderConfig};
use zmq_grpc_proxy_tools::mesh::stats::SenderStats;
use zmq_grpc_proxy_tools::peers::grpc_server::{self, GossipSink, IngestService};

/// Multi-part messages from a plain libzmq PUSH socket (not our schema, not our code):
/// every one is counted toward `--count`, once, as `foreign`.
#[test]
fn zmq_pull_counts_foreign_multipart_messages_toward_count() {
    let mut pull = Proc::spawn("zmq_pull", &["--bind", "tcp://127.0.0.1:*", "--count", "5"]);
    let endpoint = pull.listen_addr();
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).unwrap();
    push.set_linger(5_000).unwrap();
    push.connect(&endpoint).unwrap();
    let mut bytes = 0;
    for i in 0..5u8 {
        // A Habitat-like envelope: three opaque parts, the last one binary.
        let parts: [Vec<u8>; 3] = [b"wire".to_vec(), vec![i; 7], vec![0xff, 0x00, i]];
        bytes += parts.iter().map(Vec::len).sum::<usize>();
        push.send_multipart(parts, 0).unwrap();
    }
    assert!(pull.wait_exit(PATIENCE).success(), "{}", pull.stderr());
    let s = pull.summary();
    assert_eq!(s["foreign"], "5", "{s:?}");
    assert_eq!(s["received"], "0", "{s:?}");
    assert_eq!(s["bytes"], bytes.to_string(), "{s:?}");
    // The new key comes last: the keys scripts parse keep their positions.
    let line = pull.stdout();
    assert!(line.trim_end().ends_with("foreign=5"), "{line}");
}

/// The same with pyzmq, a sender built on another binding, when it is installed
/// (`pip install pyzmq`); without it the test says so and checks nothing more.
#[test]
fn zmq_pull_counts_pyzmq_messages_as_foreign() {
    let probe = Command::new("python3").args(["-c", "import zmq"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("pyzmq not installed: skipping the pyzmq sender");
        return;
    }
    let mut pull = Proc::spawn("zmq_pull", &["--bind", "tcp://127.0.0.1:*", "--count", "4"]);
    let endpoint = pull.listen_addr();
    let script = format!(
        "import zmq\n\
         ctx = zmq.Context()\n\
         s = ctx.socket(zmq.PUSH)\n\
         s.setsockopt(zmq.LINGER, 5000)\n\
         s.connect('{endpoint}')\n\
         for i in range(4):\n    s.send_multipart([b'py', bytes([i]) * 3])\n\
         s.close()\n\
         ctx.term()\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(pull.wait_exit(PATIENCE).success(), "{}", pull.stderr());
    assert_eq!(pull.summary_u64("foreign"), 4);
    assert_eq!(pull.summary_u64("bytes"), 4 * 5);
}

/// Runs `zmq_push --prefer-grpc` to `addr` (HOST:PORT) until it has sent `count`.
fn prefer_grpc_push(addr: &str, count: u32, interval_ms: u32, sender: &str) -> Proc {
    let mut push = Proc::spawn(
        "zmq_push",
        &[
            "--prefer-grpc",
            "--connect",
            &format!("tcp://{addr}"),
            "--count",
            &count.to_string(),
            "--interval-ms",
            &interval_ms.to_string(),
            "--sender",
            sender,
            "--linger-ms",
            "2000",
        ],
    );
    assert!(push.wait_exit(PATIENCE).success(), "{}", push.stderr());
    push
}

fn assert_sent(push: &Proc, grpc: u64, zmq: u64) {
    let s = push.summary();
    let want = [
        ("sent", grpc + zmq),
        ("grpc", grpc),
        ("zmq", zmq),
        ("unknown", 0),
    ];
    for (k, v) in want {
        assert_eq!(s[k], v.to_string(), "{k} in {s:?}");
    }
}

#[test]
fn prefer_grpc_sends_zmq_to_a_zmq_only_peer_and_the_check_delivers_nothing() {
    let mut pull = Proc::spawn(
        "zmq_pull",
        &["--bind", "tcp://127.0.0.1:*", "--count", "20"],
    );
    let addr = pull.listen_addr().trim_start_matches("tcp://").to_owned();
    let push = prefer_grpc_push(&addr, 20, 0, "to-zmq");
    assert_sent(&push, 0, 20);
    push.wait_for_log("via=Some(Zmq)", PATIENCE);
    assert!(pull.wait_exit(PATIENCE).success());
    let s = pull.summary();
    // The check's preface and SETTINGS reached libzmq and produced no message.
    for (k, v) in [("received", "20"), ("foreign", "0")] {
        assert_eq!(s[k], v, "{k} in {s:?}");
    }
    // Each message exactly once. Not necessarily in order: Butterfly's way is a fresh
    // PUSH socket per send, and the receiver fair-queues between connections, so two sends
    // back to back can arrive swapped (the summary then counts a skip and a repeat).
    let mut seen: Vec<u64> = pull
        .stderr()
        .lines()
        .filter(|l| l.contains(" message ") || l.ends_with(" message"))
        .filter(|l| l.contains("sender=to-zmq"))
        .filter_map(|l| parse_kv(l).get("sequence")?.parse().ok())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());
}

#[test]
fn prefer_grpc_sends_grpc_to_a_mux_peer_and_nothing_to_its_zmq_side() {
    let mut pull = Proc::spawn("zmq_pull", &["--bind", "tcp://127.0.0.1:*"]);
    let zmq_backend = pull.listen_addr().trim_start_matches("tcp://").to_owned();
    let mut server = Proc::spawn(
        "grpc_server",
        &["--bind", "127.0.0.1:0", "--zmq-forward", &zmq_backend],
    );
    let addr = server.listen_addr();
    let push = prefer_grpc_push(&addr, 20, 0, "to-mux");
    assert_sent(&push, 20, 0);
    for p in [&mut server, &mut pull] {
        p.signal("TERM");
        assert!(p.wait_exit(PATIENCE).success());
    }
    let s = server.summary();
    for (k, v) in [("received", "20"), ("repeated", "0"), ("skipped", "0")] {
        assert_eq!(s[k], v, "{k} in {s:?}");
    }
    assert_eq!(
        pull.summary_u64("received") + pull.summary_u64("foreign"),
        0
    );
}

#[test]
fn prefer_grpc_sends_grpc_to_a_grpc_only_peer() {
    let mut server = Proc::spawn("grpc_server", &["--bind", "127.0.0.1:0"]);
    let addr = server.listen_addr();
    let push = prefer_grpc_push(&addr, 20, 0, "to-grpc");
    assert_sent(&push, 20, 0);
    server.signal("TERM");
    assert!(server.wait_exit(PATIENCE).success());
    assert_eq!(server.summary_u64("received"), 20);
    assert_eq!(server.summary_u64("repeated"), 0);
}

/// The peer is ZeroMQ-only (zmq_pull, which exits after 5 messages), then comes back on
/// the same port as a gRPC-only server while the sender keeps going: the first messages
/// go over ZeroMQ, the sender notices the change from its own failed (never queued) sends,
/// and the rest go over gRPC; every sequence number arrives exactly once.
#[test]
fn a_peer_that_changes_from_zmq_to_grpc_loses_and_duplicates_nothing() {
    let mut pull = Proc::spawn("zmq_pull", &["--bind", "tcp://127.0.0.1:*", "--count", "5"]);
    let addr = pull.listen_addr().trim_start_matches("tcp://").to_owned();
    // The interval leaves zmq_pull ample time to exit after its 5th message before the 6th
    // is sent: a 6th queued to a peer about to exit would be lost, which is ZeroMQ's
    // semantics, not the sender's.
    let mut push = Proc::spawn(
        "zmq_push",
        &[
            "--prefer-grpc",
            "--connect",
            &format!("tcp://{addr}"),
            "--count",
            "12",
            "--interval-ms",
            "400",
            "--sender",
            "changing",
            "--linger-ms",
            "2000",
        ],
    );
    assert!(pull.wait_exit(PATIENCE).success());
    // The sender now fails to reach the port (provably nothing sent) and retries.
    push.wait_for_log("not sent; trying again", PATIENCE);
    let mut server = Proc::spawn_rebinding("grpc_server", &["--bind", &addr], PATIENCE);
    assert!(push.wait_exit(PATIENCE).success(), "{}", push.stderr());
    assert_sent(&push, 7, 5);
    push.wait_for_log("via=Some(Grpc)", PATIENCE);
    server.signal("TERM");
    assert!(server.wait_exit(PATIENCE).success());
    let (p, s) = (pull.summary(), server.summary());
    assert_eq!(
        (p["received"].as_str(), p["repeated"].as_str()),
        ("5", "0"),
        "{p:?}"
    );
    // The server's first sequence is 5: it counts 0..5 as skipped, nothing else.
    for (k, v) in [("received", "7"), ("repeated", "0"), ("skipped", "5")] {
        assert_eq!(s[k], v, "{k} in {s:?}");
    }
}

/// An in-process gRPC peer whose Gossip frames land in the returned list.
async fn grpc_peer(
    listener: tokio::net::TcpListener,
) -> (
    Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let got = Arc::clone(&got);
        GossipSink::new(move |f| got.lock().unwrap().push(f.parts.clone()))
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = IngestService::with_gossip_sink(sink);
    let server = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        // grpc_server::run sets TCP_NODELAY on every connection it accepts.
        grpc_server::run(listener, service, Duration::from_secs(1), shutdown)
            .await
            .unwrap();
    });
    (got, stop, server)
}

/// The reverse change, a rollback: the peer took gRPC, then comes back on the same port
/// ZeroMQ-only. The sender's channel reconnects through the check, which finds ZMTP before
/// a request byte is written, so the message goes over ZeroMQ: once, whole (two parts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_rolled_back_to_zmq_gets_the_next_message_over_zmq_exactly_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got, stop, server) = grpc_peer(listener).await;
    let stats = Arc::new(SenderStats::default());
    let sender = DualSender::new(SenderConfig::new(Mode::PreferGrpc), Arc::clone(&stats));
    let one = vec![b"one".to_vec()];
    assert_eq!(
        sender.send(addr, vec![one.clone()]).await,
        [Delivery::Sent(Via::Grpc)]
    );
    assert_eq!(sender.known(addr), Some(Via::Grpc));

    stop.send(()).unwrap();
    server.await.unwrap();
    let context = zmq::Context::new();
    let pull = context.socket(zmq::PULL).unwrap();
    // The same port, as a restarted member would take it; the old server's sockets may
    // hold it for a moment (or another test's connection may have been given it as its
    // ephemeral port), so retry until the bind succeeds.
    let deadline = std::time::Instant::now() + PATIENCE;
    while let Err(e) = pull.bind(&format!("tcp://{addr}")) {
        assert!(std::time::Instant::now() < deadline, "bind {addr}: {e}");
        std::thread::sleep(Duration::from_millis(20)); // polling for the port to be free
    }
    pull.set_rcvtimeo(PATIENCE.as_millis() as i32).unwrap();

    let two = vec![b"two".to_vec(), b"parts".to_vec()];
    assert_eq!(
        sender.send(addr, vec![two.clone()]).await,
        [Delivery::Sent(Via::Zmq)]
    );
    assert_eq!(sender.known(addr), Some(Via::Zmq));
    let received = tokio::task::spawn_blocking(move || {
        let first = pull.recv_multipart(0).unwrap();
        pull.set_rcvtimeo(300).unwrap();
        // Nothing else arrives: not the check's bytes, not a second copy.
        (first, pull.recv_multipart(0).err())
    })
    .await
    .unwrap();
    assert_eq!(received, (two, Some(zmq::Error::EAGAIN)));
    assert_eq!(*got.lock().unwrap(), vec![one]);
    let counts = stats.snapshot();
    // The ZMTP answer came from a check: of the channel's reconnect, or of a new connection
    // when the old one closed with the request still queued (never written).
    let seen = (counts.checks_found_zmq, counts.sent_zmq, counts.unknown);
    assert_eq!(seen, (1, 1, 0), "{counts:?}");
}

/// What the capability check costs per new connection, against each kind of peer: not an
/// assertion, a figure in the test output (`cargo test --test mesh -- --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_check_cost_per_new_connection() {
    const N: u32 = 40;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (got, _stop, _server) = grpc_peer(listener).await;
    let message = vec![vec![7u8; 64]];

    // Plain tonic: connect, one Gossip call (the client does not wait for the server).
    let started = Instant::now();
    for _ in 0..N {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = zmq_grpc_proxy_tools::pb::ingest_client::IngestClient::new(channel);
        let frames = zmq_grpc_proxy_tools::pb::Frames {
            parts: message.clone(),
            peer_address: String::new(),
        };
        client.gossip(frames).await.unwrap();
    }
    let plain = started.elapsed() / N;

    // Checked: a new sender each time, so each call starts with connect + check.
    let stats = Arc::new(SenderStats::default());
    let started = Instant::now();
    for _ in 0..N {
        let sender = DualSender::new(SenderConfig::new(Mode::PreferGrpc), Arc::clone(&stats));
        let outcome = sender.send(addr, vec![message.clone()]).await;
        assert_eq!(outcome, [Delivery::Sent(Via::Grpc)]);
    }
    let checked = started.elapsed() / N;
    assert_eq!(got.lock().unwrap().len(), 2 * N as usize);
    let grpc_check = stats.snapshot().mean_check_ms();

    // A ZeroMQ-only peer: connect, read its ZMTP signature, close.
    let zmq_check = zmq_check_cost(N).await;
    println!(
        "capability check, mean of {N} new connections (this build): gRPC peer: connect+call \
         {:.3} ms plain vs {:.3} ms checked (check alone {grpc_check:.3} ms); ZeroMQ-only \
         peer: check {zmq_check:.3} ms",
        ms(plain),
        ms(checked),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn zmq_check_cost(n: u32) -> f64 {
    let context = zmq::Context::new();
    let pull = context.socket(zmq::PULL).unwrap();
    pull.bind("tcp://127.0.0.1:*").unwrap();
    let endpoint = pull.get_last_endpoint().unwrap().unwrap();
    let addr: SocketAddr = endpoint.trim_start_matches("tcp://").parse().unwrap();
    let stats = Arc::new(SenderStats::default());
    for _ in 0..n {
        let sender = DualSender::new(SenderConfig::new(Mode::Grpc), Arc::clone(&stats));
        let outcome = sender.send(addr, vec![vec![b"x".to_vec()]]).await;
        assert!(matches!(outcome[..], [Delivery::NotSent(_)]), "{outcome:?}");
    }
    let counts = stats.snapshot();
    assert_eq!(counts.checks_found_zmq, u64::from(n));
    counts.mean_check_ms()
}

/// Every `gossip_mesh stage:` line, parsed.
fn stage_lines(mesh: &Proc) -> Vec<std::collections::HashMap<String, String>> {
    let out = mesh.stdout();
    out.lines()
        .filter(|l| l.starts_with("gossip_mesh stage:"))
        .map(parse_kv)
        .collect()
}

/// The rollout in short: 6 members, 100 ms rounds, 2 s per stage. Every rumor reaches
/// every member within its stage, no send arrives twice, and each stage uses the protocols
/// it should: none of gRPC before the senders switch, none of ZeroMQ once all are gRPC.
#[test]
fn gossip_mesh_rolls_six_members_from_zmq_to_grpc_with_full_coverage() {
    let args = [
        "--members",
        "6",
        "--fanout",
        "3",
        "--round-ms",
        "100",
        "--seconds",
        "8",
        "--rollout",
        "--seed",
        "7",
    ];
    let mut mesh = Proc::spawn("gossip_mesh", &args);
    let status = mesh.wait_exit(PATIENCE);
    eprintln!("{}", mesh.stdout());
    assert!(status.success(), "{}", mesh.stdout());
    let stages = stage_lines(&mesh);
    let names: Vec<&str> = stages.iter().map(|s| s["stage"].as_str()).collect();
    assert_eq!(names, ["zmq", "both", "prefer-grpc", "grpc"]);
    let n = |s: &std::collections::HashMap<String, String>, k: &str| -> u64 {
        s[k].parse().unwrap_or_else(|_| panic!("{k} in {s:?}"))
    };
    for (i, s) in stages.iter().enumerate() {
        assert_eq!(s["ok"], "true", "{s:?}");
        assert!(n(s, "rumors") > 0, "{s:?}");
        assert_eq!(n(s, "made"), n(s, "expected"), "{s:?}");
        assert_eq!(n(s, "duplicates"), 0, "{s:?}");
        assert_eq!(n(s, "restarts"), if i == 0 { 0 } else { 6 }, "{s:?}");
    }
    let (zmq, both, prefer, grpc) = (&stages[0], &stages[1], &stages[2], &stages[3]);
    for s in [zmq, both] {
        assert_eq!(
            (n(s, "conn_grpc"), n(s, "recv_grpc"), n(s, "checks")),
            (0, 0, 0),
            "{s:?}"
        );
    }
    assert!(
        n(prefer, "recv_grpc") > 0 && n(prefer, "conn_grpc") > 0,
        "{prefer:?}"
    );
    assert_eq!(
        (n(grpc, "conn_zmq"), n(grpc, "recv_zmq")),
        (0, 0),
        "{grpc:?}"
    );
    assert!(
        mesh.stdout().contains("| prefer-grpc |"),
        "the table is printed"
    );
    assert_eq!(mesh.summary()["ok"], "true");
}

#[test]
fn gossip_mesh_stops_cleanly_on_sigterm() {
    let mut mesh = Proc::spawn("gossip_mesh", &["--members", "3", "--round-ms", "100"]);
    mesh.wait_for_log("stage started", PATIENCE);
    mesh.signal("TERM");
    assert!(mesh.wait_exit(PATIENCE).success(), "{}", mesh.stderr());
    assert_eq!(mesh.summary()["interrupted"], "true");
}

/// `zmq_bridge --payload opaque`: messages that are not ours — several parts, binary,
/// an empty part — reach the gRPC side byte for byte, in order, with the sender's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_forwards_foreign_frames_byte_for_byte() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sink = GossipSink::new(move |f| {
        let _ = tx.send(f.clone());
    });
    let service = IngestService::with_gossip_sink(sink);
    let _server = tokio::spawn(grpc_server::run(
        listener,
        service,
        Duration::from_secs(1),
        std::future::pending(),
    ));
    let mut bridge = Proc::spawn(
        "zmq_bridge",
        &[
            "--bind",
            "tcp://127.0.0.1:*",
            "--grpc",
            &grpc,
            "--payload",
            "opaque",
        ],
    );
    let endpoint = bridge.listen_addr();
    let sent: Vec<Vec<Vec<u8>>> = (0..6u8)
        .map(|i| {
            vec![
                b"wire".to_vec(),
                vec![],
                (0..=255).map(|b: u8| b ^ i).collect(),
            ]
        })
        .collect();
    let to_send = sent.clone();
    tokio::task::spawn_blocking(move || {
        let context = zmq::Context::new();
        let push = context.socket(zmq::PUSH).unwrap();
        push.set_linger(5_000).unwrap();
        push.connect(&endpoint).unwrap();
        for parts in to_send {
            push.send_multipart(parts, 0).unwrap();
        }
    })
    .await
    .unwrap();
    for want in &sent {
        let got = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got.parts, want);
        assert_eq!(got.peer_address, "127.0.0.1");
    }
    bridge.signal("TERM");
    assert!(bridge.wait_exit(PATIENCE).success());
    let s = bridge.summary();
    for (k, v) in [("received", "6"), ("delivered", "6"), ("malformed", "0")] {
        assert_eq!(s[k], v, "{k} in {s:?}");
    }
}

//! Every gRPC call shape passes through the proxy: unary, client-, server- and
//! bidirectional streaming, 4 MiB messages, and hundreds of concurrent streams multiplexed on
//! one HTTP/2 connection, against the real grpc_server binary.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::*;
use tonic::transport::{Channel, Endpoint};
use zmq_grpc_proxy_tools::pb::ingest_client::IngestClient;
use zmq_grpc_proxy_tools::pb::FetchRequest;
use zmq_grpc_proxy_tools::peers::message::{build, payload_intact};

const FOUR_MIB: usize = 4 * 1024 * 1024;

async fn client(url: String) -> IngestClient<Channel> {
    let channel = Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .expect("connect through the proxy");
    IngestClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_shape_passes_through_the_proxy() {
    let mut stack = Stack::start(None, &[]);
    let mut c = client(stack.grpc_url()).await;

    // Unary, small and 4 MiB.
    for i in 0..50 {
        let ack = c.send(build("unary", i, 100)).await.unwrap().into_inner();
        assert_eq!(ack.sequence, i);
    }
    let ack = c.send(build("unary-big", 0, FOUR_MIB)).await.unwrap();
    assert_eq!(ack.into_inner().sequence, 0);

    // Client streaming, including a 4 MiB message in the middle.
    let msgs: Vec<_> = (0..30)
        .map(|i| build("cstream", i, if i == 15 { FOUR_MIB } else { 500 }))
        .collect();
    let summary = c
        .send_stream(tokio_stream::iter(msgs))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.received, 30);
    assert_eq!(summary.bytes, 29 * 500 + FOUR_MIB as u64);

    // Server streaming: many small, then 4 MiB ones.
    for (count, size) in [(500u64, 64u64), (3, FOUR_MIB as u64)] {
        let mut stream = c
            .fetch(FetchRequest { count, size })
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(m) = stream.message().await.unwrap() {
            assert_eq!(m.sequence, n, "in order");
            assert_eq!(m.payload.len() as u64, size);
            assert!(payload_intact(&m));
            n += 1;
        }
        assert_eq!(n, count);
    }

    // Bidirectional, ping-pong: each message comes back before the next goes out.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut echoes = c
        .echo(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..100 {
        let size = if i == 50 { FOUR_MIB } else { 64 };
        let m = build("echo", i, size);
        tx.send(m.clone()).await.unwrap();
        assert_eq!(echoes.message().await.unwrap(), Some(m));
    }
    drop(tx);
    assert_eq!(
        echoes.message().await.unwrap(),
        None,
        "server ends after client"
    );

    // Many concurrent streams on this one connection.
    let mut calls = tokio::task::JoinSet::new();
    for w in 0..400u64 {
        let mut c = c.clone();
        calls.spawn(async move { c.send(build(&format!("conc/{w}"), 0, 256)).await });
    }
    for w in 0..50u64 {
        let mut c = c.clone();
        calls.spawn(async move {
            let msgs: Vec<_> = (0..20)
                .map(|i| build(&format!("echo/{w}"), i, 128))
                .collect();
            let mut back = c.echo(tokio_stream::iter(msgs.clone())).await?.into_inner();
            for m in msgs {
                assert_eq!(back.message().await?, Some(m));
            }
            Ok(tonic::Response::new(zmq_grpc_proxy_tools::pb::Ack {
                sequence: 0,
            }))
        });
    }
    let mut ok = 0;
    while let Some(r) = calls.join_next().await {
        r.unwrap().expect("concurrent call");
        ok += 1;
    }
    assert_eq!(ok, 450);
    drop(c);

    // Received by the server: 51 unary + 30 streamed + 400 concurrent (Fetch/Echo are not
    // counted), all intact, all on a single proxied connection.
    stack.grpc.signal("TERM");
    assert!(stack.grpc.wait_exit(PATIENCE).success());
    let s = stack.grpc.summary();
    assert_eq!(s["received"], "481");
    assert_eq!((s["corrupt"].as_str(), s["skipped"].as_str()), ("0", "0"));
    stack
        .proxy
        .wait_for_logs(&["closed", "route=grpc"], 1, PATIENCE);
    assert_eq!(
        stack.proxy.count_logs(&["closed", "route=grpc"]),
        1,
        "one connection"
    );
}

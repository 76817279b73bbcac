//! Out of descriptors, a transfer that wanted `splice(2)` copies instead of failing.
//!
//! Its own test binary: it lowers the process's open-file limit, which would disturb any
//! other test running beside it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use zmq_grpc_proxy::proxy::relay::SpliceMode;
use zmq_grpc_proxy::proxy::{self, ProxyConfig, Routes};

const ZMTP_SIGNATURE: [u8; 10] = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];

/// The `k`-th lowest descriptor number not in use (0: the next socket or pipe end gets it).
fn free_fd(k: usize) -> u64 {
    let open = |n: u64| std::path::Path::new(&format!("/proc/self/fd/{n}")).exists();
    (0..).filter(|n| !open(*n)).nth(k).unwrap()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_transfer_copies_when_no_pipe_can_be_had() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap().to_string();
    let echo = tokio::spawn(async move {
        let (mut s, _) = backend.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut config = ProxyConfig::new(Routes::to_backends(
        backend_addr.parse().unwrap(),
        backend_addr.parse().unwrap(),
    ));
    config.limits.splice = SpliceMode::On;
    let metrics = std::sync::Arc::clone(&config.metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(proxy::run(listener, config, async {
        let _ = stopped.await;
    }));

    let mut client = TcpStream::connect(addr).await.unwrap();
    while !metrics
        .encode()
        .contains("zgp_connections_accepted_total 1")
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Room for exactly two more descriptors: the proxy's socket to the backend and the
    // backend's accepted socket (this process plays both). The pipe that splicing needs
    // (two more) cannot be created.
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, free_fd(1) + 1, hard).unwrap();

    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = ZMTP_SIGNATURE.to_vec();
    sent.extend_from_slice(&payload);
    let (mut rx, mut tx) = client.split();
    let write = async {
        tx.write_all(&sent).await.unwrap();
        tx.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let read = rx.read_to_end(&mut got);
    let (_, read) = tokio::join!(write, read);
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard).unwrap();
    read.expect("the transfer completes (no reset)");
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "every byte echoed in order");
    echo.await.unwrap();
    let _ = stop.send(());
    proxy.await.unwrap().unwrap();
    assert!(metrics
        .encode()
        .contains("zgp_connections_closed_total{route=\"zmq\",outcome=\"ok\"} 1"));
}

//! Out of descriptors: a transfer that wanted `splice(2)` copies instead of failing, and an
//! accept loop that hits EMFILE backs off and serves again once descriptors free up.
//!
//! Its own test binary: the tests lower the process's open-file limit, which would disturb
//! any other test running beside them, and they take turns (`LIMIT`) for the same reason.

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

/// One test at a time changes the process's open-file limit, and the other's runtime is
/// not even built meanwhile (building one opens descriptors).
static LIMIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `test` on its own runtime, alone.
fn alone<F: std::future::Future<Output = ()>>(test: impl FnOnce() -> F) {
    let _turn = LIMIT.lock().unwrap_or_else(|p| p.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(test());
}

#[cfg(target_os = "linux")]
#[test]
fn a_transfer_copies_when_no_pipe_can_be_had() {
    alone(transfer_copies_when_no_pipe_can_be_had)
}

async fn transfer_copies_when_no_pipe_can_be_had() {
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

#[test]
fn accept_survives_running_out_of_descriptors_and_serves_again() {
    alone(accept_survives_emfile)
}

async fn accept_survives_emfile() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap().to_string();
    let config = ProxyConfig::new(Routes::to_backends(
        backend_addr.parse().unwrap(),
        backend_addr.parse().unwrap(),
    ));
    let metrics = std::sync::Arc::clone(&config.metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(proxy::run(listener, config, async {
        let _ = stopped.await;
    }));
    // No descriptor left for the proxy to accept with: the client waits in the backlog.
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    // The client's socket exists before the limit drops; connecting it needs no new one.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, free_fd(0), hard).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut client = TcpStream::from_std(socket.into()).unwrap();
    // Accept fails (EMFILE) and is retried with back-off, without ending the proxy.
    while !metrics.encode().contains("zgp_accept_errors_total 3") {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(!proxy.is_finished());
    assert!(!metrics
        .encode()
        .contains("zgp_connections_accepted_total 1"));
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard).unwrap();
    // Descriptors are back: the waiting client is accepted and routed.
    client.write_all(&ZMTP_SIGNATURE).await.unwrap();
    let (mut upstream, _) = backend.accept().await.unwrap();
    let mut got = [0u8; 10];
    upstream.read_exact(&mut got).await.unwrap();
    assert_eq!(got, ZMTP_SIGNATURE);
    drop((client, upstream));
    let _ = stop.send(());
    proxy.await.unwrap().unwrap();
}

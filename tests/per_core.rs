//! The per-core scheduler in-process: `proxy::per_core::run` with two threads serving one
//! listener. Real time, not paused: the connection threads run runtimes of their own,
//! which the test's clock does not drive.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use zmq_grpc_proxy::proxy::{self, Limits, ProxyConfig, Routes};

const ZMTP_SIGNATURE: [u8; 10] = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];

async fn echo_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Connects, sends the ZMTP signature and reads its echo: the connection is relayed.
async fn relayed(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&ZMTP_SIGNATURE).await.unwrap();
    let mut echoed = [0u8; 10];
    s.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, ZMTP_SIGNATURE);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_share_the_port_and_one_connection_limit_then_drain() {
    let backend = echo_backend().await;
    let limits = Limits {
        max_connections: 8,
        ..Limits::default()
    };
    let listener = proxy::server::bind("127.0.0.1:0", false).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ProxyConfig::new(Routes::to_backends(
        backend.parse().unwrap(),
        backend.parse().unwrap(),
    ));
    config.limits = limits;
    let (stop, stopped) = oneshot::channel::<()>();
    let mut done = tokio::spawn(proxy::per_core::run(listener, config, 2, async {
        let _ = stopped.await;
    }));
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(relayed(addr).await);
    }
    // The limit is the process's, not each thread's: whichever thread would serve the
    // ninth, it is closed at accept and never relayed.
    let mut ninth = TcpStream::connect(addr).await.unwrap();
    let _ = ninth.write_all(&ZMTP_SIGNATURE).await;
    // Closed: end of stream or a reset. Relayed: the echo.
    let mut echoed = [0u8; 10];
    let n = ninth.read(&mut echoed).await.unwrap_or(0);
    assert_eq!(n, 0, "the ninth connection was relayed");
    // Shut down: the port closes, the open connections are drained, not cut.
    let _ = stop.send(());
    while TcpStream::connect(addr).await.is_ok() {
        tokio::task::yield_now().await;
    }
    held[0].write_all(b"more").await.unwrap();
    let mut more = [0u8; 4];
    held[0].read_exact(&mut more).await.unwrap();
    assert_eq!(&more, b"more");
    assert!(!done.is_finished());
    drop(held);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), &mut done).await;
    ended.expect("run returns once drained").unwrap().unwrap();
}

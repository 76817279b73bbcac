//! The relay over real loopback sockets: the readiness it clears after short reads must
//! never cost a wake-up, and the last FIN is the owner's close.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Relay, SpliceMode};

/// A connected pair of loopback sockets.
async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let near = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (far, _) = l.accept().await.unwrap();
    (near, far)
}

/// Client ⇄ [relay] ⇄ backend, small messages one at a time both ways: every message is a
/// short read that clears readiness, so a readiness cleared too eagerly would strand the
/// next message and time out here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_messages_both_ways_never_stall_and_the_relay_ends_cleanly() {
    let (mut client, proxy_client) = pair().await;
    let (proxy_backend, mut backend) = pair().await;
    let relay = tokio::spawn(async move {
        let mut relay = Relay::new(&proxy_client, &proxy_backend, SpliceMode::Off);
        (&mut relay)
            .await
            .map(|()| (relay.to_backend(), relay.to_client()))
    });
    let rounds = 500u64;
    let run = async {
        for i in 0..rounds {
            let msg = (i as u32).to_be_bytes();
            client.write_all(&msg).await.unwrap();
            let mut got = [0u8; 4];
            backend.read_exact(&mut got).await.unwrap();
            assert_eq!(got, msg);
            backend.write_all(&got).await.unwrap();
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(got, msg);
        }
        // Each side's FIN reaches the other; the relay then ends.
        client.shutdown().await.unwrap();
        assert_eq!(backend.read(&mut [0u8; 1]).await.unwrap(), 0);
        backend.shutdown().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("a message was stranded");
    let moved = tokio::time::timeout(Duration::from_secs(5), relay)
        .await
        .expect("the relay ended")
        .unwrap()
        .unwrap();
    assert_eq!(moved, (4 * rounds, 4 * rounds));
    // The relay's sockets are dropped with it: the client sees the close as a clean EOF.
    assert_eq!(client.read(&mut [0u8; 1]).await.unwrap(), 0);
}

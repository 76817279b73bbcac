//! Sizes of the per-connection futures.
/// Every open connection holds one of these futures for its whole life; their size is
/// most of the proxy's memory per idle connection (BENCHMARKS.md), so growth here is a
/// regression even when every other test passes.
#[tokio::test]
async fn connection_futures_stay_small() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (s, peer) = l.accept().await.unwrap();
    let relay = super::Relay::new(&c, &s, Default::default());
    let size = std::mem::size_of_val(&relay);
    assert!(size <= 192, "relay: {size} bytes");
    drop(relay);
    let config = super::ProxyConfig::new(super::Routes::to_backends(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
    ));
    let sweeper = crate::proxy::sweep::Sweeper::new(None);
    let serve = super::serve(s, peer, &config, &sweeper);
    let size = std::mem::size_of_val(&serve);
    // 448 before connections could be reset at the drain timeout or when idle: the
    // sweep's waiter and counters cost ~70 bytes (520 in a debug build, 480 in release).
    assert!(size <= 528, "connection task future: {size} bytes");
}

/// The listener's keepalive settings are inherited by the sockets it accepts (Linux), so
/// the proxy sets them once on the listener for the client hop.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn accepted_sockets_inherit_keepalive_from_the_listener() {
    let limits = super::Limits {
        tcp_keepalive: Some(std::time::Duration::from_secs(42)),
        ..Default::default()
    };
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let keepalive = limits.keepalive().unwrap();
    socket2::SockRef::from(&l)
        .set_tcp_keepalive(&keepalive)
        .unwrap();
    let _c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
        .await
        .unwrap();
    let (s, _) = l.accept().await.unwrap();
    let s = socket2::SockRef::from(&s);
    assert!(s.keepalive().unwrap());
    assert_eq!(s.tcp_keepalive_time().unwrap().as_secs(), 42);
    assert_eq!(s.tcp_keepalive_interval().unwrap().as_secs(), 7);
}

/// The backend hop gets the same keepalive when it is connected.
#[tokio::test]
async fn backend_connections_get_keepalive() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = l.local_addr().unwrap().to_string().parse().unwrap();
    let limits = super::Limits {
        tcp_keepalive: Some(std::time::Duration::from_secs(30)),
        ..Default::default()
    };
    let upstream = super::connect(&backend, &limits).await.unwrap();
    let s = socket2::SockRef::from(&upstream);
    assert!(s.keepalive().unwrap());
    assert!(s.tcp_nodelay().unwrap());
    let off = super::Limits {
        tcp_keepalive: None,
        ..Default::default()
    };
    let upstream = super::connect(&backend, &off).await.unwrap();
    assert!(!socket2::SockRef::from(&upstream).keepalive().unwrap());
}

/// What one client can cost before it is routed: the set-up future (boxed once per
/// connection, freed when the relay starts) holds the 64-byte prefix buffer, timers and the
/// address lookup. A ClientHello read on (TLS routes only) adds at most
/// `tls::MAX_HELLO_BYTES` on the heap; a PROXY header from a trusted balancer at most 528.
#[tokio::test]
async fn the_detect_phase_stays_small() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
        .await
        .unwrap();
    let (s, peer) = l.accept().await.unwrap();
    let config = super::ProxyConfig::new(super::Routes::to_backends(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:1".parse().unwrap(),
    ));
    let setup = super::open(s, peer, &config, std::time::Instant::now());
    let size = std::mem::size_of_val(&setup);
    eprintln!("set-up future: {size} bytes");
    assert!(size <= 1152, "set-up future: {size} bytes");
    drop(c);
}

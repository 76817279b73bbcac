//! The proxy core in-process: `proxy::run` on a port-0 listener with a oneshot shutdown,
//! real loopback sockets, and paused time, so every timeout is tested at its exact value
//! without waiting for it.
//!
//! With `start_paused`, tokio advances the clock only when every task is idle, and it polls
//! for I/O before it does: a byte already written on loopback is always read before a
//! timer that would race it fires. Everything here runs on the test's runtime for that
//! reason (no helper threads).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zmq_grpc_proxy::proxy::metrics::Metrics;
use zmq_grpc_proxy::proxy::{self, Limits, ProxyConfig, Routes, Target};

const ZMTP_SIGNATURE: [u8; 10] = [0xFF, 0, 0, 0, 0, 0, 0, 0, 1, 0x7F];

struct Proxy {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<std::io::Result<()>>,
    metrics: Arc<Metrics>,
}

impl Proxy {
    async fn start(routes: Routes, limits: Limits) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = ProxyConfig::new(routes);
        config.limits = limits;
        let metrics = Arc::clone(&config.metrics);
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(proxy::run(listener, config, async {
            let _ = stopped.await;
        }));
        Proxy {
            addr,
            stop: Some(stop),
            done,
            metrics,
        }
    }

    fn shutdown(&mut self) {
        let _ = self.stop.take().expect("shut down once").send(());
    }

    /// The value of one metric series, e.g. `zgp_connections_rejected_total{reason="x"}`.
    fn metric(&self, series: &str) -> u64 {
        let text = self.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |v| v.parse().unwrap())
    }
}

/// A backend that echoes everything back, on its own port, for the rest of the test.
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

/// A client that sent the ZMTP signature through the proxy and had it echoed back: a
/// connection that is being relayed.
async fn zmq_client(p: &Proxy) -> TcpStream {
    let mut client = TcpStream::connect(p.addr).await.unwrap();
    client.write_all(&ZMTP_SIGNATURE).await.unwrap();
    let mut echoed = [0u8; 10];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, ZMTP_SIGNATURE);
    client
}

fn routes(zmq: &str, grpc: &str) -> Routes {
    Routes::to_backends(zmq.parse().unwrap(), grpc.parse().unwrap())
}

fn limits() -> Limits {
    Limits {
        detect_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(3),
        drain_timeout: Duration::from_secs(10),
        ..Limits::default()
    }
}

/// Reads until end of stream or error; returns what was read and how it ended.
async fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut got = Vec::new();
    let r = s.read_to_end(&mut got).await.map(|_| ());
    (got, r)
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_closed_at_exactly_the_detect_timeout() {
    let p = Proxy::start(routes("127.0.0.1:1", "127.0.0.1:1"), limits()).await;
    let started = Instant::now();
    let mut client = TcpStream::connect(p.addr).await.unwrap();
    client.write_all(&ZMTP_SIGNATURE[..5]).await.unwrap();
    let (got, end) = read_to_end(&mut client).await;
    assert!(got.is_empty() && end.is_ok(), "{got:?} {end:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_millis(5100),
        "{waited:?}"
    );
    assert_eq!(
        p.metric("zgp_connections_rejected_total{reason=\"detect_timeout\"}"),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_backend_is_given_up_at_the_connect_timeout() {
    // A listener that never accepts, its one-slot accept queue already taken: the kernel
    // drops further SYNs, so a connect to it hangs until the proxy's timeout.
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    full.listen(0).unwrap();
    let backend = full.local_addr().unwrap().as_socket().unwrap().to_string();
    let mut queued = Vec::new();
    for _ in 0..2 {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&full.local_addr().unwrap());
        queued.push(s);
    }
    let p = Proxy::start(routes(&backend, &backend), limits()).await;
    let mut client = TcpStream::connect(p.addr).await.unwrap();
    client.write_all(&ZMTP_SIGNATURE).await.unwrap();
    let sent = Instant::now();
    let (got, _) = read_to_end(&mut client).await;
    assert!(got.is_empty());
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_millis(3100),
        "{waited:?}"
    );
    let series = "zgp_backend_errors_total{route=\"zmq\",kind=\"timeout\"}";
    assert_eq!(p.metric(series), 1);
}

#[tokio::test(start_paused = true)]
async fn drain_waits_for_open_connections_then_run_returns() {
    let backend = echo_backend().await;
    let mut p = Proxy::start(routes(&backend, &backend), limits()).await;
    let mut client = zmq_client(&p).await;
    p.shutdown();
    // The port closes at once; the open connection keeps working through the drain.
    while TcpStream::connect(p.addr).await.is_ok() {
        tokio::task::yield_now().await;
    }
    assert!(!p.metrics.is_ready());
    client.write_all(b"more").await.unwrap();
    let mut more = [0u8; 4];
    client.read_exact(&mut more).await.unwrap();
    assert_eq!(&more, b"more");
    assert!(!p.done.is_finished());
    client.shutdown().await.unwrap();
    let (rest, end) = read_to_end(&mut client).await;
    assert!(rest.is_empty() && end.is_ok());
    let started = Instant::now();
    (&mut p.done).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    let closed = "zgp_connections_closed_total{route=\"zmq\",outcome=\"ok\"}";
    assert_eq!(p.metric(closed), 1);
}

#[tokio::test(start_paused = true)]
async fn connections_open_at_the_drain_timeout_are_reset_and_counted() {
    let backend = echo_backend().await;
    let mut p = Proxy::start(routes(&backend, &backend), limits()).await;
    let mut client = zmq_client(&p).await;
    let asked = Instant::now();
    p.shutdown();
    // The client never closes: run returns at the drain timeout, having reset it.
    (&mut p.done).await.unwrap().unwrap();
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited < Duration::from_millis(10_100),
        "{waited:?}"
    );
    let (_, end) = read_to_end(&mut client).await;
    let err = end.expect_err("a cut connection ends with a reset, not a FIN");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    let cut = "zgp_connections_closed_total{route=\"zmq\",outcome=\"drain_timeout\"}";
    assert_eq!(p.metric(cut), 1);
    assert_eq!(p.metric("zgp_connections_active{route=\"zmq\"}"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_goes_to_the_fallback_at_the_detect_timeout() {
    let fallback = echo_backend().await;
    let mut routes = routes("127.0.0.1:1", "127.0.0.1:1");
    routes.fallback = Some(Target::Backend(fallback.parse().unwrap()));
    let p = Proxy::start(routes, limits()).await;
    let started = Instant::now();
    let mut client = TcpStream::connect(p.addr).await.unwrap();
    // 'S' rules out both protocols at its first byte: routed to the fallback at once.
    client.write_all(b"SSH").await.unwrap();
    let mut echoed = [0u8; 3];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"SSH");
    assert!(started.elapsed() < Duration::from_secs(1));

    // A client that says nothing is routed to the fallback when the detect timeout ends.
    let started = Instant::now();
    let mut silent = TcpStream::connect(p.addr).await.unwrap();
    let active = "zgp_connections_active{route=\"fallback\"}";
    while p.metric(active) < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_millis(5100),
        "{waited:?}"
    );
    silent.write_all(b"late").await.unwrap();
    let mut late = [0u8; 4];
    silent.read_exact(&mut late).await.unwrap();
    assert_eq!(&late, b"late");
}

#[tokio::test(start_paused = true)]
async fn a_client_hello_in_pieces_is_read_on_and_replayed_whole() {
    let tls_backend = echo_backend().await;
    let mut routes = routes("127.0.0.1:1", "127.0.0.1:1");
    routes.tls = Some(proxy::TlsRoutes {
        rules: Vec::new(),
        default: Some(Target::Backend(tls_backend.parse().unwrap())),
    });
    let p = Proxy::start(routes, limits()).await;
    let hello = client_hello("api.example.com");
    let mut client = TcpStream::connect(p.addr).await.unwrap();
    let (a, b) = hello.split_at(7);
    client.write_all(a).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.write_all(b).await.unwrap();
    let mut echoed = vec![0u8; hello.len()];
    client.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, hello);
    assert_eq!(p.metric("zgp_connections_active{route=\"tls\"}"), 1);
}

/// A minimal TLS 1.2-style ClientHello record carrying an SNI.
fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut exts = vec![0, 0];
    exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    exts.extend_from_slice(&sni_ext);
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(start_paused = true)]
async fn a_relayed_connection_idle_past_the_idle_timeout_is_reset_on_both_sides() {
    let backend = echo_backend().await;
    let limits = Limits {
        idle_timeout: Some(Duration::from_secs(80)),
        ..limits()
    };
    let p = Proxy::start(routes(&backend, &backend), limits).await;
    // A ZMTP greeting, answered, then silence: the connection held a backend connection
    // and a --max-connections slot forever before there was an idle timeout.
    let mut client = zmq_client(&p).await;
    // Traffic before the timeout restarts the clock.
    tokio::time::sleep(Duration::from_secs(60)).await;
    client.write_all(b"ping").await.unwrap();
    client.read_exact(&mut [0u8; 4]).await.unwrap();
    let last_byte = Instant::now();
    let (_, end) = read_to_end(&mut client).await;
    let err = end.expect_err("an idle connection is reset, not closed politely");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
    let idle = last_byte.elapsed();
    // Closed between the timeout and two sweeps (an eighth of it each) later.
    assert!(
        idle >= Duration::from_secs(80) && idle <= Duration::from_secs(100),
        "{idle:?}"
    );
    let series = "zgp_connections_closed_total{route=\"zmq\",outcome=\"idle\"}";
    assert_eq!(p.metric(series), 1);
    assert_eq!(p.metric("zgp_connections_active{route=\"zmq\"}"), 0);
}

#[tokio::test]
async fn a_client_cannot_make_the_backend_trust_a_forged_proxy_header() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut routes = routes("127.0.0.1:1", "127.0.0.1:1");
    routes.fallback = Some(Target::Backend(
        backend.local_addr().unwrap().to_string().parse().unwrap(),
    ));
    routes.proxy_protocol = vec![proxy::RouteName::Fallback];
    let p = Proxy::start(routes, limits()).await;
    // What an attacker would like the backend to believe.
    let mut forged = Vec::new();
    zmq_grpc_proxy::proxy::proxy_protocol::write_header(
        &mut forged,
        "6.6.6.6:666".parse().unwrap(),
        p.addr,
    );
    forged.extend_from_slice(b"payload");
    for attempt in 1..=20u64 {
        // The forged header, then a reset at once: the proxy must not lose track of who
        // the client really is (it once asked the socket after the reset, got nothing, and
        // forwarded the client's bytes without its own header).
        let client = TcpStream::connect(p.addr).await.unwrap();
        let real = client.local_addr().unwrap();
        let mut client = client;
        client.write_all(&forged).await.unwrap();
        client.set_zero_linger().unwrap();
        drop(client);
        // Wait until the proxy has an outcome for this connection.
        let ended = || {
            let text = p.metrics.encode();
            let sum = |name: &str| -> u64 {
                text.lines()
                    .filter(|l| l.starts_with(name))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum()
            };
            sum("zgp_connections_closed_total") + sum("zgp_connections_rejected_total")
        };
        while ended() < attempt {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Either the backend saw nothing of it, or it saw the proxy's own header first,
        // naming the real client.
        let Ok(Ok((mut upstream, _))) =
            tokio::time::timeout(Duration::from_millis(50), backend.accept()).await
        else {
            continue;
        };
        let (got, _) = read_to_end(&mut upstream).await;
        if got.is_empty() {
            continue;
        }
        let header = ppp::v2::Header::try_from(got.as_slice())
            .unwrap_or_else(|e| panic!("attempt {attempt}: no PROXY header first: {e:?}"));
        match header.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                assert_eq!(
                    std::net::SocketAddr::from((a.source_address, a.source_port)),
                    real,
                    "attempt {attempt}"
                );
            }
            other => panic!("attempt {attempt}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_trusted_balancer_s_proxy_header_names_the_client_to_backends() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap().to_string();
    let mut routes = routes(&backend_addr, &backend_addr);
    routes.accept_proxy_protocol = vec!["127.0.0.0/8".parse().unwrap()];
    routes.proxy_protocol = vec![proxy::RouteName::Zmq];
    let p = Proxy::start(routes, limits()).await;
    let mut balancer = TcpStream::connect(p.addr).await.unwrap();
    balancer
        .write_all(b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 7000\r\n")
        .await
        .unwrap();
    balancer.write_all(&ZMTP_SIGNATURE).await.unwrap();
    let (mut upstream, _) = backend.accept().await.unwrap();
    let mut got = vec![0u8; 28 + ZMTP_SIGNATURE.len()];
    upstream.read_exact(&mut got).await.unwrap();
    let header = ppp::v2::Header::try_from(&got[..28]).unwrap();
    let want = ppp::v2::Addresses::IPv4(ppp::v2::IPv4::new(
        [203, 0, 113, 7],
        [198, 51, 100, 1],
        5555,
        7000,
    ));
    assert_eq!(header.addresses, want);
    assert_eq!(&got[28..], &ZMTP_SIGNATURE, "then the client's own bytes");
}

#[tokio::test]
async fn a_proxy_header_from_an_untrusted_source_is_unrecognised() {
    let backend = echo_backend().await;
    let mut routes = routes(&backend, &backend);
    routes.accept_proxy_protocol = vec!["10.0.0.0/8".parse().unwrap()];
    let p = Proxy::start(routes, limits()).await;
    let mut client = TcpStream::connect(p.addr).await.unwrap();
    client
        .write_all(b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 7000\r\n")
        .await
        .unwrap();
    let (got, _) = read_to_end(&mut client).await;
    assert!(got.is_empty());
    let series = "zgp_connections_rejected_total{reason=\"unrecognised\"}";
    assert_eq!(p.metric(series), 1);
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_delay_fails_readiness_first_and_keeps_accepting() {
    let backend = echo_backend().await;
    let limits = Limits {
        shutdown_delay: Duration::from_secs(5),
        ..limits()
    };
    let mut p = Proxy::start(routes(&backend, &backend), limits).await;
    while !p.metrics.is_ready() {
        tokio::task::yield_now().await;
    }
    let asked = Instant::now();
    p.shutdown();
    while p.metrics.is_ready() {
        tokio::task::yield_now().await;
    }
    // Not ready, but a balancer that has not noticed yet is still served.
    let mut late = TcpStream::connect(p.addr).await.unwrap();
    late.write_all(&ZMTP_SIGNATURE).await.unwrap();
    let mut echoed = [0u8; 10];
    late.read_exact(&mut echoed).await.unwrap();
    assert!(asked.elapsed() < Duration::from_secs(5));
    drop(late);
    // Then the port closes and the drain completes.
    (&mut p.done).await.unwrap().unwrap();
    assert!(asked.elapsed() >= Duration::from_secs(5));
    assert!(TcpStream::connect(p.addr).await.is_err());
}

/// Whether the kernel has a keepalive timer pending on the established TCP socket from
/// `local` to `remote` (IPv4), read from `/proc/net/tcp` ("tr" 2: the socket's keepalive
/// timer): the proxy's own sockets, observed from outside without touching them.
#[cfg(target_os = "linux")]
fn keepalive_timer(local: std::net::SocketAddr, remote: std::net::SocketAddr) -> bool {
    fn hex(a: std::net::SocketAddr) -> String {
        let std::net::IpAddr::V4(ip) = a.ip() else {
            panic!("IPv4 only: {a}")
        };
        format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), a.port())
    }
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let line = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[1] == local && f[2] == remote && f[3] == "01")
        .unwrap_or_else(|| panic!("no established socket {local} -> {remote}"));
    line[5].starts_with("02:")
}

/// Keepalive is armed lazily: a connection gets it on both hops at the first sweep it lives
/// through (at most --tcp-keepalive-ms after it started), so connections shorter than that
/// (Butterfly opens one per peer per gossip round) never pay for the kernel's timers.
#[cfg(target_os = "linux")]
#[tokio::test(start_paused = true)]
async fn keepalive_is_armed_on_both_hops_once_a_connection_outlives_a_sweep() {
    let backend = echo_backend().await;
    let limits = Limits {
        tcp_keepalive: Some(Duration::from_secs(42)),
        ..limits()
    };
    let p = Proxy::start(routes(&backend, &backend), limits).await;
    let client = zmq_client(&p).await;
    let client_hop = (p.addr, client.local_addr().unwrap());
    let backend_addr: std::net::SocketAddr = backend.parse().unwrap();
    let upstream_local = {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let remote = format!("0100007F:{:04X}", backend_addr.port());
        let local = table
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2] == remote && f[3] == "01")
            .map(|f| f[1].to_owned())
            .expect("the proxy's connection to the backend");
        let port = u16::from_str_radix(local.rsplit(':').next().unwrap(), 16).unwrap();
        std::net::SocketAddr::from(([127, 0, 0, 1], port))
    };
    let backend_hop = (upstream_local, backend_addr);
    // Relayed, and younger than a sweep: no keepalive timer on either of the proxy's sockets.
    assert!(!keepalive_timer(client_hop.0, client_hop.1));
    assert!(!keepalive_timer(backend_hop.0, backend_hop.1));
    // The first sweep comes 42 s after the server started (a sweep per keepalive time).
    tokio::time::sleep(Duration::from_secs(43)).await;
    assert!(keepalive_timer(client_hop.0, client_hop.1), "client hop");
    assert!(keepalive_timer(backend_hop.0, backend_hop.1), "backend hop");
    drop(client);
}

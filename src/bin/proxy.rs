//! `proxy`: one TCP port, ZeroMQ and gRPC routed to their own backends by their first bytes.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use zmq_grpc_proxy::cli::{exit_usage, raise_fd_limit, LogArgs};
use zmq_grpc_proxy::metrics::RouteLabel;
use zmq_grpc_proxy::proxy::{self, BackendAddr, ProxyConfig, Route};
use zmq_grpc_proxy::relay::SpliceMode;
use zmq_grpc_proxy::{metrics, shutdown};

/// Listens on one TCP port, tells a ZMTP greeting (ZeroMQ) from the HTTP/2 preface (gRPC) in
/// each connection's first bytes, and splices the connection to the matching backend.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "PROXY_LISTEN", default_value = "127.0.0.1:7000")]
    listen: String,
    /// Backend for connections that open with a ZMTP signature (the zmq_pull server).
    #[arg(long, env = "PROXY_ZMQ_BACKEND", default_value = "127.0.0.1:7001")]
    zmq_backend: BackendAddr,
    /// Backend for connections that open with the HTTP/2 preface (the grpc_server).
    #[arg(long, env = "PROXY_GRPC_BACKEND", default_value = "127.0.0.1:7002")]
    grpc_backend: BackendAddr,
    /// Milliseconds a client has to send enough bytes to be recognised; then it is closed.
    #[arg(long, env = "PROXY_DETECT_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    detect_timeout_ms: u64,
    /// Milliseconds allowed for connecting to a backend; then the client is closed.
    #[arg(long, env = "PROXY_CONNECT_TIMEOUT_MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout_ms: u64,
    /// On SIGINT/SIGTERM, milliseconds open connections get to finish before the proxy exits.
    #[arg(long, env = "PROXY_DRAIN_TIMEOUT_MS", default_value_t = 10000)]
    drain_timeout_ms: u64,
    /// Connections served at once; above it new connections are closed at accept.
    #[arg(long, env = "PROXY_MAX_CONNECTIONS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_connections: u32,
    /// Backend for connections that match neither protocol or stay silent past the detect
    /// timeout (default: close them).
    #[arg(long, env = "PROXY_FALLBACK_BACKEND")]
    fallback_backend: Option<BackendAddr>,
    /// Routes whose backends receive a PROXY protocol v2 header first, comma-separated
    /// (zmq, grpc, fallback).
    #[arg(long, env = "PROXY_PROXY_PROTOCOL", value_delimiter = ',', value_parser = parse_route)]
    proxy_protocol: Vec<RouteLabel>,
    /// Bind with SO_REUSEPORT, so several proxy processes can share the listen port and the
    /// kernel spreads connections between them.
    #[arg(long, env = "PROXY_REUSE_PORT")]
    reuse_port: bool,
    /// Serve Prometheus metrics at /metrics, plus /healthz and /readyz, on this address.
    #[arg(long, env = "PROXY_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Worker threads serving connections (0: one per CPU).
    #[arg(long, env = "PROXY_THREADS", default_value_t = 0)]
    threads: usize,
    /// Relay engine: auto splices (Linux zero-copy) a direction once it carries bulk data,
    /// on splices everything, off always copies through user space.
    #[arg(long, env = "PROXY_SPLICE", value_enum, default_value_t = SpliceMode::Auto)]
    splice: SpliceMode,
    #[command(flatten)]
    log: LogArgs,
}

fn parse_route(s: &str) -> Result<RouteLabel, String> {
    match s {
        "zmq" => Ok(RouteLabel::Zmq),
        "grpc" => Ok(RouteLabel::Grpc),
        "fallback" => Ok(RouteLabel::Fallback),
        other => Err(format!("`{other}` is not a route (zmq, grpc, fallback)")),
    }
}

fn bind(addr: &str, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    if !reuse_port {
        return std::net::TcpListener::bind(addr);
    }
    use std::net::ToSocketAddrs;
    let addr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("address resolves to nothing"))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.log.init();
    raise_fd_limit();
    let listener = match bind(&args.listen, args.reuse_port) {
        Ok(l) => l,
        Err(e) => exit_usage(format_args!("cannot listen on {}: {e}", args.listen)),
    };
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let config = ProxyConfig {
        zmq: Route::Backend(args.zmq_backend),
        grpc: Route::Backend(args.grpc_backend),
        detect_timeout: Duration::from_millis(args.detect_timeout_ms),
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        max_connections: args.max_connections,
        splice: args.splice,
        metrics: Default::default(),
        fallback: args.fallback_backend.map(Route::Backend),
        proxy_protocol: args.proxy_protocol,
    };
    let metrics_listener = args.metrics_listen.as_ref().map(|addr| {
        std::net::TcpListener::bind(addr).unwrap_or_else(|e| {
            exit_usage(format_args!("cannot listen on {addr} for metrics: {e}"))
        })
    });
    // One work-stealing runtime sized to the cores. (Thread-per-core, each thread accepting
    // on the shared socket, was measured too: better connection rate on some runs, but
    // connections pile up on whichever thread is awake, which doubled p99 latency; see
    // BENCHMARKS.md.)
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shutdown = shutdown::signal_twice_exits();
        if let Some(l) = metrics_listener {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            // Serves until the process exits, so /readyz can report the drain.
            tokio::spawn(metrics::serve(
                l,
                Arc::clone(&config.metrics),
                std::future::pending(),
            ));
        }
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        proxy::run(listener, config, shutdown).await
    })?;
    Ok(())
}

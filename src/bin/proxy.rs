//! `proxy`: one TCP port, ZeroMQ and gRPC routed to their own backends by their first bytes.

use std::sync::Arc;

use zmq_grpc_proxy::cli::{exit_usage, raise_fd_limit};
use zmq_grpc_proxy::config::{self, Reloader};
use zmq_grpc_proxy::proxy::{self, admin};
use zmq_grpc_proxy::shutdown;

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
    let matches = config::command().get_matches();
    let args = match config::resolve(&matches) {
        Ok(args) => args,
        Err(config::ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(zmq_grpc_proxy::cli::EXIT_USAGE)
        }
    };
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
    let config = args.proxy_config();
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
            tokio::spawn(admin::serve(
                l,
                Arc::clone(&config.metrics),
                std::future::pending(),
            ));
        }
        if args.config.is_some() {
            let reloader = Reloader::new(matches, args.clone(), Arc::clone(&config.routes));
            tokio::spawn(reloader.on_sighup()?);
        }
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        proxy::run(listener, config, shutdown).await
    })?;
    Ok(())
}

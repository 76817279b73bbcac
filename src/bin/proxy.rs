//! `proxy`: one TCP port, ZeroMQ and gRPC routed to their own backends by their first bytes.

use std::sync::{Arc, Mutex};

use zmq_grpc_proxy::cli::{bind_metrics, exit_usage, raise_fd_limit};
use zmq_grpc_proxy::config::{self, Reloader};
use zmq_grpc_proxy::proxy::intercept::{self, Installed};
use zmq_grpc_proxy::proxy::per_core::Scheduler;
use zmq_grpc_proxy::proxy::{self, admin};
use zmq_grpc_proxy::shutdown;

fn main() -> anyhow::Result<()> {
    let argv: Vec<_> = std::env::args_os().collect();
    // Before anything else is read: backing out must not depend on the other settings
    // (a bad PROXY_* variable or config file must not leave the table in place).
    if let Some(port) = intercept_remove_port(&argv) {
        intercept_remove(port);
    }
    let args = match config::resolve(&argv) {
        Ok(args) => args,
        Err(config::ConfigError::Args(e)) => e.exit(),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(zmq_grpc_proxy::cli::EXIT_USAGE)
        }
    };
    if let Some(port) = args.intercept_remove {
        intercept_remove(port);
    }
    if args.check {
        check(&args);
    }
    args.log.init();
    let fd_limit = raise_fd_limit();
    let listener = listener(&args);
    let plan = args
        .intercept_port
        .map(|port| intercept_plan(port, &listener));
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => usize::from(n),
    };
    let mut config = args.proxy_config();
    fit_to_fd_limit(&mut config.limits, fd_limit);
    let metrics_listener = args.metrics_listen.as_deref().map(bind_metrics);
    // Per-core (the default): the connections run on threads of their own
    // (proxy::per_core) and this thread's runtime only serves the admin endpoint, reloads
    // and signals. Work-stealing: one runtime sized to the cores serves everything.
    // (Every thread accepting from one shared listener was measured too: connections pile
    // up on whichever thread is awake, which doubled p99 latency; see BENCHMARKS.md.)
    let per_core = args.scheduler == Scheduler::PerCore;
    let rt = if per_core {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let interception: Arc<Mutex<Option<Installed>>> = Arc::default();
    rt.block_on(async {
        let signal = shutdown::signal_twice_exits();
        let shutdown = async {
            signal.await;
            // Before the port closes: new connections go to the member directly from now.
            stop_intercepting(&interception).await;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
        };
        if let Some(l) = metrics_listener {
            admin::spawn(l, Arc::clone(&config.metrics))?;
        }
        // Always: a SIGHUP without --config is logged and ignored, never fatal.
        let reloader = Reloader::new(argv, args.clone(), &config);
        tokio::spawn(reloader.on_sighup()?);
        // Listening, everything set up: only now may connections be redirected here.
        if let Some(plan) = &plan {
            start_intercepting(plan, &interception);
        }
        if per_core {
            // The port is open; the threads start serving it.
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            return proxy::per_core::run(listener, config, threads, shutdown).await;
        }
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        // Under systemd (Type=notify): the port is open and everything is set up.
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        proxy::run(listener, config, shutdown).await
    })?;
    // Drained: no redirected connection is left to translate.
    let installed = interception
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(mut installed) = installed {
        let was_there = installed.remove();
        let table = format!("inet {}", intercept::table_name(installed.port()));
        tracing::info!(%table, was_there, "interception table removed");
    }
    Ok(())
}

/// `--intercept-port`: what to redirect where, checked against the socket actually
/// listening (it may come from LISTEN_FDS). Exits 2 if it cannot work.
fn intercept_plan(port: u16, listener: &std::net::TcpListener) -> intercept::Plan {
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => exit_usage(format_args!(
            "--intercept-port: the listener has no address: {e}"
        )),
    };
    intercept::Plan::new(port, addr).unwrap_or_else(|e| exit_usage(e))
}

/// Installs the table, or exits 2 naming what is missing, before any connection is served.
fn start_intercepting(plan: &intercept::Plan, slot: &Mutex<Option<Installed>>) {
    match intercept::install(plan) {
        Ok(installed) => {
            let handle = installed.handle();
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(installed);
            tracing::info!(
                table = %format!("inet {}", intercept::table_name(plan.port)),
                handle,
                intercept_port = plan.port,
                to_port = plan.to_port,
                ipv6 = plan.v6,
                "intercepting: inbound tcp/{} is redirected to the proxy",
                plan.port
            );
        }
        Err(e) => exit_usage(format_args!("--intercept-port {}: {e}", plan.port)),
    }
}

/// Stops redirecting new connections (off the runtime: it runs `nft`), then says so. The
/// table stays until the drain is over, keeping the connections already redirected
/// translated ([`intercept::Installed::stop_redirecting`]).
async fn stop_intercepting(slot: &Arc<Mutex<Option<Installed>>>) {
    let slot = Arc::clone(slot);
    let stopped = tokio::task::spawn_blocking(move || {
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_mut().map(|i| (i.port(), i.stop_redirecting()))
    })
    .await;
    if let Ok(Some((port, rule_deleted))) = stopped {
        tracing::info!(
            table = %format!("inet {}", intercept::table_name(port)),
            rule_deleted,
            "interception stopped: new tcp/{port} connections go to the member directly; \
             those already redirected finish through the proxy"
        );
    }
}

/// The port of `--intercept-remove PORT` (`--intercept-remove=PORT`, or
/// `PROXY_INTERCEPT_REMOVE`), read on its own; exits 2 if it is not a port.
fn intercept_remove_port(argv: &[std::ffi::OsString]) -> Option<u16> {
    let mut given = None;
    for (i, arg) in argv.iter().enumerate().skip(1) {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        } else if arg == "--intercept-remove" {
            given = Some(
                argv.get(i + 1)
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
        } else if let Some(v) = arg.strip_prefix("--intercept-remove=") {
            given = Some(v.to_owned());
        }
    }
    let value = given.or_else(|| std::env::var("PROXY_INTERCEPT_REMOVE").ok())?;
    match value.parse::<u16>() {
        Ok(port) if port > 0 => Some(port),
        _ => exit_usage(format_args!(
            "--intercept-remove: `{value}` is not a port (1-65535)"
        )),
    }
}

/// `--intercept-remove PORT`: deletes the table if present; exit 0 either way, 2 if nft
/// cannot be used.
fn intercept_remove(port: u16) -> ! {
    let table = intercept::table_name(port);
    match intercept::remove(port) {
        Ok(true) => println!("removed nftables table inet {table}"),
        Ok(false) => println!("no nftables table inet {table}: nothing to remove"),
        Err(e) => exit_usage(format_args!("--intercept-remove {port}: {e}")),
    }
    std::process::exit(0)
}

/// The listening socket: the one systemd passes (socket activation, `LISTEN_FDS`), which
/// survives restarts of the proxy with no connection refused, or else `--listen` bound here.
fn listener(args: &config::ProxyArgs) -> std::net::TcpListener {
    match listenfd::ListenFd::from_env().take_tcp_listener(0) {
        Ok(Some(inherited)) => {
            tracing::info!("using the listening socket passed by the service manager (LISTEN_FDS)");
            return inherited;
        }
        Ok(None) => {}
        Err(e) => exit_usage(format_args!(
            "the socket passed in LISTEN_FDS is unusable: {e}"
        )),
    }
    match proxy::server::bind(&args.listen, args.reuse_port) {
        Ok(l) => l,
        Err(e) => exit_usage(format_args!("cannot listen on {}: {e}", args.listen)),
    }
}

/// Descriptors kept for everything but connections: listeners, the runtime, the admin
/// endpoint's connections, logs.
const FD_RESERVE: u64 = 64 + admin::MAX_CONNECTIONS as u64;

/// Makes `--max-connections` fit the open-file limit, so that accepting never fails for
/// want of descriptors below the limit the operator set: each connection costs two (client
/// and backend) plus its share of splice pipes. Logs what it did.
fn fit_to_fd_limit(limits: &mut proxy::Limits, fd_limit: Option<u64>) {
    let Some(fd_limit) = fd_limit else { return };
    let per_connection: u64 = match limits.splice {
        // Auto: pipes only for bulk directions, and a pipe that cannot be had falls back to
        // copying, so they are not reserved.
        proxy::relay::SpliceMode::Off | proxy::relay::SpliceMode::Auto => 2,
        // On: a pipe (2 fds) per direction from the first byte.
        proxy::relay::SpliceMode::On => 6,
    };
    let fits = fd_limit.saturating_sub(FD_RESERVE) / per_connection;
    let wanted = u64::from(limits.max_connections);
    if fits >= wanted {
        tracing::debug!(
            fd_limit,
            max_connections = wanted,
            "open-file limit suffices"
        );
        return;
    }
    let lowered = fits.clamp(1, wanted) as u32;
    tracing::warn!(
        fd_limit,
        fds_per_connection = per_connection,
        requested = wanted,
        max_connections = lowered,
        "open-file limit too low for --max-connections: lowered to what it allows \
         (raise the hard limit, e.g. LimitNOFILE= in systemd, to serve more)"
    );
    limits.max_connections = lowered;
}

/// `--check`: everything `resolve` validated, plus the addresses to listen on; prints the
/// effective configuration and exits 0, or the problems and exits 2. Binds nothing.
fn check(args: &config::ProxyArgs) -> ! {
    use std::net::ToSocketAddrs;
    let mut problems = Vec::new();
    let listens = std::iter::once(("listen", &args.listen)).chain(
        args.metrics_listen
            .as_ref()
            .map(|addr| ("metrics_listen", addr)),
    );
    for (key, addr) in listens {
        if let Err(e) = addr.to_socket_addrs() {
            problems.push(format!(
                "`{key}`: `{addr}` is not an address to listen on: {e}"
            ));
        }
    }
    if let Some(port) = args.intercept_port {
        let listen = args
            .listen
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next());
        if let Some(Err(e)) = listen.map(|addr| intercept::Plan::new(port, addr)) {
            problems.push(format!("`intercept_port`: {e}"));
        }
    }
    if !problems.is_empty() {
        for problem in problems {
            eprintln!("error: {problem}");
        }
        std::process::exit(zmq_grpc_proxy::cli::EXIT_USAGE);
    }
    println!(
        "# proxy {}: configuration OK{}",
        zmq_grpc_proxy::VERSION,
        args.config
            .as_ref()
            .map_or(String::new(), |p| format!(" ({})", p.display()))
    );
    print!("{}", config::effective::effective(args));
    std::process::exit(0)
}

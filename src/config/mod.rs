//! The proxy's settings: command-line flags, their environment variables, and an optional
//! TOML file (`--config`) holding the same settings under the same names. A flag or
//! variable that is given wins over the file; the file wins over the built-in default.
//!
//! There is one validation for every source: a value from the file is handed to the same
//! clap parser as the flag it stands for, so `max_connections = 4000000000` in a file is
//! refused exactly as `--max-connections 4000000000` is. [`resolve`] does the merge and
//! records where each value came from; [`reload::Reloader`] re-reads the file on SIGHUP.

pub mod effective;
mod file;
pub mod reload;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, FromArgMatches, Parser};

use crate::cli::LogArgs;
use crate::proxy::per_core::Scheduler;
use crate::proxy::proxy_protocol::Cidr;
use crate::proxy::relay::SpliceMode;
use crate::proxy::{BackendAddr, Limits, ProxyConfig, RouteName, RouteTable, Routes, Target};
use crate::proxy::{TlsRoutes, TlsRule};

pub use reload::Reloader;

/// Listens on one TCP port, tells a ZMTP greeting (ZeroMQ) from the HTTP/2 preface (gRPC) in
/// each connection's first bytes, and splices the connection to the matching backend.
#[derive(Debug, Clone, Parser)]
#[command(version = crate::VERSION)]
pub struct ProxyArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "PROXY_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: String,
    /// Backend for connections that open with a ZMTP signature (the zmq_pull server):
    /// HOST:PORT, or `original`, the address each client dialled before `--intercept-port`
    /// (or another redirect of the operator's) sent it to the proxy.
    #[arg(long, env = "PROXY_ZMQ_BACKEND", default_value = "127.0.0.1:7001")]
    pub zmq_backend: BackendAddr,
    /// Backend for connections that open with the HTTP/2 preface (the grpc_server):
    /// HOST:PORT, or `original` as for `--zmq-backend`.
    #[arg(long, env = "PROXY_GRPC_BACKEND", default_value = "127.0.0.1:7002")]
    pub grpc_backend: BackendAddr,
    /// Milliseconds a client has to send enough bytes to be recognised; then it is closed.
    #[arg(long, env = "PROXY_DETECT_TIMEOUT_MS", default_value_t = Limits::DEFAULT_DETECT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub detect_timeout_ms: u64,
    /// Milliseconds allowed for connecting to a backend; then the client is closed.
    #[arg(long, env = "PROXY_CONNECT_TIMEOUT_MS", default_value_t = Limits::DEFAULT_CONNECT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_ms: u64,
    /// On SIGINT/SIGTERM, milliseconds open connections get to finish before the proxy exits.
    #[arg(long, env = "PROXY_DRAIN_TIMEOUT_MS", default_value_t = Limits::DEFAULT_DRAIN_TIMEOUT_MS)]
    pub drain_timeout_ms: u64,
    /// Connections served at once; above it new connections are closed at accept.
    #[arg(long, env = "PROXY_MAX_CONNECTIONS", default_value_t = Limits::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..=Limits::MAX_MAX_CONNECTIONS as i64))]
    pub max_connections: u32,
    /// On SIGINT/SIGTERM, milliseconds to keep accepting after /readyz turns 503, before
    /// the port closes and the drain starts (load balancers stop sending meanwhile).
    #[arg(long, env = "PROXY_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,
    /// Milliseconds a relayed connection may stay without a byte in either direction; then
    /// both sides are reset (0: never).
    #[arg(long, env = "PROXY_IDLE_TIMEOUT_MS", default_value_t = Limits::DEFAULT_IDLE_TIMEOUT_MS)]
    pub idle_timeout_ms: u64,
    /// TCP keepalive on both hops (client and backend): milliseconds of silence before the
    /// first probe; a dead peer is given up about twice this later (0: off). Armed when a
    /// connection has lived this long at most, so short ones never pay for it.
    #[arg(long, env = "PROXY_TCP_KEEPALIVE_MS", default_value_t = Limits::DEFAULT_TCP_KEEPALIVE_MS)]
    pub tcp_keepalive_ms: u64,
    /// Backend for connections that match neither protocol or stay silent past the detect
    /// timeout (default: close them).
    #[arg(long, env = "PROXY_FALLBACK_BACKEND")]
    pub fallback_backend: Option<BackendAddr>,
    /// Backend for TLS connections that no `[[tls_route]]` rule of the config file matches
    /// (SNI / ALPN rules live in the file). Without either, TLS counts as unrecognised.
    #[arg(long, env = "PROXY_TLS_BACKEND")]
    pub tls_backend: Option<BackendAddr>,
    /// TLS rules from the config file (`[[tls_route]]`: `sni`, `alpn`, `backend`).
    #[arg(skip)]
    pub tls_routes: Vec<TlsRule>,
    /// Where each setting came from, by its name (`zmq_backend`, …).
    #[arg(skip)]
    pub sources: BTreeMap<String, Source>,
    /// Each setting's effective value as text, by its name (for `--check`).
    #[arg(skip)]
    pub values: BTreeMap<String, String>,
    /// Check the configuration (flags, environment, `--config` file) without starting:
    /// print the effective settings and where each came from, then exit 0, or 2 with the
    /// errors. Use it before a reload (e.g. systemd's ExecReload).
    #[arg(short = 'c', long, env = "PROXY_CHECK")]
    pub check: bool,
    /// Routes whose backends receive a PROXY protocol v2 header first, comma-separated
    /// (zmq, grpc, tls, fallback).
    #[arg(long, env = "PROXY_PROXY_PROTOCOL", value_delimiter = ',',
          value_parser = RouteName::from_str)]
    pub proxy_protocol: Vec<RouteName>,
    /// Address blocks (CIDR, comma-separated) of load balancers whose connections open with
    /// a PROXY protocol v1 or v2 header: the client it names is logged and passed on in the
    /// header sent to backends. From any other source a PROXY header is unrecognised input.
    #[arg(long, env = "PROXY_ACCEPT_PROXY_PROTOCOL", value_delimiter = ',',
          value_parser = Cidr::from_str)]
    pub accept_proxy_protocol: Vec<Cidr>,
    /// Bind with SO_REUSEPORT, so several proxy processes can share the listen port and the
    /// kernel spreads connections between them.
    #[arg(long, env = "PROXY_REUSE_PORT")]
    pub reuse_port: bool,
    /// Serve Prometheus metrics at /metrics, plus /healthz and /readyz, on this address.
    #[arg(long, env = "PROXY_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Worker threads serving connections (0: one per CPU; at most 1024).
    #[arg(long, env = "PROXY_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub threads: u16,
    /// How connections are scheduled over the threads. per-core (the default): a
    /// single-threaded runtime per thread; one thread accepts and serves what it accepts
    /// while it keeps up, and hands new connections to the least busy other thread only
    /// once it has been busy without a break for 1 ms; a connection stays on one thread
    /// from start to end (no cross-thread wake-ups: less CPU per connection and per
    /// message). work-stealing: one runtime whose threads share the listener and take work
    /// from each other.
    #[arg(long, env = "PROXY_SCHEDULER", default_value_t = Scheduler::PerCore,
          value_parser = Scheduler::from_str)]
    pub scheduler: Scheduler,
    /// Same as `--scheduler per-core`, the default (kept for scripts that pass it).
    #[arg(long, env = "PROXY_PER_CORE", conflicts_with = "scheduler")]
    pub per_core: bool,
    /// Relay engine: auto splices (Linux zero-copy) a direction once it carries bulk data,
    /// on splices everything, off always copies through user space.
    #[arg(long, env = "PROXY_SPLICE", default_value_t = SpliceMode::Auto,
          value_parser = SpliceMode::from_str)]
    pub splice: SpliceMode,
    /// Intercept this port of the member on this host: once listening, install the
    /// nftables table `inet zgp_intercept_PORT`, which redirects inbound TCP to PORT (IPv4,
    /// and IPv6 when listening on `[::]`) to the proxy, so no peer changes the address it
    /// dials; use `--zmq-backend original` to reach the member. Its redirect rule is
    /// deleted when the proxy begins to drain, the table once drained, or by a guard
    /// process if the proxy dies.
    /// Needs `--listen` on the wildcard address, nft and CAP_NET_ADMIN; the shutdown delay
    /// is at least 250 ms, so handshakes redirected before removal are still accepted.
    #[arg(long, env = "PROXY_INTERCEPT_PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub intercept_port: Option<u16>,
    /// Delete the nftables table of `--intercept-port PORT` if present, then exit 0 (also
    /// when absent; 2 if nft cannot be used). For ExecStopPost= and for backing out by hand.
    #[arg(long, env = "PROXY_INTERCEPT_REMOVE", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub intercept_remove: Option<u16>,
    /// TOML file holding any of these settings (same names, snake_case); flags and
    /// environment variables override it. SIGHUP re-reads it and swaps the routes.
    #[arg(long, env = "PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}:{line}: {message} (in `{text}`)")]
    Parse {
        path: PathBuf,
        line: usize,
        text: String,
        message: String,
    },
    #[error("{path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{0}")]
    Args(#[from] clap::Error),
}

/// Parses `argv` (and the environment), then fills every setting that was not given there
/// from the `--config` file, if any, through the same parsers.
pub fn resolve(argv: &[OsString]) -> Result<ProxyArgs, ConfigError> {
    let cmd = command();
    let matches = cmd.clone().try_get_matches_from(argv)?;
    let plain = ProxyArgs::from_arg_matches(&matches)?;
    let Some(path) = plain.config.clone() else {
        return Ok(with_sources(plain, &matches, &matches, &[]));
    };
    let file = file::load(&path)?;
    let mut merged = argv.to_vec();
    let mut from_file = Vec::new();
    for (key, value) in &file.settings {
        if given(&matches, key) {
            continue;
        }
        let args = file::to_args(&cmd, &path, key, value)?;
        merged.extend(args);
        from_file.push(key.clone());
    }
    let matches_merged = cmd.try_get_matches_from(&merged)?;
    let mut args = ProxyArgs::from_arg_matches(&matches_merged)?;
    args.tls_routes = file.tls_routes;
    if !args.tls_routes.is_empty() {
        from_file.push("tls_route".into());
    }
    Ok(with_sources(args, &matches, &matches_merged, &from_file))
}

/// Given on the command line or in the environment (either beats the file).
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

fn with_sources(
    mut args: ProxyArgs,
    matches: &ArgMatches,
    merged: &ArgMatches,
    from_file: &[String],
) -> ProxyArgs {
    for id in setting_ids() {
        let value = merged.get_raw(&id).map(|values| {
            let values: Vec<_> = values.map(|v| v.to_string_lossy()).collect();
            values.join(",")
        });
        args.values.insert(id.clone(), value.unwrap_or_default());
        let source = match matches.value_source(&id) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ if from_file.contains(&id) => Source::File,
            _ => Source::Default,
        };
        args.sources.insert(id, source);
    }
    if from_file.iter().any(|k| k == "tls_route") {
        args.sources.insert("tls_route".into(), Source::File);
    }
    args
}

/// The names of every setting a flag can give (the file's keys, but `tls_route`).
pub fn setting_ids() -> Vec<String> {
    command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .filter(|id| {
            !matches!(
                id.as_str(),
                "help" | "version" | "check" | "intercept_remove"
            )
        })
        .collect()
}

impl ProxyArgs {
    /// The routes these settings describe.
    pub fn routes(&self) -> Routes {
        Routes {
            zmq: Target::Backend(self.zmq_backend.clone()),
            grpc: Target::Backend(self.grpc_backend.clone()),
            fallback: self.fallback_backend.clone().map(Target::Backend),
            proxy_protocol: self.proxy_protocol.clone(),
            tls: (self.tls_backend.is_some() || !self.tls_routes.is_empty()).then(|| TlsRoutes {
                rules: self.tls_routes.clone(),
                default: self.tls_backend.clone().map(Target::Backend),
            }),
            accept_proxy_protocol: self.accept_proxy_protocol.clone(),
        }
    }

    /// The proxy's timeouts and limits.
    pub fn limits(&self) -> Limits {
        Limits {
            detect_timeout: Duration::from_millis(self.detect_timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            max_connections: self.max_connections,
            splice: self.splice,
            idle_timeout: Limits::millis(self.idle_timeout_ms),
            tcp_keepalive: Limits::millis(self.tcp_keepalive_ms),
            shutdown_delay: match self.intercept_port {
                Some(_) => Duration::from_millis(self.shutdown_delay_ms)
                    .max(Limits::INTERCEPT_MIN_SHUTDOWN_DELAY),
                None => Duration::from_millis(self.shutdown_delay_ms),
            },
        }
    }

    /// What [`crate::proxy::run`] takes.
    pub fn proxy_config(&self) -> ProxyConfig {
        ProxyConfig {
            routes: Arc::new(RouteTable::new(self.routes())),
            limits: self.limits(),
            metrics: Arc::default(),
        }
    }

    /// Settings a reload cannot apply to a running process (they shape its sockets and
    /// threads), as `name: old -> new` for each one that changed.
    pub fn needs_restart(&self, new: &ProxyArgs) -> Vec<String> {
        let mut changed = Vec::new();
        macro_rules! compare {
            ($($field:ident),*) => {$(
                if format!("{:?}", self.$field) != format!("{:?}", new.$field) {
                    changed.push(format!(
                        "{}: {:?} -> {:?}", stringify!($field), self.$field, new.$field
                    ));
                }
            )*};
        }
        compare!(
            listen,
            reuse_port,
            metrics_listen,
            threads,
            scheduler,
            per_core,
            max_connections,
            detect_timeout_ms,
            connect_timeout_ms,
            drain_timeout_ms,
            idle_timeout_ms,
            tcp_keepalive_ms,
            shutdown_delay_ms,
            splice,
            intercept_port
        );
        changed
    }
}

/// The clap command for the proxy.
pub fn command() -> clap::Command {
    <ProxyArgs as clap::CommandFactory>::command()
}

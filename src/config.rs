//! The proxy's settings: command-line flags, their environment variables, and an optional
//! TOML file (`--config`) holding the same settings under the same names. A flag or
//! variable that is given wins over the file; the file wins over the built-in default.
//! Everything is validated here, once, with the same parsers the flags use.
//!
//! On SIGHUP the binary calls [`reload`]: the file is read again, merged under the same
//! flags, and only if all of it is valid are the new [`Routes`] swapped in.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::parser::ValueSource;
#[allow(unused_imports)]
use clap::Args as _;
use clap::{ArgMatches, FromArgMatches, Parser, ValueEnum};
use serde::Deserialize;

use crate::cli::{LogArgs, LogFormat};
use crate::proxy::relay::SpliceMode;
use crate::proxy::{BackendAddr, Limits, ProxyConfig, RouteName, RouteTable, Routes, Target};
use crate::proxy::{TlsRoutes, TlsRule};

/// Listens on one TCP port, tells a ZMTP greeting (ZeroMQ) from the HTTP/2 preface (gRPC) in
/// each connection's first bytes, and splices the connection to the matching backend.
#[derive(Debug, Clone, Parser)]
#[command(version)]
pub struct ProxyArgs {
    /// Address to listen on (HOST:PORT; port 0 picks a free one).
    #[arg(long, env = "PROXY_LISTEN", default_value = "127.0.0.1:7000")]
    pub listen: String,
    /// Backend for connections that open with a ZMTP signature (the zmq_pull server).
    #[arg(long, env = "PROXY_ZMQ_BACKEND", default_value = "127.0.0.1:7001")]
    pub zmq_backend: BackendAddr,
    /// Backend for connections that open with the HTTP/2 preface (the grpc_server).
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
    /// Routes whose backends receive a PROXY protocol v2 header first, comma-separated
    /// (zmq, grpc, tls, fallback).
    #[arg(long, env = "PROXY_PROXY_PROTOCOL", value_delimiter = ',',
          value_parser = RouteName::from_str)]
    pub proxy_protocol: Vec<RouteName>,
    /// Bind with SO_REUSEPORT, so several proxy processes can share the listen port and the
    /// kernel spreads connections between them.
    #[arg(long, env = "PROXY_REUSE_PORT")]
    pub reuse_port: bool,
    /// Serve Prometheus metrics at /metrics, plus /healthz and /readyz, on this address.
    #[arg(long, env = "PROXY_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Worker threads serving connections (0: one per CPU).
    #[arg(long, env = "PROXY_THREADS", default_value_t = 0)]
    pub threads: usize,
    /// Relay engine: auto splices (Linux zero-copy) a direction once it carries bulk data,
    /// on splices everything, off always copies through user space.
    #[arg(long, env = "PROXY_SPLICE", default_value_t = SpliceMode::Auto,
          value_parser = SpliceMode::from_str)]
    pub splice: SpliceMode,
    /// TOML file holding any of these settings (same names, snake_case); flags and
    /// environment variables override it. SIGHUP re-reads it and swaps the routes.
    #[arg(long, env = "PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
}

/// The file: every setting optional, unknown keys rejected (a typo must not pass silently).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    zmq_backend: Option<String>,
    grpc_backend: Option<String>,
    fallback_backend: Option<String>,
    tls_backend: Option<String>,
    tls_route: Option<Vec<FileTlsRule>>,
    detect_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    drain_timeout_ms: Option<u64>,
    max_connections: Option<u32>,
    proxy_protocol: Option<Vec<String>>,
    reuse_port: Option<bool>,
    metrics_listen: Option<String>,
    threads: Option<usize>,
    splice: Option<String>,
    log_format: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTlsRule {
    sni: Option<String>,
    alpn: Option<String>,
    backend: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
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
        key: &'static str,
        message: String,
    },
    #[error("{0}")]
    Args(#[from] clap::Error),
}

fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    // One line per error, naming the file, line and text: it ends up in a log line.
    toml::from_str(&text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start).min(text.len());
        let line = text[..at].matches('\n').count() + 1;
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            text: text
                .lines()
                .nth(line - 1)
                .unwrap_or_default()
                .trim()
                .to_owned(),
            message: e.message().to_owned(),
        }
    })
}

/// Parses the command line (and environment), then fills every setting that was not given
/// there from the `--config` file, if any.
pub fn resolve(matches: &ArgMatches) -> Result<ProxyArgs, ConfigError> {
    let mut args = ProxyArgs::from_arg_matches(matches)?;
    let Some(path) = args.config.clone() else {
        return Ok(args);
    };
    let file = load(&path)?;
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    let invalid = |key: &'static str, message: String| ConfigError::Invalid {
        path: path.clone(),
        key,
        message,
    };
    let positive = |key: &'static str, v: u64| {
        if v == 0 {
            Err(invalid(key, "must be at least 1".into()))
        } else {
            Ok(v)
        }
    };
    let addr = |key: &'static str, v: String| v.parse::<BackendAddr>().map_err(|m| invalid(key, m));

    macro_rules! from_file {
        ($field:ident, $convert:expr) => {
            if !given(stringify!($field)) {
                if let Some(v) = file.$field {
                    args.$field = $convert(v)?;
                }
            }
        };
    }
    from_file!(listen, Ok::<_, ConfigError>);
    from_file!(zmq_backend, |v| addr("zmq_backend", v));
    from_file!(grpc_backend, |v| addr("grpc_backend", v));
    from_file!(fallback_backend, |v| addr("fallback_backend", v).map(Some));
    from_file!(tls_backend, |v| addr("tls_backend", v).map(Some));
    if let Some(rules) = file.tls_route {
        args.tls_routes = rules
            .into_iter()
            .map(|r| {
                Ok(TlsRule {
                    sni: r.sni,
                    alpn: r.alpn,
                    backend: Target::Backend(addr("tls_route.backend", r.backend)?),
                })
            })
            .collect::<Result<_, ConfigError>>()?;
    }
    from_file!(detect_timeout_ms, |v| positive("detect_timeout_ms", v));
    from_file!(connect_timeout_ms, |v| positive("connect_timeout_ms", v));
    from_file!(drain_timeout_ms, Ok::<_, ConfigError>);
    from_file!(max_connections, |v: u32| positive(
        "max_connections",
        v.into()
    )
    .map(|v| v as u32));
    from_file!(proxy_protocol, |v: Vec<String>| v
        .iter()
        .map(|r| r.parse().map_err(|m| invalid("proxy_protocol", m)))
        .collect::<Result<Vec<_>, _>>());
    from_file!(reuse_port, Ok::<_, ConfigError>);
    from_file!(metrics_listen, |v| Ok::<_, ConfigError>(Some(v)));
    from_file!(threads, Ok::<_, ConfigError>);
    from_file!(splice, |v: String| v
        .parse()
        .map_err(|m| invalid("splice", m)));
    if !given("log_format") {
        if let Some(v) = file.log_format {
            args.log.log_format = <LogFormat as ValueEnum>::from_str(&v, true)
                .map_err(|m| invalid("log_format", m))?;
        }
    }
    Ok(args)
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
            max_connections,
            detect_timeout_ms,
            connect_timeout_ms,
            drain_timeout_ms,
            splice
        );
        changed
    }
}

/// Re-reads the `--config` file under the same command line and swaps in its routes; only
/// a wholly valid file is applied. The binary calls [`Reloader::reload`] on SIGHUP.
pub struct Reloader {
    matches: ArgMatches,
    running: ProxyArgs,
    routes: Arc<RouteTable>,
}

impl Reloader {
    pub fn new(matches: ArgMatches, running: ProxyArgs, routes: Arc<RouteTable>) -> Self {
        Reloader {
            matches,
            running,
            routes,
        }
    }

    /// One reload: the new routes are in force before "reloaded" is logged.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let new = match resolve(&self.matches) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!(error = %e, "reload rejected; keeping the current configuration");
                return Err(e);
            }
        };
        self.routes.replace(new.routes());
        tracing::info!(zmq_backend = %new.zmq_backend, grpc_backend = %new.grpc_backend,
                       fallback_backend = new.fallback_backend.as_ref().map_or(String::new(), |b| b.to_string()),
                       "reloaded: new connections use the new routes");
        for change in self.running.needs_restart(&new) {
            tracing::warn!(%change, "not applied until restart");
        }
        Ok(())
    }

    /// Reloads on every SIGHUP. The handler is installed by this call, before the proxy
    /// serves: an early SIGHUP must not meet the default action (terminate).
    pub fn on_sighup(self) -> std::io::Result<impl std::future::Future<Output = ()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        Ok(async move {
            while hangups.recv().await.is_some() {
                let _ = self.reload();
            }
        })
    }
}

/// The clap command for the proxy, for callers that need the raw matches.
pub fn command() -> clap::Command {
    <ProxyArgs as clap::CommandFactory>::command()
}

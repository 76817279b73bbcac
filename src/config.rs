//! The proxy's settings: command-line flags, their environment variables, and an optional
//! TOML file (`--config`) holding the same settings under the same names. A flag or
//! variable that is given wins over the file; the file wins over the built-in default.
//! Everything is validated here, once, with the same parsers the flags use.
//!
//! On SIGHUP the binary calls [`reload`]: the file is read again, merged under the same
//! flags, and only if all of it is valid are the new [`Routes`] swapped in.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
#[allow(unused_imports)]
use clap::Args as _;
use clap::{ArgMatches, FromArgMatches, Parser, ValueEnum};
use serde::Deserialize;

use crate::cli::{LogArgs, LogFormat};
use crate::metrics::RouteLabel;
use crate::proxy::{BackendAddr, Route, Routes, TlsRoutes, TlsRule};
use crate::relay::SpliceMode;

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
    #[arg(long, env = "PROXY_DETECT_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub detect_timeout_ms: u64,
    /// Milliseconds allowed for connecting to a backend; then the client is closed.
    #[arg(long, env = "PROXY_CONNECT_TIMEOUT_MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connect_timeout_ms: u64,
    /// On SIGINT/SIGTERM, milliseconds open connections get to finish before the proxy exits.
    #[arg(long, env = "PROXY_DRAIN_TIMEOUT_MS", default_value_t = 10000)]
    pub drain_timeout_ms: u64,
    /// Connections served at once; above it new connections are closed at accept.
    #[arg(long, env = "PROXY_MAX_CONNECTIONS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
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
    #[arg(long, env = "PROXY_PROXY_PROTOCOL", value_delimiter = ',', value_parser = parse_route)]
    pub proxy_protocol: Vec<RouteLabel>,
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
    #[arg(long, env = "PROXY_SPLICE", value_enum, default_value_t = SpliceMode::Auto)]
    pub splice: SpliceMode,
    /// TOML file holding any of these settings (same names, snake_case); flags and
    /// environment variables override it. SIGHUP re-reads it and swaps the routes.
    #[arg(long, env = "PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub log: LogArgs,
}

pub fn parse_route(s: &str) -> Result<RouteLabel, String> {
    match s {
        "zmq" => Ok(RouteLabel::Zmq),
        "grpc" => Ok(RouteLabel::Grpc),
        "tls" => Ok(RouteLabel::Tls),
        "fallback" => Ok(RouteLabel::Fallback),
        other => Err(format!(
            "`{other}` is not a route (zmq, grpc, tls, fallback)"
        )),
    }
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
                    backend: Route::Backend(addr("tls_route.backend", r.backend)?),
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
        .map(|r| parse_route(r).map_err(|m| invalid("proxy_protocol", m)))
        .collect::<Result<Vec<_>, _>>());
    from_file!(reuse_port, Ok::<_, ConfigError>);
    from_file!(metrics_listen, |v| Ok::<_, ConfigError>(Some(v)));
    from_file!(threads, Ok::<_, ConfigError>);
    from_file!(splice, |v: String| SpliceMode::from_str(&v, true)
        .map_err(|m| invalid("splice", m)));
    if !given("log_format") {
        if let Some(v) = file.log_format {
            args.log.log_format =
                LogFormat::from_str(&v, true).map_err(|m| invalid("log_format", m))?;
        }
    }
    Ok(args)
}

impl ProxyArgs {
    /// The routes these settings describe.
    pub fn routes(&self) -> Routes {
        Routes {
            zmq: Route::Backend(self.zmq_backend.clone()),
            grpc: Route::Backend(self.grpc_backend.clone()),
            fallback: self.fallback_backend.clone().map(Route::Backend),
            proxy_protocol: self.proxy_protocol.clone(),
            tls: (self.tls_backend.is_some() || !self.tls_routes.is_empty()).then(|| TlsRoutes {
                rules: self.tls_routes.clone(),
                default: self.tls_backend.clone().map(Route::Backend),
            }),
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

/// Re-reads the `--config` file under the same command line. Nothing is applied unless the
/// whole file is valid.
pub fn reload(matches: &ArgMatches) -> Result<ProxyArgs, ConfigError> {
    resolve(matches)
}

/// The clap command for the proxy, for callers that need the raw matches.
pub fn command() -> clap::Command {
    <ProxyArgs as clap::CommandFactory>::command()
}

//! What every binary shares at start-up: the `--log-format` flag, tracing initialisation,
//! and the exit-code convention (2 = the user asked for something impossible: a bad flag,
//! an address that cannot be bound).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Process exit code for usage errors, matching clap's own.
pub const EXIT_USAGE: i32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Logging flags shared by every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format on stderr. Verbosity is set with RUST_LOG (default "info").
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global tracing subscriber: logs go to stderr, so stdout stays free for
    /// the summaries that scripts parse.
    pub fn init(&self) {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
            // Each field once: the event's own fields at the top level, the connection's
            // span under "span" (not repeated in a "spans" list), values as plain text.
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .init(),
        }
    }
}

/// Reports a usage-level failure (e.g. an address that cannot be bound) and exits 2.
pub fn exit_usage(message: impl std::fmt::Display) -> ! {
    tracing::error!("{message}");
    eprintln!("error: {message}");
    std::process::exit(EXIT_USAGE)
}

/// Raises the soft limit on open files to the hard limit: every proxied connection costs
/// two descriptors, and the usual soft limit of 1024 would cap the proxy at ~500 clients.
/// Returns the limit now in force, if it could be read.
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            tracing::debug!(limit, "open-file limit");
            Some(limit)
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// `--metrics-listen`: the admin endpoint's socket, bound at start-up so that an address
/// that cannot be had is a usage error (exit 2) before anything runs. Serve it with
/// [`crate::proxy::admin::spawn`].
pub fn bind_metrics(addr: &str) -> std::net::TcpListener {
    std::net::TcpListener::bind(addr)
        .unwrap_or_else(|e| exit_usage(format_args!("cannot listen on {addr} for metrics: {e}")))
}

//! SIGHUP: re-read the `--config` file under the same command line and swap in its routes.
//!
//! Nothing is applied unless all of it is valid, and a reload never falls back to a
//! built-in default for a setting the running configuration took from the file (a
//! truncated file must not silently reroute everything). The file is read on a blocking
//! thread with a timeout, so a path that blocks (a FIFO, a hung mount) never stalls the
//! runtime that serves connections.

use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{error, info, warn};

use super::{resolve, ConfigError, ProxyArgs, Source};
use crate::proxy::metrics::{Metrics, ResultLabels};
use crate::proxy::{ProxyConfig, RouteTable};

/// How long reading and checking the file may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Reloader {
    argv: Vec<OsString>,
    /// What the process started with: settings that shape sockets and threads.
    started: ProxyArgs,
    /// The configuration last applied.
    applied: Mutex<ProxyArgs>,
    routes: Arc<RouteTable>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    /// `argv` is the command line the process started with; `config` what it serves with.
    pub fn new(argv: Vec<OsString>, started: ProxyArgs, config: &ProxyConfig) -> Self {
        Reloader {
            argv,
            applied: Mutex::new(started.clone()),
            started,
            routes: Arc::clone(&config.routes),
            metrics: Arc::clone(&config.metrics),
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        if result == "ok" {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            let now = now.map_or(0, |d| d.as_secs() as i64);
            self.metrics.last_reload_success.set(now);
        }
    }

    /// One reload. The new routes are in force before "reloaded" is logged; a refusal is
    /// logged with what is wrong and leaves everything as it was.
    pub async fn reload(&self) -> Result<(), ConfigError> {
        let Some(path) = self.started.config.clone() else {
            info!("SIGHUP: no --config file, nothing to reload; serving on");
            return Ok(());
        };
        let argv = self.argv.clone();
        let read = tokio::task::spawn_blocking(move || resolve(&argv));
        let new = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(resolved)) => resolved,
            Ok(Err(panicked)) => Err(ConfigError::Read {
                path,
                message: panicked.to_string(),
            }),
            Err(_) => Err(ConfigError::Read {
                path,
                message: format!("not read within {} s", READ_TIMEOUT.as_secs()),
            }),
        }
        .and_then(|new| self.no_fallback_to_defaults(new));
        let new = match new {
            Ok(new) => new,
            Err(e) => {
                self.count("rejected");
                error!(error = %e, "reload rejected; keeping the current configuration");
                return Err(e);
            }
        };
        self.routes.replace(new.routes());
        self.count("ok");
        info!(zmq_backend = %new.zmq_backend, grpc_backend = %new.grpc_backend,
              fallback_backend = new.fallback_backend.as_ref().map_or(String::new(), |b| b.to_string()),
              tls_rules = new.tls_routes.len(),
              "reloaded: new connections use the new routes");
        for change in self.started.needs_restart(&new) {
            warn!(%change, "not applied until restart");
        }
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(())
    }

    /// Refuses a file that lacks a setting the applied configuration took from the file.
    fn no_fallback_to_defaults(&self, new: ProxyArgs) -> Result<ProxyArgs, ConfigError> {
        let applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let missing: Vec<&str> = applied
            .sources
            .iter()
            .filter(|(key, source)| {
                **source == Source::File && new.sources.get(*key) != Some(&Source::File)
            })
            .map(|(key, _)| key.as_str())
            .collect();
        if missing.is_empty() {
            return Ok(new);
        }
        Err(ConfigError::Invalid {
            path: new.config.clone().unwrap_or_default(),
            key: missing.join("`, `"),
            message: "missing from the file but set by it in the running configuration; \
                      a reload never falls back to built-in defaults (put it back, or \
                      restart to drop it)"
                .into(),
        })
    }

    /// Reloads on every SIGHUP. The handler is installed by this call, before the proxy
    /// serves: an early SIGHUP must not meet the default action (terminate).
    pub fn on_sighup(self) -> std::io::Result<impl std::future::Future<Output = ()>> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        Ok(async move {
            while hangups.recv().await.is_some() {
                let _ = self.reload().await;
            }
        })
    }
}

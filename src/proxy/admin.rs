//! The admin endpoint: `/metrics` (Prometheus text), `/healthz` (the process is up) and
//! `/readyz` (listening and not draining), served with axum's router over hyper. It serves
//! any [`Exposition`]: the proxy's [`Metrics`] (also the mux's, in grpc_server), or another
//! program's registry (zmq_bridge).
//!
//! It shares the process with the data port, so it is kept on a short leash: at most
//! [`MAX_CONNECTIONS`] at once (more are closed at accept), and each connection lives at
//! most [`CONNECTION_TIMEOUT`]. An admin client can never use up the descriptors the proxy
//! needs for its real traffic.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info};

use super::metrics::Metrics;

/// What the endpoint serves: metrics text, and whether the program is ready.
pub trait Exposition: Send + Sync + 'static {
    /// The OpenMetrics text of every metric.
    fn encode(&self) -> String;
    /// What `/readyz` reports.
    fn is_ready(&self) -> bool;
}

impl Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }

    fn is_ready(&self) -> bool {
        Metrics::is_ready(self)
    }
}

/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// How long one admin connection may stay open, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint's routes, for serving or for testing with `tower::ServiceExt::oneshot`.
pub fn router<E: Exposition>(metrics: Arc<E>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text::<E>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready::<E>))
        .with_state(metrics)
}

async fn metrics_text<E: Exposition>(State(metrics): State<Arc<E>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn ready<E: Exposition>(State(metrics): State<Arc<E>>) -> impl IntoResponse {
    match metrics.is_ready() {
        true => (StatusCode::OK, "ready\n"),
        false => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
    }
}

/// Serves the endpoint on `listener` for as long as the process runs, so that `/readyz`
/// can report a drain to its end. Call it within a tokio runtime.
pub fn spawn<E: Exposition>(
    listener: std::net::TcpListener,
    metrics: Arc<E>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    tokio::spawn(run(listener, metrics, std::future::pending()));
    Ok(())
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown` resolves.
pub async fn run<E: Exposition>(
    listener: TcpListener,
    metrics: Arc<E>,
    shutdown: impl Future<Output = ()>,
) {
    let service = TowerToHyperService::new(router(metrics));
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    if let Ok(addr) = listener.local_addr() {
        info!(metrics_addr = %addr, "serving /metrics, /healthz, /readyz");
    }
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!("admin connection refused: at the admin connection limit");
            continue;
        };
        let service = service.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CONNECTION_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
            drop(slot);
        });
    }
}

//! The gRPC load client: `concurrency` workers share one HTTP/2 connection, each sending
//! its own numbered stream of [`Message`](crate::pb::Message)s (sender `NAME/w`), by unary calls or over one
//! client-streaming call, and the run ends with sent / acknowledged / failed counts. Unary
//! runs also report latency percentiles, one sample per call; a streaming run reports how
//! many streams carried the messages instead, since the only time it can measure is each
//! stream's whole life, which says nothing about per-message latency.

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tracing::{info, warn};

use crate::pb::ingest_client::IngestClient;
use crate::peers::message::build;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CallMode {
    /// One `Send` call per message; latency is per call.
    Unary,
    /// One `SendStream` call per worker carrying all its messages; no per-message latency.
    Stream,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server URL, e.g. `http://127.0.0.1:7000`.
    pub connect: String,
    /// Messages in total across workers; `None` sends until stopped.
    pub count: Option<u64>,
    /// Workers sending at once over the shared connection.
    pub concurrency: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Pause between messages, per worker.
    pub interval: Duration,
    /// Sender name; worker `w` sends as `NAME/w` when there is more than one.
    pub sender: String,
    pub mode: CallMode,
    /// Deadline per unary call, and for establishing the connection.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server URL `{url}`: {source}")]
    Url {
        url: String,
        source: tonic::transport::Error,
    },
}

/// What a run achieved.
#[derive(Debug, Clone)]
pub struct Report {
    /// Which summary the run prints: latency percentiles (unary) or stream counts (stream).
    pub mode: CallMode,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    /// `SendStream` calls opened (stream mode; 0 in unary mode).
    pub streams: u64,
    /// Round-trip times in microseconds, one per acknowledged unary call; empty in stream
    /// mode.
    pub latency_us: Histogram<u64>,
    pub elapsed: Duration,
    /// The first failure, verbatim, to show the user what went wrong.
    pub first_error: Option<String>,
}

impl Report {
    fn new(mode: CallMode) -> Self {
        Report {
            mode,
            sent: 0,
            acked: 0,
            failed: 0,
            streams: 0,
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
            elapsed: Duration::ZERO,
            first_error: None,
        }
    }

    fn fail(&mut self, n: u64, error: String) {
        self.failed += n;
        warn!(%error, "RPC failed");
        self.first_error.get_or_insert(error);
    }

    fn merge(&mut self, other: Report) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.failed += other.failed;
        self.streams += other.streams;
        let _ = self.latency_us.add(&other.latency_us);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

impl std::fmt::Display for Report {
    /// The summary line. Unary: `sent acked failed p50_ms p90_ms p99_ms max_ms elapsed_s
    /// rate_per_s` (a contract: scripts parse it). Stream: `sent acked failed streams
    /// elapsed_s rate_per_s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.acked as f64 / secs
        } else {
            0.0
        };
        write!(
            f,
            "sent={} acked={} failed={} ",
            self.sent, self.acked, self.failed
        )?;
        match self.mode {
            CallMode::Unary => {
                let ms = |q: f64| self.latency_us.value_at_quantile(q) as f64 / 1000.0;
                write!(
                    f,
                    "p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3} ",
                    ms(0.5),
                    ms(0.9),
                    ms(0.99),
                    self.latency_us.max() as f64 / 1000.0,
                )?;
            }
            CallMode::Stream => write!(f, "streams={} ", self.streams)?,
        }
        write!(f, "elapsed_s={secs:.3} rate_per_s={rate:.1}")
    }
}

/// Runs the load until `config.count` messages were sent or `shutdown` resolves.
pub async fn run(
    config: ClientConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Report, ClientError> {
    let endpoint =
        Endpoint::from_shared(config.connect.clone()).map_err(|source| ClientError::Url {
            url: config.connect.clone(),
            source,
        })?;
    // Lazy: the first call connects, and a call after a lost connection reconnects, so the
    // client rides out a proxy or server restart instead of dying with it.
    let channel = endpoint
        .connect_timeout(config.timeout)
        .tcp_nodelay(true)
        .connect_lazy();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    info!(server = %config.connect, concurrency = config.concurrency, mode = ?config.mode, "starting");
    let started = Instant::now();
    let workers = config.concurrency.max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let share = config
            .count
            .map(|c| c / workers as u64 + u64::from((w as u64) < c % workers as u64));
        let sender = if workers == 1 {
            config.sender.clone()
        } else {
            format!("{}/{w}", config.sender)
        };
        let client = IngestClient::new(channel.clone())
            .max_decoding_message_size(crate::peers::grpc_server::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::peers::grpc_server::MAX_MESSAGE_BYTES);
        let worker = Worker {
            client,
            sender,
            share,
            config: config.clone(),
            stop: stop_rx.clone(),
        };
        match config.mode {
            CallMode::Unary => tasks.spawn(worker.unary()),
            CallMode::Stream => tasks.spawn(worker.stream()),
        };
    }
    let mut report = Report::new(config.mode);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(r) => report.merge(r),
            Err(e) => report.fail(0, format!("worker panicked: {e}")),
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

struct Worker {
    client: IngestClient<Channel>,
    sender: String,
    share: Option<u64>,
    config: ClientConfig,
    stop: watch::Receiver<bool>,
}

impl Worker {
    fn more(&self, sequence: u64) -> bool {
        self.share.is_none_or(|s| sequence < s) && !*self.stop.borrow()
    }

    /// Waits for the next send slot; false if stopped meanwhile.
    async fn pace(&mut self, next: &mut tokio::time::Instant) -> bool {
        let at = *next;
        *next += self.config.interval;
        tokio::select! {
            _ = tokio::time::sleep_until(at) => true,
            _ = self.stop.wait_for(|stop| *stop) => false,
        }
    }

    async fn unary(mut self) -> Report {
        let mut report = Report::new(CallMode::Unary);
        let mut next = tokio::time::Instant::now();
        let mut sequence = 0;
        while self.more(sequence) && self.pace(&mut next).await {
            let mut request = tonic::Request::new(build(&self.sender, sequence, self.config.size));
            request.set_timeout(self.config.timeout);
            let t0 = Instant::now();
            report.sent += 1;
            match self.client.send(request).await {
                Ok(ack) if ack.get_ref().sequence == sequence => {
                    report.acked += 1;
                    let _ = report.latency_us.record(t0.elapsed().as_micros() as u64);
                    info!(sequence, sender = %self.sender, "acknowledged");
                }
                Ok(ack) => report.fail(
                    1,
                    format!(
                        "ack for sequence {} instead of {sequence}",
                        ack.get_ref().sequence
                    ),
                ),
                Err(status) => report.fail(1, format!("Send #{sequence}: {status}")),
            }
            sequence += 1;
        }
        report
    }

    async fn stream(mut self) -> Report {
        let mut report = Report::new(CallMode::Stream);
        report.streams = 1;
        let (tx, rx) = mpsc::channel(64);
        let mut client = self.client.clone();
        let call = tokio::spawn(async move { client.send_stream(ReceiverStream::new(rx)).await });
        let mut next = tokio::time::Instant::now();
        let mut sequence = 0;
        while self.more(sequence) && self.pace(&mut next).await {
            if tx
                .send(build(&self.sender, sequence, self.config.size))
                .await
                .is_err()
            {
                break; // the call ended early; its status says why
            }
            info!(sequence, sender = %self.sender, "sent on stream");
            report.sent += 1;
            sequence += 1;
        }
        drop(tx);
        match call.await {
            Ok(Ok(summary)) => {
                let received = summary.get_ref().received;
                report.acked += received.min(report.sent);
                if received < report.sent {
                    report.fail(
                        report.sent - received,
                        format!("stream: server received {received} of {}", report.sent),
                    );
                }
            }
            Ok(Err(status)) => report.fail(report.sent, format!("SendStream: {status}")),
            Err(e) => report.fail(report.sent, format!("SendStream task: {e}")),
        }
        report
    }
}

//! The gRPC server: the `Ingest` service from `proto/`, plus the standard health and
//! reflection services so stock tooling (grpcurl, grpc_health_probe) works against it.
//! Served by [`zmq_grpc_proxy::router`] (TCP_NODELAY on every connection, a bounded drain).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info};

use crate::pb::ingest_server::{Ingest, IngestServer};
use crate::pb::{Ack, FetchRequest, Frames, Message, StreamSummary};
use crate::peers::message::{build, classify, Classified, Summary, Tally};

/// Largest message accepted (tonic's default is 4 MiB, which a 4 MiB payload exceeds).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Called with every `Gossip` message before it is acknowledged, so a program that embeds
/// the service (a mesh member) gets the frames; the acknowledgement then means "taken".
#[derive(Clone)]
pub struct GossipSink(Arc<dyn Fn(&Frames) + Send + Sync>);

impl GossipSink {
    pub fn new(f: impl Fn(&Frames) + Send + Sync + 'static) -> Self {
        GossipSink(Arc::new(f))
    }
}

impl std::fmt::Debug for GossipSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GossipSink")
    }
}

/// After SIGINT/SIGTERM, how long in-flight calls may take before they are cancelled.
pub const DEFAULT_DRAIN_TIMEOUT_MS: u64 = 5_000;

/// The `Ingest` service: logs and tallies every message it receives.
#[derive(Debug, Default, Clone)]
pub struct IngestService {
    tally: Arc<Mutex<Tally>>,
    gossip_sink: Option<GossipSink>,
}

impl IngestService {
    /// The service, handing every `Gossip` message to `sink` as well.
    pub fn with_gossip_sink(sink: GossipSink) -> Self {
        IngestService {
            gossip_sink: Some(sink),
            ..Self::default()
        }
    }

    /// Counts one opaque message: ours is verified as if it came through `Send`.
    fn record_frames(&self, frames: &Frames) {
        let size: usize = frames.parts.iter().map(Vec::len).sum();
        match classify(&frames.parts) {
            Classified::Ours(m) => self.record(&m),
            Classified::Foreign => {
                // The address comes from the network: at most 64 characters of it.
                let peer = crate::text::first_chars(&frames.peer_address, 64);
                debug!(parts = frames.parts.len(), size, %peer, "foreign");
                self.tally
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .record_foreign(size);
            }
        }
    }

    fn record(&self, m: &Message) {
        info!(sequence = m.sequence, sender = %m.sender, size = m.payload.len(), "message");
        let wire = prost::Message::encoded_len(m);
        self.tally
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .record(m, wire);
    }

    pub fn summary(&self) -> Summary {
        self.tally
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .summary()
    }
}

type MessageStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Message, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type FetchStream = MessageStream;
    type EchoStream = MessageStream;

    async fn fetch(
        &self,
        request: Request<FetchRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let FetchRequest { count, size } = request.into_inner();
        if size > MAX_MESSAGE_BYTES as u64 / 2 {
            return Err(Status::invalid_argument(format!(
                "size {size} exceeds {} bytes",
                MAX_MESSAGE_BYTES / 2
            )));
        }
        let stream =
            tokio_stream::iter((0..count).map(move |i| Ok(build("grpc_server", i, size as usize))));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn echo(
        &self,
        request: Request<Streaming<Message>>,
    ) -> Result<Response<Self::EchoStream>, Status> {
        Ok(Response::new(Box::pin(request.into_inner())))
    }

    async fn send(&self, request: Request<Message>) -> Result<Response<Ack>, Status> {
        let m = request.into_inner();
        self.record(&m);
        Ok(Response::new(Ack {
            sequence: m.sequence,
        }))
    }

    async fn gossip(&self, request: Request<Frames>) -> Result<Response<Ack>, Status> {
        let frames = request.into_inner();
        self.record_frames(&frames);
        if let Some(sink) = &self.gossip_sink {
            (sink.0)(&frames);
        }
        Ok(Response::new(Ack { sequence: 0 }))
    }

    async fn send_stream(
        &self,
        request: Request<Streaming<Message>>,
    ) -> Result<Response<StreamSummary>, Status> {
        let mut stream = request.into_inner();
        let mut summary = StreamSummary::default();
        while let Some(m) = stream.message().await? {
            self.record(&m);
            summary.received += 1;
            summary.bytes += m.payload.len() as u64;
        }
        Ok(Response::new(summary))
    }
}

/// The service's counts as metrics (`zgp_ingest_*`), read from its tally at every scrape.
#[derive(Debug)]
pub struct IngestCollector(pub IngestService);

impl prometheus_client::collector::Collector for IngestCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use zmq_grpc_proxy::proxy::scrape::encode_counter;
        let s = self.0.summary();
        let e = &mut encoder;
        encode_counter(
            e,
            "ingest_received",
            "Messages of ours received (Send, SendStream, Gossip)",
            s.received,
        )?;
        encode_counter(
            e,
            "ingest_foreign",
            "Gossip messages that are not ours, counted, not interpreted",
            s.foreign,
        )?;
        encode_counter(
            e,
            "ingest_skipped",
            "Sequence numbers jumped over, per sender",
            s.skipped,
        )?;
        encode_counter(
            e,
            "ingest_repeated",
            "Messages below a sequence already seen",
            s.repeated,
        )?;
        encode_counter(
            e,
            "ingest_corrupt",
            "Messages whose payload did not verify",
            s.corrupt,
        )?;
        encode_counter(
            e,
            "ingest_bytes",
            "Bytes of every message received",
            s.bytes,
        )
    }
}

/// The Ingest service plus the standard health and reflection services, ready to serve.
pub async fn router(service: IngestService) -> tonic::transport::server::Router {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IngestServer<IngestService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("descriptor sets embedded at build time are valid");
    // No `.tcp_nodelay(true)`: tonic applies it only to listeners it binds, and every
    // connection here comes from a stream (see `accept`).
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            IngestServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
}

/// Serves Ingest, health and reflection on `listener` until `shutdown` resolves; then
/// closes the port, lets in-flight calls finish for up to `drain_timeout`, cancels the
/// rest and returns.
pub async fn run(
    listener: TcpListener,
    service: IngestService,
    drain_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "listening");
    }
    let router = router(service).await;
    zmq_grpc_proxy::router::run(listener, router, drain_timeout, shutdown).await
}

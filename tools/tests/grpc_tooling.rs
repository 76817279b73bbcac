//! What stock gRPC tooling (grpcurl, grpc_health_probe) relies on: the standard health and
//! reflection services, reached through the proxy with the same protocol clients use.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::Stack;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[tokio::test]
async fn health_and_reflection_answer_through_the_proxy() {
    let stack = Stack::start(None, &[]);
    let channel = tonic::transport::Endpoint::from_shared(stack.grpc_url())
        .unwrap()
        .connect()
        .await
        .expect("connect through the proxy");

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "zgproxy.v1.Ingest"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let response = responses.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in ["zgproxy.v1.Ingest", "grpc.health.v1.Health"] {
        assert!(names.contains(&expected), "{names:?}");
    }
}

//! A real server on port 0 (HTTP and gRPC), the generated tonic clients, and a small JSON client
//! for the REST side.

use std::time::Duration;

use repdist::config::Config;
use repdist::grpc::proto::distribution_query_client::DistributionQueryClient;
use repdist::grpc::proto::reporting_stream_client::ReportingStreamClient;
use repdist::grpc::proto::{self, SubscriptionAction};
use repdist::server::Server;
use repdist::store::Role;
use serde_json::{json, Value};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub struct TestServer {
    pub server: Server,
    pub base: String,
    /// Sends the admin key with every request.
    pub http: reqwest::Client,
    /// The admin key the clients use.
    pub key: String,
    _data_dir: tempfile::TempDir,
}

/// Puts `authorization: Bearer <key>` on every call of a generated client.
#[derive(Clone)]
pub struct Bearer(pub Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(key: &str) -> Bearer {
        Bearer(Some(format!("Bearer {key}").parse().expect("ASCII")))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Reporting = ReportingStreamClient<InterceptedService<Channel, Bearer>>;
pub type Query = DistributionQueryClient<InterceptedService<Channel, Bearer>>;

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_path_buf(),
            allow_private_webhooks: true,
            // Short windows so that a delivery shows up in the stats promptly.
            stats_window: Duration::from_secs(1),
            ..Config::default()
        };
        config.storage.fsync = false;
        adjust(&mut config);
        let server = repdist::server::start(config).await.expect("server starts");
        let base = format!("http://{}", server.http_addr());
        let key = server.local_admin_key().await.expect("an admin key");
        let http = reqwest::Client::builder().default_headers(repdist::auth::client_headers(&key).unwrap()).build().unwrap();
        TestServer { server, base, http, key, _data_dir: data_dir }
    }

    /// A new key for `role` (and `subscriber_id` for a subscriber).
    pub async fn key_for(&self, role: Role, subscriber_id: Option<&str>) -> String {
        self.server.create_key(role, subscriber_id.map(str::to_string)).await.expect("key created").key
    }

    pub fn grpc_target(&self) -> String {
        format!("http://{}", self.server.grpc_addr())
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.grpc_target()).unwrap().connect_timeout(Duration::from_secs(5)).connect().await.expect("gRPC connects")
    }

    /// The ReportingStream client, as admin.
    pub async fn reporting(&self) -> Reporting {
        self.reporting_as(Bearer::new(&self.key)).await
    }

    /// The ReportingStream client with other credentials (`Bearer(None)`: none).
    pub async fn reporting_as(&self, bearer: Bearer) -> Reporting {
        ReportingStreamClient::with_interceptor(self.channel().await, bearer)
    }

    /// The DistributionQuery client, as admin.
    pub async fn query(&self) -> Query {
        self.query_as(Bearer::new(&self.key)).await
    }

    pub async fn query_as(&self, bearer: Bearer) -> Query {
        DistributionQueryClient::with_interceptor(self.channel().await, bearer)
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Publishes a report over REST; returns its delivery ids; panics unless 202.
    pub async fn deliver(&self, body: Value) -> Vec<String> {
        let (status, ack) = self.post("/api/v1/reporting/deliver", &body).await;
        assert_eq!(status, 202, "deliver: {ack}");
        ack["delivery_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }

    /// Creates a subscription over gRPC.
    pub async fn create(&self, subscription: Value) -> proto::Subscription {
        let request = proto::SubscriptionRequest {
            action: SubscriptionAction::Create as i32,
            subscription_id: String::new(),
            subscription_json: subscription.to_string(),
        };
        let response = self.reporting().await.manage_subscription(request).await.expect("CREATE succeeds");
        response.into_inner().subscription.expect("the stored subscription")
    }

    /// Waits until the delivery reaches `state`, asking over gRPC, or panics after 10 s.
    pub async fn wait_for_state(&self, delivery_id: &str, state: &str) -> proto::DeliveryStatus {
        let mut client = self.reporting().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let request = proto::DeliveryStatusRequest { delivery_id: delivery_id.to_string() };
            if let Ok(status) = client.get_delivery_status(request).await {
                let status = status.into_inner();
                if status.status == state {
                    return status;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "delivery {delivery_id} never reached {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn dashboard_subscription(id: &str, subscriber: &str) -> Value {
    json!({
        "subscription_id": id,
        "subscriber_id": subscriber,
        "report_types": ["PERFORMANCE_REPORT"],
        "delivery_preferences": {"channels": ["DASHBOARD_NOTIFICATION"], "notification_settings": {"dashboard": {}}}
    })
}

/// The same report fixture as the end-to-end suite's.
pub use crate::it_helpers::report;

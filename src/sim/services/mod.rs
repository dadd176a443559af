//! The simulated apps and the services the daemon talks to: a Prometheus-compatible query API,
//! a Datadog-compatible metrics API, the PagerDuty Events API v2 and a Slack incoming webhook.
//!
//! CONTRACT (the runner relies on exactly these signatures).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::behaviour::Behaviours;
use super::scenario::{ProviderState, SinkState};

/// What the services need to know of the cluster.
pub trait ClusterView: Send + Sync + 'static {
    /// Ready pods of a Deployment by version.
    fn ready_pods_by_version(&self, namespace: &str, name: &str) -> Vec<(String, u32)>;
    /// Every Deployment as (namespace, name).
    fn deployments(&self) -> Vec<(String, String)>;
}

/// The simulated apps: `/apps/{namespace}/{name}/health`, `/apps/{namespace}/{name}/{path}`
/// (smoke routes) and `/metrics` (`http_requests_total{namespace,deployment,version,code}`),
/// with request and error counters that grow with each version's rps and ready pods.
#[derive(Clone)]
pub struct Apps {}

impl Apps {
    pub fn new(_behaviours: Behaviours, _cluster: Arc<dyn ClusterView>) -> Self {
        unimplemented!()
    }
    pub async fn start(&self, _shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        unimplemented!()
    }
}

/// A Prometheus-compatible `/api/v1/query` over the apps' counters.
#[derive(Clone)]
pub struct PrometheusSim {}

impl PrometheusSim {
    pub fn new(_apps: &Apps) -> Self {
        unimplemented!()
    }
    pub async fn start(&self, _shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        unimplemented!()
    }
    pub fn set_state(&self, _state: ProviderState) {
        unimplemented!()
    }
}

/// A Datadog-compatible metrics query API over the apps' counters.
#[derive(Clone)]
pub struct DatadogSim {}

impl DatadogSim {
    pub fn new(_apps: &Apps) -> Self {
        unimplemented!()
    }
    pub async fn start(&self, _shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        unimplemented!()
    }
    pub fn set_state(&self, _state: ProviderState) {
        unimplemented!()
    }
}

/// One request a sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// The HTTP status it answered.
    pub status: u16,
    pub body: serde_json::Value,
}

/// PagerDuty Events API v2: `POST /v2/enqueue`.
#[derive(Clone)]
pub struct PagerDutySim {}

impl PagerDutySim {
    pub fn new() -> Self {
        unimplemented!()
    }
    pub async fn start(&self, _shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        unimplemented!()
    }
    pub fn set_state(&self, _state: SinkState) {
        unimplemented!()
    }
    /// Every request received, accepted or not, in order.
    pub fn received(&self) -> Vec<Received> {
        unimplemented!()
    }
}

/// A Slack incoming webhook: `POST /services/...`.
#[derive(Clone)]
pub struct SlackSim {}

impl SlackSim {
    pub fn new() -> Self {
        unimplemented!()
    }
    pub async fn start(&self, _shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        unimplemented!()
    }
    pub fn set_state(&self, _state: SinkState) {
        unimplemented!()
    }
    pub fn received(&self) -> Vec<Received> {
        unimplemented!()
    }
}

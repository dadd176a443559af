//! The simulated Kubernetes control plane: an API server subset over HTTP and a deployment
//! controller with pods whose states follow the app behaviours.
//!
//! CONTRACT (the runner, the services and the tests rely on exactly these signatures).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::behaviour::Behaviours;
use super::scenario::{ApiState, DeploymentSpec};

/// Label that opts a Deployment in (the daemon's default selector).
pub const OPT_IN_LABEL: (&str, &str) = ("deploy-watchdog.io/enabled", "true");

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("deployment {namespace}/{name} does not exist")]
    NoSuchDeployment { namespace: String, name: String },
}

/// An HTTP PATCH (or PUT/POST) that changed a Deployment's pod template: a rollback or a deploy
/// made through the API (not through the runner's own calls).
#[derive(Debug, Clone)]
pub struct TemplateChange {
    pub at: Instant,
    pub namespace: String,
    pub name: String,
    pub user_agent: String,
}

/// The simulated control plane. Cheap to clone; every clone is the same cluster.
#[derive(Clone)]
pub struct SimCluster {}

impl SimCluster {
    pub fn new(_behaviours: Behaviours) -> Self {
        unimplemented!()
    }

    /// Serves the API on 127.0.0.1 (an ephemeral port) and runs the controller until `shutdown`.
    pub async fn start(&self, _shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        unimplemented!()
    }

    /// Creates a Deployment that is already rolled out and healthy at revision 1.
    pub fn add_deployment(&self, _spec: &DeploymentSpec) {
        unimplemented!()
    }

    /// Changes the pod template to `version`: image tag and `app.kubernetes.io/version` label.
    pub fn deploy(&self, _namespace: &str, _name: &str, _version: &str) -> Result<(), SimError> {
        unimplemented!()
    }

    pub fn scale(&self, _namespace: &str, _name: &str, _replicas: i32) -> Result<(), SimError> {
        unimplemented!()
    }

    pub fn set_paused(&self, _namespace: &str, _name: &str, _paused: bool) -> Result<(), SimError> {
        unimplemented!()
    }

    pub fn delete(&self, _namespace: &str, _name: &str) -> Result<(), SimError> {
        unimplemented!()
    }

    pub fn set_api_state(&self, _state: ApiState) {
        unimplemented!()
    }

    /// Re-evaluates pods after a behaviour changed.
    pub fn behaviours_changed(&self) {
        unimplemented!()
    }

    /// Ready pods of a Deployment by version (the pods' `app.kubernetes.io/version` label).
    pub fn ready_pods_by_version(&self, _namespace: &str, _name: &str) -> Vec<(String, u32)> {
        unimplemented!()
    }

    /// Every Deployment as (namespace, name).
    pub fn deployments(&self) -> Vec<(String, String)> {
        unimplemented!()
    }

    /// The version of a Deployment's current pod template.
    pub fn current_version(&self, _namespace: &str, _name: &str) -> Option<String> {
        unimplemented!()
    }

    /// Template changes made through the API, in order.
    pub fn template_changes(&self) -> Vec<TemplateChange> {
        unimplemented!()
    }

    /// Events created through the API (either group), as events.k8s.io/v1 JSON, in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        unimplemented!()
    }

    /// Requests served, by "VERB resource" (e.g. "WATCH deployments", "PATCH deployments").
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        unimplemented!()
    }
}

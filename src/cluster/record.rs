//! Recording decisions on the cluster: the state annotation on the Deployment (what a new
//! process needs to resume a watch) and a Kubernetes Event per decision.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::judge::Reason;

/// JSON [`RolloutState`] of the last rollout the watchdog judged.
pub const STATE_ANNOTATION: &str = "deploy-watchdog.io/state";
/// The last verdict, for people: `kubectl get deploy -o yaml` shows it.
pub const VERDICT_ANNOTATION: &str = "deploy-watchdog.io/verdict";
/// The revision whose page PagerDuty accepted: a page still owed is sent again after a restart.
pub const PAGE_DELIVERED_ANNOTATION: &str = "deploy-watchdog.io/page-delivered";
/// Event annotations the scenario runner and tools read.
pub const EVENT_REVISION: &str = "deploy-watchdog.io/revision";
pub const EVENT_OUTCOME: &str = "deploy-watchdog.io/outcome";
pub const EVENT_REASON: &str = "deploy-watchdog.io/reason";
pub const EVENT_FROM_VERSION: &str = "deploy-watchdog.io/from-version";
pub const EVENT_TO_VERSION: &str = "deploy-watchdog.io/to-version";
pub const CONTROLLER: &str = "deploy-watchdog.io/deploy-watchdog";

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a rollout ended (DESIGN.md's outcomes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    RolledBack,
    WouldRollBack,
    Degraded,
    RollbackFailed,
    Superseded,
    Deleted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::RolledBack => "rolled_back",
            Outcome::WouldRollBack => "would_roll_back",
            Outcome::Degraded => "degraded",
            Outcome::RollbackFailed => "rollback_failed",
            Outcome::Superseded => "superseded",
            Outcome::Deleted => "deleted",
        }
    }
}

/// What a new process needs to resume a rollout's watch exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub revision: i64,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub detected_at: jiff::Timestamp,
    /// Set once decided; a rollout with an outcome is not judged again.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub reason: Option<Reason>,
    /// Set with the rollback patch: the restored template's fingerprint, so the revision the
    /// rollback creates is never judged as a new rollout.
    #[serde(default)]
    pub rollback_fingerprint: Option<String>,
    /// The rollback was verified (or found failed): nothing is left to do.
    #[serde(default)]
    pub settled: bool,
    /// The message of the decision that paged, so a new process can page again if the
    /// previous one died before PagerDuty accepted it (the dedup key makes a repeat harmless).
    #[serde(default)]
    pub detail: Option<String>,
    /// When the rollout completed and the watch window began.
    #[serde(default)]
    pub window_started_at: Option<jiff::Timestamp>,
    /// The fingerprint of the pod template judged: a rollback is sent only while the Deployment
    /// still runs it, and once rolled back, a revision that brings it back again (someone's
    /// `kubectl rollout undo` after ours) is not fought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_template: Option<String>,
}

impl RolloutState {
    /// Whether the Deployment runs the template this rollout's rollback restored.
    pub fn restored_on(&self, d: &Deployment) -> bool {
        super::rollout::runs_template(d, self.rollback_fingerprint.as_deref())
    }

    /// Whether this rollout's outcome calls for a page that PagerDuty has not yet accepted.
    pub fn page_owed(&self, d: &Deployment) -> bool {
        let pages = matches!(
            self.outcome,
            Some(
                Outcome::RolledBack
                    | Outcome::RollbackFailed
                    | Outcome::WouldRollBack
                    | Outcome::Degraded
            )
        ) && self.detail.is_some();
        let delivered = d
            .annotations()
            .get(PAGE_DELIVERED_ANNOTATION)
            .and_then(|r| r.parse::<i64>().ok());
        pages && delivered != Some(self.revision)
    }

    /// Whether this rollout was rolled back and the Deployment runs its judged template again:
    /// someone undid the rollback.
    pub fn rolled_back_template_on(&self, d: &Deployment) -> bool {
        self.outcome == Some(Outcome::RolledBack)
            && super::rollout::runs_template(d, self.judged_template.as_deref())
    }

    pub fn from_deployment(d: &Deployment) -> Option<RolloutState> {
        serde_json::from_str(d.annotations().get(STATE_ANNOTATION)?).ok()
    }

    /// The annotations that carry this state.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([(
            STATE_ANNOTATION.to_string(),
            serde_json::to_string(self).unwrap_or_default(),
        )]);
        if let Some(o) = self.outcome {
            a.insert(VERDICT_ANNOTATION.to_string(), o.as_str().to_string());
        }
        a
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("patching annotations of deployment {namespace}/{name}: {source}")]
    PatchDeployment {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("creating an event on deployment {namespace}/{name}: {source}")]
    CreateEvent {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("{what} on deployment {namespace}/{name}: no answer within {CALL_TIMEOUT:?}")]
    Timeout {
        what: &'static str,
        namespace: String,
        name: String,
    },
}

impl RecordError {
    pub fn category(&self) -> &'static str {
        match self {
            RecordError::PatchDeployment { .. } => "patch_deployment",
            RecordError::CreateEvent { .. } => "create_event",
            RecordError::Timeout { .. } => "timeout",
        }
    }
}

/// One decision, as an Event.
#[derive(Debug, Clone)]
pub struct Decision {
    pub warning: bool,
    /// CamelCase Event reason, e.g. `RolledBack`.
    pub event_reason: &'static str,
    pub action: &'static str,
    pub note: String,
    pub revision: i64,
    pub outcome: Option<Outcome>,
    pub reason: Option<Reason>,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
}

/// Writes annotations and Events. Every call is bounded by a timeout.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    instance: String,
}

impl Recorder {
    pub fn new(client: Client, instance: String) -> Recorder {
        Recorder { client, instance }
    }

    /// Merges `annotations` into the Deployment's.
    pub async fn annotate(
        &self,
        namespace: &str,
        name: &str,
        annotations: &BTreeMap<String, String>,
    ) -> Result<(), RecordError> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        match tokio::time::timeout(CALL_TIMEOUT, api.patch(name, &params, &patch)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(RecordError::PatchDeployment {
                namespace: namespace.into(),
                name: name.into(),
                source,
            }),
            Err(_) => Err(RecordError::Timeout {
                what: "patching annotations",
                namespace: namespace.into(),
                name: name.into(),
            }),
        }
    }

    /// Creates an events.k8s.io/v1 Event regarding the Deployment.
    pub async fn event(
        &self,
        deployment: &ObjectReference,
        d: &Decision,
    ) -> Result<(), RecordError> {
        let namespace = deployment.namespace.clone().unwrap_or_default();
        let name = deployment.name.clone().unwrap_or_default();
        let mut annotations =
            BTreeMap::from([(EVENT_REVISION.to_string(), d.revision.to_string())]);
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                annotations.insert(k.to_string(), v.to_string());
            }
        };
        put(EVENT_OUTCOME, d.outcome.map(Outcome::as_str));
        put(EVENT_REASON, d.reason.map(Reason::as_str));
        put(EVENT_FROM_VERSION, d.from_version.as_deref());
        put(EVENT_TO_VERSION, d.to_version.as_deref());
        let now = jiff::Timestamp::now();
        let event = Event {
            metadata: ObjectMeta {
                // Kubernetes names events `<object>.<unique suffix>`.
                generate_name: Some(format!("{name}.")),
                namespace: Some(namespace.clone()),
                annotations: Some(annotations),
                ..Default::default()
            },
            action: Some(d.action.into()),
            event_time: Some(MicroTime(now)),
            note: Some(truncate(&d.note, 1024)),
            reason: Some(d.event_reason.into()),
            regarding: Some(deployment.clone()),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(if d.warning { "Warning" } else { "Normal" }.into()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match tokio::time::timeout(CALL_TIMEOUT, api.create(&PostParams::default(), &event)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(RecordError::CreateEvent {
                namespace,
                name,
                source,
            }),
            Err(_) => Err(RecordError::Timeout {
                what: "creating an event",
                namespace,
                name,
            }),
        }
    }
}

/// A reference to a Deployment for Events.
pub fn reference(d: &Deployment) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: d.metadata.name.clone(),
        namespace: d.metadata.namespace.clone(),
        uid: d.metadata.uid.clone(),
        resource_version: d.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(1);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

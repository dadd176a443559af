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
/// A short ASCII digest of the state annotation: what the rollback's JSON-patch `test` compares.
/// The API server compares strings byte for byte against its own Go encoding, which
/// HTML-escapes `<`, `>` and `&`, so the state itself (free text in `detail`) cannot be tested.
pub const STATE_DIGEST_ANNOTATION: &str = "deploy-watchdog.io/state-digest";
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
/// The API server refuses an Event whose note is longer than this many bytes (422).
pub const NOTE_LIMIT: usize = 1024;
/// … or whose `reportingInstance` is longer than this many bytes.
pub const REPORTING_INSTANCE_LIMIT: usize = 128;

/// How a rollout ended (README, "How it decides").
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
        let state = serde_json::to_string(self).unwrap_or_default();
        let mut a = BTreeMap::from([
            (STATE_DIGEST_ANNOTATION.to_string(), digest(&state)),
            (STATE_ANNOTATION.to_string(), state),
        ]);
        if let Some(o) = self.outcome {
            a.insert(VERDICT_ANNOTATION.to_string(), o.as_str().to_string());
        }
        a
    }
}

/// FNV-1a 64 of `text`, in hex: stable across processes and versions.
pub fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Whether the API server's Go encoding of `s` is the same bytes as ours, so a JSON-patch
/// `test` against it can match: nothing Go escapes and we do not.
pub fn go_encodes_alike(s: &str) -> bool {
    !s.contains(['<', '>', '&', '\u{2028}', '\u{2029}', '\u{8}', '\u{c}'])
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
            note: Some(truncate(&d.note, NOTE_LIMIT)),
            reason: Some(d.event_reason.into()),
            regarding: Some(deployment.clone()),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(truncate_exact(&self.instance, REPORTING_INSTANCE_LIMIT)),
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

/// At most `max` bytes, the ellipsis that marks a cut included.
pub fn truncate(s: &str, max: usize) -> String {
    const MORE: &str = "…";
    if s.len() <= max {
        return s.to_string();
    }
    format!(
        "{}{MORE}",
        truncate_exact(s, max.saturating_sub(MORE.len()))
    )
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_exact(s: &str, max: usize) -> String {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_note_fits_the_api_servers_limit_to_the_byte() {
        for len in [1023, 1024, 1025, 1026, 5000] {
            for fill in ["x", "é", "€", "😀"] {
                let note = fill.repeat(len);
                let cut = truncate(&note, NOTE_LIMIT);
                assert!(
                    cut.len() <= NOTE_LIMIT,
                    "{len} × {fill}: {} bytes",
                    cut.len()
                );
                if note.len() > NOTE_LIMIT {
                    assert!(cut.ends_with('…'));
                    assert!(cut.len() > NOTE_LIMIT - 8, "cut too short: {}", cut.len());
                } else {
                    assert_eq!(cut, note);
                }
            }
        }
    }

    #[test]
    fn the_state_digest_is_ascii_and_follows_the_state() {
        let mut state = RolloutState {
            revision: 2,
            from_version: None,
            to_version: None,
            detected_at: jiff::Timestamp::UNIX_EPOCH,
            outcome: None,
            reason: None,
            rollback_fingerprint: None,
            settled: false,
            detail: Some("error rate 3.4 % > 1 % & rising <fast>".into()),
            window_started_at: None,
            judged_template: None,
        };
        let a = state.annotations();
        let d = &a[STATE_DIGEST_ANNOTATION];
        assert!(go_encodes_alike(d) && d.is_ascii() && d.len() == 16);
        assert!(!go_encodes_alike(&a[STATE_ANNOTATION]));
        state.settled = true;
        assert_ne!(&state.annotations()[STATE_DIGEST_ANNOTATION], d);
    }
}

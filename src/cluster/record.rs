//! Recording decisions on the cluster: the state annotation on the Deployment (what a new
//! process needs to resume a watch) and a Kubernetes Event per decision.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

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
/// The rollout's [`Phase`] after the decision, as JSON.
pub const EVENT_PHASE: &str = "deploy-watchdog.io/phase";
pub const CONTROLLER: &str = "deploy-watchdog.io/deploy-watchdog";

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The API server refuses an Event whose note is longer than this many bytes (422).
pub const NOTE_LIMIT: usize = 1024;
/// … or whose `reportingInstance` is longer than this many bytes.
pub const REPORTING_INSTANCE_LIMIT: usize = 128;

mod state;

pub use crate::phase::Outcome;
use crate::phase::Phase;
pub use state::{RolloutState, STATE_VERSION};

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

/// Why an Event about a rollout was written: its `reason`, and whether it is a Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventReason {
    RolloutDetected,
    VersionLabelStale,
    PeakHours,
    BadAnnotation,
    /// A check failed on the previous version too: left out of the verdict.
    CheckUnusable,
    RolloutPaused,
    RolloutResumed,
    WindowStarted,
    Degraded,
    RolloutPassed,
    RolloutSuperseded,
    RolloutDeleted,
    RolledBack,
    WouldRollBack,
    RollbackFailed,
    RollbackVerified,
    RollbackUndone,
    PageRejected,
    /// A session stopped on an internal error; it resumes from the recorded state.
    SessionPanicked,
    /// A GitOps owner's sync was paused before the rollback.
    GitOpsPaused,
    /// The owner named on the Deployment does not re-apply it (no automated sync, suspended).
    GitOpsOwnerInactive,
    /// The rollback was withheld: the owner (or one above it) would undo it.
    GitOpsNotRolledBack,
    /// The paused sync and the rollback held through the owner's next sync.
    GitOpsPauseHeld,
    /// The pause or the rollback did not hold.
    GitOpsPauseLost,
    /// The owner's sync was restored as it was.
    GitOpsResumed,
}

impl EventReason {
    /// The Event's `reason`: CamelCase, as Kubernetes writes them.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::RolloutDetected => "RolloutDetected",
            EventReason::VersionLabelStale => "VersionLabelStale",
            EventReason::PeakHours => "PeakHours",
            EventReason::BadAnnotation => "BadAnnotation",
            EventReason::CheckUnusable => "CheckUnusable",
            EventReason::RolloutPaused => "RolloutPaused",
            EventReason::RolloutResumed => "RolloutResumed",
            EventReason::WindowStarted => "WindowStarted",
            EventReason::Degraded => "Degraded",
            EventReason::RolloutPassed => "RolloutPassed",
            EventReason::RolloutSuperseded => "RolloutSuperseded",
            EventReason::RolloutDeleted => "RolloutDeleted",
            EventReason::RolledBack => "RolledBack",
            EventReason::WouldRollBack => "WouldRollBack",
            EventReason::RollbackFailed => "RollbackFailed",
            EventReason::RollbackVerified => "RollbackVerified",
            EventReason::RollbackUndone => "RollbackUndone",
            EventReason::PageRejected => "PageRejected",
            EventReason::SessionPanicked => "SessionPanicked",
            EventReason::GitOpsPaused => "GitOpsPaused",
            EventReason::GitOpsOwnerInactive => "GitOpsOwnerInactive",
            EventReason::GitOpsNotRolledBack => "GitOpsNotRolledBack",
            EventReason::GitOpsPauseHeld => "GitOpsPauseHeld",
            EventReason::GitOpsPauseLost => "GitOpsPauseLost",
            EventReason::GitOpsResumed => "GitOpsResumed",
        }
    }

    /// Whether the Event is a Warning (something people should look at) or Normal.
    pub fn is_warning(self) -> bool {
        !matches!(
            self,
            EventReason::RolloutDetected
                | EventReason::RolloutPaused
                | EventReason::RolloutResumed
                | EventReason::WindowStarted
                | EventReason::RolloutPassed
                | EventReason::RolloutSuperseded
                | EventReason::RolloutDeleted
                | EventReason::RollbackVerified
                | EventReason::GitOpsPaused
                | EventReason::GitOpsPauseHeld
                | EventReason::GitOpsResumed
        )
    }
}

/// What the watchdog did, as the Event's `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAction {
    Watch,
    Configure,
    Page,
    Finish,
    Pass,
    Stop,
    RollBack,
    Verify,
    Ignore,
    /// Pausing or resuming a GitOps owner's sync.
    GitOps,
    /// Restarting a session.
    Restart,
}

impl EventAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Watch => "Watch",
            EventAction::Configure => "Configure",
            EventAction::Page => "Page",
            EventAction::Finish => "Finish",
            EventAction::Pass => "Pass",
            EventAction::Stop => "Stop",
            EventAction::RollBack => "RollBack",
            EventAction::Verify => "Verify",
            EventAction::Ignore => "Ignore",
            EventAction::GitOps => "GitOps",
            EventAction::Restart => "Restart",
        }
    }
}

/// One decision, as an Event.
#[derive(Debug, Clone)]
pub struct Decision {
    pub event_reason: EventReason,
    pub action: EventAction,
    pub note: String,
    pub revision: i64,
    /// The rollout's phase once this was decided: written on the Event (as JSON), so a reader
    /// knows where the rollout stood without reading the note.
    pub phase: Option<Phase>,
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
        let outcome = d.phase.as_ref().and_then(Phase::outcome);
        put(EVENT_OUTCOME, outcome.map(Outcome::as_str));
        put(EVENT_REASON, d.reason.map(Reason::as_str));
        let phase = d.phase.as_ref().and_then(|p| serde_json::to_string(p).ok());
        put(EVENT_PHASE, phase.as_deref());
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
            action: Some(d.action.as_str().into()),
            event_time: Some(MicroTime(now)),
            note: Some(truncate(&d.note, NOTE_LIMIT)),
            reason: Some(d.event_reason.as_str().into()),
            regarding: Some(deployment.clone()),
            reporting_controller: Some(CONTROLLER.into()),
            reporting_instance: Some(truncate_exact(&self.instance, REPORTING_INSTANCE_LIMIT)),
            type_: Some(
                if d.event_reason.is_warning() {
                    "Warning"
                } else {
                    "Normal"
                }
                .into(),
            ),
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
}

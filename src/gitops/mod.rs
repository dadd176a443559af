//! Rollbacks that stick under Argo CD and Flux: find the Deployment's GitOps owner, pause its
//! sync before the rollback (narrowest first), check the pause held, and resume the sync exactly
//! as it was once Git moves on. A plain `kubectl rollout undo` of a Deployment under automated
//! sync is re-applied seconds later; the watchdog would then judge the same bad release again
//! and roll it back again, forever.
//!
//! The session calls [`prepare`] before it rolls back and [`keep`] after; everything else here
//! is the reading and writing of the owner objects. The decisions are in [`owner`] (pure).
//!
//! Here: the errors and what a pause is. The calls to the API server are in `api`, the pause
//! before a rollback in `pause`, the pause kept, resumed and recorded after it in `resume`, what
//! the owner's controller does to a pause in `undo`.

mod api;
pub mod config;
pub mod keep;
pub mod owner;
mod pause;
mod resume;
mod undo;

use serde_json::Value;

pub use api::get;
pub use config::{GitopsConfig, GitopsMode};
pub use owner::{FoundBy, Method, Owner, OwnerKind, PauseRecord};
pub use pause::prepare;
pub use resume::{Now, forget, mark_checked, now, pause_again, recorded_pause, resume};
pub use undo::{sync_period, why_lost};

/// Every call to the API server here is bounded.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GitopsError {
    #[error("the {plural}.{group} CRD is not installed")]
    CrdAbsent {
        plural: &'static str,
        group: &'static str,
    },
    #[error(
        "{verb} {plural}.{group} {namespace}/{name} was refused (403): the watchdog's ServiceAccount needs get and patch on {plural}.{group}"
    )]
    Forbidden {
        verb: &'static str,
        plural: &'static str,
        group: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{plural}.{group} {namespace}/{name} does not exist")]
    NotFound {
        plural: &'static str,
        group: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{verb} {what} {namespace}/{name}: {source}")]
    Api {
        verb: &'static str,
        what: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("{verb} {what} {namespace}/{name}: no answer within {CALL_TIMEOUT:?}")]
    Timeout {
        verb: &'static str,
        what: &'static str,
        namespace: String,
        name: String,
    },
}

impl GitopsError {
    /// A metric label.
    pub fn category(&self) -> &'static str {
        match self {
            GitopsError::CrdAbsent { .. } => "crd_absent",
            GitopsError::Forbidden { .. } => "forbidden",
            GitopsError::NotFound { .. } => "not_found",
            GitopsError::Api { .. } => "api",
            GitopsError::Timeout { .. } => "timeout",
        }
    }
}

/// What to do about a Deployment's GitOps owner before rolling back.
#[derive(Debug)]
pub enum Prepared {
    /// No GitOps owner (or `gitops: off`): roll back as usual.
    Unmanaged,
    /// An owner is named, but nothing would re-apply Git (its CRD is absent, it is gone, or its
    /// automated sync is already off): roll back as usual, and say why.
    NotRunning { owner: Owner, why: String },
    /// The sync is paused, and a re-read showed the pause in force: roll back.
    Paused(Paused),
    /// Do not roll back (it would be undone, or this mode forbids touching it): page this.
    Stop {
        owner: Owner,
        why: String,
        fix: String,
    },
}

/// A sync the watchdog paused.
#[derive(Debug, Clone)]
pub struct Paused {
    pub owner: Owner,
    pub method: Method,
    pub record: PauseRecord,
    /// The Deployment's namespace and name.
    pub namespace: String,
    pub name: String,
}

impl Paused {
    /// `paused Argo CD Application argocd/payments (automated sync off)`.
    pub fn describe(&self) -> String {
        let how = match self.method {
            Method::ArgoAutomatedOff => "automated sync turned off",
            Method::ArgoSkipReconcile => "annotated argocd.argoproj.io/skip-reconcile=true",
            Method::FluxReconcileDisabled => {
                "this Deployment annotated kustomize.toolkit.fluxcd.io/reconcile=disabled"
            }
            Method::FluxSuspend => "suspended",
        };
        format!("{} ({how})", self.owner)
    }
    /// The annotations the pause put on the Deployment itself (none when it paused the owner).
    pub fn deployment_annotations(&self) -> std::collections::BTreeMap<String, String> {
        let patch = owner::pause_patch(self.method, &self.record);
        match (
            self.method.patches_deployment(),
            patch.pointer("/metadata/annotations"),
        ) {
            (true, Some(Value::Object(m))) => m
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
            _ => Default::default(),
        }
    }

    /// The command that resumes it by hand.
    pub fn manual_resume(&self) -> String {
        owner::manual_resume(&self.owner, self.method, &self.namespace, &self.name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::pause::ignores_sync_policy;
    use super::undo::go_duration;
    use serde_json::json;

    #[test]
    fn flux_intervals_are_read_as_go_writes_them() {
        use std::time::Duration;
        assert_eq!(go_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("ten"), None);
        assert_eq!(go_duration(""), None);
    }

    #[test]
    fn an_application_set_must_ignore_the_sync_policy_to_leave_a_pause_alone() {
        let bare = json!({"spec": {"template": {}}});
        assert!(!ignores_sync_policy(&bare, "payments"));
        let ignoring = json!({"spec": {"ignoreApplicationDifferences": [{"jsonPointers": ["/spec/syncPolicy"]}]}});
        assert!(ignores_sync_policy(&ignoring, "payments"));
        let other = json!({"spec": {"ignoreApplicationDifferences": [{"name": "billing", "jqPathExpressions": [".spec.syncPolicy"]}]}});
        assert!(!ignores_sync_policy(&other, "payments"));
        let elsewhere = json!({"spec": {"ignoreApplicationDifferences": [{"jsonPointers": ["/spec/source/targetRevision"]}]}});
        assert!(!ignores_sync_policy(&elsewhere, "payments"));
    }
}

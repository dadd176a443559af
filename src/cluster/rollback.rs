//! The rollback: exactly `kubectl rollout undo` (no `--to-revision`).
//!
//! kubectl lists the Deployment's ReplicaSets, takes the second-highest revision, refuses a
//! paused Deployment, skips when the template already matches, and sends one JSON patch that
//! replaces `/spec/template` (the ReplicaSet's template without `pod-template-hash`) and
//! `/metadata/annotations` (the ReplicaSet's annotations, but the Deployment's own values for
//! the revision bookkeeping keys). We build the same patch; the only addition is our own
//! `deploy-watchdog.io/` state in the same annotation map, so the record of the rollback lands
//! atomically with it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::ResourceExt;
use serde_json::json;

use super::rollout::{self, HASH_LABEL};

/// Annotations kept from the Deployment rather than copied from the ReplicaSet (kubectl's list).
pub const ANNOTATIONS_TO_SKIP: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
];

/// What the rollback will do.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackPlan {
    /// The revision number the target ReplicaSet has now (Kubernetes renumbers it).
    pub target_revision: i64,
    /// The target's `pod-template-hash`: how the restored revision is recognised afterwards.
    pub target_hash: Option<String>,
    pub target_version: Option<String>,
    pub template: PodTemplateSpec,
    pub annotations: BTreeMap<String, String>,
}

/// Why kubectl would not roll back (or has nothing to do).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("no rollout history found for deployment {0:?}")]
    NoHistory(String),
    #[error(
        "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume deployment/{0}' and try again"
    )]
    Paused(String),
    /// kubectl prints "skipped rollback (current template already matches revision N)".
    #[error("skipped rollback (current template already matches revision {0})")]
    AlreadyMatches(i64),
}

/// kubectl's choice of target and its patch contents, from the Deployment and every ReplicaSet
/// in its namespace matching its selector (ownership is checked here).
pub fn plan(deployment: &Deployment, replica_sets: &[ReplicaSet]) -> Result<RollbackPlan, Refusal> {
    let name = deployment.name_any();
    let owned = rollout::owned(deployment, replica_sets);

    // The second-highest revision, scanning in list order as kubectl does.
    let mut latest: Option<(i64, &ReplicaSet)> = None;
    let mut previous: Option<(i64, &ReplicaSet)> = None;
    for rs in owned {
        let Some(v) = rollout::revision(rs.annotations()) else { continue };
        match latest {
            Some((l, _)) if v <= l => {
                if previous.is_none_or(|(p, _)| p < v) {
                    previous = Some((v, rs));
                }
            }
            _ => {
                previous = latest;
                latest = Some((v, rs));
            }
        }
    }
    let Some((target_revision, target)) = previous else {
        return Err(Refusal::NoHistory(name));
    };
    let spec = deployment.spec.as_ref();
    if spec.and_then(|s| s.paused).unwrap_or(false) {
        return Err(Refusal::Paused(name));
    }
    let mut template = target.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
    if let Some(current) = spec.map(|s| &s.template)
        && rollout::equal_ignore_hash(&template, current)
    {
        return Err(Refusal::AlreadyMatches(target_revision));
    }
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }

    let mut annotations = BTreeMap::new();
    for key in ANNOTATIONS_TO_SKIP {
        if let Some(v) = deployment.annotations().get(key) {
            annotations.insert(key.to_string(), v.clone());
        }
    }
    for (k, v) in target.annotations() {
        if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    Ok(RollbackPlan {
        target_revision,
        target_hash: rollout::hash_of(target),
        target_version: rollout::template_version(&template),
        template,
        annotations,
    })
}

impl RollbackPlan {
    /// The JSON patch kubectl sends, with `extra` annotations (our state) merged in.
    pub fn patch(&self, extra: &BTreeMap<String, String>) -> serde_json::Value {
        let mut annotations = self.annotations.clone();
        annotations.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        json!([
            {"op": "replace", "path": "/spec/template", "value": self.template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ])
    }
}

#[cfg(test)]
mod tests;

//! The rollback: exactly `kubectl rollout undo` (no `--to-revision`).
//!
//! kubectl lists the Deployment's ReplicaSets, takes the second-highest revision, refuses a
//! paused Deployment, skips when the template already matches, and sends one JSON patch that
//! replaces `/spec/template` (the ReplicaSet's template without `pod-template-hash`) and
//! `/metadata/annotations` (the ReplicaSet's annotations, but the Deployment's own values for
//! the revision bookkeeping keys). We build the same patch, with two differences: our own
//! `deploy-watchdog.io/` annotations keep the Deployment's values (the ReplicaSet's copies are
//! stale) and carry the new state, so the record of the rollback lands atomically with it; and
//! the template is the ReplicaSet's JSON as the API server sent it, where kubectl's typed one
//! would drop fields its version does not know.

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
    /// The target ReplicaSet's name.
    pub target_name: Option<String>,
    pub target_version: Option<String>,
    /// The target's template as typed here (for its version and fingerprint).
    pub template: PodTemplateSpec,
    /// The target's template exactly as the API server sent it, fields these types do not know
    /// included (a newer cluster's): what the patch restores, so the controller finds the target
    /// ReplicaSet's template again and reuses it. `None`: `template` is sent.
    pub raw_template: Option<serde_json::Value>,
    pub annotations: BTreeMap<String, String>,
}

/// Why kubectl would not roll back (or has nothing to do).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("no rollout history found for deployment {0:?}")]
    NoHistory(String),
    /// kubectl's words, which name no deployment (checked against kubectl 1.28 and 1.32).
    #[error(
        "you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume' and try again"
    )]
    Paused(String),
    /// Holds the matching revision. The message is kubectl's, which names the requested
    /// `--to-revision`: 0 for a plain `rollout undo`.
    #[error("skipped rollback (current template already matches revision 0)")]
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
        // kubectl's `deploymentutil.Revision`: no annotation is revision 0; one that is not a
        // number is an error, and that ReplicaSet is passed over.
        let v = match rs.annotations().get(rollout::REVISION_ANNOTATION) {
            None => 0,
            Some(r) => match r.parse::<i64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
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
    let mut template = target
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    if let Some(current) = spec.map(|s| &s.template)
        && rollout::equal_ignore_hash(&template, current)
    {
        return Err(Refusal::AlreadyMatches(target_revision));
    }
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }

    // kubectl's annotations, but ours (`deploy-watchdog.io/`) are never brought back from the
    // ReplicaSet: the controller copied them there from the Deployment of that time, and a stale
    // state or page-delivered mark would be read as this rollout's. The Deployment keeps its own.
    let ours = |k: &str| k.starts_with(crate::overrides::PREFIX);
    let mut annotations = BTreeMap::new();
    for (k, v) in deployment.annotations() {
        if ANNOTATIONS_TO_SKIP.contains(&k.as_str()) || ours(k) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    for (k, v) in target.annotations() {
        if !ANNOTATIONS_TO_SKIP.contains(&k.as_str()) && !ours(k) {
            annotations.insert(k.clone(), v.clone());
        }
    }
    Ok(RollbackPlan {
        target_revision,
        target_hash: rollout::hash_of(target),
        target_name: target.metadata.name.clone(),
        // What the restored template runs: its main container's image, else its label.
        target_version: super::version::template_image_version(
            &template,
            deployment,
            &crate::config::VersionConfig::default(),
        )
        .or_else(|| rollout::template_version(&template)),
        template,
        raw_template: None,
        annotations,
    })
}

impl RollbackPlan {
    /// The JSON patch kubectl sends, with `extra` annotations (our state) merged in.
    pub fn patch(&self, extra: &BTreeMap<String, String>) -> serde_json::Value {
        let mut annotations = self.annotations.clone();
        annotations.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        let template = match &self.raw_template {
            Some(raw) => raw.clone(),
            None => json!(self.template),
        };
        json!([
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ])
    }

    /// Takes the template to restore from the target ReplicaSet as the API server sent it
    /// (`raw_sets`: the listed ReplicaSets as JSON), without its `pod-template-hash` label.
    pub fn with_raw_template(mut self, raw_sets: &[serde_json::Value]) -> Self {
        let target = raw_sets.iter().find(|rs| {
            rs.pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
                == self.target_name.as_deref()
        });
        if let Some(mut template) = target.and_then(|rs| rs.pointer("/spec/template")).cloned() {
            if let Some(labels) = template
                .pointer_mut("/metadata/labels")
                .and_then(serde_json::Value::as_object_mut)
            {
                labels.remove(HASH_LABEL);
            }
            self.raw_template = Some(template);
        }
        self
    }
}

/// The JSON-patch `test` that the state read with `deployment` is still the one on it: its
/// digest, an ASCII token whose bytes the API server's Go encoding leaves alone. A state written
/// before digests existed is tested itself when Go encodes it alike, else the whole object's
/// `resourceVersion` is (stricter, never wrong).
fn state_test(deployment: &Deployment) -> Option<serde_json::Value> {
    use super::record::{STATE_ANNOTATION, STATE_DIGEST_ANNOTATION, go_encodes_alike};
    let a = deployment.annotations();
    let path = |key: &str| {
        format!(
            "/metadata/annotations/{}",
            key.replace('~', "~0").replace('/', "~1")
        )
    };
    let state = a.get(STATE_ANNOTATION)?;
    if let Some(digest) = a.get(STATE_DIGEST_ANNOTATION) {
        return Some(json!({"op": "test", "path": path(STATE_DIGEST_ANNOTATION), "value": digest}));
    }
    if go_encodes_alike(state) {
        return Some(json!({"op": "test", "path": path(STATE_ANNOTATION), "value": state}));
    }
    let rv = deployment.metadata.resource_version.as_ref()?;
    Some(json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}))
}

/// Why a rollback could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("reading deployment {namespace}/{name}: {source}")]
    GetDeployment {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("listing replicasets of deployment {namespace}/{name}: {source}")]
    ListReplicaSets {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("patching deployment {namespace}/{name}: {source}")]
    PatchDeployment {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("deployment {namespace}/{name}: {refusal}")]
    Refused {
        namespace: String,
        name: String,
        refusal: Refusal,
    },
    /// Another instance (a previous leader) already sent this rollout's rollback.
    #[error("deployment {namespace}/{name}: revision {revision} was already rolled back")]
    AlreadyRolledBack {
        namespace: String,
        name: String,
        revision: i64,
        state: Box<super::record::RolloutState>,
    },
    /// A newer rollout started after this one: undoing now would undo that one, which this
    /// rollout's watch never judged.
    #[error(
        "deployment {namespace}/{name}: revision {revision} was superseded by revision {current}"
    )]
    Superseded {
        namespace: String,
        name: String,
        revision: i64,
        current: i64,
    },
    /// kubectl's "skipped rollback" while judging: the Deployment already runs the template of
    /// the revision the rollback would restore (someone rolled back first). Holds that
    /// template's fingerprint.
    #[error(
        "deployment {namespace}/{name}: skipped rollback (current template already matches revision {target_revision})"
    )]
    AlreadyRestored {
        namespace: String,
        name: String,
        target_revision: i64,
        fingerprint: Option<String>,
    },
    /// The Deployment no longer runs the template judged: a newer one landed that the
    /// deployment controller has not numbered yet (it lags, or is down). Undoing now would
    /// overwrite that one, which nobody judged.
    #[error(
        "deployment {namespace}/{name}: the template judged as revision {revision} was replaced by a newer one"
    )]
    TemplateReplaced {
        namespace: String,
        name: String,
        revision: i64,
    },
    #[error("{what} of deployment {namespace}/{name}: no answer within {CALL_TIMEOUT:?}")]
    Timeout {
        what: &'static str,
        namespace: String,
        name: String,
    },
}

impl RollbackError {
    /// Worth trying again: the API server did not answer, timed out, or was overloaded
    /// (429, 5xx). Refusals and 4xx answers are final.
    pub fn is_transient(&self) -> bool {
        let api_error = match self {
            RollbackError::GetDeployment { source, .. }
            | RollbackError::ListReplicaSets { source, .. }
            | RollbackError::PatchDeployment { source, .. } => source,
            RollbackError::Timeout { .. } => return true,
            RollbackError::Refused { .. }
            | RollbackError::AlreadyRolledBack { .. }
            | RollbackError::Superseded { .. }
            | RollbackError::TemplateReplaced { .. }
            | RollbackError::AlreadyRestored { .. } => {
                return false;
            }
        };
        match api_error {
            kube::Error::Api(status) => status.code == 429 || status.code >= 500,
            kube::Error::SerdeError(_) => false,
            // Connection refused, reset, TLS and body errors: the request never got an answer.
            _ => true,
        }
    }

    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            RollbackError::GetDeployment { .. } => "get_deployment",
            RollbackError::ListReplicaSets { .. } => "list_replicasets",
            RollbackError::PatchDeployment { .. } => "patch_deployment",
            RollbackError::Refused {
                refusal: Refusal::Paused(_),
                ..
            } => "paused",
            RollbackError::Refused {
                refusal: Refusal::NoHistory(_),
                ..
            } => "no_history",
            RollbackError::Refused {
                refusal: Refusal::AlreadyMatches(_),
                ..
            } => "already_matches",
            RollbackError::Timeout { .. } => "timeout",
            RollbackError::AlreadyRolledBack { .. } => "already_rolled_back",
            RollbackError::Superseded { .. } => "superseded",
            RollbackError::TemplateReplaced { .. } => "template_replaced",
            RollbackError::AlreadyRestored { .. } => "already_restored",
        }
    }
}

const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn bounded<T>(
    what: &'static str,
    namespace: &str,
    name: &str,
    call: impl std::future::Future<Output = Result<T, RollbackError>>,
) -> Result<T, RollbackError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(RollbackError::Timeout {
                what,
                namespace: namespace.into(),
                name: name.into(),
            })
        })
}

/// Does what `kubectl rollout undo deployment/NAME` does: GET the Deployment, LIST its
/// ReplicaSets, PATCH. `state` annotations ride along in the same patch.
///
/// At most once per rollout (`revision`): a recorded rollback is never sent again, and the patch
/// tests that the state annotation is still what was read (by its digest), so two instances racing (a leader
/// that has not yet noticed it was deposed) cannot both roll back. Only while `revision` is the
/// Deployment's: a newer rollout (seen here before the watch reported it) is refused, and the
/// patch tests the revision too, so one starting between read and patch fails it.
pub async fn execute(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    revision: i64,
    state: impl FnOnce(&RollbackPlan) -> BTreeMap<String, String>,
) -> Result<RollbackPlan, RollbackError> {
    execute_judged(client, namespace, name, revision, None, state).await
}

/// [`execute`], sent only while the Deployment runs the template judged (its
/// [`rollout::template_fingerprint`]): a newer template that the controller has not numbered yet
/// is refused, and the patch tests `metadata.generation`, which the API server raises with every
/// change of the spec, so a template landing between read and patch fails it.
pub async fn execute_judged(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    revision: i64,
    judged_template: Option<&str>,
    state: impl FnOnce(&RollbackPlan) -> BTreeMap<String, String>,
) -> Result<RollbackPlan, RollbackError> {
    use kube::api::{ListParams, Patch, PatchParams};
    let deployments: kube::Api<Deployment> = kube::Api::namespaced(client.clone(), namespace);
    let sets: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        client.clone(),
        namespace,
        &kube::api::ApiResource::erase::<ReplicaSet>(&()),
    );
    let (ns, n) = (namespace.to_string(), name.to_string());
    let deployment = bounded("reading", namespace, name, async {
        deployments
            .get(name)
            .await
            .map_err(|source| RollbackError::GetDeployment {
                namespace: ns.clone(),
                name: n.clone(),
                source,
            })
    })
    .await?;
    let selector = rollout::match_labels_selector(&deployment);
    // Listed as JSON: the template restored is the one the API server holds, fields these
    // types do not know included.
    let raw_sets = bounded("listing replicasets", namespace, name, async {
        let list = sets
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| RollbackError::ListReplicaSets {
                namespace: ns.clone(),
                name: n.clone(),
                source,
            })?;
        list.items
            .into_iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RollbackError::ListReplicaSets {
                namespace: ns.clone(),
                name: n.clone(),
                source: kube::Error::SerdeError(e),
            })
    })
    .await?;
    let typed: Vec<ReplicaSet> = raw_sets
        .iter()
        .filter_map(|rs| serde_json::from_value(rs.clone()).ok())
        .collect();
    let recorded = deployment
        .annotations()
        .get(super::record::STATE_ANNOTATION)
        .cloned();
    if let Some(st) = recorded
        .as_deref()
        .and_then(super::record::RolloutState::parse)
        && st.revision >= revision
        && st.rollback_fingerprint.is_some()
    {
        return Err(RollbackError::AlreadyRolledBack {
            namespace: ns,
            name: n,
            revision,
            state: Box::new(st),
        });
    }
    let current = rollout::revision(deployment.annotations());
    if let Some(current) = current.filter(|c| *c > revision) {
        return Err(RollbackError::Superseded {
            namespace: ns,
            name: n,
            revision,
            current,
        });
    }
    let plan = match plan(&deployment, &typed) {
        Ok(plan) => plan.with_raw_template(&raw_sets),
        Err(Refusal::AlreadyMatches(target_revision)) if judged_template.is_some() => {
            return Err(RollbackError::AlreadyRestored {
                namespace: ns,
                name: n,
                target_revision,
                fingerprint: deployment
                    .spec
                    .as_ref()
                    .map(|s| rollout::template_fingerprint(&s.template)),
            });
        }
        Err(refusal) => {
            return Err(RollbackError::Refused {
                namespace: ns,
                name: n,
                refusal,
            });
        }
    };
    if judged_template.is_some() && !rollout::runs_template(&deployment, judged_template) {
        return Err(RollbackError::TemplateReplaced {
            namespace: ns,
            name: n,
            revision,
        });
    }
    let generation = deployment.metadata.generation;
    let mut patch = plan.patch(&state(&plan));
    let annotation = |key: &str| {
        format!(
            "/metadata/annotations/{}",
            key.replace('~', "~0").replace('/', "~1")
        )
    };
    if let serde_json::Value::Array(ops) = &mut patch {
        if let Some(test) = state_test(&deployment) {
            ops.insert(0, test);
        }
        if let Some(current) = current {
            let path = annotation(rollout::REVISION_ANNOTATION);
            ops.insert(
                0,
                json!({"op": "test", "path": path, "value": current.to_string()}),
            );
        }
        if let Some(generation) = generation.filter(|_| judged_template.is_some()) {
            ops.insert(
                0,
                json!({"op": "test", "path": "/metadata/generation", "value": generation}),
            );
        }
    }
    let patch: json_patch::Patch =
        serde_json::from_value(patch).map_err(|e| RollbackError::PatchDeployment {
            namespace: ns.clone(),
            name: n.clone(),
            source: kube::Error::SerdeError(e),
        })?;
    bounded("patching", namespace, name, async {
        deployments
            .patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
            .await
            .map_err(|source| RollbackError::PatchDeployment {
                namespace: ns.clone(),
                name: n.clone(),
                source,
            })
    })
    .await?;
    Ok(plan)
}

#[cfg(test)]
mod tests;

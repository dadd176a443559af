//! Reading a Deployment the way `kubectl rollout status` and the deployment controller do:
//! revisions, the new ReplicaSet, progress, the deployed version.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::ResourceExt;

use crate::judge::Progress;

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// The earlier revisions a ReplicaSet carried before a rollout took it up again.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
pub const HASH_LABEL: &str = "pod-template-hash";
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// The `deployment.kubernetes.io/revision` of a Deployment or ReplicaSet.
pub fn revision(annotations: &BTreeMap<String, String>) -> Option<i64> {
    annotations
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
}

/// The version a template deploys: its `app.kubernetes.io/version` label, else the first
/// container's image tag.
pub fn template_version(template: &PodTemplateSpec) -> Option<String> {
    if let Some(v) = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get(VERSION_LABEL))
    {
        return Some(v.clone());
    }
    let image = template.spec.as_ref()?.containers.first()?.image.as_ref()?;
    image_tag(image).map(str::to_string)
}

/// The deployed version of a Deployment by the configured rule (see [`super::version`]).
pub fn deployed_version(d: &Deployment, rule: &crate::config::VersionConfig) -> Option<String> {
    super::version::read(d, rule).version
}

pub use super::version::image_tag;

/// Templates equal but for the `pod-template-hash` label (kubectl's `equalIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    strip_hash(a) == strip_hash(b)
}

fn strip_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
        if labels.is_empty()
            && let Some(m) = t.metadata.as_mut()
        {
            m.labels = None;
        }
    }
    // Compare as JSON: a missing map and an empty one are the same object to the API server.
    prune_empty(serde_json::to_value(&t).unwrap_or_default())
}

fn prune_empty(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, prune_empty(v)))
                .filter(|(_, v)| match v {
                    serde_json::Value::Null => false,
                    serde_json::Value::Object(m) => !m.is_empty(),
                    serde_json::Value::Array(a) => !a.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(prune_empty).collect())
        }
        other => other,
    }
}

/// A stable fingerprint of a template, ignoring the hash label: recognises our own rollback
/// after a restart without listing ReplicaSets.
pub fn template_fingerprint(t: &PodTemplateSpec) -> String {
    format!("{:016x}", template_key(t))
}

/// [`template_fingerprint`] as a number: two templates [`equal_ignore_hash`] have the same key.
/// Computed once when a ReplicaSet or a Deployment comes in, so finding a Deployment's new
/// ReplicaSet compares numbers instead of serialising both templates on every wake.
pub fn template_key(t: &PodTemplateSpec) -> u64 {
    let canonical = strip_hash(t).to_string();
    // FNV-1a 64: stable across processes and versions, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The key of a Deployment's template, computed once per object the session is given.
#[derive(Default)]
pub struct TemplateKeyOf {
    of: Option<Arc<Deployment>>,
    key: Option<u64>,
}

impl TemplateKeyOf {
    /// `d`'s template key; recomputed only when `d` is another object than last time.
    pub fn get(&mut self, d: &Arc<Deployment>) -> Option<u64> {
        if !self.of.as_ref().is_some_and(|of| Arc::ptr_eq(of, d)) {
            self.key = d.spec.as_ref().map(|s| template_key(&s.template));
            self.of = Some(d.clone());
        }
        self.key
    }
}

/// Whether the Deployment's template is the one with `fingerprint` (e.g. the one a rollback
/// restored).
pub fn runs_template(d: &Deployment, fingerprint: Option<&str>) -> bool {
    let Some(fingerprint) = fingerprint else {
        return false;
    };
    let current = d.spec.as_ref().map(|s| template_fingerprint(&s.template));
    current.as_deref() == Some(fingerprint)
}

/// The Deployment's `matchLabels` as a label selector (`app=web,tier=front`).
pub fn match_labels_selector(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// ReplicaSets controlled by the Deployment (by controller ownerReference UID).
pub fn owned<'a>(
    deployment: &Deployment,
    all: impl IntoIterator<Item = &'a ReplicaSet>,
) -> Vec<&'a ReplicaSet> {
    let uid = deployment.metadata.uid.as_deref();
    all.into_iter()
        .filter(|rs| {
            rs.metadata.owner_references.as_ref().is_some_and(|refs| {
                refs.iter()
                    .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
            })
        })
        .collect()
}

/// The ReplicaSet whose template is the Deployment's (oldest first, as the controller picks).
pub fn new_replica_set<'a>(
    deployment: &Deployment,
    owned: &[&'a ReplicaSet],
) -> Option<&'a ReplicaSet> {
    let template = &deployment.spec.as_ref()?.template;
    let mut matching: Vec<&ReplicaSet> = owned
        .iter()
        .copied()
        .filter(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, template))
        })
        .collect();
    matching.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    matching.first().copied()
}

/// The `pod-template-hash` of a ReplicaSet.
pub fn hash_of(rs: &ReplicaSet) -> Option<String> {
    rs.labels().get(HASH_LABEL).cloned()
}

/// `kubectl rollout status` for a Deployment.
pub fn progress(d: &Deployment) -> Progress {
    progress_with(d, |_| true)
}

/// [`progress`] of the rollout to `new_replica_set` detected at `since`: a
/// `ProgressDeadlineExceeded` counts only when written for it. The deployment controller keeps
/// the condition it last wrote until it sees progress, so a Deployment that goes back to an
/// existing ReplicaSet (a revert, `kubectl rollout undo`, Recreate scaling the old pods down
/// first) shows the previous rollout's timeout for a while: that one names another ReplicaSet,
/// or was written before this rollout began.
pub fn rollout_progress(
    d: &Deployment,
    new_replica_set: Option<&str>,
    since: jiff::Timestamp,
) -> Progress {
    // Condition times have whole seconds.
    let since = jiff::Timestamp::from_second(since.as_second()).unwrap_or(since);
    progress_with(d, |c| {
        let message = c.message.as_deref().unwrap_or_default();
        let names = match new_replica_set {
            Some(rs) => message.starts_with(&format!("ReplicaSet {rs:?} ")),
            None => message.starts_with(&format!("Deployment {:?} ", d.name_any())),
        };
        let written = c.last_update_time.as_ref().is_some_and(|t| t.0 >= since);
        names && written
    })
}

/// [`progress`], reading a `ProgressDeadlineExceeded` condition only when `counts` says so.
fn progress_with(
    d: &Deployment,
    counts: impl Fn(&k8s_openapi::api::apps::v1::DeploymentCondition) -> bool,
) -> Progress {
    let name = d.name_any();
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = d.status.as_ref() else {
        return Progress::Progressing(
            "Waiting for deployment spec update to be observed...".into(),
        );
    };
    if generation > status.observed_generation.unwrap_or(0) {
        return Progress::Progressing(
            "Waiting for deployment spec update to be observed...".into(),
        );
    }
    let progressing = status
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"));
    if progressing
        .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded") && counts(c))
    {
        return Progress::DeadlineExceeded(format!(
            "deployment {name:?} exceeded its progress deadline"
        ));
    }
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        return Progress::Progressing(format!(
            "Waiting for deployment {name:?} rollout to finish: {updated} out of {desired} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return Progress::Progressing(format!(
            "Waiting for deployment {name:?} rollout to finish: {} old replicas are pending termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return Progress::Progressing(format!(
            "Waiting for deployment {name:?} rollout to finish: {available} of {updated} updated replicas are available..."
        ));
    }
    Progress::Complete
}

/// Whether the Deployment's current revision is still rolling out, as opposed to a rollout
/// completed earlier and now merely scaling (an HPA), losing pods to a drain or an eviction, or
/// restarting them: what `kubectl rollout status` cannot tell apart.
///
/// The deployment controller can: once a rollout completes it writes `Progressing=True` with
/// reason `NewReplicaSetAvailable`, and keeps that condition through any later scaling or pod
/// churn for as long as no pods of another template run (`syncRolloutStatus`'s
/// `isCompleteDeployment`). A new template gets a new reason at once (`NewReplicaSetCreated`,
/// `ReplicaSetUpdated`), in the same write that numbers the revision. Without a progress
/// deadline there is no such condition, and only pods of an older template still running show
/// a rollout.
pub fn rolling_out(d: &Deployment) -> bool {
    let Some(status) = d.status.as_ref() else {
        // Numbered but never reported on: the controller is still at it.
        return true;
    };
    if status.replicas.unwrap_or(0) > status.updated_replicas.unwrap_or(0) {
        return true;
    }
    let progressing = status
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "Progressing"));
    progressing.is_some_and(|c| c.reason.as_deref() != Some("NewReplicaSetAvailable"))
}

/// When the rollout to the Deployment's current revision began: the creation of the ReplicaSet
/// the controller made for it, the one of `sets` it controls that carries that revision. `None`
/// when that cannot be told: no such ReplicaSet, or one an older revision made and this one
/// took up again (a template brought back keeps its ReplicaSet, whose creation is that older
/// rollout's).
pub fn began(d: &Deployment, sets: &[ReplicaSet]) -> Option<jiff::Timestamp> {
    let current = revision(d.annotations())?;
    let set = owned(d, sets)
        .into_iter()
        .find(|rs| revision(rs.annotations()) == Some(current))?;
    if set.annotations().contains_key(REVISION_HISTORY_ANNOTATION) {
        return None;
    }
    set.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// When the Deployment's rollout last completed: the last update of its `NewReplicaSetAvailable`
/// condition, which the controller keeps through later scaling and pod churn (see
/// [`rolling_out`]). The rollout began earlier still.
pub fn completed_at(d: &Deployment) -> Option<jiff::Timestamp> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
        })?
        .last_update_time
        .as_ref()
        .map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};

    fn deployment(desired: i32, updated: i32, replicas: i32, available: i32) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                name: Some("app".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                updated_replicas: Some(updated),
                replicas: Some(replicas),
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn progress_reads_like_kubectl_rollout_status() {
        let msg = |d: &Deployment| match progress(d) {
            Progress::Progressing(m) => m,
            other => format!("{other:?}"),
        };
        assert_eq!(
            msg(&deployment(3, 1, 4, 3)),
            "Waiting for deployment \"app\" rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        assert_eq!(
            msg(&deployment(3, 3, 4, 3)),
            "Waiting for deployment \"app\" rollout to finish: 1 old replicas are pending termination..."
        );
        assert_eq!(
            msg(&deployment(3, 3, 3, 2)),
            "Waiting for deployment \"app\" rollout to finish: 2 of 3 updated replicas are available..."
        );
        assert_eq!(progress(&deployment(3, 3, 3, 3)), Progress::Complete);
        let mut unobserved = deployment(3, 3, 3, 3);
        unobserved.metadata.generation = Some(3);
        assert!(
            matches!(progress(&unobserved), Progress::Progressing(m) if m.contains("spec update"))
        );
        let mut stuck = deployment(3, 1, 4, 3);
        if let Some(s) = stuck.status.as_mut() {
            s.conditions = Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                ..Default::default()
            }]);
        }
        assert_eq!(
            progress(&stuck),
            Progress::DeadlineExceeded("deployment \"app\" exceeded its progress deadline".into())
        );
    }

    fn with_progressing(mut d: Deployment, reason: &str) -> Deployment {
        if let Some(s) = d.status.as_mut() {
            s.conditions = Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                ..Default::default()
            }]);
        }
        d
    }

    fn timed_out(rs: &str, at: jiff::Timestamp) -> Deployment {
        let mut d = deployment(3, 1, 4, 3);
        if let Some(s) = d.status.as_mut() {
            s.conditions = Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some(format!("ReplicaSet {rs:?} has timed out progressing.")),
                last_update_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at)),
                ..Default::default()
            }]);
        }
        d
    }

    #[test]
    fn scaling_draining_or_restarting_after_a_complete_rollout_is_not_rolling_out() {
        // An HPA scaled 3 → 6: new pods not yet updated nor available; a drain: 2 of 3 available.
        for d in [
            deployment(6, 3, 3, 3),
            deployment(3, 3, 3, 2),
            deployment(3, 3, 3, 0),
        ] {
            assert_ne!(progress(&d), Progress::Complete);
            assert!(!rolling_out(&with_progressing(d, "NewReplicaSetAvailable")));
        }
    }

    #[test]
    fn a_new_template_is_rolling_out_until_the_controller_says_complete() {
        // Old pods still running, whatever the condition says (a reused ReplicaSet keeps the
        // earlier NewReplicaSetAvailable for a moment).
        assert!(rolling_out(&with_progressing(
            deployment(3, 1, 4, 3),
            "NewReplicaSetAvailable"
        )));
        // Recreate: old pods gone before new ones start.
        for reason in [
            "NewReplicaSetCreated",
            "FoundNewReplicaSet",
            "ReplicaSetUpdated",
            "ProgressDeadlineExceeded",
        ] {
            assert!(rolling_out(&with_progressing(
                deployment(3, 0, 0, 0),
                reason
            )));
        }
        // No progress deadline, so no condition: only old pods show it.
        assert!(rolling_out(&deployment(3, 1, 4, 3)));
        assert!(!rolling_out(&deployment(6, 3, 3, 3)));
    }

    #[test]
    fn only_a_deadline_written_for_this_rollout_is_its_failure() {
        let detected: jiff::Timestamp = "2026-01-01T10:00:00.700Z".parse().expect("a timestamp");
        let later: jiff::Timestamp = "2026-01-01T10:10:01Z".parse().expect("a timestamp");
        let earlier: jiff::Timestamp = "2026-01-01T09:50:00Z".parse().expect("a timestamp");
        // Written for this rollout: its new ReplicaSet, after detection.
        let mine = timed_out("app-5d8f7c", later);
        assert!(matches!(
            rollout_progress(&mine, Some("app-5d8f7c"), detected),
            Progress::DeadlineExceeded(_)
        ));
        // The same second as detection counts (condition times have whole seconds).
        let same_second = timed_out(
            "app-5d8f7c",
            "2026-01-01T10:00:00Z".parse().expect("a timestamp"),
        );
        assert!(matches!(
            rollout_progress(&same_second, Some("app-5d8f7c"), detected),
            Progress::DeadlineExceeded(_)
        ));
        // Kept from the previous rollout: it names another ReplicaSet...
        let reverted = timed_out("app-9b7d6f", later);
        assert_eq!(
            rollout_progress(&reverted, Some("app-5d8f7c"), detected),
            Progress::Progressing(
                "Waiting for deployment \"app\" rollout to finish: 1 out of 3 new replicas have been updated...".into()
            )
        );
        // ...or it was written before this rollout began (a ReplicaSet used again).
        let old = timed_out("app-5d8f7c", earlier);
        assert!(matches!(
            rollout_progress(&old, Some("app-5d8f7c"), detected),
            Progress::Progressing(_)
        ));
        // kubectl reads any of them as a failure.
        assert!(matches!(progress(&reverted), Progress::DeadlineExceeded(_)));
    }

    /// A ReplicaSet of Deployment `owner` at `revision`, created at `created`.
    fn set(owner: &str, revision: i64, created: &str, history: Option<&str>) -> ReplicaSet {
        let mut annotations = BTreeMap::from([(REVISION_ANNOTATION.into(), revision.to_string())]);
        if let Some(h) = history {
            annotations.insert(REVISION_HISTORY_ANNOTATION.into(), h.into());
        }
        ReplicaSet {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("app-{revision}")),
                annotations: Some(annotations),
                creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    created.parse().expect("a timestamp"),
                )),
                owner_references: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        controller: Some(true),
                        uid: owner.into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_rollout_began_when_its_revision_s_replica_set_was_created() {
        let mut d = deployment(3, 3, 3, 3);
        d.metadata.uid = Some("dep-uid".into());
        d.metadata.annotations = Some(BTreeMap::from([(REVISION_ANNOTATION.into(), "3".into())]));
        let old = set("dep-uid", 2, "2026-01-01T09:00:00Z", None);
        let new = set("dep-uid", 3, "2026-01-01T10:00:00Z", None);
        let stranger = set("other-uid", 3, "2026-01-01T10:05:00Z", None);
        assert_eq!(
            began(&d, &[old.clone(), stranger.clone(), new]),
            Some("2026-01-01T10:00:00Z".parse().expect("a timestamp"))
        );
        // Not created yet (or not seen): cannot be told.
        assert_eq!(began(&d, &[old.clone(), stranger]), None);
        // A template brought back keeps its older ReplicaSet: its creation is not this rollout's.
        let reused = set("dep-uid", 3, "2026-01-01T08:00:00Z", Some("1"));
        assert_eq!(began(&d, &[old, reused]), None);
    }

    #[test]
    fn a_rollout_completed_when_the_controller_last_wrote_new_replica_set_available() {
        let at: jiff::Timestamp = "2026-01-01T10:03:00Z".parse().expect("a timestamp");
        let mut d = with_progressing(deployment(3, 3, 3, 3), "NewReplicaSetAvailable");
        d.status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .expect("conditions")[0]
            .last_update_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at));
        assert_eq!(completed_at(&d), Some(at));
        let mut going = with_progressing(deployment(3, 1, 4, 3), "ReplicaSetUpdated");
        going
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .expect("conditions")[0]
            .last_update_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at));
        assert_eq!(completed_at(&going), None);
    }
}

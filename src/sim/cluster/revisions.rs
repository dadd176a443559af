//! Revisions: ReplicaSets per template (named by the template hash), revision numbers and
//! history annotations, annotation copying, and `revisionHistoryLimit` cleanup.

use serde_json::{Value, json};

use super::objects::{equal_ignore_hash, int_at as int, now_rfc3339, template_hash};
use super::state::State;
use super::store::{Kind, meta_str};

pub const REVISION: &str = "deployment.kubernetes.io/revision";

pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";

pub const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";

pub const MAX: &str = "deployment.kubernetes.io/max-replicas";

/// Annotations never copied from a Deployment to its ReplicaSets (and kept by a rollback).
pub const SKIPPED_ANNOTATIONS: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED,
    MAX,
    "deprecated.deployment.rollback.to",
];

pub fn revision(obj: &Value) -> i64 {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

pub fn set_annotation(obj: &mut Value, key: &str, value: String) {
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"][key] = json!(value);
}

/// Copies the Deployment's annotations onto a ReplicaSet; true if anything changed.
pub fn copy_annotations(dep: &Value, rs: &mut Value) -> bool {
    let mut changed = false;
    if let Some(anns) = dep
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        for (k, v) in anns {
            if SKIPPED_ANNOTATIONS.contains(&k.as_str()) {
                continue;
            }
            if rs.pointer("/metadata/annotations").and_then(|a| a.get(k)) != Some(v) {
                set_annotation(rs, k, v.as_str().unwrap_or_default().to_string());
                changed = true;
            }
        }
    }
    changed
}

pub fn set_replica_annotations(rs: &mut Value, desired: i64, max: i64) -> bool {
    let anns = rs.pointer("/metadata/annotations");
    let same = anns.and_then(|a| a.get(DESIRED)).and_then(Value::as_str)
        == Some(&desired.to_string())
        && anns.and_then(|a| a.get(MAX)).and_then(Value::as_str) == Some(&max.to_string());
    if !same {
        set_annotation(rs, DESIRED, desired.to_string());
        set_annotation(rs, MAX, max.to_string());
    }
    !same
}

pub fn new_replicaset(st: &mut State, dep: &Value, template: &Value, revision: i64) -> Value {
    let ns = meta_str(dep, "namespace").unwrap_or_default().to_string();
    let name = meta_str(dep, "name").unwrap_or_default().to_string();
    let mut collisions = int(dep, "/status/collisionCount") as u32;
    let (hash, rs_name) = loop {
        let hash = template_hash(template, collisions);
        let rs_name = format!("{name}-{hash}");
        match st.store.get(Kind::ReplicaSet, &ns, &rs_name) {
            Some(existing)
                if !existing
                    .pointer("/spec/template")
                    .is_some_and(|t| equal_ignore_hash(t, template)) =>
            {
                collisions += 1
            }
            _ => break (hash, rs_name),
        }
    };
    let mut tmpl = template.clone();
    if !tmpl["metadata"]["labels"].is_object() {
        tmpl["metadata"]["labels"] = json!({});
    }
    tmpl["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    let mut selector = dep.pointer("/spec/selector").cloned().unwrap_or(json!({}));
    if !selector["matchLabels"].is_object() {
        selector["matchLabels"] = json!({});
    }
    selector["matchLabels"]["pod-template-hash"] = json!(hash);
    let labels = tmpl["metadata"]["labels"].clone();
    let mut rs = json!({
        "kind": "ReplicaSet", "apiVersion": "apps/v1",
        "metadata": {"name": rs_name, "namespace": ns, "uid": st.store.next_uid(), "generation": 1,
            "creationTimestamp": now_rfc3339(), "labels": labels, "annotations": {},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                "uid": meta_str(dep, "uid").unwrap_or_default(), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": 0, "minReadySeconds": dep.pointer("/spec/minReadySeconds").cloned().unwrap_or(json!(0)),
            "selector": selector, "template": tmpl},
        "status": {"replicas": 0},
    });
    if rs["spec"]["minReadySeconds"] == json!(0) {
        rs["spec"]
            .as_object_mut()
            .map(|m| m.remove("minReadySeconds"));
    }
    copy_annotations(dep, &mut rs);
    set_annotation(&mut rs, REVISION, revision.to_string());
    if collisions > 0 {
        st.collisions.insert((ns, name), collisions);
    }
    rs
}

/// Deletes old, fully scaled-down ReplicaSets beyond `revisionHistoryLimit`, oldest first.
pub fn cleanup_history(st: &mut State, dep: &Value, rss: &[Value]) {
    let limit = dep
        .pointer("/spec/revisionHistoryLimit")
        .and_then(Value::as_i64)
        .unwrap_or(10);
    let template = dep.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut old: Vec<&Value> = rss
        .iter()
        .filter(|rs| {
            !rs.pointer("/spec/template")
                .is_some_and(|t| equal_ignore_hash(t, &template))
        })
        .filter(|rs| int(rs, "/spec/replicas") == 0 && int(rs, "/status/replicas") == 0)
        .collect();
    if (old.len() as i64) <= limit {
        return;
    }
    old.sort_by_key(|rs| revision(rs));
    let excess = old.len() - limit.max(0) as usize;
    for rs in old.into_iter().take(excess) {
        let (ns, name) = super::store::key_of(rs);
        st.delete_cascade(Kind::ReplicaSet, &ns, &name);
    }
}

//! The deployment controller, after Kubernetes' `pkg/controller/deployment`: one ReplicaSet per
//! pod template, revisions, rolling updates within maxSurge/maxUnavailable, history cleanup,
//! pause, and the status and conditions `kubectl rollout status` reads.

use std::cmp::Reverse;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::objects::{equal_ignore_hash, now_rfc3339, scaled, template_hash};
use super::replicaset::{refresh_pod, sync_replicaset};
use super::state::State;
use super::store::{Kind, meta_str};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";
/// Annotations never copied from a Deployment to its ReplicaSets (and kept by a rollback).
pub const SKIPPED_ANNOTATIONS: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED,
    MAX,
    "deprecated.deployment.rollback.to",
];

/// Processes due timers and dirty Deployments until nothing is left to do.
pub fn run_pending(st: &mut State, now: Instant) {
    while let Some(Reverse((at, _))) = st.pod_timers.peek() {
        if *at > now {
            break;
        }
        if let Some(Reverse((_, key))) = st.pod_timers.pop() {
            refresh_pod(st, &key.0, &key.1, now);
        }
    }
    while let Some(Reverse((at, _))) = st.timers.peek() {
        if *at > now {
            break;
        }
        if let Some(Reverse((_, key))) = st.timers.pop() {
            st.dirty.insert(key);
        }
    }
    // Syncs write objects that make their Deployment dirty again; a quiet sync writes nothing.
    for _ in 0..16 {
        let batch = std::mem::take(&mut st.dirty);
        if batch.is_empty() {
            break;
        }
        for (ns, name) in batch {
            sync_deployment(st, &ns, &name, now);
        }
    }
}

/// When the controller must wake up next.
pub fn next_wakeup(st: &State) -> Option<Instant> {
    let a = st.pod_timers.peek().map(|Reverse((t, _))| *t);
    let b = st.timers.peek().map(|Reverse((t, _))| *t);
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

pub fn revision(obj: &Value) -> i64 {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn set_annotation(obj: &mut Value, key: &str, value: String) {
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"][key] = json!(value);
}

/// (maxSurge, maxUnavailable) resolved against `desired`, as `ResolveFenceposts` does.
fn fenceposts(dep: &Value, desired: i64) -> (i64, i64) {
    if dep.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate") {
        return (0, 0);
    }
    let ru = dep.pointer("/spec/strategy/rollingUpdate");
    let surge = scaled(
        ru.and_then(|r| r.get("maxSurge")).or(Some(&json!("25%"))),
        desired,
        true,
    );
    let unavailable = scaled(
        ru.and_then(|r| r.get("maxUnavailable"))
            .or(Some(&json!("25%"))),
        desired,
        false,
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// Copies the Deployment's annotations onto a ReplicaSet; true if anything changed.
fn copy_annotations(dep: &Value, rs: &mut Value) -> bool {
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

fn set_replica_annotations(rs: &mut Value, desired: i64, max: i64) -> bool {
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

pub fn sync_deployment(st: &mut State, ns: &str, name: &str, now: Instant) {
    let Some(dep) = st.store.get(Kind::Deployment, ns, name) else {
        return;
    };
    let mut dep = (*dep).clone();
    let uid = meta_str(&dep, "uid").unwrap_or_default().to_string();
    let desired = int(&dep, "/spec/replicas");
    let paused = dep.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let template = dep.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let (surge, max_unavailable) = fenceposts(&dep, desired);
    let recreate = dep.pointer("/spec/strategy/type").and_then(Value::as_str) == Some("Recreate");

    // Bring every ReplicaSet's pods and status up to date first: scaling reads availability.
    let mut rss: Vec<Value> = st
        .store
        .dependents(&uid, Kind::ReplicaSet)
        .iter()
        .map(|r| (**r).clone())
        .collect();
    for rs in &rss {
        sync_replicaset(st, rs, name, now);
    }
    rss = st
        .store
        .dependents(&uid, Kind::ReplicaSet)
        .iter()
        .map(|r| (**r).clone())
        .collect();
    rss.sort_by_key(revision);
    let max_rev = rss.iter().map(revision).max().unwrap_or(0);
    let mut new_idx = rss.iter().position(|rs| {
        rs.pointer("/spec/template")
            .is_some_and(|t| equal_ignore_hash(t, &template))
    });
    let mut progressing: Option<(&str, String)> = None;
    let mut changed = vec![false; rss.len()];

    if new_idx.is_none() && !paused {
        let rs = new_replicaset(st, &dep, &template, max_rev + 1);
        progressing = Some((
            "NewReplicaSetCreated",
            format!(
                "Created new replica set \"{}\"",
                meta_str(&rs, "name").unwrap_or_default()
            ),
        ));
        rss.push(rs);
        changed.push(true);
        new_idx = Some(rss.len() - 1);
    } else if let Some(i) = new_idx {
        let rs = &mut rss[i];
        let old_rev = revision(rs);
        if old_rev < max_rev {
            // A rollback to this template: renumber it and remember its old number.
            let mut history: Vec<String> = rs
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(REVISION_HISTORY))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| s.split(',').map(String::from).collect())
                .unwrap_or_default();
            history.push(old_rev.to_string());
            set_annotation(rs, REVISION_HISTORY, history.join(","));
            set_annotation(rs, REVISION, (max_rev + 1).to_string());
            changed[i] = true;
        }
        if copy_annotations(&dep, rs) {
            changed[i] = true;
        }
        if dep
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_none_or(|c| !c.iter().any(|c| c["type"] == "Progressing"))
        {
            progressing = Some((
                "FoundNewReplicaSet",
                format!(
                    "Found new replica set \"{}\"",
                    meta_str(rs, "name").unwrap_or_default()
                ),
            ));
        }
    }

    // Scaling decisions, on spec.replicas of the ReplicaSets.
    let spec = |rs: &Value| int(rs, "/spec/replicas");
    let total_spec: i64 = rss.iter().map(spec).sum();
    match new_idx {
        Some(n) if paused => {
            // Paused: only a plain scale when the new ReplicaSet is the only active one.
            let only_active = rss
                .iter()
                .enumerate()
                .all(|(i, rs)| i == n || spec(rs) == 0);
            if only_active && spec(&rss[n]) != desired {
                rss[n]["spec"]["replicas"] = json!(desired);
                changed[n] = true;
            }
        }
        Some(n) if recreate => {
            let old_active = rss
                .iter()
                .enumerate()
                .any(|(i, rs)| i != n && (spec(rs) > 0 || int(rs, "/status/replicas") > 0));
            for (i, rs) in rss.iter_mut().enumerate() {
                if i != n && spec(rs) > 0 {
                    rs["spec"]["replicas"] = json!(0);
                    changed[i] = true;
                }
            }
            if !old_active && spec(&rss[n]) != desired {
                rss[n]["spec"]["replicas"] = json!(desired);
                changed[n] = true;
            }
        }
        Some(n) => {
            let cur = spec(&rss[n]);
            let mut target = cur;
            if cur > desired {
                target = desired;
            } else if cur < desired {
                let max_total = desired + surge;
                if total_spec < max_total {
                    target = cur + (max_total - total_spec).min(desired - cur);
                }
            }
            if target != cur {
                rss[n]["spec"]["replicas"] = json!(target);
                changed[n] = true;
            } else {
                scale_down_old(&mut rss, &mut changed, n, desired, max_unavailable);
            }
        }
        None => {}
    }
    for (i, rs) in rss.iter_mut().enumerate() {
        if set_replica_annotations(rs, desired, desired + surge) {
            changed[i] = true;
        }
    }
    for (i, rs) in rss.iter().enumerate() {
        if changed[i] {
            let stored = st.write(Kind::ReplicaSet, rs.clone());
            sync_replicaset(st, &stored, name, now);
        }
    }
    let rss: Vec<Value> = st
        .store
        .dependents(&uid, Kind::ReplicaSet)
        .iter()
        .map(|r| (**r).clone())
        .collect();
    let new_rs = new_idx.and_then(|_| {
        rss.iter().find(|rs| {
            rs.pointer("/spec/template")
                .is_some_and(|t| equal_ignore_hash(t, &template))
        })
    });
    if let Some(rs) = new_rs {
        set_annotation(&mut dep, REVISION, revision(rs).to_string());
    }
    let complete = super::status::update(
        st,
        &mut dep,
        &rss,
        new_rs,
        progressing,
        max_unavailable,
        now,
    );
    if complete || paused {
        cleanup_history(st, &dep, &rss);
    }
    let current = st.store.get(Kind::Deployment, ns, name);
    if current.as_deref() != Some(&dep) {
        st.store.put(Kind::Deployment, dep);
    }
}

/// `reconcileOldReplicaSets`: scale old ReplicaSets down, unhealthy pods first, never below
/// `desired - maxUnavailable` available pods.
fn scale_down_old(
    rss: &mut [Value],
    changed: &mut [bool],
    n: usize,
    desired: i64,
    max_unavailable: i64,
) {
    let spec = |rs: &Value| int(rs, "/spec/replicas");
    let avail = |rs: &Value| int(rs, "/status/availableReplicas");
    let old_pods: i64 = rss
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != n)
        .map(|(_, rs)| spec(rs))
        .sum();
    if old_pods == 0 {
        return;
    }
    let all_pods: i64 = rss.iter().map(spec).sum();
    let min_available = desired - max_unavailable;
    let new_unavailable = spec(&rss[n]) - avail(&rss[n]);
    let mut max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return;
    }
    for i in (0..rss.len()).filter(|i| *i != n) {
        if max_scaled_down <= 0 {
            break;
        }
        let unhealthy = spec(&rss[i]) - avail(&rss[i]);
        if unhealthy <= 0 {
            continue;
        }
        let down = unhealthy.min(max_scaled_down);
        rss[i]["spec"]["replicas"] = json!(spec(&rss[i]) - down);
        changed[i] = true;
        max_scaled_down -= down;
    }
    let available: i64 = rss.iter().map(avail).sum();
    if available <= min_available {
        return;
    }
    let mut remaining = available - min_available;
    for i in (0..rss.len()).filter(|i| *i != n) {
        if remaining <= 0 {
            break;
        }
        let down = spec(&rss[i]).min(remaining);
        if down > 0 {
            rss[i]["spec"]["replicas"] = json!(spec(&rss[i]) - down);
            changed[i] = true;
            remaining -= down;
        }
    }
}

fn new_replicaset(st: &mut State, dep: &Value, template: &Value, revision: i64) -> Value {
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
fn cleanup_history(st: &mut State, dep: &Value, rss: &[Value]) {
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

/// Schedules a resync of a Deployment (its progress deadline).
pub fn resync_after(st: &mut State, ns: &str, name: &str, now: Instant, after: Duration) {
    st.timers
        .push(Reverse((now + after, (ns.to_string(), name.to_string()))));
}

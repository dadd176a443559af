//! The deployment controller, after Kubernetes' `pkg/controller/deployment`: one ReplicaSet per
//! pod template, revisions, rolling updates within maxSurge/maxUnavailable, history cleanup,
//! pause, and the status and conditions `kubectl rollout status` reads.

use std::cmp::Reverse;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::objects::{equal_ignore_hash, int_at as int};
use super::replicaset::{refresh_pod, sync_replicaset};
use super::revisions::{
    REVISION, REVISION_HISTORY, cleanup_history, copy_annotations, new_replicaset, revision,
    set_annotation, set_replica_annotations,
};
use super::rolling::{fenceposts, scale_down_old};
use super::state::State;
use super::store::{Kind, meta_str};

/// How many pod refreshes or Deployment syncs one lock hold may do, so that API requests
/// are not starved while thousands of Deployments resync.
const BUDGET: usize = 256;

/// How long one lock hold may work, pod refreshes taking at most half of it. The API server
/// answers requests and sends watch events between holds: a real one serves while the
/// controllers work, so a burst of a hundred deploys (a few milliseconds of syncing each) must
/// not hold every request and watch event back until the last of them is synced.
const HOLD: std::time::Duration = std::time::Duration::from_millis(10);

/// Processes due timers and dirty Deployments, at most [`BUDGET`] of each and for about
/// [`HOLD`]; returns whether work is left for another round. With `controllers` false
/// (kube-controller-manager down), only the kubelet's pod timers run: what the controllers
/// would do waits in `dirty`.
pub fn run_pending(st: &mut State, now: Instant, controllers: bool) -> bool {
    // Time spent working, on the machine's clock: the simulation's may be paused.
    let started = std::time::Instant::now();
    let mut pods_done = 0;
    while let Some(Reverse((at, _))) = st.pod_timers.peek() {
        if *at > now || pods_done >= BUDGET || started.elapsed() >= HOLD / 2 {
            break;
        }
        if let Some(Reverse((_, key))) = st.pod_timers.pop() {
            refresh_pod(st, &key.0, &key.1, now);
            pods_done += 1;
        }
    }
    if !controllers {
        return st
            .pod_timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now);
    }
    while let Some(Reverse((at, _))) = st.timers.peek() {
        if *at > now {
            break;
        }
        if let Some(Reverse((at, key))) = st.timers.pop() {
            if st.deadlines.get(&key) == Some(&at) {
                st.deadlines.remove(&key);
            }
            st.dirty.insert(key);
        }
    }
    // Syncs write objects that make their Deployment dirty again; a quiet sync writes nothing.
    let mut synced = 0;
    while synced < BUDGET && (synced == 0 || started.elapsed() < HOLD) {
        let Some(key) = st.dirty.pop_first() else {
            break;
        };
        sync_deployment(st, &key.0, &key.1, now);
        synced += 1;
    }
    !st.dirty.is_empty()
        || st
            .pod_timers
            .peek()
            .is_some_and(|Reverse((at, _))| *at <= now)
}

/// When the controller must wake up next.
pub fn next_wakeup(st: &State, controllers: bool) -> Option<Instant> {
    let a = st.pod_timers.peek().map(|Reverse((t, _))| *t);
    let b = st
        .timers
        .peek()
        .filter(|_| controllers)
        .map(|Reverse((t, _))| *t);
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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
    let mut created_new: Option<usize> = None;

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
        created_new = new_idx;
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
    let orig_replicas: Vec<i64> = rss.iter().map(spec).collect();
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
    for (i, rs) in rss.iter_mut().enumerate() {
        if !changed[i] {
            continue;
        }
        let (before, after) = (orig_replicas.get(i).copied().unwrap_or(0), spec(rs));
        if before != after {
            if created_new != Some(i) {
                // A spec change of the ReplicaSet: the API server bumps its generation.
                let generation = int(rs, "/metadata/generation").max(1);
                rs["metadata"]["generation"] = json!(generation + 1);
            }
            if !st.backdate {
                let rs_name = meta_str(rs, "name").unwrap_or_default();
                let direction = if after > before { "up" } else { "down" };
                let involved = json!({"kind": "Deployment", "namespace": ns, "name": name,
                    "uid": uid, "apiVersion": "apps/v1"});
                st.record_event(
                    ns,
                    involved,
                    ("Normal", "ScalingReplicaSet", ""),
                    &format!("Scaled {direction} replica set {rs_name} from {before} to {after}"),
                    "deployment-controller",
                );
            }
        }
        let stored = st.write(Kind::ReplicaSet, rs.clone());
        sync_replicaset(st, &stored, name, now);
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

/// Schedules a resync of a Deployment (its progress deadline).
pub fn resync_after(st: &mut State, ns: &str, name: &str, now: Instant, after: Duration) {
    let key = (ns.to_string(), name.to_string());
    let at = now + after;
    // One pending deadline per Deployment is enough; an earlier one re-schedules when it fires.
    match st.deadlines.get(&key) {
        Some(pending) if *pending > now && *pending <= at => {}
        _ => {
            st.deadlines.insert(key.clone(), at);
            st.timers.push(Reverse((at, key)));
        }
    }
}

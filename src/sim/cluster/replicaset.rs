//! The ReplicaSet side of the controller: pods per ReplicaSet (create, delete, status through
//! the simulated kubelet) and the ReplicaSet's status.

use serde_json::{Value, json};
use tokio::time::Instant;

use super::objects::{name_suffix, now_rfc3339};
use super::pods::{self, PodRuntime};
use super::state::State;
use super::store::{Key, Kind, meta_str};
use crate::sim::behaviour::PodMode;

/// Creates or deletes pods so the ReplicaSet has `spec.replicas`, then writes its status.
pub fn sync_replicaset(st: &mut State, rs: &Value, deployment: &str, now: Instant) {
    let ns = meta_str(rs, "namespace").unwrap_or_default().to_string();
    let rs_name = meta_str(rs, "name").unwrap_or_default().to_string();
    let uid = meta_str(rs, "uid").unwrap_or_default().to_string();
    let want = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let mut pods = st.store.dependent_keys(&uid, Kind::Pod);
    let have = pods.len() as i64;
    if have < want {
        for _ in have..want {
            create_pod(st, rs, &ns, &rs_name, &uid, deployment, now);
        }
        pods = st.store.dependent_keys(&uid, Kind::Pod);
    } else if have > want {
        // Delete the least useful first: unscheduled, then not ready, then the newest.
        let rank = |key: &Key| {
            let state = st.pods.get(key).and_then(|r| r.last.as_ref());
            let scheduled = state.is_some_and(|s| s.scheduled.is_ok());
            let ready = state.is_some_and(|s| s.ready);
            (scheduled, ready)
        };
        pods.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| b.1.cmp(&a.1)));
        for (pns, name) in pods.iter().take((have - want) as usize) {
            delete_pod(st, pns, name);
        }
        pods = st.store.dependent_keys(&uid, Kind::Pod);
    }
    let ready = pods
        .iter()
        .filter(|key| {
            st.pods
                .get(*key)
                .and_then(|r| r.last.as_ref())
                .is_some_and(|s| s.ready)
        })
        .count() as i64;
    let mut status = json!({"replicas": pods.len(), "fullyLabeledReplicas": pods.len(),
        "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1))});
    if pods.is_empty() {
        status
            .as_object_mut()
            .map(|m| m.remove("fullyLabeledReplicas"));
    }
    if ready > 0 {
        status["readyReplicas"] = json!(ready);
        status["availableReplicas"] = json!(ready);
    }
    if rs.get("status") != Some(&status) {
        let mut updated = rs.clone();
        updated["status"] = status;
        st.write(Kind::ReplicaSet, updated);
    }
}

fn create_pod(
    st: &mut State,
    rs: &Value,
    ns: &str,
    rs_name: &str,
    rs_uid: &str,
    deployment: &str,
    now: Instant,
) {
    let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let name = loop {
        st.name_seq += 1;
        let candidate = format!(
            "{rs_name}-{}",
            name_suffix(&format!("{rs_name}/{}", st.name_seq))
        );
        if !st.store.contains(Kind::Pod, ns, &candidate) {
            break candidate;
        }
    };
    // The kubelet runs images: the pod is the version its app container's image is.
    let version = super::objects::running_version(&template, deployment).unwrap_or_default();
    let main = super::objects::main_container(&template, deployment);
    let main_name = main
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("app")
        .to_string();
    let main_image = main
        .and_then(|c| c.get("image"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let behaviour = st.behaviours.lookup(ns, deployment, &version);
    st.ip_seq += 1;
    let uid = st.store.next_uid();
    let since = if st.backdate && behaviour.pods == PodMode::Running {
        now - std::time::Duration::from_secs(10)
    } else {
        now
    };
    let rt = PodRuntime {
        namespace: ns.into(),
        deployment: deployment.into(),
        pod: name.clone(),
        uid: uid.clone(),
        container: main_name.clone(),
        version,
        image: main_image,
        mode: behaviour.pods,
        since,
        restart_base: 0,
        last: None,
        pod_ip: format!(
            "10.{}.{}.{}",
            1 + (st.ip_seq >> 16) % 200,
            (st.ip_seq >> 8) & 255,
            st.ip_seq & 255
        ),
        node: format!("node-{}", 1 + st.ip_seq % 3),
        extras: extras(st, ns, deployment, &template, &main_name),
    };
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    if behaviour.pods != PodMode::Pending {
        spec["nodeName"] = json!(rt.node);
    }
    spec["enableServiceLinks"] = json!(true);
    let mut metadata = template.get("metadata").cloned().unwrap_or(json!({}));
    metadata["name"] = json!(name);
    metadata["generateName"] = json!(format!("{rs_name}-"));
    metadata["namespace"] = json!(ns);
    metadata["uid"] = json!(uid);
    metadata["creationTimestamp"] = json!(now_rfc3339());
    metadata["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs_name,
        "uid": rs_uid, "controller": true, "blockOwnerDeletion": true}]);
    // The first status is written with the pod: one write per pod instead of two.
    let mut rt = rt;
    let (state, next) = pods::evaluate(&rt, &behaviour, now);
    let created = metadata["creationTimestamp"].as_str().unwrap_or_default();
    let mut status = pods::render_status(&rt, &main_name, &state, created);
    pods::add_extra_statuses(&mut status, &rt, &state);
    st.note_pod_state(&rt, &state, now);
    rt.last = Some(state);
    let key = (ns.to_string(), name.clone());
    if let Some(at) = next {
        st.pod_timers.push(std::cmp::Reverse((at, key.clone())));
    }
    let pod = json!({"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": spec, "status": status});
    st.write(Kind::Pod, pod);
    if behaviour.pods == PodMode::Pending {
        st.scheduler_event(ns, &name, &uid, &behaviour.pending_reason);
    }
    st.pods.insert(key, rt);
}

/// The pod's containers other than the app's, from its template, with the starts each fails
/// as its Deployment's scenario says.
fn extras(
    st: &State,
    ns: &str,
    deployment: &str,
    template: &Value,
    main: &str,
) -> Vec<pods::Extra> {
    let fails = |name: &str| {
        st.failing_starts
            .get(&(ns.to_string(), deployment.to_string()))
            .and_then(|m| m.get(name))
            .copied()
            .unwrap_or(0)
    };
    let list = |path: &str| {
        template
            .pointer(path)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let text = |c: &Value, k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut out = Vec::new();
    for c in list("/spec/initContainers") {
        let name = text(&c, "name");
        out.push(pods::Extra {
            fails: fails(&name),
            image: text(&c, "image"),
            kind: if c.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
                pods::ExtraKind::Native
            } else {
                pods::ExtraKind::Init
            },
            name,
        });
    }
    for c in list("/spec/containers") {
        let name = text(&c, "name");
        if name == main {
            continue;
        }
        out.push(pods::Extra {
            fails: fails(&name),
            image: text(&c, "image"),
            kind: pods::ExtraKind::Sidecar,
            name,
        });
    }
    out
}

pub fn delete_pod(st: &mut State, ns: &str, name: &str) {
    st.pods.remove(&(ns.to_string(), name.to_string()));
    if let Some(old) = st.store.get(Kind::Pod, ns, name) {
        st.mark_owner_dirty(&old);
        st.store.remove(Kind::Pod, ns, name);
    }
}

/// Re-evaluates one pod's state; writes its status when the state changed.
pub fn refresh_pod(st: &mut State, ns: &str, name: &str, now: Instant) {
    let key = (ns.to_string(), name.to_string());
    let Some(rt) = st.pods.get(&key) else { return };
    let Some(pod) = st.store.get(Kind::Pod, ns, name) else {
        return;
    };
    let behaviour = st
        .behaviours
        .lookup(&rt.namespace, &rt.deployment, &rt.version);
    let (state, next) = pods::evaluate(rt, &behaviour, now);
    if let Some(at) = next {
        st.pod_timers.push(std::cmp::Reverse((at, key.clone())));
    }
    if rt.last.as_ref() == Some(&state) {
        return;
    }
    let container = super::objects::main_of(&pod["spec"]["containers"], &rt.deployment)
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("app")
        .to_string();
    let created = meta_str(&pod, "creationTimestamp")
        .unwrap_or_default()
        .to_string();
    let mut status = pods::render_status(rt, &container, &state, &created);
    pods::add_extra_statuses(&mut status, rt, &state);
    if let Some(rt) = st.pods.get(&key).cloned()
        && matches!(
            state.container,
            Some(pods::Container::Waiting {
                reason: "CrashLoopBackOff",
                ..
            })
        )
    {
        st.note_pod_state(&rt, &state, now);
    }
    if let Some(rt) = st.pods.get_mut(&key) {
        rt.last = Some(state);
    }
    let mut updated = (*pod).clone();
    updated["status"] = status;
    if let Some(rt) = st.pods.get(&key)
        && rt.last.as_ref().is_some_and(|s| s.scheduled.is_ok())
        && updated.pointer("/spec/nodeName").is_none()
    {
        // Capacity appeared (the behaviour changed): the scheduler binds the pod now.
        updated["spec"]["nodeName"] = json!(rt.node);
    }
    st.write(Kind::Pod, updated);
}

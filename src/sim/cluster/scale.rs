//! The `scale` subresource (`autoscaling/v1` Scale) of Deployments and ReplicaSets, which
//! `kubectl scale` patches.

use serde_json::{Value, json};

/// The Scale view of a Deployment or ReplicaSet.
pub fn to_scale(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = obj
        .pointer("/spec/selector")
        .map(selector_string)
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

/// The object with the replicas (and resourceVersion precondition) of a Scale applied.
pub fn apply_scale(obj: &Value, scale: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(replicas) = scale.pointer("/spec/replicas") {
        out["spec"]["replicas"] = replicas.clone();
    }
    match scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        Some(rv) if !rv.is_empty() => out["metadata"]["resourceVersion"] = json!(rv),
        _ => {
            if let Some(m) = out["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
        }
    }
    out
}

fn selector_string(sel: &Value) -> String {
    // matchExpressions are left out: the simulated workloads select by matchLabels only.
    let mut parts: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts.join(",")
}

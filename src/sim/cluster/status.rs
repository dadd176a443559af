//! Deployment status and conditions, as `syncRolloutStatus` computes them; `kubectl rollout
//! status` reads exactly these fields.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::controller::resync_after;
use super::objects::now_rfc3339;
use super::state::State;
use super::store::meta_str;

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn condition<'a>(status: &'a Value, ty: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

/// Sets a condition; keeps lastTransitionTime when the status did not flip, and the whole
/// condition (timestamps included) when nothing but `lastUpdateTime` would change and
/// `touch` is false.
fn set_condition(
    status: &mut Value,
    ty: &str,
    value: &str,
    reason: &str,
    message: &str,
    touch: bool,
) {
    let now = now_rfc3339();
    let old = condition(status, ty).cloned();
    if let Some(old) = &old
        && old["status"] == value
        && old["reason"] == reason
        && old["message"] == message
        && !touch
    {
        return;
    }
    let transition = match &old {
        Some(o) if o["status"] == value => o["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let cond = json!({"type": ty, "status": value, "lastUpdateTime": now, "lastTransitionTime": transition,
        "reason": reason, "message": message});
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    if let Some(list) = status["conditions"].as_array_mut() {
        match list.iter().position(|c| c["type"] == ty) {
            Some(i) => list[i] = cond,
            None => list.push(cond),
        }
    }
}

/// Writes the new status into `dep`; returns whether the rollout is complete.
pub fn update(
    st: &mut State,
    dep: &mut Value,
    rss: &[Value],
    new_rs: Option<&Value>,
    progressing: Option<(&str, String)>,
    max_unavailable: i64,
    now: Instant,
) -> bool {
    let desired = int(dep, "/spec/replicas");
    let old = dep.get("status").cloned().unwrap_or(json!({}));
    let sum = |p: &str| rss.iter().map(|rs| int(rs, p)).sum::<i64>();
    let replicas = sum("/status/replicas");
    let updated = new_rs.map_or(0, |rs| int(rs, "/status/replicas"));
    let ready = sum("/status/readyReplicas");
    let available = sum("/status/availableReplicas");
    let unavailable = (desired - available).max(0);
    let mut status = json!({"observedGeneration": dep.pointer("/metadata/generation").cloned().unwrap_or(json!(1))});
    for (k, v) in [
        ("replicas", replicas),
        ("updatedReplicas", updated),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("unavailableReplicas", unavailable),
    ] {
        if v != 0 {
            status[k] = json!(v);
        }
    }
    let key = (
        meta_str(dep, "namespace").unwrap_or_default().to_string(),
        meta_str(dep, "name").unwrap_or_default().to_string(),
    );
    let collisions = st
        .collisions
        .get(&key)
        .copied()
        .map_or(int(&old, "/collisionCount"), i64::from);
    if collisions > 0 {
        status["collisionCount"] = json!(collisions);
    }
    if let Some(c) = old.get("conditions") {
        status["conditions"] = c.clone();
    }
    if available >= desired - max_unavailable {
        set_condition(
            &mut status,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            false,
        );
    } else {
        set_condition(
            &mut status,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            false,
        );
    }
    let paused = dep.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
    let deadline = dep
        .pointer("/spec/progressDeadlineSeconds")
        .and_then(Value::as_i64);
    let rs_name = new_rs
        .and_then(|rs| meta_str(rs, "name"))
        .unwrap_or_default()
        .to_string();
    let complete = updated == desired
        && replicas == desired
        && available == desired
        && int(&status, "/observedGeneration") >= int(dep, "/metadata/generation");
    if let Some(deadline) = deadline {
        let reason = condition(&status, "Progressing")
            .and_then(|c| c["reason"].as_str())
            .unwrap_or_default()
            .to_string();
        if paused {
            // `checkPausedConditions`: a reported lack of progress is not overwritten by the
            // pause, and stays on resume until progress is seen.
            if reason != "DeploymentPaused" && reason != "ProgressDeadlineExceeded" {
                set_condition(
                    &mut status,
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused",
                    false,
                );
            }
        } else {
            if reason == "DeploymentPaused" {
                set_condition(
                    &mut status,
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed",
                    false,
                );
            }
            if let Some((reason, message)) = &progressing {
                set_condition(&mut status, "Progressing", "True", reason, message, true);
            }
            let cur = condition(&status, "Progressing").cloned();
            let already_complete = replicas == updated
                && cur
                    .as_ref()
                    .is_some_and(|c| c["reason"] == "NewReplicaSetAvailable");
            if !already_complete {
                let old_old = int(&old, "/replicas") - int(&old, "/updatedReplicas");
                let made_progress = updated > int(&old, "/updatedReplicas")
                    || replicas - updated < old_old
                    || ready > int(&old, "/readyReplicas")
                    || available > int(&old, "/availableReplicas");
                if complete {
                    set_condition(
                        &mut status,
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                        false,
                    );
                } else if made_progress {
                    set_condition(
                        &mut status,
                        "Progressing",
                        "True",
                        "ReplicaSetUpdated",
                        &format!("ReplicaSet \"{rs_name}\" is progressing."),
                        true,
                    );
                    resync_after(
                        st,
                        &key.0,
                        &key.1,
                        now,
                        Duration::from_secs(deadline.max(0) as u64 + 1),
                    );
                } else if let Some(c) = cur.filter(|c| c["reason"] != "ProgressDeadlineExceeded") {
                    let since = c["lastUpdateTime"]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
                    let elapsed = since
                        .map(|t| jiff::Timestamp::now().duration_since(t).as_secs())
                        .unwrap_or(0);
                    if elapsed > deadline {
                        set_condition(
                            &mut status,
                            "Progressing",
                            "False",
                            "ProgressDeadlineExceeded",
                            &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                            false,
                        );
                    } else {
                        resync_after(
                            st,
                            &key.0,
                            &key.1,
                            now,
                            Duration::from_secs((deadline - elapsed).max(0) as u64 + 1),
                        );
                    }
                }
            }
        }
    }
    dep["status"] = status;
    complete
}

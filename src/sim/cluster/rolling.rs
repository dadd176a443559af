//! RollingUpdate arithmetic: maxSurge/maxUnavailable fenceposts and old ReplicaSet scale-down,
//! after `pkg/controller/deployment/rolling.go`.

use serde_json::{Value, json};

use super::objects::{int_at as int, scaled};

/// (maxSurge, maxUnavailable) resolved against `desired`, as `ResolveFenceposts` does.
pub fn fenceposts(dep: &Value, desired: i64) -> (i64, i64) {
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

/// `reconcileOldReplicaSets`: scale old ReplicaSets down, unhealthy pods first, never below
/// `desired - maxUnavailable` available pods.
pub fn scale_down_old(
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

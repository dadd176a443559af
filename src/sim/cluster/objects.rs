//! Object helpers: timestamps, the pod-template hash, API defaulting, and the
//! objects the runner creates directly.

use serde_json::{Map, Value, json};

/// The current time as Kubernetes prints it (RFC 3339, whole seconds, UTC).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Microsecond time, as `eventTime` and lease times use.
pub fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.%6fZ")
        .to_string()
}

/// JSON with object keys sorted at every level, so the hash never depends on key order.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Kubernetes' `rand.SafeEncodeString` alphabet: no vowels, no look-alikes.
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE[usize::from(b) % SAFE.len()] as char)
        .collect()
}

/// The `pod-template-hash` of a template, computed like `controller.ComputeHash`: FNV-32a of the
/// template (without the hash label), printed in decimal and safe-encoded.
pub fn template_hash(template: &Value, collision_count: u32) -> String {
    let mut t = template.clone();
    strip_hash_label(&mut t);
    let mut s = String::new();
    canonical(&t, &mut s);
    if collision_count > 0 {
        s.push_str(&collision_count.to_string());
    }
    safe_encode(&fnv1a32(s.as_bytes()).to_string())
}

/// Five "random-looking" characters for a generated name, deterministic per seed.
pub fn name_suffix(seed: &str) -> String {
    let mut h = fnv1a32(seed.as_bytes());
    let mut out = String::with_capacity(5);
    for _ in 0..5 {
        out.push(SAFE[(h % SAFE.len() as u32) as usize] as char);
        h = h.wrapping_mul(0x0100_0193) ^ (h >> 13);
    }
    out
}

pub fn strip_hash_label(template: &mut Value) {
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
        if labels.is_empty()
            && let Some(meta) = template.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("labels");
        }
    }
}

/// `equalIgnoreHash`: templates equal once the hash label is dropped from both.
pub fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    let (mut a, mut b) = (a.clone(), b.clone());
    strip_hash_label(&mut a);
    strip_hash_label(&mut b);
    a == b
}

fn set_default(obj: &mut Map<String, Value>, key: &str, value: Value) {
    if !obj.contains_key(key) || obj[key].is_null() {
        obj.insert(key.into(), value);
    }
}

/// Drops null fields, as decoding into the API's Go types does (`creationTimestamp: null` in a
/// template sent by kubectl must not make it differ from the stored one).
pub fn prune_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(prune_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(prune_nulls),
        _ => {}
    }
}

/// API-server defaulting of a pod template (the fields `kubectl rollout history` shows and that
/// a rollback must reproduce exactly).
pub fn default_pod_template(template: &mut Value) {
    let Some(t) = template.as_object_mut() else {
        return;
    };
    set_default(t, "metadata", json!({}));
    let Some(spec) = t.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            let latest = c.get("image").and_then(Value::as_str).is_some_and(|i| {
                i.ends_with(":latest") || !i.rsplit('/').next().unwrap_or(i).contains(':')
            });
            set_default(
                c,
                "imagePullPolicy",
                json!(if latest { "Always" } else { "IfNotPresent" }),
            );
            set_default(c, "resources", json!({}));
            set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
            set_default(c, "terminationMessagePolicy", json!("File"));
            if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
    }
}

/// API-server defaulting of a Deployment.
pub fn default_deployment(dep: &mut Value) {
    let Some(spec) = dep.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    set_default(spec, "strategy", json!({"type": "RollingUpdate"}));
    if let Some(strategy) = spec.get_mut("strategy").and_then(Value::as_object_mut)
        && strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
    {
        set_default(strategy, "rollingUpdate", json!({}));
        if let Some(ru) = strategy
            .get_mut("rollingUpdate")
            .and_then(Value::as_object_mut)
        {
            set_default(ru, "maxSurge", json!("25%"));
            set_default(ru, "maxUnavailable", json!("25%"));
        }
    }
    if let Some(t) = spec.get_mut("template") {
        default_pod_template(t);
    }
}

/// An integer field at a JSON pointer, 0 when absent.
pub fn int_at(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// The version of a pod template: its `app.kubernetes.io/version` label, else the image tag.
pub fn template_version(template: &Value) -> Option<String> {
    if let Some(v) = template
        .pointer("/metadata/labels/app.kubernetes.io~1version")
        .and_then(Value::as_str)
    {
        return Some(v.to_string());
    }
    let image = template.pointer("/spec/containers/0/image")?.as_str()?;
    let last = image.rsplit('/').next()?;
    last.split_once(':').map(|(_, tag)| tag.to_string())
}

/// The app container of a pod template of the Deployment `deployment`, as a kubelet-side view
/// of "what runs": the container named like the Deployment, else the first that is not a known
/// sidecar, else the first.
pub fn main_container<'a>(template: &'a Value, deployment: &str) -> Option<&'a Value> {
    main_of(template.pointer("/spec/containers")?, deployment)
}

/// [`main_container`] of a pod spec's `containers`.
pub fn main_of<'a>(containers: &'a Value, deployment: &str) -> Option<&'a Value> {
    let containers = containers.as_array()?;
    let name = |c: &Value| {
        c.get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    containers
        .iter()
        .find(|c| name(c) == deployment)
        .or_else(|| {
            containers
                .iter()
                .find(|c| !crate::cluster::version::KNOWN_SIDECARS.contains(&name(c).as_str()))
        })
        .or_else(|| containers.first())
}

/// The version a pod of `template` runs: its app container's image tag (labels are metadata;
/// `kubectl set image` leaves them behind), else the version label for an untagged image.
pub fn running_version(template: &Value, deployment: &str) -> Option<String> {
    main_container(template, deployment)
        .and_then(|c| c.get("image"))
        .and_then(Value::as_str)
        .and_then(crate::cluster::version::image_tag)
        .map(str::to_string)
        .or_else(|| template_version(template))
}

/// Resolves an int-or-percent like `intstr.GetScaledValueFromIntOrPercent`.
pub fn scaled(v: Option<&Value>, total: i64, round_up: bool) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) if round_up => (p * total + 99) / 100,
            Some(p) => p * total / 100,
            None => s.parse().unwrap_or(0),
        },
        _ => 0,
    }
}

/// `ValidateLease` (coordination validation): a duration and a transition count that make
/// sense, a preferred holder only with a strategy.
pub fn validate_lease(lease: &Value) -> Result<(), super::error::ApiError> {
    use super::error::{ApiError, FieldError};
    let mut errs = Vec::new();
    if let Some(d) = lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        .filter(|d| *d <= 0)
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            &d.to_string(),
            "must be greater than 0",
        ));
    }
    if let Some(t) = lease
        .pointer("/spec/leaseTransitions")
        .and_then(Value::as_i64)
        .filter(|t| *t < 0)
    {
        errs.push(FieldError::invalid(
            "spec.leaseTransitions",
            &t.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    let preferred = lease
        .pointer("/spec/preferredHolder")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty());
    let strategy = lease
        .pointer("/spec/strategy")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty());
    if preferred && !strategy {
        errs.push(FieldError::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
    if errs.is_empty() {
        return Ok(());
    }
    let name = lease
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Err(ApiError::invalid_fields(
        "Lease",
        "coordination.k8s.io",
        name,
        errs,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hash_ignores_key_order_and_hash_label() {
        let a = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {}});
        let b = json!({"spec": {}, "metadata": {"labels": {"b": "2", "a": "1", "pod-template-hash": "x"}}});
        assert_eq!(template_hash(&a, 0), template_hash(&b, 0));
        assert!(
            template_hash(&a, 0)
                .chars()
                .all(|c| c.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        assert_eq!(scaled(Some(&json!("25%")), 3, true), 1);
        assert_eq!(scaled(Some(&json!("25%")), 3, false), 0);
        assert_eq!(scaled(Some(&json!(2)), 3, false), 2);
    }
}

//! Server-side printing: `meta.k8s.io/v1` Tables with the columns `kubectl get` shows.

use serde_json::{Value, json};

use super::discovery::Resource;
use super::store::Kind;

/// What each row carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// True when the Accept header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .any(|part| part.contains("as=Table") && part.contains("g=meta.k8s.io"))
}

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn columns(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Deployment => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Up-to-date", "integer", 0),
            col("Available", "integer", 0),
            col("Age", "string", 0),
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        Kind::ReplicaSet => vec![
            col("Name", "string", 0),
            col("Desired", "integer", 0),
            col("Current", "integer", 0),
            col("Ready", "integer", 0),
            col("Age", "string", 0),
            col("Containers", "string", 1),
            col("Images", "string", 1),
            col("Selector", "string", 1),
        ],
        Kind::Pod => vec![
            col("Name", "string", 0),
            col("Ready", "string", 0),
            col("Status", "string", 0),
            col("Restarts", "string", 0),
            col("Age", "string", 0),
            col("IP", "string", 1),
            col("Node", "string", 1),
            col("Nominated Node", "string", 1),
            col("Readiness Gates", "string", 1),
        ],
        Kind::Event => vec![
            col("Last Seen", "string", 0),
            col("Type", "string", 0),
            col("Reason", "string", 0),
            col("Object", "string", 0),
            col("Message", "string", 0),
        ],
        Kind::Namespace => vec![
            col("Name", "string", 0),
            col("Status", "string", 0),
            col("Age", "string", 0),
        ],
        Kind::Lease => vec![
            col("Name", "string", 0),
            col("Holder", "string", 0),
            col("Age", "string", 0),
        ],
        Kind::Application | Kind::ApplicationSet | Kind::Kustomization | Kind::HelmRelease => {
            vec![col("Name", "string", 0), col("Age", "string", 0)]
        }
    }
}

/// kubectl's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => {
            if s % 60 == 0 {
                format!("{}m", s / 60)
            } else {
                format!("{}m{}s", s / 60, s % 60)
            }
        }
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => {
            if (s / 60) % 60 == 0 {
                format!("{}h", s / 3600)
            } else {
                format!("{}h{}m", s / 3600, (s / 60) % 60)
            }
        }
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s if s < 8 * 86400 => {
            if (s / 3600) % 24 == 0 {
                format!("{}d", s / 86400)
            } else {
                format!("{}d{}h", s / 86400, (s / 3600) % 24)
            }
        }
        s => format!("{}d", s / 86400),
    }
}

fn age_of(ts: Option<&str>) -> String {
    match ts.and_then(|t| t.parse::<jiff::Timestamp>().ok()) {
        Some(t) => human_duration(jiff::Timestamp::now().duration_since(t).as_secs()),
        None => "<unknown>".into(),
    }
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

fn i(v: &Value, p: &str) -> i64 {
    v.pointer(p).and_then(Value::as_i64).unwrap_or(0)
}

fn containers(v: &Value, p: &str) -> (String, String) {
    let cs = v
        .pointer(p)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

fn selector(v: &Value) -> String {
    let mut parts: Vec<String> = v
        .pointer("/spec/selector/matchLabels")
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

/// kubectl's pod STATUS column (`printPod`).
pub fn pod_status(pod: &Value) -> String {
    let mut reason = s(pod, "/status/phase").to_string();
    if let Some(r) = pod.pointer("/status/reason").and_then(Value::as_str) {
        reason = r.to_string();
    }
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut has_running = false;
    for c in statuses.iter().rev() {
        if let Some(w) = c
            .pointer("/state/waiting/reason")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
        {
            reason = w.to_string();
        } else if let Some(t) = c.pointer("/state/terminated") {
            reason = t["reason"]
                .as_str()
                .map_or_else(|| format!("ExitCode:{}", t["exitCode"]), String::from);
        } else if c["ready"] == true && c.pointer("/state/running").is_some() {
            has_running = true;
        }
    }
    if reason == "Completed" && has_running {
        reason = "Running".into();
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".into();
    }
    reason
}

fn cells(kind: Kind, v: &Value) -> Vec<Value> {
    let name = s(v, "/metadata/name");
    let age = age_of(
        v.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
    );
    match kind {
        Kind::Deployment => {
            let (c, im) = containers(v, "/spec/template/spec/containers");
            vec![
                json!(name),
                json!(format!(
                    "{}/{}",
                    i(v, "/status/readyReplicas"),
                    i(v, "/spec/replicas")
                )),
                json!(i(v, "/status/updatedReplicas")),
                json!(i(v, "/status/availableReplicas")),
                json!(age),
                json!(c),
                json!(im),
                json!(selector(v)),
            ]
        }
        Kind::ReplicaSet => {
            let (c, im) = containers(v, "/spec/template/spec/containers");
            vec![
                json!(name),
                json!(i(v, "/spec/replicas")),
                json!(i(v, "/status/replicas")),
                json!(i(v, "/status/readyReplicas")),
                json!(age),
                json!(c),
                json!(im),
                json!(selector(v)),
            ]
        }
        Kind::Pod => {
            let statuses = v
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let total = v
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .sum();
            let restarts = match statuses
                .iter()
                .filter_map(|c| c.pointer("/lastState/terminated/finishedAt"))
                .filter_map(Value::as_str)
                .next()
            {
                Some(t) if restarts > 0 => format!("{restarts} ({} ago)", age_of(Some(t))),
                _ => restarts.to_string(),
            };
            let ip = v
                .pointer("/status/podIP")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            let node = v
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("<none>");
            vec![
                json!(name),
                json!(format!("{ready}/{total}")),
                json!(pod_status(v)),
                json!(restarts),
                json!(age),
                json!(ip),
                json!(node),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        Kind::Event => {
            let last = [
                "/lastTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .find_map(|p| v.pointer(p).and_then(Value::as_str))
            .map(|t| age_of(Some(t)))
            .unwrap_or_else(|| "<unknown>".into());
            let object = format!(
                "{}/{}",
                s(v, "/involvedObject/kind").to_lowercase(),
                s(v, "/involvedObject/name")
            );
            vec![
                json!(last),
                json!(s(v, "/type")),
                json!(s(v, "/reason")),
                json!(object),
                json!(s(v, "/message")),
            ]
        }
        Kind::Namespace => vec![json!(name), json!(s(v, "/status/phase")), json!(age)],
        Kind::Lease => vec![json!(name), json!(s(v, "/spec/holderIdentity")), json!(age)],
        Kind::Application | Kind::ApplicationSet | Kind::Kustomization | Kind::HelmRelease => {
            vec![json!(name), json!(age)]
        }
    }
}

fn row(res: &Resource, obj: &Value, include: Include) -> Value {
    let mut row = json!({"cells": cells(res.kind, obj)});
    match include {
        Include::None => {}
        Include::Metadata => {
            row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]});
        }
        Include::Object => row["object"] = res.view(obj),
    }
    row
}

/// A Table of `objects` (stored shape) for `res`.
pub fn table(
    res: &Resource,
    objects: &[&Value],
    include: Include,
    rv: Option<String>,
    cont: Option<String>,
) -> Value {
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv);
    }
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": columns(res.kind),
        "rows": objects.iter().map(|o| row(res, o, include)).collect::<Vec<_>>()})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600), "4h");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn table_accept_header() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}

//! Events are stored once, in the core `v1` shape; `events.k8s.io/v1` is a view converted the
//! way the API server converts between the two versions.

use serde_json::{Map, Value, json};

fn copy(from: &Value, to: &mut Map<String, Value>, src: &str, dst: &str) {
    if let Some(v) = from.get(src).filter(|v| !v.is_null()) {
        to.insert(dst.into(), v.clone());
    }
}

/// core/v1 Event → events.k8s.io/v1 Event.
pub fn core_to_events(core: &Value) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    copy(core, &mut out, "metadata", "metadata");
    copy(core, &mut out, "involvedObject", "regarding");
    copy(core, &mut out, "related", "related");
    copy(core, &mut out, "message", "note");
    copy(core, &mut out, "reason", "reason");
    copy(core, &mut out, "type", "type");
    copy(core, &mut out, "action", "action");
    copy(core, &mut out, "reportingComponent", "reportingController");
    copy(core, &mut out, "reportingInstance", "reportingInstance");
    copy(core, &mut out, "series", "series");
    copy(core, &mut out, "eventTime", "eventTime");
    if !out.contains_key("eventTime") {
        copy(core, &mut out, "firstTimestamp", "eventTime");
    }
    if let Some(src) = core.get("source") {
        out.insert("deprecatedSource".into(), src.clone());
    }
    copy(core, &mut out, "firstTimestamp", "deprecatedFirstTimestamp");
    copy(core, &mut out, "lastTimestamp", "deprecatedLastTimestamp");
    copy(core, &mut out, "count", "deprecatedCount");
    if !out.contains_key("reportingController")
        && let Some(c) = core.pointer("/source/component")
    {
        out.insert("reportingController".into(), c.clone());
    }
    Value::Object(out)
}

/// events.k8s.io/v1 Event → core/v1 Event.
pub fn events_to_core(ev: &Value) -> Value {
    let mut out = Map::new();
    out.insert("kind".into(), json!("Event"));
    out.insert("apiVersion".into(), json!("v1"));
    copy(ev, &mut out, "metadata", "metadata");
    copy(ev, &mut out, "regarding", "involvedObject");
    copy(ev, &mut out, "related", "related");
    copy(ev, &mut out, "note", "message");
    copy(ev, &mut out, "reason", "reason");
    copy(ev, &mut out, "type", "type");
    copy(ev, &mut out, "action", "action");
    copy(ev, &mut out, "reportingController", "reportingComponent");
    copy(ev, &mut out, "reportingInstance", "reportingInstance");
    copy(ev, &mut out, "series", "series");
    copy(ev, &mut out, "eventTime", "eventTime");
    copy(ev, &mut out, "deprecatedSource", "source");
    copy(ev, &mut out, "deprecatedFirstTimestamp", "firstTimestamp");
    copy(ev, &mut out, "deprecatedLastTimestamp", "lastTimestamp");
    copy(ev, &mut out, "deprecatedCount", "count");
    if !out.contains_key("source")
        && let Some(c) = ev.get("reportingController")
    {
        out.insert("source".into(), json!({"component": c}));
    }
    if !out.contains_key("involvedObject") {
        out.insert("involvedObject".into(), json!({}));
    }
    Value::Object(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_the_fields_both_shapes_have() {
        let ev = json!({"metadata": {"name": "e", "namespace": "ns"}, "regarding": {"kind": "Deployment", "name": "app"},
            "note": "rolled back", "reason": "RolledBack", "type": "Warning", "reportingController": "deploy-watchdog",
            "reportingInstance": "pod-1", "action": "Rollback", "eventTime": "2026-01-01T00:00:00.000000Z"});
        let core = events_to_core(&ev);
        assert_eq!(core["message"], "rolled back");
        assert_eq!(core["involvedObject"]["name"], "app");
        assert_eq!(core["source"]["component"], "deploy-watchdog");
        let back = core_to_events(&core);
        for k in [
            "note",
            "reason",
            "type",
            "reportingController",
            "regarding",
            "eventTime",
            "action",
        ] {
            assert_eq!(back[k], ev[k], "{k}");
        }
    }
}

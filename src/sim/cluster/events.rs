//! Events are stored once, in the core `v1` shape; `events.k8s.io/v1` is a view converted the
//! way the API server converts between the two versions.

use serde_json::{Map, Value, json};

use super::error::{ApiError, FieldError, go_quote};

/// The API server's limits on Event fields (`pkg/apis/core/validation/events.go`), in bytes.
const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

/// Go's `time.Parse` with `metav1.RFC3339Micro` (`2006-01-02T15:04:05.000000Z07:00`): exactly
/// six fractional digits, then `Z` or a numeric offset. What a `MicroTime` accepts.
pub fn is_micro_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let shape = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19)
        && at(19, b'.')
        && digits(20..26);
    let zone = s.get(26..).unwrap_or_default();
    let zone_ok = zone == "Z"
        || (zone.len() == 6
            && (at(26, b'+') || at(26, b'-'))
            && digits(27..29)
            && at(29, b':')
            && digits(30..32));
    // The shape right, the values must be a real instant too (no month 13).
    shape && zone_ok && s.parse::<jiff::Timestamp>().is_ok()
}

/// The decoder's answer to a `MicroTime` field it cannot parse: 400 BadRequest, worded as the
/// API server's `transformDecodeError` words a decoding error.
pub fn check_micro_times(
    kind: &str,
    version: &str,
    obj: &Value,
    fields: &[&str],
) -> Result<(), ApiError> {
    for f in fields {
        let Some(v) = obj.pointer(f).filter(|v| !v.is_null()) else {
            continue;
        };
        if !v.as_str().is_some_and(is_micro_time) {
            return Err(ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: parsing time {v} as \"2006-01-02T15:04:05.000000Z07:00\""
            )));
        }
    }
    Ok(())
}

fn text<'a>(obj: &'a Value, path: &str) -> &'a str {
    obj.pointer(path)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A DNS-1123 subdomain (`IsDNS1123Subdomain`): at most 253 characters of lower-case
/// alphanumerics, `-` and `.`, starting and ending alphanumeric.
pub fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    let ok_chars = s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    let ends = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let labels_ok = s
        .split('.')
        .all(|l| !l.is_empty() && ends(l.bytes().next()) && ends(l.bytes().last()));
    if !(ok_chars && labels_ok) {
        errs.push("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
    }
    errs
}

/// `IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn qualified_name_errors(s: &str) -> Vec<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(
                dns1123_subdomain_errors(p)
                    .into_iter()
                    .map(|e| format!("prefix part {e}")),
            );
        }
    }
    let edge = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            errs.push("name part must be no more than 63 characters".to_string());
        }
        let chars = name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !(chars && edge(name.bytes().next()) && edge(name.bytes().last())) {
            errs.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".to_string());
        }
    }
    errs
}

/// `ValidateEventCreate` for an Event created through `group` (`""` is core/v1: legacy checks
/// only; `events.k8s.io` adds the strict ones). `ev` is the body in the request's own shape,
/// with its final name and namespace.
pub fn validate_create(group: &str, ev: &Value) -> Result<(), ApiError> {
    let strict = group == "events.k8s.io";
    // The field names of the request's version, mapped to the internal (core) ones.
    let f = |core: &'static str, events: &'static str| if strict { events } else { core };
    let namespace = text(ev, "/metadata/namespace");
    let name = text(ev, "/metadata/name");
    let involved_ns = text(
        ev,
        &format!("/{}/namespace", f("involvedObject", "regarding")),
    );
    let event_time = ev.get("eventTime").filter(|v| !v.is_null()).is_some();
    let mut errs = Vec::new();
    if !event_time {
        let agrees = if involved_ns.is_empty() {
            namespace.is_empty() || namespace == "default"
        } else {
            namespace == involved_ns
        };
        if !agrees {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                &go_quote(involved_ns),
                "does not match event.namespace",
            ));
        }
    } else {
        if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
            errs.push(FieldError::invalid(
                "involvedObject.namespace",
                &go_quote(involved_ns),
                "does not match event.namespace",
            ));
        }
        let controller = text(
            ev,
            &format!("/{}", f("reportingComponent", "reportingController")),
        );
        if controller.is_empty() {
            errs.push(FieldError::required("reportingController"));
        }
        for msg in qualified_name_errors(controller) {
            errs.push(FieldError::invalid(
                "reportingController",
                &go_quote(controller),
                &msg,
            ));
        }
        let limited = |errs: &mut Vec<FieldError>, field: &str, value: &str, limit: usize| {
            if value.is_empty() && field != "message" {
                errs.push(FieldError::required(field));
            }
            if value.len() > limit {
                errs.push(FieldError::invalid(
                    field,
                    "\"\"",
                    &format!("can have at most {limit} characters"),
                ));
            }
        };
        limited(
            &mut errs,
            "reportingInstance",
            text(ev, "/reportingInstance"),
            REPORTING_INSTANCE_LIMIT,
        );
        limited(&mut errs, "action", text(ev, "/action"), ACTION_LIMIT);
        limited(&mut errs, "reason", text(ev, "/reason"), REASON_LIMIT);
        limited(
            &mut errs,
            "message",
            text(ev, &format!("/{}", f("message", "note"))),
            NOTE_LIMIT,
        );
    }
    for msg in dns1123_subdomain_errors(namespace) {
        errs.push(FieldError::invalid("namespace", &go_quote(namespace), &msg));
    }
    if strict {
        for msg in dns1123_subdomain_errors(name) {
            errs.push(FieldError::invalid("metadata.name", &go_quote(name), &msg));
        }
        if let Some(series) = ev.get("series").filter(|s| !s.is_null()) {
            if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
                errs.push(FieldError::invalid(
                    "series.count",
                    "\"\"",
                    "should be at least 2",
                ));
            }
            if series.get("lastObservedTime").is_none_or(Value::is_null) {
                errs.push(FieldError::required("series.lastObservedTime"));
            }
        }
        if !event_time {
            errs.push(FieldError::required("eventTime"));
        }
        let ty = text(ev, "/type");
        if ty != "Normal" && ty != "Warning" {
            errs.push(FieldError::invalid(
                "type",
                "\"\"",
                &format!("has invalid value: {ty}"),
            ));
        }
        for (field, path) in [
            ("firstTimestamp", "/deprecatedFirstTimestamp"),
            ("lastTimestamp", "/deprecatedLastTimestamp"),
        ] {
            if ev.pointer(path).is_some_and(|v| !v.is_null()) {
                errs.push(FieldError::invalid(field, "\"\"", "needs to be unset"));
            }
        }
        if ev
            .get("deprecatedCount")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            != 0
        {
            errs.push(FieldError::invalid("count", "\"\"", "needs to be unset"));
        }
        if !text(ev, "/deprecatedSource/component").is_empty()
            || !text(ev, "/deprecatedSource/host").is_empty()
        {
            errs.push(FieldError::invalid("source", "\"\"", "needs to be unset"));
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid_fields("Event", group, name, errs))
}

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

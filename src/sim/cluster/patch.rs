//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.
//!
//! Strategic merge limits (documented on purpose): the merge key of a list is chosen by the
//! list's field name from the table below rather than from the OpenAPI schema of the full path;
//! lists not in the table are replaced, as Kubernetes does for atomic lists. `$patch: replace`
//! and `$patch: delete` (in maps and in list items), and `$patch: replace` as a list item are
//! supported; `$retainKeys`, `$setElementOrder/…` and `$deleteFromPrimitiveList/…` are ignored.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::error::ApiError;

/// The patch formats the server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    /// From the request's Content-Type; apply patches (server-side apply) are not supported.
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            other => Err(ApiError::unsupported_media(other)),
        }
    }
}

/// Merge keys of the lists Kubernetes merges by key (field name → key).
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "ports" => "containerPort",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Applies `patch` (raw body) of `ty` to `doc`.
pub fn apply(doc: &Value, ty: PatchType, body: &[u8]) -> Result<Value, ApiError> {
    let mut out = doc.clone();
    match ty {
        PatchType::Json => {
            let ops: Vec<Map<String, Value>> = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let raw: Vec<std::collections::HashMap<String, Box<RawValue>>> =
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            for (op, raw) in ops.into_iter().zip(raw) {
                if op.get("op").and_then(Value::as_str) == Some("test") {
                    go_test(&out, &op, raw.get("value").map(|v| v.get()))
                        .map_err(|e| ApiError::invalid_patch(&e))?;
                    continue;
                }
                let one: json_patch::Patch =
                    serde_json::from_value(Value::Array(vec![Value::Object(op)]))
                        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut out, &one)
                    .map_err(|e| ApiError::invalid_patch(&e.to_string()))?;
            }
        }
        PatchType::Merge => {
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid merge patch: {e}")))?;
            json_patch::merge(&mut out, &p);
        }
        PatchType::Strategic => {
            let p: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("invalid strategic merge patch: {e}"))
            })?;
            out = strategic_merge(&out, &p);
        }
    }
    Ok(out)
}

/// Whether a patch body (JSON patch, merge or strategic merge) writes a Deployment's
/// `spec.template`, as a rollback does.
pub fn writes_template(body: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(ops)) => ops.iter().any(|op| {
            op["op"] != "test"
                && op["path"]
                    .as_str()
                    .is_some_and(|p| p == "/spec" || p.starts_with("/spec/template"))
        }),
        Ok(doc) => doc.pointer("/spec/template").is_some(),
        Err(_) => false,
    }
}

impl ApiError {
    /// What the API server answers when the JSON patch library refuses a patch (a failed
    /// `test`, a missing path): `NewGenericServerResponse(422, …)`, whose message drops the
    /// library's words and whose `details` is empty.
    fn invalid_patch(why: &str) -> Self {
        tracing::debug!(why, "JSON patch refused");
        let mut e =
            ApiError::bad_request("the server rejected our request due to an error in our request");
        e.code = 422;
        e.reason = "Invalid";
        e.with_empty_details()
    }
}

/// Go's `encoding/json` rendering of a scalar, as the API server encodes the object a JSON
/// patch applies to: HTML-escaped (`<`, `>`, `&` as `\u003c`…) and U+2028/U+2029 escaped.
pub fn go_encode_scalar(v: &Value) -> String {
    let Value::String(s) = v else {
        return v.to_string();
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// RFC 6902 `test` as the API server's JSON patch library (evanphx/json-patch) does it: objects
/// and arrays are compared member by member, but a string, number or boolean is compared as
/// bytes, the document's Go encoding against the patch's own text. So a value the client wrote
/// without Go's HTML escaping (`>` rather than `\u003e`) does not match.
fn go_test(doc: &Value, op: &Map<String, Value>, value: Option<&str>) -> Result<(), String> {
    let path = op.get("path").and_then(Value::as_str).unwrap_or_default();
    let (parent, key) = match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => {
            return Err(format!(
                "test operation does not apply: is missing path: {path}"
            ));
        }
    };
    let unescape = |k: &str| k.replace("~1", "/").replace("~0", "~");
    let container = doc
        .pointer(parent)
        .filter(|c| c.is_object() || c.is_array())
        .ok_or_else(|| format!("test operation does not apply: is missing path: {path}"))?;
    let found = match container {
        Value::Object(m) => m.get(&unescape(key)),
        Value::Array(a) => Some(
            key.parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .ok_or_else(|| format!("error in test for path: '{path}'"))?,
        ),
        _ => None,
    };
    let value = value.map(str::trim).filter(|v| *v != "null");
    let failed = || format!("testing value {path} failed");
    match (found.filter(|v| !v.is_null()), value) {
        (None, None) => Ok(()),
        (Some(doc), Some(raw)) if go_equal(doc, raw) => Ok(()),
        _ => Err(failed()),
    }
}

fn go_equal(doc: &Value, raw: &str) -> bool {
    match doc {
        Value::Object(m) => {
            let Ok(other) = serde_json::from_str::<Map<String, Value>>(raw) else {
                return false;
            };
            let Ok(raws) =
                serde_json::from_str::<std::collections::HashMap<String, Box<RawValue>>>(raw)
            else {
                return false;
            };
            // The library checks that each member of the document is in the value, not the
            // reverse.
            m.iter().all(|(k, v)| match (v, raws.get(k), other.get(k)) {
                (_, None, _) => false,
                (Value::Null, Some(_), Some(Value::Null)) => true,
                (v, Some(r), _) => go_equal(v, r.get()),
            })
        }
        Value::Array(a) => {
            let Ok(raws) = serde_json::from_str::<Vec<Box<RawValue>>>(raw) else {
                return false;
            };
            a.len() == raws.len() && a.iter().zip(&raws).all(|(v, r)| go_equal(v, r.get()))
        }
        scalar => go_encode_scalar(scalar) == raw.trim(),
    }
}

/// Strategic merge of `patch` into `doc` (see the module comment for the supported directives).
pub fn strategic_merge(doc: &Value, patch: &Value) -> Value {
    match (doc, patch) {
        (Value::Object(d), Value::Object(p)) => Value::Object(merge_map(d, p)),
        (_, p) => clean(p),
    }
}

fn merge_map(doc: &Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => return clean_map(patch),
        Some("delete") => return Map::new(),
        _ => {}
    }
    let mut out = doc.clone();
    for (k, pv) in patch {
        if k.starts_with('$') {
            continue;
        }
        match pv {
            Value::Null => {
                out.remove(k);
            }
            Value::Object(pm) => {
                let merged = match out.get(k) {
                    Some(Value::Object(dm)) => merge_map(dm, pm),
                    _ => merge_map(&Map::new(), pm),
                };
                out.insert(k.clone(), Value::Object(merged));
            }
            Value::Array(pa) => {
                let merged = match (merge_key(k), out.get(k)) {
                    (Some(key), Some(Value::Array(da))) => merge_list(da, pa, key),
                    _ => pa.iter().filter(|x| !is_directive(x)).map(clean).collect(),
                };
                out.insert(k.clone(), Value::Array(merged));
            }
            other => {
                out.insert(k.clone(), other.clone());
            }
        }
    }
    out
}

fn is_directive(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.len() == 1 && m.contains_key("$patch"))
}

fn merge_list(doc: &[Value], patch: &[Value], key: &str) -> Vec<Value> {
    if patch
        .iter()
        .any(|x| x.get("$patch").and_then(Value::as_str) == Some("replace") && is_directive(x))
    {
        return patch
            .iter()
            .filter(|x| !is_directive(x))
            .map(clean)
            .collect();
    }
    let mut out: Vec<Value> = doc.to_vec();
    for item in patch {
        let Some(pm) = item.as_object() else {
            out.push(item.clone());
            continue;
        };
        let id = pm.get(key);
        let pos = id.and_then(|id| out.iter().position(|d| d.get(key) == Some(id)));
        match (pm.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(i)) => {
                out.remove(i);
            }
            (Some("delete"), None) => {}
            (_, Some(i)) => {
                let merged = match &out[i] {
                    Value::Object(dm) => merge_map(dm, pm),
                    _ => clean_map(pm),
                };
                out[i] = Value::Object(merged);
            }
            (_, None) => out.push(Value::Object(clean_map(pm))),
        }
    }
    out
}

fn clean(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(clean_map(m)),
        other => other.clone(),
    }
}

/// Drops directives and null fields from a value that is inserted whole.
fn clean_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), clean(v)))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "app:v1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
             "ports": [{"containerPort": 8080, "protocol": "TCP"}]},
            {"name": "sidecar", "image": "proxy:1"}
        ]}}}})
    }

    #[test]
    fn strategic_merge_updates_container_by_name() {
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:v2"}]}}}});
        let out = strategic_merge(&deployment(), &p);
        let cs = out
            .pointer("/spec/template/spec/containers")
            .unwrap()
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 2);
        assert_eq!(cs[0]["image"], "app:v2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["image"], "proxy:1");
    }

    #[test]
    fn strategic_merge_env_add_change_delete() {
        let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "env": [
            {"name": "A", "value": "9"}, {"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}]}]}}}});
        let out = strategic_merge(&deployment(), &p);
        let env = out.pointer("/spec/template/spec/containers/0/env").unwrap();
        assert_eq!(
            env,
            &json!([{"name": "A", "value": "9"}, {"name": "C", "value": "3"}])
        );
    }

    #[test]
    fn strategic_merge_replace_directives_and_null() {
        let p = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "x"}]}}}});
        let out = strategic_merge(&deployment(), &p);
        assert_eq!(
            out.pointer("/spec/template/spec/containers").unwrap(),
            &json!([{"name": "only", "image": "x"}])
        );
        let p = json!({"spec": {"template": {"spec": {"$patch": "replace", "containers": []}}}});
        assert_eq!(
            strategic_merge(&deployment(), &p)
                .pointer("/spec/template/spec")
                .unwrap(),
            &json!({"containers": []})
        );
        let p = json!({"spec": {"template": null}});
        assert_eq!(strategic_merge(&deployment(), &p), json!({"spec": {}}));
    }

    #[test]
    fn unkeyed_lists_are_replaced_and_ports_merge_by_container_port() {
        let doc = json!({"args": ["a", "b"], "ports": [{"containerPort": 80}]});
        let p = json!({"args": ["c"], "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 90}]});
        assert_eq!(
            strategic_merge(&doc, &p),
            json!({"args": ["c"], "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 90}]})
        );
    }

    #[test]
    fn json_and_merge_patches() {
        let doc = json!({"metadata": {"annotations": {"a": "1"}}, "spec": {"paused": false}});
        let out = apply(
            &doc,
            PatchType::Json,
            br#"[{"op":"replace","path":"/metadata/annotations","value":{"b":"2"}}]"#,
        )
        .unwrap();
        assert_eq!(out["metadata"]["annotations"], json!({"b": "2"}));
        let out = apply(
            &doc,
            PatchType::Merge,
            br#"{"spec":{"paused":true},"metadata":{"annotations":{"a":null}}}"#,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"annotations": {}}, "spec": {"paused": true}})
        );
        let err = apply(
            &doc,
            PatchType::Json,
            br#"[{"op":"test","path":"/spec/paused","value":true}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml")
                .unwrap_err()
                .code,
            415
        );
    }
}

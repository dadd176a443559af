//! Writes through the API: create and update (PUT, PATCH, `/status`) with the API server's
//! defaulting, validation, generation and resourceVersion rules.

use serde_json::{Value, json};
use tokio::time::Instant;

use super::TemplateChange;
use super::discovery::{self, Resource};
use super::error::ApiError;
use super::objects::{default_deployment, now_rfc3339};
use super::selector::LabelSelector;
use super::state::State;
use super::store::{Kind, meta_str};

fn validate(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    let name = meta_str(obj, "name").unwrap_or_default();
    if res.kind == Kind::Deployment || res.kind == Kind::ReplicaSet {
        let selector = obj
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null);
        let sel = LabelSelector::from_object(&selector);
        if sel.is_empty() {
            return Err(ApiError::invalid(
                res.kind_name,
                res.group,
                name,
                "spec.selector: Required value",
            ));
        }
        if !sel.matches_labels(obj.pointer("/spec/template/metadata/labels")) {
            return Err(ApiError::invalid(
                res.kind_name,
                res.group,
                name,
                "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`",
            ));
        }
        if obj
            .pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            return Err(ApiError::invalid(
                res.kind_name,
                res.group,
                name,
                "spec.template.spec.containers: Required value",
            ));
        }
    }
    Ok(())
}

/// `generateName` → `name`, as the API server does before it validates a new object.
pub fn generate_name(st: &mut State, res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if meta_str(obj, "name").is_none_or(str::is_empty) {
        let prefix = meta_str(obj, "generateName")
            .filter(|g| !g.is_empty())
            .ok_or_else(|| {
                ApiError::invalid(
                    res.kind_name,
                    res.group,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                )
            })?
            .to_string();
        st.name_seq += 1;
        obj["metadata"]["name"] = json!(format!(
            "{prefix}{}",
            super::objects::name_suffix(&format!("{prefix}{}", st.name_seq))
        ));
    }
    Ok(())
}

pub fn create(
    st: &mut State,
    res: &Resource,
    ns: &str,
    mut obj: Value,
    dry: bool,
) -> Result<Value, ApiError> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if res.namespaced {
        match meta_str(&obj, "namespace") {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = json!(ns),
        }
    }
    generate_name(st, res, &mut obj)?;
    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
    if st.store.get(res.kind, ns, &name).is_some() {
        return Err(ApiError::already_exists(res.plural, res.group, &name));
    }
    obj["metadata"]["uid"] = json!(st.store.next_uid());
    obj["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    obj["kind"] = json!(res.kind_name);
    obj["apiVersion"] = json!(
        discovery::canonical(res.kind)
            .map(|r| r.api_version())
            .unwrap_or_default()
    );
    if matches!(res.kind, Kind::Deployment | Kind::ReplicaSet) {
        obj["metadata"]["generation"] = json!(1);
        obj["status"] = json!({});
    }
    if res.kind == Kind::Deployment {
        default_deployment(&mut obj);
    }
    validate(res, &obj)?;
    if dry {
        return Ok(obj);
    }
    let stored = st.write(res.kind, obj);
    if res.kind == Kind::Event {
        st.api_events.push(super::events::core_to_events(&stored));
    }
    Ok((*stored).clone())
}

/// `new` is `old`'s next generation, as the API server counts one for a change of the spec.
pub(super) fn bump_generation(old: &Value, new: &mut Value) {
    let generation = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    new["metadata"]["generation"] = json!(generation + 1);
}

pub fn update(
    st: &mut State,
    res: &Resource,
    old: &Value,
    mut new: Value,
    sub: Option<&str>,
    ua: &str,
    dry: bool,
) -> Result<Value, ApiError> {
    if res.kind != Kind::Event {
        super::objects::prune_nulls(&mut new);
    }
    let name = meta_str(old, "name").unwrap_or_default().to_string();
    if meta_str(&new, "name").is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&new, "name").unwrap_or_default()
        )));
    }
    if let Some(rv) = meta_str(&new, "resourceVersion").filter(|rv| !rv.is_empty())
        && Some(rv) != meta_str(old, "resourceVersion")
    {
        return Err(ApiError::conflict(res.plural, res.group, &name));
    }
    let mut obj = if sub == Some("status") {
        let mut o = old.clone();
        o["status"] = new.get("status").cloned().unwrap_or(json!({}));
        o
    } else {
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        for k in [
            "uid",
            "creationTimestamp",
            "generation",
            "namespace",
            "name",
        ] {
            if let Some(v) = old.pointer(&format!("/metadata/{k}")) {
                new["metadata"][k] = v.clone();
            }
        }
        new["kind"] = old["kind"].clone();
        new["apiVersion"] = old["apiVersion"].clone();
        if res.has_status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            }
        }
        new
    };
    if res.kind == Kind::Deployment {
        default_deployment(&mut obj);
    }
    // The spec, and for a Deployment its annotations too (they are copied to its ReplicaSets),
    // make a new generation: `pkg/registry/apps/deployment/strategy.go`.
    let annotations_changed = res.kind == Kind::Deployment
        && sub != Some("status")
        && annotations_of(&obj) != annotations_of(old);
    // A custom resource with a status subresource counts spec changes too.
    if (matches!(res.kind, Kind::Deployment | Kind::ReplicaSet) || res.kind.is_custom())
        && (obj.get("spec") != old.get("spec") || annotations_changed)
    {
        bump_generation(old, &mut obj);
    }
    validate(res, &obj)?;
    if dry {
        return Ok(obj);
    }
    // A write that changes nothing is a no-op, as in the API server: no new resourceVersion,
    // no watch event.
    let mut same = obj.clone();
    same["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if same == *old {
        return Ok(old.clone());
    }
    if res.kind == Kind::Deployment
        && obj.pointer("/spec/template") != old.pointer("/spec/template")
    {
        let (namespace, name) = super::store::key_of(old);
        st.template_changes.push(TemplateChange {
            at: Instant::now(),
            namespace,
            name,
            user_agent: ua.to_string(),
        });
    }
    Ok((*st.write(res.kind, obj)).clone())
}

/// A Deployment's annotations; a missing map and an empty one are equal, as in the API
/// server's semantic comparison.
fn annotations_of(obj: &Value) -> Option<&serde_json::Map<String, Value>> {
    obj.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
}

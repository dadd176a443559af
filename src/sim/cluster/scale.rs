//! The `scale` subresource of Deployments and ReplicaSets (`autoscaling/v1` `Scale`), which
//! `kubectl scale` patches: only `spec.replicas` can change through it.

use http::Method;
use serde_json::{Value, json};

use super::discovery::Resource;
use super::error::ApiError;
use super::patch::{self, PatchType};
use super::state::State;
use super::store::meta_str;
use super::write::update;

/// A request on `.../{name}/scale`.
pub struct ScaleRequest<'a> {
    pub method: &'a Method,
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub user_agent: &'a str,
    pub dry_run: bool,
}

/// The `Scale` view of a Deployment or ReplicaSet.
pub fn view(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let meta = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"]},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// GET, PUT or PATCH of the subresource; answers the `Scale` after the change.
pub fn serve(
    st: &mut State,
    res: &Resource,
    ns: &str,
    name: &str,
    req: &ScaleRequest<'_>,
) -> Result<Value, ApiError> {
    let old = st
        .store
        .get(res.kind, ns, name)
        .ok_or_else(|| ApiError::not_found(res.plural, res.group, name))?;
    let old = res.view(&old);
    let current = view(&old);
    let wanted = match *req.method {
        Method::GET => return Ok(current),
        Method::PUT => serde_json::from_slice(req.body)
            .map_err(|e| ApiError::bad_request(format!("decoding the body: {e}")))?,
        Method::PATCH => patch::apply(
            &current,
            PatchType::from_content_type(req.content_type)?,
            req.body,
        )?,
        _ => return Err(ApiError::method_not_allowed()),
    };
    if let Some(rv) = meta_str(&wanted, "resourceVersion").filter(|rv| !rv.is_empty())
        && Some(rv) != meta_str(&old, "resourceVersion")
    {
        return Err(ApiError::conflict(res.plural, res.group, name));
    }
    let replicas = wanted
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r >= 0)
        .ok_or_else(|| {
            ApiError::invalid(
                "Scale",
                "autoscaling",
                name,
                "spec.replicas: Invalid value: must be greater than or equal to 0",
            )
        })?;
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(replicas);
    if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let stored = update(
        st,
        res,
        &old,
        res.storage_form(&new),
        None,
        req.user_agent,
        req.dry_run,
    )?;
    Ok(view(&res.view(&stored)))
}

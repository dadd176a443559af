//! A minimal OpenAPI v3: one document per group version listing each resource's PATCH with the
//! `fieldValidation` parameter. kubectl (apply, create, replace) reads exactly that to decide
//! that the server validates fields itself, and so skips client-side schema validation, which
//! would need the full schemas. `kubectl explain` is not supported.

use serde_json::{Map, Value, json};

use super::discovery::RESOURCES;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the group versions and where their documents are.
pub fn root() -> Value {
    let mut paths = Map::new();
    for r in RESOURCES.iter() {
        let gv = gv_path(r.group, r.version);
        paths.insert(gv.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash=00000000000000000000000000000001")}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/{api/v1|apis/G/V}`, or None for an unknown group version.
pub fn group_version(path: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in RESOURCES
        .iter()
        .filter(|r| gv_path(r.group, r.version) == path)
    {
        let item = if r.namespaced {
            format!("/{path}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("/{path}/{}/{{name}}", r.plural)
        };
        let op = json!({
            "operationId": format!("patch{}", r.kind_name),
            "x-kubernetes-action": "patch",
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind_name},
            "parameters": [
                {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            ],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(item, json!({"patch": op}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths, "components": {"schemas": {}}}),
    )
}

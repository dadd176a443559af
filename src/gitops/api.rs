//! The calls to the API server on GitOps objects and paused Deployments: each bounded, its
//! error naming the object; a 404 told apart into a missing object or a missing CRD.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::Value;

use super::{CALL_TIMEOUT, GitopsError, OwnerKind, Paused};

pub(super) fn api_resource(kind: OwnerKind) -> ApiResource {
    let (group, version, kind_name, plural) = kind.resource();
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind_name.into(),
        plural: plural.into(),
    }
}

/// Bounds a call and turns its error into one that names the object.
pub(super) async fn call<T>(
    verb: &'static str,
    kind: Option<OwnerKind>,
    namespace: &str,
    name: &str,
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, GitopsError> {
    let (group, plural, what) = match kind {
        Some(k) => {
            let (g, _, kind_name, p) = k.resource();
            (g, p, kind_name)
        }
        None => ("apps", "deployments", "Deployment"),
    };
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(kube::Error::Api(s))) if s.code == 403 => Err(GitopsError::Forbidden {
            verb,
            plural,
            group,
            namespace: namespace.into(),
            name: name.into(),
        }),
        Ok(Err(kube::Error::Api(s))) if s.code == 404 => Err(GitopsError::NotFound {
            plural,
            group,
            namespace: namespace.into(),
            name: name.into(),
        }),
        Ok(Err(source)) => Err(GitopsError::Api {
            verb,
            what,
            namespace: namespace.into(),
            name: name.into(),
            source,
        }),
        Err(_) => Err(GitopsError::Timeout {
            verb,
            what,
            namespace: namespace.into(),
            name: name.into(),
        }),
    }
}

/// Reads a GitOps object; a 404 is told apart into "no such object" and "no such CRD" by
/// asking discovery for the group version.
pub async fn get(
    client: &Client,
    kind: OwnerKind,
    namespace: &str,
    name: &str,
) -> Result<Value, GitopsError> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &api_resource(kind));
    match call("get", Some(kind), namespace, name, api.get(name)).await {
        Ok(obj) => Ok(serde_json::to_value(obj).unwrap_or(Value::Null)),
        Err(GitopsError::NotFound { .. }) => {
            let (group, version, _, plural) = kind.resource();
            let gv = format!("{group}/{version}");
            let served = tokio::time::timeout(CALL_TIMEOUT, client.list_api_group_resources(&gv))
                .await
                .map(|r| r.map(|l| l.resources.iter().any(|r| r.name == plural)));
            match served {
                Ok(Ok(true)) => Err(GitopsError::NotFound {
                    plural,
                    group,
                    namespace: namespace.into(),
                    name: name.into(),
                }),
                Ok(Ok(false)) | Ok(Err(kube::Error::Api(_))) => {
                    Err(GitopsError::CrdAbsent { plural, group })
                }
                Ok(Err(source)) => Err(GitopsError::Api {
                    verb: "discover",
                    what: kind.resource().2,
                    namespace: namespace.into(),
                    name: name.into(),
                    source,
                }),
                Err(_) => Err(GitopsError::Timeout {
                    verb: "discover",
                    what: kind.resource().2,
                    namespace: namespace.into(),
                    name: name.into(),
                }),
            }
        }
        Err(e) => Err(e),
    }
}

pub(super) async fn patch(
    client: &Client,
    target: Option<OwnerKind>,
    namespace: &str,
    name: &str,
    body: &Value,
) -> Result<(), GitopsError> {
    let params = PatchParams::default();
    match target {
        Some(kind) => {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &api_resource(kind));
            call(
                "patch",
                Some(kind),
                namespace,
                name,
                api.patch(name, &params, &Patch::Merge(body)),
            )
            .await
            .map(|_| ())
        }
        None => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            call(
                "patch",
                None,
                namespace,
                name,
                api.patch(name, &params, &Patch::Merge(body)),
            )
            .await
            .map(|_| ())
        }
    }
}

/// The object a pause is written on: the Deployment itself, or the owner.
pub(super) async fn read_target(client: &Client, p: &Paused) -> Result<Value, GitopsError> {
    if p.method.patches_deployment() {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &p.namespace);
        let d = call("get", None, &p.namespace, &p.name, api.get(&p.name)).await?;
        Ok(serde_json::to_value(d).unwrap_or(Value::Null))
    } else {
        get(client, p.owner.kind, &p.owner.namespace, &p.owner.name).await
    }
}

/// Writes a merge patch on the object a pause is recorded on.
pub(super) async fn patch_target(
    client: &Client,
    p: &Paused,
    body: &Value,
) -> Result<(), GitopsError> {
    if p.method.patches_deployment() {
        patch(client, None, &p.namespace, &p.name, body).await
    } else {
        patch(
            client,
            Some(p.owner.kind),
            &p.owner.namespace,
            &p.owner.name,
            body,
        )
        .await
    }
}

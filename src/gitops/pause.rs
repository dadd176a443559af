//! Before a rollback: the Deployment's GitOps owner found, its sync paused (narrowest first)
//! and the pause re-read, unless a parent above the owner would put the sync back.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::{Client, ResourceExt};
use serde_json::Value;

use super::api::{call, get, patch, read_target};
use super::{
    FoundBy, GitopsConfig, GitopsError, GitopsMode, Method, Owner, OwnerKind, PauseRecord, Paused,
    Prepared, owner,
};

/// Finds the Deployment's owner and, in `pause` mode, pauses its sync so a rollback sticks.
pub async fn prepare(client: &Client, cfg: &GitopsConfig, deployment: &Deployment) -> Prepared {
    let (namespace, name) = (
        deployment.namespace().unwrap_or_default(),
        deployment.name_any(),
    );
    if cfg.mode == GitopsMode::Off {
        return Prepared::Unmanaged;
    }
    let Some(owner) = owner::discover(
        cfg,
        &namespace,
        &name,
        deployment.labels(),
        deployment.annotations(),
    ) else {
        return Prepared::Unmanaged;
    };
    let manual = owner::manual_rollback(&owner, &namespace, &name);
    let stop = |owner: &Owner, why: String| Prepared::Stop {
        owner: owner.clone(),
        why,
        fix: manual.clone(),
    };
    let obj = match get(client, owner.kind, &owner.namespace, &owner.name).await {
        Ok(obj) => obj,
        // A Helm chart's instance label with no Argo CD behind it.
        Err(GitopsError::CrdAbsent { .. } | GitopsError::NotFound { .. })
            if owner.found_by == FoundBy::InstanceLabel =>
        {
            return Prepared::Unmanaged;
        }
        Err(e @ (GitopsError::CrdAbsent { .. } | GitopsError::NotFound { .. })) => {
            return Prepared::NotRunning {
                why: format!("{e}, so nothing re-applies {owner}"),
                owner,
            };
        }
        Err(e) => return stop(&owner, format!("cannot read {owner}: {e}")),
    };
    if owner.found_by == FoundBy::InstanceLabel && !owner::lists_deployment(&obj, &namespace, &name)
    {
        return Prepared::Unmanaged;
    }
    if cfg.mode == GitopsMode::PageOnly {
        return stop(
            &owner,
            format!("gitops mode page_only: the watchdog does not touch {owner} or the Deployment"),
        );
    }
    let method = Method::for_owner(owner.kind, cfg);
    let mut p = Paused {
        record: PauseRecord {
            automated: obj.pointer("/spec/syncPolicy/automated").cloned(),
            revision: owner::revision(owner.kind, &obj),
            deployment: format!("{namespace}/{name}"),
            checked: false,
        },
        owner: owner.clone(),
        method,
        namespace: namespace.clone(),
        name: name.clone(),
    };
    let target = match read_target(client, &p).await {
        Ok(t) => t,
        Err(e) => return stop(&owner, format!("cannot read what to pause: {e}")),
    };
    if let Some(record) = owner::record_on(&target) {
        // Paused earlier (an earlier rollout, or another replica): keep what was recorded then.
        p.record = record;
    } else if owner::holds(method, &target) {
        return Prepared::NotRunning {
            why: format!("{owner} already has its sync off, so nothing re-applies Git"),
            owner,
        };
    }
    if owner.kind == OwnerKind::Application {
        match parent_would_undo(client, cfg, &owner, &obj).await {
            Ok(None) => {}
            Ok(Some((why, fix))) => {
                return Prepared::Stop {
                    owner,
                    why,
                    fix: format!("{fix}; until then roll back by hand: {manual}"),
                };
            }
            Err(e) => return stop(&owner, format!("cannot check what manages {owner}: {e}")),
        }
    }
    let body = owner::pause_patch(method, &p.record);
    let kind = (!method.patches_deployment()).then_some(owner.kind);
    let (ns, n) = if method.patches_deployment() {
        (namespace.as_str(), name.as_str())
    } else {
        (owner.namespace.as_str(), owner.name.as_str())
    };
    if let Err(e) = patch(client, kind, ns, n, &body).await {
        return stop(&owner, format!("cannot pause {owner}: {e}"));
    }
    match read_target(client, &p).await {
        Ok(t) if owner::holds(method, &t) => Prepared::Paused(p),
        Ok(_) => stop(
            &owner,
            format!("the pause of {owner} did not hold: something put the sync back at once"),
        ),
        Err(e) => stop(&owner, format!("cannot confirm the pause of {owner}: {e}")),
    }
}

/// An owner above the Application that would put automated sync back: an ApplicationSet that
/// does not ignore the sync policy, or an app-of-apps parent that self-heals. The reason and
/// the exact fix.
pub(super) async fn parent_would_undo(
    client: &Client,
    cfg: &GitopsConfig,
    owner: &Owner,
    app: &Value,
) -> Result<Option<(String, String)>, GitopsError> {
    let refs = app
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(set) = refs
        .iter()
        .find(|r| r["kind"] == "ApplicationSet")
        .and_then(|r| r["name"].as_str())
    {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &owner.namespace,
            &ApiResource {
                group: "argoproj.io".into(),
                version: "v1alpha1".into(),
                api_version: "argoproj.io/v1alpha1".into(),
                kind: "ApplicationSet".into(),
                plural: "applicationsets".into(),
            },
        );
        let obj = call(
            "get",
            Some(OwnerKind::Application),
            &owner.namespace,
            set,
            api.get(set),
        )
        .await?;
        let obj = serde_json::to_value(obj).unwrap_or(Value::Null);
        if !ignores_sync_policy(&obj, &owner.name) {
            return Ok(Some((
                format!(
                    "ApplicationSet {}/{set} generates {owner} and would put its automated sync back (no ignoreApplicationDifferences for /spec/syncPolicy)",
                    owner.namespace
                ),
                format!(
                    "add to ApplicationSet {}/{set}: spec.ignoreApplicationDifferences: [{{jsonPointers: [/spec/syncPolicy]}}]",
                    owner.namespace
                ),
            )));
        }
    }
    let annotations: std::collections::BTreeMap<String, String> = app
        .pointer("/metadata/annotations")
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    let labels: std::collections::BTreeMap<String, String> = app
        .pointer("/metadata/labels")
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    let parent = annotations
        .get(owner::TRACKING_ID)
        .and_then(|id| id.split_once(':').map(|(app, _)| app.to_string()))
        .or_else(|| labels.get(&cfg.instance_label).cloned())
        .filter(|p| !p.is_empty() && *p != owner.name);
    if let Some(parent) = parent {
        let (ns, name) = match parent.split_once('_') {
            Some((ns, n)) => (ns.to_string(), n.to_string()),
            None => (cfg.argocd_namespace.clone(), parent.clone()),
        };
        match get(client, OwnerKind::Application, &ns, &name).await {
            Ok(p) => {
                let self_heals = p
                    .pointer("/spec/syncPolicy/automated/selfHeal")
                    .and_then(Value::as_bool)
                    == Some(true);
                if self_heals {
                    return Ok(Some((
                        format!(
                            "its parent Application {ns}/{name} (app of apps) self-heals and would put {owner}'s automated sync back"
                        ),
                        format!(
                            "add to Application {ns}/{name}: spec.ignoreDifferences: [{{group: argoproj.io, kind: Application, name: {}, jsonPointers: [/spec/syncPolicy/automated]}}] and syncOptions: [RespectIgnoreDifferences=true]",
                            owner.name
                        ),
                    )));
                }
            }
            Err(GitopsError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Whether an ApplicationSet leaves an Application's sync policy alone.
pub(super) fn ignores_sync_policy(set: &Value, app: &str) -> bool {
    let entries = set
        .pointer("/spec/ignoreApplicationDifferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    entries.iter().any(|e| {
        let applies = e
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(|n| n.is_empty() || n == app);
        let pointers = e
            .get("jsonPointers")
            .and_then(Value::as_array)
            .is_some_and(|ps| {
                ps.iter().filter_map(Value::as_str).any(|p| {
                    ["/spec", "/spec/syncPolicy", "/spec/syncPolicy/automated"].contains(&p)
                })
            });
        let jq = e
            .get("jqPathExpressions")
            .and_then(Value::as_array)
            .is_some_and(|ps| {
                ps.iter().filter_map(Value::as_str).any(|p| {
                    [".spec", ".spec.syncPolicy", ".spec.syncPolicy.automated"].contains(&p)
                })
            });
        applies && (pointers || jq)
    })
}

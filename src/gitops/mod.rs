//! Rollbacks that stick under Argo CD and Flux: find the Deployment's GitOps owner, pause its
//! sync before the rollback (narrowest first), check the pause held, and resume the sync exactly
//! as it was once Git moves on. A plain `kubectl rollout undo` of a Deployment under automated
//! sync is re-applied seconds later; the watchdog would then judge the same bad release again
//! and roll it back again, forever.
//!
//! The session calls [`prepare`] before it rolls back and [`keep`] after; everything else here
//! is the reading and writing of the owner objects. The decisions are in [`owner`] (pure).

pub mod config;
pub mod keep;
pub mod owner;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

pub use config::{GitopsConfig, GitopsMode};
pub use owner::{FoundBy, Method, Owner, OwnerKind, PauseRecord};

/// Every call to the API server here is bounded.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GitopsError {
    #[error("the {plural}.{group} CRD is not installed")]
    CrdAbsent {
        plural: &'static str,
        group: &'static str,
    },
    #[error(
        "{verb} {plural}.{group} {namespace}/{name} was refused (403): the watchdog's ServiceAccount needs get and patch on {plural}.{group}"
    )]
    Forbidden {
        verb: &'static str,
        plural: &'static str,
        group: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{plural}.{group} {namespace}/{name} does not exist")]
    NotFound {
        plural: &'static str,
        group: &'static str,
        namespace: String,
        name: String,
    },
    #[error("{verb} {what} {namespace}/{name}: {source}")]
    Api {
        verb: &'static str,
        what: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("{verb} {what} {namespace}/{name}: no answer within {CALL_TIMEOUT:?}")]
    Timeout {
        verb: &'static str,
        what: &'static str,
        namespace: String,
        name: String,
    },
}

impl GitopsError {
    /// A metric label.
    pub fn category(&self) -> &'static str {
        match self {
            GitopsError::CrdAbsent { .. } => "crd_absent",
            GitopsError::Forbidden { .. } => "forbidden",
            GitopsError::NotFound { .. } => "not_found",
            GitopsError::Api { .. } => "api",
            GitopsError::Timeout { .. } => "timeout",
        }
    }
}

/// What to do about a Deployment's GitOps owner before rolling back.
#[derive(Debug)]
pub enum Prepared {
    /// No GitOps owner (or `gitops: off`): roll back as usual.
    Unmanaged,
    /// An owner is named, but nothing would re-apply Git (its CRD is absent, it is gone, or its
    /// automated sync is already off): roll back as usual, and say why.
    NotRunning { owner: Owner, why: String },
    /// The sync is paused, and a re-read showed the pause in force: roll back.
    Paused(Paused),
    /// Do not roll back (it would be undone, or this mode forbids touching it): page this.
    Stop {
        owner: Owner,
        why: String,
        fix: String,
    },
}

/// A sync the watchdog paused.
#[derive(Debug, Clone)]
pub struct Paused {
    pub owner: Owner,
    pub method: Method,
    pub record: PauseRecord,
    /// The Deployment's namespace and name.
    pub namespace: String,
    pub name: String,
}

impl Paused {
    /// `paused Argo CD Application argocd/payments (automated sync off)`.
    pub fn describe(&self) -> String {
        let how = match self.method {
            Method::ArgoAutomatedOff => "automated sync turned off",
            Method::ArgoSkipReconcile => "annotated argocd.argoproj.io/skip-reconcile=true",
            Method::FluxReconcileDisabled => {
                "this Deployment annotated kustomize.toolkit.fluxcd.io/reconcile=disabled"
            }
            Method::FluxSuspend => "suspended",
        };
        format!("{} ({how})", self.owner)
    }
    /// The annotations the pause put on the Deployment itself (none when it paused the owner).
    pub fn deployment_annotations(&self) -> std::collections::BTreeMap<String, String> {
        let patch = owner::pause_patch(self.method, &self.record);
        match (
            self.method.patches_deployment(),
            patch.pointer("/metadata/annotations"),
        ) {
            (true, Some(Value::Object(m))) => m
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect(),
            _ => Default::default(),
        }
    }

    /// The command that resumes it by hand.
    pub fn manual_resume(&self) -> String {
        owner::manual_resume(&self.owner, self.method, &self.namespace, &self.name)
    }
}

fn api_resource(kind: OwnerKind) -> ApiResource {
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
async fn call<T>(
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

async fn patch(
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
async fn read_target(client: &Client, p: &Paused) -> Result<Value, GitopsError> {
    if p.method.patches_deployment() {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &p.namespace);
        let d = call("get", None, &p.namespace, &p.name, api.get(&p.name)).await?;
        Ok(serde_json::to_value(d).unwrap_or(Value::Null))
    } else {
        get(client, p.owner.kind, &p.owner.namespace, &p.owner.name).await
    }
}

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
async fn parent_would_undo(
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
fn ignores_sync_policy(set: &Value, app: &str) -> bool {
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

/// Where an owner is now: whether our pause is still in force, and its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Now {
    pub holds: bool,
    pub revision: Option<String>,
    /// Our pause record is still on it (gone: someone resumed by hand).
    pub recorded: bool,
}

/// Reads the pause and the owner's revision.
pub async fn now(client: &Client, p: &Paused) -> Result<Now, GitopsError> {
    let target = read_target(client, p).await?;
    let owner = if p.method.patches_deployment() {
        get(client, p.owner.kind, &p.owner.namespace, &p.owner.name).await?
    } else {
        target.clone()
    };
    Ok(Now {
        holds: owner::holds(p.method, &target),
        revision: owner::revision(p.owner.kind, &owner),
        recorded: owner::record_on(&target).is_some(),
    })
}

/// Restores the sync exactly as it was before the pause.
pub async fn resume(client: &Client, p: &Paused) -> Result<(), GitopsError> {
    let body = owner::resume_patch(p.method, &p.record);
    if p.method.patches_deployment() {
        patch(client, None, &p.namespace, &p.name, &body).await
    } else {
        patch(
            client,
            Some(p.owner.kind),
            &p.owner.namespace,
            &p.owner.name,
            &body,
        )
        .await
    }
}

/// Writes a merge patch on the object a pause is recorded on.
async fn patch_target(client: &Client, p: &Paused, body: &Value) -> Result<(), GitopsError> {
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

/// Notes on the record that the held check was done.
pub async fn mark_checked(client: &Client, p: &Paused) -> Result<(), GitopsError> {
    let record = PauseRecord {
        checked: true,
        ..p.record.clone()
    };
    let body = serde_json::json!({"metadata": {"annotations": {
        owner::PAUSED: serde_json::to_string(&record).unwrap_or_default()
    }}});
    patch_target(client, p, &body).await
}

/// Takes our record off a pause that is no longer ours to keep (it was undone), leaving the
/// sync as it is: no later process takes it up again.
pub async fn forget(client: &Client, p: &Paused) -> Result<(), GitopsError> {
    patch_target(client, p, &owner::forget_patch()).await
}

/// Pauses a sync we resumed again, as it is now (at the revision Git moved to): the same method,
/// a new record. `Ok(None)`: the pause did not hold.
pub async fn pause_again(client: &Client, p: &Paused) -> Result<Option<Paused>, GitopsError> {
    let obj = get(client, p.owner.kind, &p.owner.namespace, &p.owner.name).await?;
    let again = Paused {
        record: PauseRecord {
            automated: obj.pointer("/spec/syncPolicy/automated").cloned(),
            revision: owner::revision(p.owner.kind, &obj),
            deployment: p.record.deployment.clone(),
            checked: false,
        },
        ..p.clone()
    };
    patch_target(
        client,
        &again,
        &owner::pause_patch(again.method, &again.record),
    )
    .await?;
    let target = read_target(client, &again).await?;
    Ok(owner::holds(again.method, &target).then_some(again))
}

/// The pause recorded on a guarded Deployment's owner, if any: what a process that starts
/// leading takes up. Only a record naming this Deployment counts (an owner may apply several).
pub async fn recorded_pause(
    client: &Client,
    cfg: &GitopsConfig,
    deployment: &Deployment,
) -> Result<Option<Paused>, GitopsError> {
    let (namespace, name) = (
        deployment.namespace().unwrap_or_default(),
        deployment.name_any(),
    );
    let Some(owner) = owner::discover(
        cfg,
        &namespace,
        &name,
        deployment.labels(),
        deployment.annotations(),
    ) else {
        return Ok(None);
    };
    let target = if owner.kind == OwnerKind::Kustomization {
        serde_json::to_value(deployment).unwrap_or(Value::Null)
    } else {
        match get(client, owner.kind, &owner.namespace, &owner.name).await {
            Ok(obj) => obj,
            Err(GitopsError::CrdAbsent { .. } | GitopsError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    let Some(record) = owner::record_on(&target) else {
        return Ok(None);
    };
    if record.deployment != format!("{namespace}/{name}") {
        return Ok(None);
    }
    Ok(Some(Paused {
        method: owner::method_on(owner.kind, &target),
        record,
        owner,
        namespace,
        name,
    }))
}

/// What undid a pause, as far as the API shows, and the exact fix: a parent that puts the sync
/// back (an ApplicationSet, an app-of-apps parent, the Kustomization that applies a
/// HelmRelease), else someone or something that turned it back on.
pub async fn why_lost(client: &Client, cfg: &GitopsConfig, p: &Paused) -> (String, String) {
    let manual = owner::manual_rollback(&p.owner, &p.namespace, &p.name);
    let owner = &p.owner;
    let obj = get(client, owner.kind, &owner.namespace, &owner.name)
        .await
        .ok();
    if owner.kind == OwnerKind::Application
        && let Some(app) = &obj
        && let Ok(Some((why, fix))) = parent_would_undo(client, cfg, owner, app).await
    {
        return (
            why,
            format!("{fix}; then pause and roll back by hand: {manual}"),
        );
    }
    if owner.kind == OwnerKind::HelmRelease
        && let Some(hr) = &obj
        && let (Some(n), Some(ns)) = (
            hr.pointer("/metadata/labels/kustomize.toolkit.fluxcd.io~1name")
                .and_then(Value::as_str),
            hr.pointer("/metadata/labels/kustomize.toolkit.fluxcd.io~1namespace")
                .and_then(Value::as_str),
        )
    {
        return (
            format!(
                "the Flux Kustomization {ns}/{n} that applies {owner} from Git put spec.suspend back"
            ),
            format!(
                "flux -n {ns} suspend kustomization {n} && flux -n {} suspend helmrelease {} && kubectl -n {} rollout undo deployment/{}; then revert the release in Git and resume both",
                owner.namespace, owner.name, p.namespace, p.name
            ),
        );
    }
    (
        format!(
            "someone or something turned the sync of {owner} back on while deploy-watchdog held it paused (its record {} is still there)",
            owner::PAUSED
        ),
        format!("revert the release in Git, or pause and roll back by hand: {manual}"),
    )
}

/// How long after a rollback the owner's controller has had its chance to re-apply Git: Argo
/// CD's self-heal timeout, or the Flux object's `spec.interval`.
pub async fn sync_period(client: &Client, cfg: &GitopsConfig, p: &Paused) -> std::time::Duration {
    if p.owner.kind == OwnerKind::Application {
        return cfg.argocd_self_heal_timeout.get();
    }
    let interval = get(client, p.owner.kind, &p.owner.namespace, &p.owner.name)
        .await
        .ok()
        .and_then(|o| {
            o.pointer("/spec/interval")
                .and_then(Value::as_str)
                .and_then(go_duration)
        });
    // Flux's default interval when unreadable; capped so a check is not put off for hours.
    interval
        .unwrap_or(std::time::Duration::from_secs(600))
        .min(std::time::Duration::from_secs(3600))
}

/// A Go duration as Flux writes it (`10m`, `1m30s`, `500ms`, `1h0m0s`).
fn go_duration(s: &str) -> Option<std::time::Duration> {
    let mut total = std::time::Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += std::time::Duration::try_from_secs_f64(n * secs).ok()?;
    }
    Some(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flux_intervals_are_read_as_go_writes_them() {
        use std::time::Duration;
        assert_eq!(go_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(go_duration("1h0m0s"), Some(Duration::from_secs(3600)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(go_duration("ten"), None);
        assert_eq!(go_duration(""), None);
    }

    #[test]
    fn an_application_set_must_ignore_the_sync_policy_to_leave_a_pause_alone() {
        let bare = json!({"spec": {"template": {}}});
        assert!(!ignores_sync_policy(&bare, "payments"));
        let ignoring = json!({"spec": {"ignoreApplicationDifferences": [{"jsonPointers": ["/spec/syncPolicy"]}]}});
        assert!(ignores_sync_policy(&ignoring, "payments"));
        let other = json!({"spec": {"ignoreApplicationDifferences": [{"name": "billing", "jqPathExpressions": [".spec.syncPolicy"]}]}});
        assert!(!ignores_sync_policy(&other, "payments"));
        let elsewhere = json!({"spec": {"ignoreApplicationDifferences": [{"jsonPointers": ["/spec/source/targetRevision"]}]}});
        assert!(!ignores_sync_policy(&elsewhere, "payments"));
    }
}

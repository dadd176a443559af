//! Who applies a Deployment from Git, read from the marks GitOps controllers leave on it, and
//! what pausing and resuming that owner writes. Pure: no IO.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::config::GitopsConfig;

pub const TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
pub const SKIP_RECONCILE: &str = "argocd.argoproj.io/skip-reconcile";
pub const FLUX_RECONCILE: &str = "kustomize.toolkit.fluxcd.io/reconcile";
/// Our record of a pause, on the object paused: what it was before and the revision it was at.
pub const PAUSED: &str = "deploy-watchdog.io/paused-sync";

/// The kind of GitOps object that owns a Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerKind {
    Application,
    Kustomization,
    HelmRelease,
}

impl OwnerKind {
    /// (group, version, kind, plural) of the custom resource.
    pub fn resource(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            OwnerKind::Application => ("argoproj.io", "v1alpha1", "Application", "applications"),
            OwnerKind::Kustomization => (
                "kustomize.toolkit.fluxcd.io",
                "v1",
                "Kustomization",
                "kustomizations",
            ),
            OwnerKind::HelmRelease => (
                "helm.toolkit.fluxcd.io",
                "v2",
                "HelmRelease",
                "helmreleases",
            ),
        }
    }
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            OwnerKind::Application => "application",
            OwnerKind::Kustomization => "kustomization",
            OwnerKind::HelmRelease => "helmrelease",
        }
    }
    fn product(self) -> &'static str {
        match self {
            OwnerKind::Application => "Argo CD Application",
            OwnerKind::Kustomization => "Flux Kustomization",
            OwnerKind::HelmRelease => "Flux HelmRelease",
        }
    }
}

/// How the owner was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    /// Argo CD's tracking annotation, or Flux's owner labels: set by the controller itself.
    Mark,
    /// Argo CD's instance label, which Helm charts set too: the Application must list the
    /// Deployment among its resources.
    InstanceLabel,
}

/// A Deployment's GitOps owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: OwnerKind,
    pub namespace: String,
    pub name: String,
    pub found_by: FoundBy,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.kind.product(),
            self.namespace,
            self.name
        )
    }
}

/// The owner the Deployment's marks name, in order: Argo CD's tracking annotation, Argo CD's
/// instance label, Flux Kustomization labels, Flux HelmRelease labels.
pub fn discover(
    cfg: &GitopsConfig,
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Option<Owner> {
    if let Some(id) = annotations.get(TRACKING_ID)
        && let Some(app) = tracking_app(id, namespace, name)
    {
        let (ns, app) = match app.split_once('_') {
            // Applications in any namespace: `<namespace>_<name>`.
            Some((ns, app)) => (ns.to_string(), app.to_string()),
            None => (cfg.argocd_namespace.clone(), app.to_string()),
        };
        return Some(Owner {
            kind: OwnerKind::Application,
            namespace: ns,
            name: app,
            found_by: FoundBy::Mark,
        });
    }
    if !cfg.instance_label.is_empty()
        && let Some(app) = labels.get(&cfg.instance_label).filter(|a| !a.is_empty())
    {
        return Some(Owner {
            kind: OwnerKind::Application,
            namespace: cfg.argocd_namespace.clone(),
            name: app.clone(),
            found_by: FoundBy::InstanceLabel,
        });
    }
    for (prefix, kind) in [
        ("kustomize.toolkit.fluxcd.io", OwnerKind::Kustomization),
        ("helm.toolkit.fluxcd.io", OwnerKind::HelmRelease),
    ] {
        if let (Some(n), Some(ns)) = (
            labels.get(&format!("{prefix}/name")),
            labels.get(&format!("{prefix}/namespace")),
        ) {
            return Some(Owner {
                kind,
                namespace: ns.clone(),
                name: n.clone(),
                found_by: FoundBy::Mark,
            });
        }
    }
    None
}

/// The Application a tracking id (`<app>:<group>/<kind>:<namespace>/<name>`) names, when it is
/// this Deployment's: a copied annotation naming another object is ignored, as Argo CD does.
fn tracking_app<'a>(id: &'a str, namespace: &str, name: &str) -> Option<&'a str> {
    let (app, rest) = id.split_once(':')?;
    let (group_kind, object) = rest.split_once(':')?;
    let ours = group_kind == "apps/Deployment" && object == format!("{namespace}/{name}");
    (ours && !app.is_empty()).then_some(app)
}

/// Whether an Application's `status.resources` lists the Deployment.
pub fn lists_deployment(app: &Value, namespace: &str, name: &str) -> bool {
    app.pointer("/status/resources")
        .and_then(Value::as_array)
        .is_some_and(|rs| {
            rs.iter().any(|r| {
                r["kind"] == "Deployment"
                    && r["group"] == "apps"
                    && r["namespace"] == namespace
                    && r["name"] == name
            })
        })
}

/// How a sync is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Argo CD: `spec.syncPolicy.automated` removed (kept in our annotation).
    ArgoAutomatedOff,
    /// Argo CD: `argocd.argoproj.io/skip-reconcile: "true"`.
    ArgoSkipReconcile,
    /// Flux: `kustomize.toolkit.fluxcd.io/reconcile: disabled` on the Deployment itself.
    FluxReconcileDisabled,
    /// Flux: `spec.suspend: true` on the HelmRelease.
    FluxSuspend,
}

impl Method {
    pub fn for_owner(kind: OwnerKind, cfg: &GitopsConfig) -> Method {
        match kind {
            OwnerKind::Application if cfg.argocd_skip_reconcile => Method::ArgoSkipReconcile,
            OwnerKind::Application => Method::ArgoAutomatedOff,
            // The narrowest: only this Deployment stops being applied.
            OwnerKind::Kustomization => Method::FluxReconcileDisabled,
            // helm-controller has no per-object switch.
            OwnerKind::HelmRelease => Method::FluxSuspend,
        }
    }

    /// Whether the object patched is the Deployment (else the owner).
    pub fn patches_deployment(self) -> bool {
        self == Method::FluxReconcileDisabled
    }
}

/// What we record on the paused object.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PauseRecord {
    /// `spec.syncPolicy.automated` as it was, verbatim (Argo CD, automated sync turned off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automated: Option<Value>,
    /// The owner's revision when paused: Git moving past it resumes the sync.
    pub revision: Option<String>,
    /// The Deployment rolled back, `namespace/name`.
    pub deployment: String,
    /// The check that the rollback held through the controller's next sync was done: a process
    /// that takes the pause up after a restart does not do it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checked: bool,
}

/// The revision an owner has seen from Git: Argo CD `status.sync.revision`, Flux Kustomization
/// `status.lastAppliedRevision`, a digest of the HelmRelease's spec (its parent applies each
/// commit's chart and values to it, also while it is suspended).
pub fn revision(kind: OwnerKind, obj: &Value) -> Option<String> {
    match kind {
        OwnerKind::Application => obj
            .pointer("/status/sync/revision")
            .and_then(Value::as_str)
            .map(str::to_string),
        OwnerKind::Kustomization => obj
            .pointer("/status/lastAppliedRevision")
            .and_then(Value::as_str)
            .map(str::to_string),
        OwnerKind::HelmRelease => {
            // The spec as Git gives it: our own `suspend` left out.
            let mut spec = obj.get("spec")?.clone();
            spec.as_object_mut()?.remove("suspend");
            Some(format!(
                "spec {:016x}",
                fnv1a64(spec.to_string().as_bytes())
            ))
        }
    }
}

/// FNV-1a: a stable digest of a HelmRelease's spec, compared across processes.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The merge patch that pauses, given the owner as read.
pub fn pause_patch(method: Method, record: &PauseRecord) -> Value {
    let record = serde_json::to_string(record).unwrap_or_default();
    match method {
        Method::ArgoAutomatedOff => json!({
            "metadata": {"annotations": {PAUSED: record}},
            "spec": {"syncPolicy": {"automated": null}},
        }),
        Method::ArgoSkipReconcile => {
            json!({"metadata": {"annotations": {PAUSED: record, SKIP_RECONCILE: "true"}}})
        }
        Method::FluxReconcileDisabled => {
            json!({"metadata": {"annotations": {PAUSED: record, FLUX_RECONCILE: "disabled"}}})
        }
        Method::FluxSuspend => json!({
            "metadata": {"annotations": {PAUSED: record}},
            "spec": {"suspend": true},
        }),
    }
}

/// The merge patch that restores the sync exactly as it was.
pub fn resume_patch(method: Method, record: &PauseRecord) -> Value {
    match method {
        Method::ArgoAutomatedOff => json!({
            "metadata": {"annotations": {PAUSED: null}},
            "spec": {"syncPolicy": {"automated": record.automated.clone().unwrap_or(json!({}))}},
        }),
        Method::ArgoSkipReconcile => {
            json!({"metadata": {"annotations": {PAUSED: null, SKIP_RECONCILE: null}}})
        }
        Method::FluxReconcileDisabled => {
            json!({"metadata": {"annotations": {PAUSED: null, FLUX_RECONCILE: null}}})
        }
        Method::FluxSuspend => json!({
            "metadata": {"annotations": {PAUSED: null}},
            "spec": {"suspend": null},
        }),
    }
}

/// Whether the object as read shows the pause in force.
pub fn holds(method: Method, obj: &Value) -> bool {
    let annotation = |k: &str| {
        obj.pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match method {
        Method::ArgoAutomatedOff => obj
            .pointer("/spec/syncPolicy/automated")
            .is_none_or(Value::is_null),
        Method::ArgoSkipReconcile => annotation(SKIP_RECONCILE).as_deref() == Some("true"),
        Method::FluxReconcileDisabled => annotation(FLUX_RECONCILE).as_deref() == Some("disabled"),
        Method::FluxSuspend => obj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true),
    }
}

/// Our pause record on an object, if any.
pub fn record_on(obj: &Value) -> Option<PauseRecord> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(PAUSED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
}

/// The commands that pause the owner and roll back by hand (page-only mode, or when the
/// watchdog may not do it).
pub fn manual_rollback(owner: &Owner, namespace: &str, name: &str) -> String {
    let undo = format!("kubectl -n {namespace} rollout undo deployment/{name}");
    match owner.kind {
        OwnerKind::Application => format!(
            "kubectl -n {} patch applications.argoproj.io {} --type merge -p '{{\"spec\":{{\"syncPolicy\":{{\"automated\":null}}}}}}' && {undo}; then revert the release in Git and turn automated sync back on",
            owner.namespace, owner.name
        ),
        OwnerKind::Kustomization => format!(
            "kubectl -n {namespace} annotate deployment/{name} {FLUX_RECONCILE}=disabled && {undo}; then revert the release in Git and remove the annotation"
        ),
        OwnerKind::HelmRelease => format!(
            "flux -n {} suspend helmrelease {} && {undo}; then revert the release in Git and run flux -n {} resume helmrelease {}",
            owner.namespace, owner.name, owner.namespace, owner.name
        ),
    }
}

/// The method of a pause found on `target` (the object our record is on): the owner itself, or
/// the Deployment for a Flux Kustomization.
pub fn method_on(kind: OwnerKind, target: &Value) -> Method {
    match kind {
        OwnerKind::Application if holds(Method::ArgoSkipReconcile, target) => {
            Method::ArgoSkipReconcile
        }
        OwnerKind::Application => Method::ArgoAutomatedOff,
        OwnerKind::Kustomization => Method::FluxReconcileDisabled,
        OwnerKind::HelmRelease => Method::FluxSuspend,
    }
}

/// The merge patch that takes our record off a paused object, leaving the sync as it is.
pub fn forget_patch() -> Value {
    json!({"metadata": {"annotations": {PAUSED: null}}})
}

/// The command that resumes a sync the watchdog paused. Our record goes first: a sync that is
/// back on while the record is still there is a pause lost, and pages.
pub fn manual_resume(owner: &Owner, method: Method, namespace: &str, name: &str) -> String {
    match method {
        Method::ArgoAutomatedOff => format!(
            "kubectl -n {ns} annotate applications.argoproj.io {app} {PAUSED}- then put back spec.syncPolicy.automated as it was (kept verbatim in that annotation), e.g. argocd app set {ns}/{app} --sync-policy automated --self-heal",
            ns = owner.namespace,
            app = owner.name
        ),
        Method::ArgoSkipReconcile => format!(
            "kubectl -n {} annotate applications.argoproj.io {} {SKIP_RECONCILE}- {PAUSED}-",
            owner.namespace, owner.name
        ),
        Method::FluxReconcileDisabled => {
            format!("kubectl -n {namespace} annotate deployment/{name} {FLUX_RECONCILE}- {PAUSED}-")
        }
        Method::FluxSuspend => format!(
            "flux -n {} resume helmrelease {}",
            owner.namespace, owner.name
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_tracking_annotation_names_the_application_first() {
        let cfg = GitopsConfig::default();
        let a = map(&[(TRACKING_ID, "payments:apps/Deployment:payments/api")]);
        let l = map(&[("app.kubernetes.io/instance", "other")]);
        let o = discover(&cfg, "payments", "api", &l, &a).unwrap();
        assert_eq!(
            (o.kind, o.namespace.as_str(), o.name.as_str(), o.found_by),
            (OwnerKind::Application, "argocd", "payments", FoundBy::Mark)
        );
        // Apps in any namespace.
        let a = map(&[(TRACKING_ID, "team_payments:apps/Deployment:payments/api")]);
        let o = discover(&cfg, "payments", "api", &l, &a).unwrap();
        assert_eq!(
            (o.namespace.as_str(), o.name.as_str()),
            ("team", "payments")
        );
    }

    #[test]
    fn a_tracking_id_copied_from_another_object_is_ignored() {
        let cfg = GitopsConfig::default();
        let a = map(&[(TRACKING_ID, "payments:apps/Deployment:payments/worker")]);
        assert_eq!(discover(&cfg, "payments", "api", &map(&[]), &a), None);
    }

    #[test]
    fn the_instance_label_needs_confirming_and_flux_labels_come_after() {
        let cfg = GitopsConfig::default();
        let l = map(&[
            ("app.kubernetes.io/instance", "payments"),
            ("kustomize.toolkit.fluxcd.io/name", "apps"),
            ("kustomize.toolkit.fluxcd.io/namespace", "flux-system"),
        ]);
        let o = discover(&cfg, "payments", "api", &l, &map(&[])).unwrap();
        assert_eq!(o.found_by, FoundBy::InstanceLabel);
        let off = GitopsConfig {
            instance_label: String::new(),
            ..GitopsConfig::default()
        };
        let o = discover(&off, "payments", "api", &l, &map(&[])).unwrap();
        assert_eq!(
            (o.kind, o.namespace.as_str(), o.name.as_str()),
            (OwnerKind::Kustomization, "flux-system", "apps")
        );
        let hr = map(&[
            ("helm.toolkit.fluxcd.io/name", "api"),
            ("helm.toolkit.fluxcd.io/namespace", "payments"),
        ]);
        let o = discover(&off, "payments", "api", &hr, &map(&[])).unwrap();
        assert_eq!(o.kind, OwnerKind::HelmRelease);
    }

    #[test]
    fn automated_sync_is_restored_verbatim() {
        let automated = json!({"prune": true, "selfHeal": true, "allowEmpty": false});
        let record = PauseRecord {
            automated: Some(automated.clone()),
            revision: Some("abc".into()),
            deployment: "payments/api".into(),
            checked: false,
        };
        let pause = pause_patch(Method::ArgoAutomatedOff, &record);
        assert_eq!(pause["spec"]["syncPolicy"]["automated"], Value::Null);
        let kept: PauseRecord =
            serde_json::from_str(pause["metadata"]["annotations"][PAUSED].as_str().unwrap())
                .unwrap();
        assert_eq!(kept, record);
        let resume = resume_patch(Method::ArgoAutomatedOff, &kept);
        assert_eq!(resume["spec"]["syncPolicy"]["automated"], automated);
        assert_eq!(resume["metadata"]["annotations"][PAUSED], Value::Null);
    }

    #[test]
    fn a_helm_release_moves_on_with_its_spec_not_with_our_suspend() {
        let before = json!({"metadata": {"generation": 4}, "spec": {"values": {"tag": "v1"}}});
        let suspended = json!({"metadata": {"generation": 5}, "spec": {"values": {"tag": "v1"}, "suspend": true}});
        let next = json!({"metadata": {"generation": 6}, "spec": {"values": {"tag": "v2"}, "suspend": true}});
        let r = |o: &Value| revision(OwnerKind::HelmRelease, o);
        assert_eq!(r(&before), r(&suspended));
        assert_ne!(r(&before), r(&next));
    }

    #[test]
    fn a_record_written_before_the_held_check_was_noted_reads_as_unchecked() {
        let old: PauseRecord =
            serde_json::from_str(r#"{"revision":"abc","deployment":"payments/api"}"#).unwrap();
        assert!(!old.checked);
        let checked = PauseRecord {
            checked: true,
            ..old.clone()
        };
        let text = serde_json::to_string(&checked).unwrap();
        assert_eq!(serde_json::from_str::<PauseRecord>(&text).unwrap(), checked);
        // Unchecked, the record is written as before.
        assert!(!serde_json::to_string(&old).unwrap().contains("checked"));
    }

    #[test]
    fn a_pause_found_on_its_object_is_told_by_where_it_is() {
        let skipped = json!({"metadata": {"annotations": {SKIP_RECONCILE: "true"}}});
        assert_eq!(
            method_on(OwnerKind::Application, &skipped),
            Method::ArgoSkipReconcile
        );
        assert_eq!(
            method_on(OwnerKind::Application, &json!({})),
            Method::ArgoAutomatedOff
        );
        assert_eq!(
            method_on(OwnerKind::Kustomization, &json!({})),
            Method::FluxReconcileDisabled
        );
        assert_eq!(
            method_on(OwnerKind::HelmRelease, &json!({})),
            Method::FluxSuspend
        );
    }

    #[test]
    fn the_pause_holds_only_while_its_mark_is_there() {
        let on = json!({"metadata": {"annotations": {FLUX_RECONCILE: "disabled"}}});
        assert!(holds(Method::FluxReconcileDisabled, &on));
        assert!(!holds(Method::FluxReconcileDisabled, &json!({})));
        let app = json!({"spec": {"syncPolicy": {"automated": {"selfHeal": true}}}});
        assert!(!holds(Method::ArgoAutomatedOff, &app));
        assert!(holds(
            Method::FluxSuspend,
            &json!({"spec": {"suspend": true}})
        ));
    }
}

//! Simulated Argo CD and Flux: their custom resources (Application, ApplicationSet,
//! Kustomization, HelmRelease) in the store, and controllers that re-apply the Git version of a
//! Deployment as the real ones do, so that a plain `kubectl rollout undo` is undone unless the
//! sync is paused.
//!
//! - Argo CD's application controller refreshes every Application (its `status.sync.revision`
//!   follows Git even with automated sync off), syncs a new revision at once while
//!   `spec.syncPolicy.automated` is set, and with `selfHeal` re-applies Git `self_heal_timeout`
//!   after a drift. An Application annotated `argocd.argoproj.io/skip-reconcile: "true"` is left
//!   alone entirely. An ApplicationSet without `ignoreApplicationDifferences` puts its template's
//!   sync policy back on the Application it generates.
//! - Flux's kustomize-controller reconciles every `spec.interval` unless `spec.suspend`:
//!   `status.lastAppliedRevision` follows Git, and the Deployment is re-applied unless it carries
//!   `kustomize.toolkit.fluxcd.io/reconcile: disabled`.
//! - Flux's helm-controller (drift detection on) re-applies the chart every `spec.interval`
//!   unless `spec.suspend`; a commit changes the HelmRelease's own spec (its parent
//!   Kustomization applies it), so `metadata.generation` follows Git even while suspended.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::objects::{self, fnv1a32};
use super::store::Kind;
use super::{SimCluster, set_version};
use crate::sim::scenario::{DeploymentSpec, GitopsSpec};

pub const TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
pub const SKIP_RECONCILE: &str = "argocd.argoproj.io/skip-reconcile";
pub const FLUX_RECONCILE: &str = "kustomize.toolkit.fluxcd.io/reconcile";

/// One Deployment under a GitOps controller.
#[derive(Debug, Clone)]
pub struct Managed {
    pub deployment: (String, String),
    pub spec: GitopsSpec,
    /// The version in Git, and the commit that set it (1 for the first).
    pub git_version: String,
    pub commit: u32,
    /// The commit the controller last synced.
    applied: u32,
    drift_since: Option<Instant>,
    next_sync: Instant,
    /// The sync policy the ApplicationSet's template gives the Application.
    template_policy: Option<Value>,
}

fn split(reference: &str) -> (String, String) {
    let (ns, name) = reference.split_once('/').unwrap_or(("default", reference));
    (ns.to_string(), name.to_string())
}

/// A commit's SHA-1-like hex name, stable for a Deployment and commit number.
fn sha(deployment: &(String, String), commit: u32) -> String {
    let seed = format!("{}/{}@{commit}", deployment.0, deployment.1);
    (0..5u8)
        .map(|i| format!("{:08x}", fnv1a32(format!("{seed}#{i}").as_bytes())))
        .collect()
}

/// The API groups whose CRDs a GitOps spec needs.
pub fn groups(spec: &GitopsSpec) -> &'static [&'static str] {
    match spec {
        GitopsSpec::Argocd(_) => &["argoproj.io"],
        GitopsSpec::Flux(f) if f.helmrelease.is_some() => {
            &["kustomize.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io"]
        }
        GitopsSpec::Flux(_) => &["kustomize.toolkit.fluxcd.io"],
    }
}

/// The labels and annotations the controller puts on the Deployments it applies.
pub fn mark(dep: &mut Value, spec: &GitopsSpec) {
    let (ns, name) = (
        objects_str(dep, "/metadata/namespace"),
        objects_str(dep, "/metadata/name"),
    );
    match spec {
        GitopsSpec::Argocd(a) => {
            let (_, app) = split(&a.application);
            dep["metadata"]["annotations"][TRACKING_ID] =
                json!(format!("{app}:apps/Deployment:{ns}/{name}"));
        }
        GitopsSpec::Flux(f) => {
            let (prefix, owner) = match (&f.kustomization, &f.helmrelease) {
                (Some(k), _) => ("kustomize.toolkit.fluxcd.io", split(k)),
                (None, Some(h)) => ("helm.toolkit.fluxcd.io", split(h)),
                (None, None) => return,
            };
            dep["metadata"]["labels"][format!("{prefix}/name")] = json!(owner.1);
            dep["metadata"]["labels"][format!("{prefix}/namespace")] = json!(owner.0);
        }
    }
}

fn objects_str(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl SimCluster {
    /// Installs the CRDs and creates the GitOps objects of a Deployment that has `gitops`.
    pub fn add_gitops(&self, d: &DeploymentSpec) {
        let Some(spec) = d.gitops.clone() else {
            return;
        };
        {
            let mut api = self.shared.api();
            for g in groups(&spec) {
                if !api.crds.iter().any(|c| c == g) {
                    api.crds.push(g.to_string());
                }
            }
        }
        let deployment = (d.namespace().to_string(), d.name().to_string());
        let mut managed = Managed {
            git_version: d.version.clone(),
            commit: 1,
            applied: 1,
            drift_since: None,
            next_sync: Instant::now(),
            template_policy: None,
            deployment: deployment.clone(),
            spec: spec.clone(),
        };
        let revision = sha(&deployment, 1);
        let mut st = self.shared.lock();
        let mut create = |kind: Kind, mut obj: Value| {
            obj["metadata"]["uid"] = json!(st.store.next_uid());
            obj["metadata"]["creationTimestamp"] = json!(objects::now_rfc3339());
            obj["metadata"]["generation"] = json!(1);
            st.write(kind, obj)
        };
        match &spec {
            GitopsSpec::Argocd(a) => {
                let (ns, name) = split(&a.application);
                let policy = json!({"automated": {"prune": true, "selfHeal": a.self_heal}});
                let mut app = json!({
                    "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {
                        "project": "default",
                        "source": {"repoURL": format!("https://git.example.com/{}/{}.git", deployment.0, deployment.1),
                            "targetRevision": "main", "path": "deploy"},
                        "destination": {"server": "https://kubernetes.default.svc", "namespace": deployment.0},
                        "syncPolicy": policy,
                    },
                    "status": {
                        "sync": {"status": "Synced", "revision": revision},
                        "resources": [{"group": "apps", "version": "v1", "kind": "Deployment",
                            "namespace": deployment.0, "name": deployment.1, "status": "Synced"}],
                    },
                });
                if let Some(set) = &a.application_set {
                    let owner = create(
                        Kind::ApplicationSet,
                        json!({
                            "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet",
                            "metadata": {"name": set, "namespace": ns},
                            "spec": {
                                "generators": [{"list": {"elements": [{"name": name}]}}],
                                "template": {"metadata": {"name": "{{name}}"}, "spec": {"syncPolicy": policy}},
                            },
                        }),
                    );
                    app["metadata"]["ownerReferences"] = json!([{
                        "apiVersion": "argoproj.io/v1alpha1", "kind": "ApplicationSet", "name": set,
                        "uid": owner.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
                        "controller": true, "blockOwnerDeletion": true,
                    }]);
                    managed.template_policy = Some(policy.clone());
                }
                create(Kind::Application, app);
            }
            GitopsSpec::Flux(f) => {
                let interval = humantime::format_duration(f.interval).to_string();
                if let Some(k) = &f.kustomization {
                    let (ns, name) = split(k);
                    create(
                        Kind::Kustomization,
                        json!({
                            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
                            "metadata": {"name": name, "namespace": ns},
                            "spec": {"interval": interval, "path": "./deploy", "prune": true,
                                "sourceRef": {"kind": "GitRepository", "name": name}},
                            "status": {"lastAppliedRevision": format!("main@sha1:{revision}"),
                                "lastAttemptedRevision": format!("main@sha1:{revision}")},
                        }),
                    );
                }
                if let Some(h) = &f.helmrelease {
                    let (ns, name) = split(h);
                    create(
                        Kind::HelmRelease,
                        json!({
                            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                            "metadata": {"name": name, "namespace": ns, "labels": {
                                "kustomize.toolkit.fluxcd.io/name": "apps",
                                "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}},
                            "spec": {"interval": interval, "releaseName": deployment.1,
                                "targetNamespace": deployment.0,
                                "chart": {"spec": {"chart": deployment.1, "version": "1.0.0",
                                    "sourceRef": {"kind": "HelmRepository", "name": "charts"}}},
                                "driftDetection": {"mode": "enabled"},
                                "values": {"image": {"tag": d.version}}},
                            "status": {"lastAttemptedRevision": "1.0.0", "observedGeneration": 1},
                        }),
                    );
                }
            }
        }
        st.gitops.push(managed);
    }

    /// A commit changes the version in Git of a managed Deployment.
    pub fn git_commit(&self, namespace: &str, name: &str, version: &str) {
        let mut st = self.shared.lock();
        let Some(i) = st
            .gitops
            .iter()
            .position(|m| m.deployment == (namespace.to_string(), name.to_string()))
        else {
            return;
        };
        let m = &mut st.gitops[i];
        m.git_version = version.to_string();
        m.commit += 1;
        if let GitopsSpec::Flux(f) = &m.spec
            && let Some(h) = f.helmrelease.clone()
        {
            // The parent Kustomization applies the HelmRelease's new values: a new generation.
            let (ns, hr) = split(&h);
            let version = version.to_string();
            if let Some(obj) = st.store.get(Kind::HelmRelease, &ns, &hr) {
                let mut obj = (*obj).clone();
                obj["spec"]["values"]["image"]["tag"] = json!(version);
                let generation = obj
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(1);
                obj["metadata"]["generation"] = json!(generation + 1);
                st.write(Kind::HelmRelease, obj);
            }
        }
    }

    /// Someone turns the sync back on by hand with the owner's own switch (`argocd app set
    /// --sync-policy automated --self-heal`, skip-reconcile removed, `flux resume`, the
    /// Deployment's reconcile annotation removed), leaving any other annotation in place.
    pub fn gitops_resume_by_hand(&self, namespace: &str, name: &str) {
        let Some(m) = self
            .shared
            .lock()
            .gitops
            .iter()
            .find(|m| m.deployment == (namespace.to_string(), name.to_string()))
            .cloned()
        else {
            return;
        };
        let get = |kind: Kind, reference: &str| {
            let (ns, n) = split(reference);
            self.shared.lock().store.get(kind, &ns, &n)
        };
        match &m.spec {
            GitopsSpec::Argocd(a) => {
                if let Some(app) = get(Kind::Application, &a.application) {
                    let mut app = (*app).clone();
                    app["spec"]["syncPolicy"]["automated"] =
                        json!({"prune": true, "selfHeal": a.self_heal});
                    if let Some(annotations) = app
                        .pointer_mut("/metadata/annotations")
                        .and_then(Value::as_object_mut)
                    {
                        annotations.remove(SKIP_RECONCILE);
                    }
                    self.write_custom(Kind::Application, &app, true);
                }
            }
            GitopsSpec::Flux(f) => {
                for (kind, reference) in [
                    (Kind::Kustomization, &f.kustomization),
                    (Kind::HelmRelease, &f.helmrelease),
                ] {
                    if let Some(obj) = reference.as_deref().and_then(|r| get(kind, r))
                        && suspended(&obj)
                    {
                        let mut obj = (*obj).clone();
                        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                            spec.remove("suspend");
                        }
                        self.write_custom(kind, &obj, true);
                    }
                }
                if f.kustomization.is_some() {
                    // kubectl annotate deployment/NAME kustomize.toolkit.fluxcd.io/reconcile-
                    let _ = self.modify(namespace, name, |d| {
                        if let Some(a) = d
                            .pointer_mut("/metadata/annotations")
                            .and_then(Value::as_object_mut)
                        {
                            a.remove(FLUX_RECONCILE);
                        }
                    });
                }
            }
        }
    }

    /// Whether the Deployment's GitOps sync is paused when asked (automated sync off or
    /// reconciliation skipped; Flux suspended or the Deployment excluded).
    pub fn gitops_paused(&self, namespace: &str, name: &str) -> bool {
        let st = self.shared.lock();
        let Some(m) = st
            .gitops
            .iter()
            .find(|m| m.deployment == (namespace.to_string(), name.to_string()))
        else {
            return false;
        };
        let get = |kind: Kind, reference: &str| {
            let (ns, n) = split(reference);
            st.store.get(kind, &ns, &n)
        };
        match &m.spec {
            GitopsSpec::Argocd(a) => get(Kind::Application, &a.application)
                .is_some_and(|app| argo_automated(&app).is_none() || argo_skipped(&app)),
            GitopsSpec::Flux(f) => {
                let (kind, reference) = match (&f.kustomization, &f.helmrelease) {
                    (Some(k), _) => (Kind::Kustomization, k),
                    (None, Some(h)) => (Kind::HelmRelease, h),
                    (None, None) => return false,
                };
                let suspended = get(kind, reference).is_some_and(|o| suspended(&o));
                let excluded = kind == Kind::Kustomization
                    && st
                        .store
                        .get(Kind::Deployment, namespace, name)
                        .is_some_and(|d| flux_excluded(&d));
                suspended || excluded
            }
        }
    }

    /// The longest sync period of any managed Deployment (self-heal timeout or interval).
    pub fn gitops_period(&self) -> Option<Duration> {
        let st = self.shared.lock();
        st.gitops
            .iter()
            .map(|m| match &m.spec {
                GitopsSpec::Argocd(a) => a.self_heal_timeout,
                GitopsSpec::Flux(f) => f.interval,
            })
            .max()
    }

    /// One pass of every simulated GitOps controller.
    fn reconcile_gitops(&self, now: Instant) {
        let managed = self.shared.lock().gitops.clone();
        for (i, mut m) in managed.into_iter().enumerate() {
            let apply = match m.spec.clone() {
                GitopsSpec::Argocd(a) => {
                    self.argo(&mut m, &a.application, a.self_heal_timeout, now)
                }
                GitopsSpec::Flux(f) => {
                    if now < m.next_sync {
                        false
                    } else {
                        m.next_sync = now + f.interval;
                        self.flux(&mut m, &f, now)
                    }
                }
            };
            if apply {
                let (ns, name) = m.deployment.clone();
                let version = m.git_version.clone();
                // The Deployment may be gone; the controller would report it, nothing more.
                let _ = self.modify(&ns, &name, |d| set_version(d, &ns, &name, &version));
                m.applied = m.commit;
                m.drift_since = None;
            }
            let mut st = self.shared.lock();
            if let Some(slot) = st.gitops.get_mut(i) {
                // A commit that arrived meanwhile is kept.
                let (commit, version) = (slot.commit, slot.git_version.clone());
                *slot = m;
                if slot.commit != commit {
                    slot.commit = commit;
                    slot.git_version = version;
                }
            }
        }
    }

    fn live_version(&self, m: &Managed) -> Option<String> {
        self.current_version(&m.deployment.0, &m.deployment.1)
    }

    /// Argo CD's application controller (and the ApplicationSet controller) for one
    /// Application; true when Git is to be applied now.
    fn argo(&self, m: &mut Managed, reference: &str, timeout: Duration, now: Instant) -> bool {
        let (ns, name) = split(reference);
        let Some(app) = self.shared.lock().store.get(Kind::Application, &ns, &name) else {
            return false;
        };
        let mut app = (*app).clone();
        if let Some(policy) = &m.template_policy
            && app.pointer("/spec/syncPolicy") != Some(policy)
        {
            // The ApplicationSet regenerates its Application from the template.
            app["spec"]["syncPolicy"] = policy.clone();
            self.write_custom(Kind::Application, &app, true);
        }
        if argo_skipped(&app) {
            return false;
        }
        let live = self.live_version(m);
        let in_sync = live.as_deref() == Some(m.git_version.as_str());
        let revision = sha(&m.deployment, m.commit);
        let status =
            json!({"status": if in_sync { "Synced" } else { "OutOfSync" }, "revision": revision});
        if app.pointer("/status/sync") != Some(&status) {
            app["status"]["sync"] = status;
            if let Some(rs) = app
                .pointer_mut("/status/resources")
                .and_then(Value::as_array_mut)
            {
                for r in rs {
                    r["status"] = json!(if in_sync { "Synced" } else { "OutOfSync" });
                }
            }
            self.write_custom(Kind::Application, &app, false);
        }
        let Some(automated) = argo_automated(&app) else {
            m.drift_since = None;
            return false;
        };
        if m.applied != m.commit {
            return true;
        }
        let self_heal = automated.get("selfHeal").and_then(Value::as_bool) == Some(true);
        if !self_heal || in_sync {
            m.drift_since = None;
            return false;
        }
        let since = *m.drift_since.get_or_insert(now);
        now.duration_since(since) >= timeout
    }

    /// Flux's kustomize- or helm-controller for one reconciliation; true when Git is to be
    /// applied now.
    fn flux(&self, m: &mut Managed, f: &crate::sim::scenario::FluxSpec, _now: Instant) -> bool {
        let (kind, reference) = match (&f.kustomization, &f.helmrelease) {
            (Some(k), _) => (Kind::Kustomization, k),
            (None, Some(h)) => (Kind::HelmRelease, h),
            (None, None) => return false,
        };
        let (ns, name) = split(reference);
        let Some(obj) = self.shared.lock().store.get(kind, &ns, &name) else {
            return false;
        };
        if suspended(&obj) {
            return false;
        }
        let mut obj = (*obj).clone();
        let (field, revision) = match kind {
            Kind::Kustomization => (
                "lastAppliedRevision",
                format!("main@sha1:{}", sha(&m.deployment, m.commit)),
            ),
            _ => ("lastAttemptedRevision", format!("1.0.{}", m.commit - 1)),
        };
        if obj
            .pointer(&format!("/status/{field}"))
            .and_then(Value::as_str)
            != Some(&revision)
        {
            obj["status"][field] = json!(revision);
            obj["status"]["observedGeneration"] = obj["metadata"]["generation"].clone();
            self.write_custom(kind, &obj, false);
        }
        if kind == Kind::Kustomization {
            let excluded = self
                .deployment_json(&m.deployment.0, &m.deployment.1)
                .is_some_and(|d| flux_excluded(&d));
            if excluded {
                return false;
            }
        }
        self.live_version(m).as_deref() != Some(m.git_version.as_str())
    }

    /// Stores a controller's write of a custom resource (a spec write bumps the generation).
    fn write_custom(&self, kind: Kind, obj: &Value, spec_changed: bool) {
        let mut obj = obj.clone();
        if spec_changed {
            let generation = obj
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            obj["metadata"]["generation"] = json!(generation + 1);
        }
        self.shared.lock().write(kind, obj);
    }
}

fn argo_automated(app: &Value) -> Option<&Value> {
    app.pointer("/spec/syncPolicy/automated")
        .filter(|a| a.is_object())
        // Argo CD 3.x: `enabled: false` keeps the settings but turns automated sync off.
        .filter(|a| a.get("enabled").and_then(Value::as_bool) != Some(false))
}

fn argo_skipped(app: &Value) -> bool {
    app.pointer("/metadata/annotations")
        .and_then(|a| a.get(SKIP_RECONCILE))
        .and_then(Value::as_str)
        == Some("true")
}

fn suspended(obj: &Value) -> bool {
    obj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true)
}

fn flux_excluded(dep: &Value) -> bool {
    dep.pointer("/metadata/annotations")
        .and_then(|a| a.get(FLUX_RECONCILE))
        .and_then(Value::as_str)
        == Some("disabled")
}

/// Runs the simulated GitOps controllers until `shutdown`.
pub async fn run(cluster: SimCluster, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if cluster.shared.lock().gitops.is_empty() {
            continue;
        }
        cluster.reconcile_gitops(Instant::now());
    }
}

//! The simulated Kubernetes control plane: an API server subset over HTTP and a deployment
//! controller with pods whose states follow the app behaviours.
//!
//! CONTRACT (the runner, the services and the tests rely on exactly these signatures).
//!
//! Layout: `store` holds objects, resourceVersions and watch history; `server` routes the
//! HTTP API (`watch`, `write`, `patch`, `scale`, `table`, `discovery`, `openapi`, `events`);
//! `controller`, `revisions`, `rolling`, `status` and `replicaset` are the deployment
//! controller; `pods` is the simulated kubelet. Everything mutable sits behind one lock in
//! `state::State`; `shared` holds it with the fault switches and runs the controller loop.
//!
//! Known differences from a real cluster (none matters to `kubectl get/rollout/scale/apply` or
//! to kube-rs watchers): deleted pods go away at once (no Terminating grace period); a
//! `continue` token lists the current state rather than the snapshot of the first page;
//! several old ReplicaSets with replicas are not scaled proportionally on a scale change
//! mid-rollout; server-side apply (`application/apply-patch+yaml`) is refused with 415;
//! OpenAPI v3 only advertises server-side field validation (no schemas, so no
//! `kubectl explain`; kubectl 1.28 and older need OpenAPI v2 for `apply`); DELETE always
//! cascades in the background style; no admission, authentication or protobuf; RBAC allows everything but what
//! [`SimCluster::forbid`] and [`SimCluster::deny`] take away (see `access`).

mod access;
mod controller;
mod discovery;
mod error;
mod events;
mod gitops;
mod list;
mod object;
mod objects;
mod openapi;
mod patch;
mod pods;
mod replicaset;
mod revisions;
mod rolling;
mod scale;
pub mod selector;
mod server;
mod shared;
mod state;
mod status;
mod store;
mod table;
mod undo;
mod watch;
mod write;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::behaviour::Behaviours;
use super::scenario::{ApiState, DeploymentSpec, Strategy};
use shared::{ApiControl, Shared, run_controller};
use state::State;
use store::Kind;

/// Label that opts a Deployment in (the daemon's default selector).
pub const OPT_IN_LABEL: (&str, &str) = ("deploy-watchdog.io/enabled", "true");

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("deployment {namespace}/{name} does not exist")]
    NoSuchDeployment { namespace: String, name: String },
    #[error("deployment {namespace}/{name} has no container {container:?}")]
    NoSuchContainer {
        namespace: String,
        name: String,
        container: String,
    },
    #[error("deployment {namespace}/{name} already exists")]
    AlreadyExists { namespace: String, name: String },
    #[error("kubectl rollout undo deployment/{name} -n {namespace}: {message}")]
    Undo {
        namespace: String,
        name: String,
        message: String,
    },
}

pub use undo::Undone;

/// An HTTP PATCH (or PUT/POST) that changed a Deployment's pod template: a rollback or a deploy
/// made through the API (not through the runner's own calls).
#[derive(Debug, Clone)]
pub struct TemplateChange {
    pub at: Instant,
    pub namespace: String,
    pub name: String,
    pub user_agent: String,
}

/// A PATCH of a Deployment that the API server accepted (a no-op write included): what a
/// scenario counts as a rollback when it writes the pod template.
#[derive(Debug, Clone)]
pub struct DeploymentPatch {
    pub at: Instant,
    pub namespace: String,
    pub name: String,
    /// The Deployment's revision when the request arrived: the rollout it acts on.
    pub revision: Option<i64>,
    /// Whether the patch writes `spec.template` (a rollback does; a state annotation does not).
    pub writes_template: bool,
    pub user_agent: String,
}

/// The simulated control plane. Cheap to clone; every clone is the same cluster.
#[derive(Clone)]
pub struct SimCluster {
    shared: Arc<Shared>,
}

impl SimCluster {
    /// An empty cluster whose pods follow `behaviours`; serve it with [`SimCluster::start`].
    pub fn new(behaviours: Behaviours) -> Self {
        SimCluster {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(behaviours)),
                notify: Notify::new(),
                api: Mutex::new(ApiControl::default()),
                expire_next: AtomicBool::new(false),
                controller_stopped: AtomicBool::new(false),
            }),
        }
    }

    /// Serves the API on 127.0.0.1 (an ephemeral port) and runs the controller until `shutdown`.
    pub async fn start(&self, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        let listener = server::bind(std::net::SocketAddr::from((crate::sim::loopback(), 0)))?;
        let addr = listener.local_addr()?;
        {
            let mut api = self.shared.api();
            api.addr = Some(addr);
            api.shutdown = Some(shutdown.clone());
            let epoch = shutdown.child_token();
            api.epoch = Some(epoch.clone());
            tokio::spawn(server::serve(self.shared.clone(), listener, epoch));
        }
        tokio::spawn(gitops::run(self.clone(), shutdown.child_token()));
        tokio::spawn(run_controller(self.shared.clone(), shutdown));
        Ok(addr)
    }

    /// Runs the controller until `shutdown` and answers the API in this process: the client's
    /// requests are calls into the API server, with no socket between. For code on tokio's paused
    /// clock, which real sockets do not mix with (the clock jumps ahead while a read waits).
    /// The API cannot go down (`ApiState::Down`) without a socket to close; everything else
    /// answers as [`SimCluster::start`]'s.
    pub fn start_in_process(&self, shutdown: CancellationToken) -> kube::Client {
        {
            let mut api = self.shared.api();
            api.shutdown = Some(shutdown.clone());
            api.epoch = Some(shutdown.child_token());
        }
        tokio::spawn(gitops::run(self.clone(), shutdown.child_token()));
        tokio::spawn(run_controller(self.shared.clone(), shutdown));
        kube::Client::new(server::router(self.shared.clone()), "default")
    }

    /// The API's base URL (`http://127.0.0.1:PORT`) once started.
    pub fn url(&self) -> Option<String> {
        self.shared.api().addr.map(|a| format!("http://{a}"))
    }

    /// From now on every request on `plural` (e.g. `leases`) in `namespace` is refused with 403
    /// Forbidden, as RBAC refuses a namespace where the ServiceAccount has no Role.
    pub fn forbid(&self, plural: &str, namespace: &str) {
        self.shared
            .api()
            .forbidden
            .push((plural.to_string(), namespace.to_string()));
    }

    /// From now on RBAC refuses `verb` (`patch`, or `*` for all) on `resource` (`deployments`,
    /// `deployments/scale`) in every namespace: such a request gets 403 Forbidden, and a
    /// `SelfSubjectAccessReview` of it answers `allowed: false`.
    pub fn deny(&self, verb: &str, resource: &str) {
        self.shared
            .api()
            .denied
            .push((verb.to_string(), resource.to_string()));
    }

    /// From now on every request on `plural` (e.g. `leases`) is answered `delay` later: an API
    /// server under load.
    pub fn set_latency(&self, plural: &str, delay: std::time::Duration) {
        let mut api = self.shared.api();
        api.latency.retain(|(p, _)| p != plural);
        api.latency.push((plural.to_string(), delay));
    }

    /// Creates a Deployment that is already rolled out and healthy at revision 1.
    pub fn add_deployment(&self, spec: &DeploymentSpec) {
        let (ns, name) = (spec.namespace().to_string(), spec.name().to_string());
        let mut dep = deployment_object(spec);
        let mut st = self.shared.lock();
        note_failing_starts(&mut st, spec);
        dep["metadata"]["uid"] = json!(st.store.next_uid());
        dep["metadata"]["creationTimestamp"] = json!(objects::now_rfc3339());
        if let Some(old) = st.store.get(Kind::Deployment, &ns, &name) {
            let (ons, oname) = store::key_of(&old);
            st.delete_cascade(Kind::Deployment, &ons, &oname);
        }
        st.write(Kind::Deployment, dep);
        if spec.paused {
            // A paused Deployment still gets its first ReplicaSet: it existed before the pause.
            let mut unpaused = st
                .store
                .get(Kind::Deployment, &ns, &name)
                .map(|d| (*d).clone())
                .unwrap_or_default();
            unpaused["spec"]["paused"] = json!(false);
            st.store.put(Kind::Deployment, unpaused);
        }
        st.backdate = true;
        let now = Instant::now();
        for _ in 0..8 {
            st.dirty.remove(&(ns.clone(), name.clone()));
            controller::sync_deployment(&mut st, &ns, &name, now);
            if !st.dirty.contains(&(ns.clone(), name.clone())) {
                break;
            }
        }
        if spec.paused
            && let Some(d) = st.store.get(Kind::Deployment, &ns, &name)
        {
            let mut d = (*d).clone();
            d["spec"]["paused"] = json!(true);
            st.write(Kind::Deployment, d);
        }
        st.backdate = false;
        drop(st);
        self.add_gitops(spec);
        self.shared.notify.notify_one();
    }

    /// Creates a Deployment now, as `kubectl create` would: a new object (a new UID) that the
    /// controller rolls out from nothing to revision 1.
    pub fn create_deployment(&self, spec: &DeploymentSpec) -> Result<(), SimError> {
        let (ns, name) = (spec.namespace().to_string(), spec.name().to_string());
        let mut st = self.shared.lock();
        if st.store.contains(Kind::Deployment, &ns, &name) {
            return Err(SimError::AlreadyExists {
                namespace: ns,
                name,
            });
        }
        let mut dep = deployment_object(spec);
        note_failing_starts(&mut st, spec);
        dep["metadata"]["uid"] = json!(st.store.next_uid());
        dep["metadata"]["creationTimestamp"] = json!(objects::now_rfc3339());
        st.write(Kind::Deployment, dep);
        drop(st);
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Someone runs `kubectl rollout undo deployment/NAME` (no `--to-revision`) now.
    pub fn undo(&self, namespace: &str, name: &str) -> Result<Undone, SimError> {
        let result = undo::undo(&mut self.shared.lock(), namespace, name);
        self.shared.notify.notify_one();
        result.map_err(|message| SimError::Undo {
            namespace: namespace.into(),
            name: name.into(),
            message,
        })
    }

    /// Changes the pod template to `version`: image tag and `app.kubernetes.io/version` label.
    pub fn deploy(&self, namespace: &str, name: &str, version: &str) -> Result<(), SimError> {
        self.modify(namespace, name, |d| {
            set_version(d, namespace, name, version)
        })
    }

    /// `kubectl set image`: the image tag of one container changes (the app container's when
    /// `container` is `None`), its repository and every label stay as they are.
    pub fn set_image(
        &self,
        namespace: &str,
        name: &str,
        container: Option<&str>,
        tag: &str,
    ) -> Result<(), SimError> {
        let dep = self
            .deployment_json(namespace, name)
            .ok_or_else(|| no_such(namespace, name))?;
        let template = dep.pointer("/spec/template").unwrap_or(&Value::Null);
        let target = match container {
            Some(c) => Some(c),
            None => objects::main_container(template, name)
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str),
        };
        let index = template
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter().position(|c| {
                    target.is_some() && c.get("name").and_then(Value::as_str) == target
                })
            })
            .ok_or_else(|| SimError::NoSuchContainer {
                namespace: namespace.into(),
                name: name.into(),
                container: container.unwrap_or(name).into(),
            })?;
        self.modify(namespace, name, |d| {
            let c = &mut d["spec"]["template"]["spec"]["containers"][index];
            let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
            c["image"] = json!(crate::sim::sidecars::with_tag(image, tag));
        })
    }

    /// Sets `spec.replicas` (not a new revision).
    pub fn scale(&self, namespace: &str, name: &str, replicas: i32) -> Result<(), SimError> {
        self.modify(namespace, name, |d| d["spec"]["replicas"] = json!(replicas))
    }

    /// Pauses or resumes the rollout (`spec.paused`).
    pub fn set_paused(&self, namespace: &str, name: &str, paused: bool) -> Result<(), SimError> {
        self.modify(namespace, name, |d| {
            if paused {
                d["spec"]["paused"] = json!(true);
            } else if let Some(spec) = d["spec"].as_object_mut() {
                spec.remove("paused");
            }
        })
    }

    /// Sets `spec.progressDeadlineSeconds` (a spec change, so generation+1).
    pub fn set_progress_deadline(
        &self,
        namespace: &str,
        name: &str,
        seconds: i64,
    ) -> Result<(), SimError> {
        self.modify(namespace, name, |d| {
            d["spec"]["progressDeadlineSeconds"] = json!(seconds)
        })
    }

    /// Deletes the Deployment and, like the garbage collector, its ReplicaSets and Pods.
    pub fn delete(&self, namespace: &str, name: &str) -> Result<(), SimError> {
        let mut st = self.shared.lock();
        st.delete_cascade(Kind::Deployment, namespace, name)
            .map(|_| ())
            .ok_or_else(|| no_such(namespace, name))
    }

    /// Injects an API fault (see [`ApiState`]); `Up` rebinds the same port after `Down`.
    /// Must be called from within the Tokio runtime that started the cluster.
    pub fn set_api_state(&self, state: ApiState) {
        let mut api = self.shared.api();
        match state {
            ApiState::DropWatches => {
                std::mem::take(&mut api.drop_watches).cancel();
            }
            ApiState::Expire => {
                self.shared.lock().store.compact_all();
                self.shared.expire_next.store(true, Ordering::SeqCst);
                std::mem::take(&mut api.expire_watches).cancel();
            }
            ApiState::Down => {
                if let Some(epoch) = api.epoch.take() {
                    epoch.cancel();
                }
                api.down = true;
            }
            ApiState::Up => {
                if !api.down {
                    return;
                }
                let (Some(addr), Some(shutdown)) = (api.addr, api.shutdown.clone()) else {
                    return;
                };
                if tokio::runtime::Handle::try_current().is_err() {
                    tracing::error!("set_api_state(Up) called outside the Tokio runtime");
                    return;
                }
                match server::bind_retrying(addr) {
                    Ok(listener) => {
                        let epoch = shutdown.child_token();
                        api.epoch = Some(epoch.clone());
                        api.down = false;
                        tokio::spawn(server::serve(self.shared.clone(), listener, epoch));
                    }
                    Err(e) => {
                        tracing::error!(%addr, error = %e, "simulated API server could not rebind its port")
                    }
                }
            }
        }
    }

    /// Stops or restarts the deployment controller, as when kube-controller-manager is down:
    /// the API keeps serving and storing writes, and nothing is reconciled (no new ReplicaSet,
    /// no revision, no status) until it runs again.
    pub fn set_controller_running(&self, running: bool) {
        self.shared
            .controller_stopped
            .store(!running, Ordering::SeqCst);
        self.shared.notify.notify_one();
    }

    /// Re-evaluates pods after a behaviour changed.
    pub fn behaviours_changed(&self) {
        self.shared.lock().behaviours_changed(Instant::now());
        self.shared.notify.notify_one();
    }

    /// Ready pods of a Deployment by version (the pods' `app.kubernetes.io/version` label).
    pub fn ready_pods_by_version(&self, namespace: &str, name: &str) -> Vec<(String, u32)> {
        let st = self.shared.lock();
        let Some(dep) = st.store.get(Kind::Deployment, namespace, name) else {
            return Vec::new();
        };
        let uid = store::meta_str(&dep, "uid").unwrap_or_default();
        let mut by_version: BTreeMap<String, u32> = BTreeMap::new();
        for rs in st.store.dependents(uid, Kind::ReplicaSet) {
            let rs_uid = store::meta_str(&rs, "uid").unwrap_or_default();
            for key in st.store.dependent_keys(rs_uid, Kind::Pod) {
                if let Some(rt) = st.pods.get(&key)
                    && rt.last.as_ref().is_some_and(|s| s.ready)
                {
                    *by_version.entry(rt.version.clone()).or_default() += 1;
                }
            }
        }
        by_version.into_iter().collect()
    }

    /// The Deployments whose objects changed after `generation` (0, or a generation this
    /// returned before), and the generation to ask from next: a Deployment's ready pods can
    /// only have changed if it is listed.
    pub fn changed_since(&self, generation: u64) -> (u64, Vec<(String, String)>) {
        let st = self.shared.lock();
        (st.changes.generation(), st.changes.since(generation))
    }

    /// From now on every request on `plural` is refused with 403 Forbidden in every namespace.
    pub fn forbid_everywhere(&self, plural: &str) {
        self.forbid(plural, "*");
    }

    /// Every Deployment as (namespace, name).
    pub fn deployments(&self) -> Vec<(String, String)> {
        self.shared.lock().store.keys(Kind::Deployment)
    }

    /// The version of a Deployment's current pod template.
    pub fn current_version(&self, namespace: &str, name: &str) -> Option<String> {
        let dep = self
            .shared
            .lock()
            .store
            .get(Kind::Deployment, namespace, name)?;
        objects::running_version(dep.pointer("/spec/template")?, name)
    }

    /// A Deployment as stored (JSON), for tests and diagnostics.
    pub fn deployment_json(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .store
            .get(Kind::Deployment, namespace, name)
            .map(|d| (*d).clone())
    }

    /// A Lease as stored (JSON): who leads.
    pub fn lease_json(&self, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .lock()
            .store
            .get(Kind::Lease, namespace, name)
            .map(|l| (*l).clone())
    }

    /// Template changes made through the API, in order.
    pub fn template_changes(&self) -> Vec<TemplateChange> {
        self.shared.lock().template_changes.clone()
    }

    /// Deployment PATCH requests accepted through the API, in order.
    pub fn deployment_patches(&self) -> Vec<DeploymentPatch> {
        self.shared.lock().deployment_patches.clone()
    }

    /// Events created through the API (either group), as events.k8s.io/v1 JSON, in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.shared.lock().api_events.clone()
    }

    /// Requests served, by "VERB resource" (e.g. "WATCH deployments", "PATCH deployments").
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.shared.lock().counts.clone()
    }

    /// When a pod of each (namespace, deployment, version) first showed `CrashLoopBackOff`.
    pub fn crashloops(&self) -> Vec<((String, String, String), Instant)> {
        let st = self.shared.lock();
        st.crashloops.iter().map(|(k, t)| (k.clone(), *t)).collect()
    }

    /// Deployments whose latest generation is fully rolled out (`kubectl rollout status` would
    /// say so), out of all Deployments.
    pub fn rolled_out(&self) -> (usize, usize) {
        let st = self.shared.lock();
        let keys = st.store.keys(Kind::Deployment);
        let done = keys
            .iter()
            .filter_map(|(ns, name)| st.store.get(Kind::Deployment, ns, name))
            .filter(|d| {
                let n = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(-1);
                let want = n("/spec/replicas");
                n("/metadata/generation") == n("/status/observedGeneration")
                    && n("/status/updatedReplicas") == want
                    && n("/status/replicas") == want
                    && n("/status/availableReplicas") == want
            })
            .count();
        (done, keys.len())
    }

    fn modify(&self, ns: &str, name: &str, f: impl FnOnce(&mut Value)) -> Result<(), SimError> {
        let mut st = self.shared.lock();
        let dep = st
            .store
            .get(Kind::Deployment, ns, name)
            .ok_or_else(|| no_such(ns, name))?;
        let mut new = (*dep).clone();
        f(&mut new);
        objects::default_deployment(&mut new);
        if new.get("spec") != dep.get("spec") {
            write::bump_generation(&dep, &mut new);
        }
        st.write(Kind::Deployment, new);
        drop(st);
        self.shared.notify.notify_one();
        Ok(())
    }
}

fn no_such(namespace: &str, name: &str) -> SimError {
    SimError::NoSuchDeployment {
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// Remembers which of a Deployment's extra containers fail their first starts (the kubelet
/// reads it when it runs the pods).
fn note_failing_starts(st: &mut State, spec: &DeploymentSpec) {
    let fails: std::collections::HashMap<String, u32> = spec
        .sidecars
        .iter()
        .filter(|s| s.fails_to_start > 0)
        .map(|s| (s.name.clone(), s.fails_to_start))
        .collect();
    let key = (spec.namespace().to_string(), spec.name().to_string());
    if fails.is_empty() {
        st.failing_starts.remove(&key);
    } else {
        st.failing_starts.insert(key, fails);
    }
}

/// A Deployment as a scenario describes it, defaulted as the API server stores it (without
/// uid, creation time or status).
fn deployment_object(spec: &DeploymentSpec) -> Value {
    let (ns, name) = (spec.namespace(), spec.name());
    let mut labels = json!({"app": name});
    if spec.opted_in {
        labels[OPT_IN_LABEL.0] = json!(OPT_IN_LABEL.1);
    }
    let mut dep = json!({
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": spec.annotations, "generation": 1},
        "spec": {
            "replicas": spec.replicas, "paused": spec.paused,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "app.kubernetes.io/name": name}},
                "spec": {"containers": crate::sim::sidecars::containers(
                    json!({"name": name, "ports": [{"containerPort": 8080, "name": "http"}]}),
                    &spec.sidecars,
                )},
            },
        },
        "status": {},
    });
    let init = crate::sim::sidecars::init_containers(&spec.sidecars);
    if !init.is_empty() {
        dep["spec"]["template"]["spec"]["initContainers"] = json!(init);
    }
    set_version(&mut dep, ns, name, &spec.version);
    if let Some(g) = &spec.gitops {
        gitops::mark(&mut dep, g);
    }
    if !spec.paused {
        dep["spec"].as_object_mut().map(|m| m.remove("paused"));
    }
    if spec.strategy == Strategy::Recreate {
        dep["spec"]["strategy"] = json!({"type": "Recreate"});
    }
    if let Some(deadline) = spec.progress_deadline {
        dep["spec"]["progressDeadlineSeconds"] = json!(deadline.as_secs().max(1));
    }
    objects::default_deployment(&mut dep);
    dep
}

fn set_version(dep: &mut Value, ns: &str, name: &str, version: &str) {
    dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] = json!(version);
    // The app container: named like the Deployment (sidecars keep their images).
    let index = dep
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .position(|c| c.get("name").and_then(Value::as_str) == Some(name))
        })
        .unwrap_or(0);
    dep["spec"]["template"]["spec"]["containers"][index]["image"] =
        json!(format!("registry.example.com/{ns}/{name}:{version}"));
}

//! The cluster's mutable state behind one lock: the store plus what the controller and the
//! simulated kubelet remember, and the records the runner reads back.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};

use serde_json::{Value, json};
use tokio::time::Instant;

use super::objects::{now_micro, now_rfc3339};
use super::pods::PodRuntime;
use super::store::{Key, Kind, Store, controller_owner, meta_str};
use super::{DeploymentPatch, TemplateChange};
use crate::sim::behaviour::Behaviours;
use crate::sim::changes::ChangeLog;

pub struct State {
    pub store: Store,
    pub behaviours: Behaviours,
    /// Simulated kubelet memory per pod.
    pub pods: HashMap<Key, PodRuntime>,
    /// Deployments the controller must sync.
    pub dirty: BTreeSet<Key>,
    /// Deployments whose objects (and so, possibly, ready pods) changed, for the traffic model.
    pub changes: ChangeLog<Key>,
    /// The behaviour changes already applied to pods (a `Behaviours` generation).
    pub behaviours_seen: u64,
    /// Deployments to resync at a time (progress deadlines).
    pub timers: BinaryHeap<Reverse<(Instant, Key)>>,
    /// The pending deadline timer per Deployment (deduplicates `timers`).
    pub deadlines: HashMap<Key, Instant>,
    /// Pods whose state changes at a time.
    pub pod_timers: BinaryHeap<Reverse<(Instant, Key)>>,
    pub template_changes: Vec<TemplateChange>,
    pub deployment_patches: Vec<DeploymentPatch>,
    pub api_events: Vec<Value>,
    pub counts: BTreeMap<String, u64>,
    /// When a pod of (namespace, deployment, version) first showed `CrashLoopBackOff`.
    pub crashloops: HashMap<(String, String, String), Instant>,
    pub ip_seq: u32,
    pub name_seq: u64,
    /// While set, new healthy pods start already Ready (`add_deployment`'s pre-existing state).
    pub backdate: bool,
    /// Hash collisions seen per Deployment, reported in `status.collisionCount`.
    pub collisions: HashMap<Key, u32>,
    /// Per Deployment, the containers (by name) beside the app that fail their first starts.
    pub failing_starts: HashMap<Key, HashMap<String, u32>>,
    /// Deployments under a simulated GitOps controller.
    pub gitops: Vec<super::gitops::Managed>,
}

impl State {
    pub fn new(behaviours: Behaviours) -> Self {
        State {
            store: Store::new(),
            behaviours,
            pods: HashMap::new(),
            dirty: BTreeSet::new(),
            changes: ChangeLog::default(),
            behaviours_seen: 0,
            timers: BinaryHeap::new(),
            pod_timers: BinaryHeap::new(),
            deadlines: HashMap::new(),
            template_changes: Vec::new(),
            deployment_patches: Vec::new(),
            api_events: Vec::new(),
            counts: BTreeMap::new(),
            crashloops: HashMap::new(),
            ip_seq: 0,
            name_seq: 0,
            backdate: false,
            collisions: HashMap::new(),
            failing_starts: HashMap::new(),
            gitops: Vec::new(),
        }
    }

    /// Remembers the first `CrashLoopBackOff` of a version's pods (benchmark latencies).
    pub fn note_pod_state(&mut self, rt: &PodRuntime, state: &super::pods::PodState, now: Instant) {
        if let Some(super::pods::Container::Waiting {
            reason: "CrashLoopBackOff",
            ..
        }) = state.container
        {
            let key = (
                rt.namespace.clone(),
                rt.deployment.clone(),
                rt.version.clone(),
            );
            self.crashloops.entry(key).or_insert(now);
        }
    }

    /// Stores an object and marks the Deployment it belongs to for a sync.
    pub fn write(&mut self, kind: Kind, obj: Value) -> std::sync::Arc<Value> {
        let stored = self.store.put(kind, obj);
        self.mark_dirty_for(kind, &stored);
        stored
    }

    pub fn mark_dirty_for(&mut self, kind: Kind, obj: &Value) {
        match kind {
            Kind::Deployment => {
                let ns = meta_str(obj, "namespace").unwrap_or_default().to_string();
                let name = meta_str(obj, "name").unwrap_or_default().to_string();
                self.mark_changed((ns, name));
            }
            Kind::ReplicaSet | Kind::Pod => self.mark_owner_dirty(obj),
            _ => {}
        }
    }

    /// Marks the Deployment that owns a ReplicaSet, or a Pod's ReplicaSet, as dirty.
    pub fn mark_owner_dirty(&mut self, obj: &Value) {
        let ns = meta_str(obj, "namespace").unwrap_or_default().to_string();
        let Some((kind, name, _)) = controller_owner(obj) else {
            return;
        };
        match kind {
            "Deployment" => self.mark_changed((ns, name.to_string())),
            "ReplicaSet" => {
                // The ReplicaSet's own owner, read from the store's index fields (no parse).
                let dep = self
                    .store
                    .get_stored(Kind::ReplicaSet, &ns, name)
                    .and_then(|rs| rs.owner_name.clone());
                if let Some(dep) = dep {
                    self.mark_changed((ns, dep.to_string()));
                }
            }
            _ => {}
        }
    }

    /// A Deployment, its ReplicaSets or its Pods changed: the controller syncs it, and its
    /// ready pods are read again.
    fn mark_changed(&mut self, key: Key) {
        self.changes.mark(&key);
        self.dirty.insert(key);
    }

    /// Deletes an object and, like the garbage collector, everything it controls.
    pub fn delete_cascade(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
    ) -> Option<std::sync::Arc<Value>> {
        let obj = self.store.get(kind, ns, name)?;
        if let Some(uid) = meta_str(&obj, "uid") {
            let uid = uid.to_string();
            for child_kind in [Kind::ReplicaSet, Kind::Pod] {
                for child in self.store.dependents(&uid, child_kind) {
                    let (cns, cname) = super::store::key_of(&child);
                    self.delete_cascade(child_kind, &cns, &cname);
                }
            }
        }
        if kind == Kind::Pod {
            self.pods.remove(&(ns.to_string(), name.to_string()));
        }
        self.mark_dirty_for(kind, &obj);
        self.store.remove(kind, ns, name)
    }

    /// The scheduler's `FailedScheduling` Warning on an unschedulable pod.
    pub fn scheduler_event(&mut self, ns: &str, pod: &str, pod_uid: &str, message: &str) {
        let involved = json!({"kind": "Pod", "namespace": ns, "name": pod, "uid": pod_uid, "apiVersion": "v1"});
        self.record_event(
            ns,
            involved,
            ("Warning", "FailedScheduling", "Scheduling"),
            message,
            "default-scheduler",
        );
    }

    /// Stores a core Event from a simulated component (not counted in `SimCluster::events`).
    pub fn record_event(
        &mut self,
        ns: &str,
        involved: Value,
        (ty, reason, action): (&str, &str, &str),
        message: &str,
        component: &str,
    ) {
        let now = now_rfc3339();
        self.name_seq += 1;
        let object = involved["name"].as_str().unwrap_or_default().to_string();
        let name = format!(
            "{object}.{:016x}",
            u64::from(super::objects::fnv1a32(
                format!("{object}/{}", self.name_seq).as_bytes()
            )) << 24
                | (self.name_seq & 0xff_ffff)
        );
        let uid = self.store.next_uid();
        let event = json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "creationTimestamp": now},
            "involvedObject": involved,
            "reason": reason, "message": message, "type": ty,
            "source": {"component": component}, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": component, "reportingInstance": "", "eventTime": now_micro(),
            "action": action,
        });
        self.store.put(Kind::Event, event);
    }

    /// Re-reads the behaviour of every pod of a Deployment whose behaviours were set since the
    /// last call; a pod whose mode changed starts over in the new mode. Other pods keep theirs
    /// (their own timers refresh them), so one `app` event costs its Deployment's pods, not
    /// every pod of the cluster.
    pub fn behaviours_changed(&mut self, now: Instant) {
        let (generation, changed) = self.behaviours.changed_since(self.behaviours_seen);
        self.behaviours_seen = generation;
        let changed: HashSet<(&str, &str)> = changed
            .iter()
            .map(|(ns, name)| (ns.as_str(), name.as_str()))
            .collect();
        let keys: Vec<Key> = self
            .pods
            .iter()
            .filter(|(_, rt)| changed.contains(&(rt.namespace.as_str(), rt.deployment.as_str())))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let Some(rt) = self.pods.get(&key) else {
                continue;
            };
            let b = self
                .behaviours
                .lookup(&rt.namespace, &rt.deployment, &rt.version);
            let was_scheduled = rt.last.as_ref().is_some_and(|s| s.scheduled.is_ok());
            // A pod already bound to a node never becomes unschedulable again; only new pods
            // of the version are.
            let stays = b.pods == crate::sim::behaviour::PodMode::Pending && was_scheduled;
            if b.pods != rt.mode && !stays {
                let restarts = rt.last.as_ref().map_or(0, |s| s.restarts);
                let became_pending = b.pods == crate::sim::behaviour::PodMode::Pending;
                if let Some(rt) = self.pods.get_mut(&key) {
                    rt.mode = b.pods;
                    rt.since = now;
                    rt.restart_base = restarts;
                }
                if became_pending && let Some(pod) = self.store.get(Kind::Pod, &key.0, &key.1) {
                    let uid = meta_str(&pod, "uid").unwrap_or_default().to_string();
                    self.scheduler_event(&key.0, &key.1, &uid, &b.pending_reason);
                }
            }
            super::replicaset::refresh_pod(self, &key.0, &key.1, now);
        }
    }
}

//! ReplicaSets and Pods of the namespaces where rollouts are watched: one pair of watches per
//! namespace, shared by every rollout watched there, started by the first and stopped with the
//! last. Objects are kept stripped to what the judge reads (no managedFields, no pod spec).
//!
//! A change wakes only the sessions of the Deployment that owns the object: a namespace with a
//! hundred rollouts watched does not re-judge all of them on every pod update.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, warn};

use super::rollout::HASH_LABEL;
use crate::telemetry::Metrics;

/// Kept on the Deployment by `kubectl apply`, copied to nothing we read: often the largest
/// annotation an object carries.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Hands out the namespace caches.
#[derive(Clone)]
pub struct Caches {
    client: kube::Client,
    metrics: Arc<Metrics>,
    namespaces: Arc<Mutex<HashMap<String, Weak<Namespace>>>>,
    next_id: Arc<AtomicU64>,
}

/// One namespace's ReplicaSets and Pods, and who to wake on a change.
struct Namespace {
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    subscribers: Arc<Subscribers>,
    /// Stops both watches when the last subscription is dropped.
    _stop: DropGuard,
}

/// Each subscription's wake-up, by the name of the Deployment it watches.
type Wakers = HashMap<String, Vec<(u64, Arc<Notify>)>>;

/// Sessions by the name of the Deployment they watch.
#[derive(Default)]
struct Subscribers {
    by_deployment: Mutex<Wakers>,
}

impl Subscribers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Wakers> {
        self.by_deployment.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes the sessions of `deployment`, or every session when the owner is not known.
    fn wake(&self, deployment: Option<&str>) {
        let subscribers = self.lock();
        let wake = |list: &Vec<(u64, Arc<Notify>)>| list.iter().for_each(|(_, n)| n.notify_one());
        match deployment {
            Some(d) => subscribers.get(d).into_iter().for_each(wake),
            None => subscribers.values().for_each(wake),
        }
    }
}

/// One session's view of its namespace; dropping it ends the session's interest.
pub struct Subscription {
    namespace: Arc<Namespace>,
    deployment: String,
    id: u64,
    /// Woken on every change of the Deployment's ReplicaSets or Pods (and on every relist).
    pub changed: Arc<Notify>,
}

impl Subscription {
    /// The namespace's ReplicaSets (the caller picks the Deployment's by owner).
    pub fn replica_sets(&self) -> Vec<Arc<ReplicaSet>> {
        self.namespace.sets.state()
    }

    /// The pods `set` controls: its `pod-template-hash` and its UID as their controller.
    pub fn pods_of(&self, set: &ReplicaSet) -> Vec<Arc<Pod>> {
        let (Some(hash), Some(uid)) = (set.labels().get(HASH_LABEL), set.metadata.uid.as_deref())
        else {
            return Vec::new();
        };
        self.namespace.pods.state_filter(|p| {
            p.labels().get(HASH_LABEL) == Some(hash)
                && p.owner_references()
                    .iter()
                    .any(|r| r.controller == Some(true) && r.uid == uid)
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribers = self.namespace.subscribers.lock();
        if let Some(list) = subscribers.get_mut(&self.deployment) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                subscribers.remove(&self.deployment);
            }
        }
    }
}

impl Caches {
    pub fn new(client: kube::Client, metrics: Arc<Metrics>) -> Caches {
        Caches {
            client,
            metrics,
            namespaces: Arc::default(),
            next_id: Arc::default(),
        }
    }

    /// Subscribes to the ReplicaSets and Pods of `deployment` in `namespace`, starting that
    /// namespace's watches if no other rollout there is watched.
    pub fn subscribe(&self, namespace: &str, deployment: &str) -> Subscription {
        let ns = {
            let mut namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
            namespaces.retain(|_, w| w.strong_count() > 0);
            match namespaces.get(namespace).and_then(Weak::upgrade) {
                Some(ns) => ns,
                None => {
                    let ns = Arc::new(self.start(namespace));
                    namespaces.insert(namespace.to_string(), Arc::downgrade(&ns));
                    ns
                }
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let changed = Arc::new(Notify::new());
        ns.subscribers
            .lock()
            .entry(deployment.to_string())
            .or_default()
            .push((id, changed.clone()));
        Subscription {
            namespace: ns,
            deployment: deployment.to_string(),
            id,
            changed,
        }
    }

    /// Namespaces with running watches (for tests and metrics).
    pub fn watched_namespaces(&self) -> usize {
        let namespaces = self.namespaces.lock().unwrap_or_else(|e| e.into_inner());
        namespaces.values().filter(|w| w.strong_count() > 0).count()
    }

    fn start(&self, namespace: &str) -> Namespace {
        let stop = CancellationToken::new();
        let subscribers = Arc::new(Subscribers::default());
        let (sets, sets_writer) = reflector::store();
        let (pods, pods_writer) = reflector::store();
        let span = tracing::info_span!("namespace_watch", %namespace);
        // A pod's owner is found through its ReplicaSet, so the pod task reads the set store.
        let set_reader = sets.clone();
        self.spawn_watch(
            Api::<ReplicaSet>::namespaced(self.client.clone(), namespace),
            sets_writer,
            strip_replica_set,
            |rs: &ReplicaSet| controller_of(rs, "Deployment"),
            &subscribers,
            &stop,
            span.clone(),
        );
        self.spawn_watch(
            Api::<Pod>::namespaced(self.client.clone(), namespace),
            pods_writer,
            strip_pod,
            move |pod: &Pod| deployment_of_pod(pod, &set_reader),
            &subscribers,
            &stop,
            span,
        );
        Namespace {
            sets,
            pods,
            subscribers,
            _stop: stop.drop_guard(),
        }
    }

    /// A watch of one kind into `writer`, waking the owner's sessions on every change.
    #[allow(clippy::too_many_arguments)]
    fn spawn_watch<K>(
        &self,
        api: Api<K>,
        writer: reflector::store::Writer<K>,
        strip: fn(&mut K),
        owner: impl Fn(&K) -> Option<String> + Send + 'static,
        subscribers: &Arc<Subscribers>,
        stop: &CancellationToken,
        span: tracing::Span,
    ) where
        K: Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(strip)
            .reflect(writer);
        let subscribers = subscribers.clone();
        let stop = stop.clone();
        let metrics = self.metrics.clone();
        let kind = K::plural(&());
        tokio::spawn(
            async move {
                futures::pin_mut!(stream);
                loop {
                    let event = tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        e = stream.next() => e,
                    };
                    match event {
                        Some(Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o))) => {
                            subscribers.wake(owner(&o).as_deref());
                        }
                        Some(Ok(watcher::Event::InitDone)) => subscribers.wake(None),
                        Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                        Some(Err(e)) => {
                            warn!(error = %e, "watch error; retrying with backoff");
                            metrics.watch_restart(&kind);
                        }
                        None => return,
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// The name of the controller of `kind` in the object's ownerReferences.
fn controller_of<K: Resource>(o: &K, kind: &str) -> Option<String> {
    o.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == kind)
        .map(|r| r.name.clone())
}

/// The Deployment a pod belongs to: its ReplicaSet's controller, else the ReplicaSet's name
/// less the `-<pod-template-hash>` suffix the Deployment controller gives it.
fn deployment_of_pod(pod: &Pod, sets: &Store<ReplicaSet>) -> Option<String> {
    let rs = controller_of(pod, "ReplicaSet")?;
    let namespace = pod.namespace().unwrap_or_default();
    if let Some(set) = sets.get(&ObjectRef::new(&rs).within(&namespace))
        && let Some(d) = controller_of(set.as_ref(), "Deployment")
    {
        return Some(d);
    }
    let hash = pod.labels().get(HASH_LABEL)?;
    rs.strip_suffix(hash.as_str())?
        .strip_suffix('-')
        .map(str::to_string)
}

fn strip_meta(meta: &mut kube::api::ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

/// Detection and sessions read a Deployment's spec, status, labels and our annotations; the
/// rollback reads the Deployment afresh.
pub fn strip_deployment(d: &mut k8s_openapi::api::apps::v1::Deployment) {
    strip_meta(&mut d.metadata);
}

/// The judge reads a ReplicaSet's owner, labels, creation time and template.
fn strip_replica_set(rs: &mut ReplicaSet) {
    strip_meta(&mut rs.metadata);
}

/// The judge reads a pod's labels, owner, times and status, never its spec.
fn strip_pod(pod: &mut Pod) {
    strip_meta(&mut pod.metadata);
    pod.metadata.annotations = None;
    pod.spec = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    fn owned_by(kind: &str, name: &str) -> Option<Vec<OwnerReference>> {
        Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        }])
    }

    fn pod(rs: &str, hash: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(format!("{rs}-x1"));
        p.metadata.namespace = Some("prod".into());
        p.metadata.owner_references = owned_by("ReplicaSet", rs);
        p.metadata.labels = Some(BTreeMap::from([(HASH_LABEL.into(), hash.into())]));
        p
    }

    #[test]
    fn a_pod_belongs_to_the_deployment_its_replica_set_names_in_its_suffix() {
        let (store, _writer) = reflector::store::<ReplicaSet>();
        assert_eq!(
            deployment_of_pod(&pod("web-api-5d8f7c", "5d8f7c"), &store).as_deref(),
            Some("web-api")
        );
        // A ReplicaSet not named after its hash, and not in the store: owner unknown.
        assert_eq!(
            deployment_of_pod(&pod("standalone", "5d8f7c"), &store),
            None
        );
    }

    #[test]
    fn a_pod_belongs_to_the_controller_of_its_replica_set_when_the_set_is_known() {
        let (store, mut writer) = reflector::store::<ReplicaSet>();
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some("custom-name".into());
        rs.metadata.namespace = Some("prod".into());
        rs.metadata.owner_references = owned_by("Deployment", "checkout");
        writer.apply_watcher_event(&watcher::Event::Apply(rs));
        assert_eq!(
            deployment_of_pod(&pod("custom-name", "abc"), &store).as_deref(),
            Some("checkout")
        );
    }

    #[test]
    fn stripped_pods_keep_what_the_judge_reads() {
        let mut p = pod("web-5d8f7c", "5d8f7c");
        p.metadata.managed_fields = Some(vec![Default::default()]);
        p.metadata.annotations = Some(BTreeMap::from([(LAST_APPLIED.into(), "{}".into())]));
        p.spec = Some(Default::default());
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        strip_pod(&mut p);
        assert!(p.metadata.managed_fields.is_none() && p.metadata.annotations.is_none());
        assert!(p.spec.is_none());
        assert_eq!(
            p.labels().get(HASH_LABEL).map(String::as_str),
            Some("5d8f7c")
        );
        assert!(p.metadata.owner_references.is_some());
        assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    }

    #[test]
    fn wake_reaches_only_the_owners_sessions_unless_the_owner_is_unknown() {
        let s = Subscribers::default();
        let (a, b) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        s.lock().insert("a".into(), vec![(1, a.clone())]);
        s.lock().insert("b".into(), vec![(2, b.clone())]);
        s.wake(Some("a"));
        let woken = |n: &Arc<Notify>| futures::FutureExt::now_or_never(n.notified()).is_some();
        assert!(woken(&a));
        assert!(!woken(&b));
        s.wake(None);
        assert!(woken(&a) && woken(&b));
    }
}

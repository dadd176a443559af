//! ReplicaSets and Pods of the namespaces where rollouts are watched: one pair of watches per
//! namespace, shared by every rollout watched there, started by the first and stopped two
//! minutes after the last ([`LINGER`]). Objects are kept stripped to what the judge reads:
//! ReplicaSets without managedFields or status and with their template's key instead of the
//! template ([`SetRecord`]), pods as a [`PodRecord`].
//!
//! Objects are indexed by their controller's UID, so a session reads its Deployment's
//! ReplicaSets and its new ReplicaSet's pods without scanning the namespace, and a change wakes
//! only the sessions of the Deployment that owns the object: a namespace with a hundred rollouts
//! watched does not re-judge all of them on every pod update.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{Instrument, debug, warn};

use super::pods::PodRecord;
use super::rollout::HASH_LABEL;
use crate::telemetry::Metrics;

/// Kept on the Deployment by `kubectl apply`, copied to nothing we read: often the largest
/// annotation an object carries.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Objects per LIST page when a namespace's watch starts or relists.
const LIST_PAGE: u32 = 100;

/// How long a namespace's watches run on after its last session stopped reading them (a
/// session reads them while it watches): the next rollouts of a burst there, and the next
/// release after a rollback, find them in sync instead of listing the namespace again, which
/// takes seconds in a namespace of thousands of pods while a burst loads the API server.
const LINGER: Duration = Duration::from_secs(120);

/// Hands out the namespace caches.
#[derive(Clone)]
pub struct Caches {
    client: kube::Client,
    metrics: Arc<Metrics>,
    namespaces: Arc<Mutex<HashMap<String, Weak<Namespace>>>>,
    next_id: Arc<AtomicU64>,
}

/// Objects of one kind by name, and their names by controller UID. A relist builds a new
/// index aside and replaces the old one when complete, as kube's reflector store does; the
/// first list, with nothing to replace, fills the index as its pages come, so a session whose
/// objects come in the first page does not wait for the last (a namespace of thousands of pods
/// lists in seconds while a burst of rollouts loads the API server).
struct OwnerIndex<V> {
    objects: HashMap<String, Arc<V>>,
    by_owner: HashMap<String, HashSet<String>>,
    relisting: Option<Box<OwnerIndex<V>>>,
    /// A list has completed: the index holds the whole namespace.
    listed: bool,
}

/// What the index reads of what it keeps.
trait Indexed {
    fn name(&self) -> &str;
    /// The UID of its controller.
    fn owner(&self) -> Option<&str>;
}

/// A ReplicaSet as the index keeps it: stripped, its pod template replaced by the template's
/// key ([`super::rollout::template_key`]), computed once here rather than on every wake of
/// every session that looks for its Deployment's new ReplicaSet.
#[derive(Debug, Clone)]
pub struct SetRecord {
    /// The ReplicaSet without its template.
    pub set: ReplicaSet,
    /// The key of its template; `None` without one.
    pub template: Option<u64>,
}

impl From<ReplicaSet> for SetRecord {
    fn from(mut set: ReplicaSet) -> SetRecord {
        let template = set
            .spec
            .as_mut()
            .and_then(|s| s.template.take())
            .map(|t| super::rollout::template_key(&t));
        SetRecord { set, template }
    }
}

impl Indexed for SetRecord {
    fn name(&self) -> &str {
        self.set.metadata.name.as_deref().unwrap_or_default()
    }

    fn owner(&self) -> Option<&str> {
        controller_uid(&self.set)
    }
}

/// The ReplicaSet among `sets` whose template is the Deployment's (`template`, its key): the
/// oldest, as the controller picks ([`super::rollout::new_replica_set`] on full objects).
pub fn new_replica_set(template: Option<u64>, sets: &[Arc<SetRecord>]) -> Option<&SetRecord> {
    let template = template?;
    sets.iter()
        .map(Arc::as_ref)
        .filter(|s| s.template == Some(template))
        .min_by_key(|s| s.set.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

impl Indexed for PodRecord {
    fn name(&self) -> &str {
        &self.name
    }

    fn owner(&self) -> Option<&str> {
        self.controller_uid.as_deref()
    }
}

impl<V> Default for OwnerIndex<V> {
    fn default() -> Self {
        OwnerIndex {
            objects: HashMap::new(),
            by_owner: HashMap::new(),
            relisting: None,
            listed: false,
        }
    }
}

/// The UID of the object's controller.
fn controller_uid<K: Resource>(o: &K) -> Option<&str> {
    o.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

impl<V: Indexed> OwnerIndex<V> {
    fn apply(&mut self, o: V) {
        let name = o.name().to_string();
        self.remove(&name);
        if let Some(owner) = o.owner() {
            self.by_owner
                .entry(owner.to_string())
                .or_default()
                .insert(name.clone());
        }
        self.objects.insert(name, Arc::new(o));
    }

    fn remove(&mut self, name: &str) {
        let Some(old) = self.objects.remove(name) else {
            return;
        };
        if let Some(owner) = old.owner()
            && let Some(names) = self.by_owner.get_mut(owner)
        {
            names.remove(name);
            if names.is_empty() {
                self.by_owner.remove(owner);
            }
        }
    }

    /// Applies one watch event, keeping each object as `V`. Returns whether the index that
    /// sessions read changed: not for a page of a relist, which is kept aside until it ends.
    fn event<K: Resource + Into<V>>(&mut self, e: watcher::Event<K>) -> bool {
        match e {
            watcher::Event::Apply(o) => self.apply(o.into()),
            watcher::Event::Delete(o) => self.remove(o.meta().name.as_deref().unwrap_or_default()),
            watcher::Event::Init => {
                // A first list that failed part-way is listed again aside too: what it put in
                // the index may have been deleted since.
                if self.listed || !self.objects.is_empty() {
                    self.relisting = Some(Box::default());
                }
            }
            watcher::Event::InitApply(o) => match self.relisting.as_mut() {
                Some(fresh) => {
                    fresh.apply(o.into());
                    return false;
                }
                None => self.apply(o.into()),
            },
            watcher::Event::InitDone => {
                if let Some(fresh) = self.relisting.take() {
                    *self = *fresh;
                }
                self.listed = true;
            }
        }
        true
    }

    fn owned_by(&self, uid: &str) -> Vec<Arc<V>> {
        self.by_owner
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|name| self.objects.get(name).cloned())
            .collect()
    }
}

type Shared<K> = Arc<RwLock<OwnerIndex<K>>>;

fn read<K>(index: &Shared<K>) -> std::sync::RwLockReadGuard<'_, OwnerIndex<K>> {
    index.read().unwrap_or_else(|e| e.into_inner())
}

/// One namespace's ReplicaSets and Pods, and who to wake on a change.
struct Namespace {
    sets: Shared<SetRecord>,
    pods: Shared<PodRecord>,
    /// Whether each watch has had its first list: ReplicaSets, then Pods.
    synced: [tokio::sync::watch::Receiver<bool>; 2],
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
    /// The ReplicaSets whose controller is the object with `uid` (the Deployment).
    pub fn replica_sets_of(&self, uid: &str) -> Vec<Arc<SetRecord>> {
        read(&self.namespace.sets).owned_by(uid)
    }

    /// The ReplicaSets `deployment` controls (by its UID).
    pub fn replica_sets_of_deployment(
        &self,
        deployment: &k8s_openapi::api::apps::v1::Deployment,
    ) -> Vec<Arc<SetRecord>> {
        deployment
            .metadata
            .uid
            .as_deref()
            .map(|uid| self.replica_sets_of(uid))
            .unwrap_or_default()
    }

    /// The pods `set` controls: its UID as their controller and its `pod-template-hash`.
    pub fn pods_of(&self, set: &ReplicaSet) -> Vec<Arc<PodRecord>> {
        let (Some(hash), Some(uid)) = (set.labels().get(HASH_LABEL), set.metadata.uid.as_deref())
        else {
            return Vec::new();
        };
        let mut pods = read(&self.namespace.pods).owned_by(uid);
        pods.retain(|p| p.template_hash.as_ref() == Some(hash));
        pods
    }

    /// Once both watches of the namespace have had their first list: before that the index
    /// holds nothing, which is not the same as no objects. Returns at once when they have, or
    /// when the watches stopped.
    pub async fn synced(&self) {
        for synced in &self.namespace.synced {
            let _ = synced.clone().wait_for(|s| *s).await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        {
            let mut subscribers = self.namespace.subscribers.lock();
            if let Some(list) = subscribers.get_mut(&self.deployment) {
                list.retain(|(id, _)| *id != self.id);
                if list.is_empty() {
                    subscribers.remove(&self.deployment);
                }
            }
        }
        // The watches stop [`LINGER`] after the last subscription ends.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let namespace = self.namespace.clone();
            runtime.spawn(async move {
                tokio::time::sleep(LINGER).await;
                drop(namespace);
            });
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

    fn start(&self, namespace: &str) -> Namespace {
        let stop = CancellationToken::new();
        let subscribers = Arc::new(Subscribers::default());
        let sets: Shared<SetRecord> = Arc::default();
        let pods: Shared<PodRecord> = Arc::default();
        let span = tracing::info_span!("namespace_watch", %namespace);
        // A pod's owner is found through its ReplicaSet, so the pod task reads the set index.
        let set_reader = sets.clone();
        let (sets_synced, sets_synced_rx) = tokio::sync::watch::channel(false);
        let (pods_synced, pods_synced_rx) = tokio::sync::watch::channel(false);
        self.spawn_watch(
            Api::<ReplicaSet>::namespaced(self.client.clone(), namespace),
            sets.clone(),
            strip_replica_set,
            |rs: &ReplicaSet| controller_of(rs, "Deployment"),
            sets_synced,
            &subscribers,
            &stop,
            span.clone(),
        );
        self.spawn_watch(
            Api::<Pod>::namespaced(self.client.clone(), namespace),
            pods.clone(),
            // The record is all that is kept of a pod.
            |_: &mut Pod| {},
            move |pod: &Pod| deployment_of_pod(pod, &read(&set_reader)),
            pods_synced,
            &subscribers,
            &stop,
            span,
        );
        Namespace {
            sets,
            pods,
            synced: [sets_synced_rx, pods_synced_rx],
            subscribers,
            _stop: stop.drop_guard(),
        }
    }

    /// A watch of one kind into `index`, waking the owner's sessions on every change.
    #[allow(clippy::too_many_arguments)]
    fn spawn_watch<K, V>(
        &self,
        api: Api<K>,
        index: Shared<V>,
        strip: fn(&mut K),
        owner: impl Fn(&K) -> Option<String> + Send + 'static,
        synced: tokio::sync::watch::Sender<bool>,
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
            + Into<V>
            + 'static,
        V: Indexed + Send + Sync + 'static,
    {
        // Small pages: a namespace starts being watched whenever its first rollout does, and a
        // page is held whole while it is read (500 pods, kube's default, are megabytes).
        let stream = watcher(api, watcher::Config::default().page_size(LIST_PAGE))
            .default_backoff()
            .modify(strip);
        let subscribers = subscribers.clone();
        let stop = stop.clone();
        let metrics = self.metrics.clone();
        let kind = K::plural(&());
        tokio::spawn(
            async move {
                futures::pin_mut!(stream);
                let started = tokio::time::Instant::now();
                loop {
                    let event = tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        e = stream.next() => e,
                    };
                    match event {
                        Some(Ok(e)) => {
                            let wake = match &e {
                                watcher::Event::Apply(o)
                                | watcher::Event::Delete(o)
                                | watcher::Event::InitApply(o) => Some(owner(o)),
                                watcher::Event::InitDone => Some(None),
                                watcher::Event::Init => None,
                            };
                            let (changed, objects) = {
                                let mut index = index.write().unwrap_or_else(|e| e.into_inner());
                                let changed = index.event(e);
                                (changed, index.objects.len())
                            };
                            let wake = wake.filter(|_| changed);
                            if matches!(wake, Some(None)) && !*synced.borrow() {
                                synced.send_replace(true);
                                debug!(
                                    kind = %kind,
                                    objects,
                                    after_ms = started.elapsed().as_millis() as u64,
                                    "namespace watch in sync"
                                );
                            }
                            if let Some(deployment) = wake {
                                subscribers.wake(deployment.as_deref());
                            }
                        }
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
fn deployment_of_pod(pod: &Pod, sets: &OwnerIndex<SetRecord>) -> Option<String> {
    let rs = controller_of(pod, "ReplicaSet")?;
    if let Some(set) = sets.objects.get(&rs)
        && let Some(d) = controller_of(&set.set, "Deployment")
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

/// The judge reads a ReplicaSet's owner, labels, creation time and template (kept as its key,
/// [`SetRecord`]); its status and annotations are the Deployment's business.
fn strip_replica_set(rs: &mut ReplicaSet) {
    strip_meta(&mut rs.metadata);
    rs.metadata.annotations = None;
    rs.status = None;
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
        let sets = OwnerIndex::<SetRecord>::default();
        assert_eq!(
            deployment_of_pod(&pod("web-api-5d8f7c", "5d8f7c"), &sets).as_deref(),
            Some("web-api")
        );
        // A ReplicaSet not named after its hash, and not in the index: owner unknown.
        assert_eq!(deployment_of_pod(&pod("standalone", "5d8f7c"), &sets), None);
    }

    #[test]
    fn a_pod_belongs_to_the_controller_of_its_replica_set_when_the_set_is_known() {
        let mut sets = OwnerIndex::<SetRecord>::default();
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some("custom-name".into());
        rs.metadata.namespace = Some("prod".into());
        rs.metadata.owner_references = owned_by("Deployment", "checkout");
        sets.event(watcher::Event::Apply(rs));
        assert_eq!(
            deployment_of_pod(&pod("custom-name", "abc"), &sets).as_deref(),
            Some("checkout")
        );
    }

    fn pod_of(name: &str, owner_uid: &str) -> Pod {
        let mut p = pod("web-5d8f7c", "5d8f7c");
        p.metadata.name = Some(name.into());
        if let Some(refs) = p.metadata.owner_references.as_mut() {
            refs[0].uid = owner_uid.into();
        }
        p
    }

    fn names(pods: Vec<Arc<PodRecord>>) -> Vec<String> {
        let mut names: Vec<String> = pods.iter().map(|p| p.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_index_follows_applies_deletes_and_owner_changes() {
        let mut index = OwnerIndex::<PodRecord>::default();
        index.event(watcher::Event::Apply(pod_of("a", "rs-1")));
        index.event(watcher::Event::Apply(pod_of("b", "rs-1")));
        index.event(watcher::Event::Apply(pod_of("c", "rs-2")));
        assert_eq!(names(index.owned_by("rs-1")), ["a", "b"]);
        // Adopted by another controller: listed under the new one only.
        index.event(watcher::Event::Apply(pod_of("b", "rs-2")));
        assert_eq!(names(index.owned_by("rs-1")), ["a"]);
        assert_eq!(names(index.owned_by("rs-2")), ["b", "c"]);
        index.event(watcher::Event::Delete(pod_of("a", "rs-1")));
        assert!(index.owned_by("rs-1").is_empty() && !index.by_owner.contains_key("rs-1"));
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_complete() {
        let mut index = OwnerIndex::<PodRecord>::default();
        index.event(watcher::Event::Apply(pod_of("gone", "rs-1")));
        index.event(watcher::Event::<Pod>::Init);
        index.event(watcher::Event::InitApply(pod_of("kept", "rs-1")));
        // Until the list is complete, readers see the old state.
        assert_eq!(names(index.owned_by("rs-1")), ["gone"]);
        index.event(watcher::Event::<Pod>::InitDone);
        assert_eq!(names(index.owned_by("rs-1")), ["kept"]);
    }

    #[test]
    fn the_first_list_is_read_as_it_comes_and_later_ones_when_complete() {
        let mut index = OwnerIndex::<PodRecord>::default();
        assert!(index.event(watcher::Event::<Pod>::Init));
        // Nothing to replace: each page is in the index, and woken for, as it comes.
        assert!(index.event(watcher::Event::InitApply(pod_of("first", "rs-1"))));
        assert_eq!(names(index.owned_by("rs-1")), ["first"]);
        index.event(watcher::Event::InitApply(pod_of("gone", "rs-1")));
        index.event(watcher::Event::<Pod>::InitDone);
        // The next list (after a watch error) is kept aside until complete.
        index.event(watcher::Event::<Pod>::Init);
        assert!(!index.event(watcher::Event::InitApply(pod_of("first", "rs-1"))));
        assert_eq!(names(index.owned_by("rs-1")), ["first", "gone"]);
        index.event(watcher::Event::<Pod>::InitDone);
        assert_eq!(names(index.owned_by("rs-1")), ["first"]);
    }

    #[test]
    fn a_first_list_broken_off_is_listed_again_aside() {
        let mut index = OwnerIndex::<PodRecord>::default();
        index.event(watcher::Event::<Pod>::Init);
        index.event(watcher::Event::InitApply(pod_of("gone", "rs-1")));
        // The list failed part-way; the watcher lists again from the start.
        index.event(watcher::Event::<Pod>::Init);
        index.event(watcher::Event::InitApply(pod_of("kept", "rs-1")));
        assert_eq!(names(index.owned_by("rs-1")), ["gone"]);
        index.event(watcher::Event::<Pod>::InitDone);
        assert_eq!(names(index.owned_by("rs-1")), ["kept"]);
    }

    #[test]
    fn a_pod_record_keeps_what_the_diagnosis_reads() {
        let mut p = pod("web-5d8f7c", "5d8f7c");
        p.metadata.managed_fields = Some(vec![Default::default()]);
        p.metadata.annotations = Some(BTreeMap::from([(LAST_APPLIED.into(), "{}".into())]));
        p.spec = Some(Default::default());
        if let Some(labels) = p.metadata.labels.as_mut() {
            labels.insert("app".into(), "web".into());
        }
        let now = jiff::Timestamp::now();
        p.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            now - jiff::SignedDuration::from_secs(300),
        ));
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some("Pending".into()),
            host_ip: Some("10.0.0.1".into()),
            conditions: Some(vec![
                k8s_openapi::api::core::v1::PodCondition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    ..Default::default()
                },
                k8s_openapi::api::core::v1::PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    message: Some("0/3 nodes are available".into()),
                    ..Default::default()
                },
            ]),
            init_container_statuses: Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                name: "migrate".into(),
                ready: true,
                ..Default::default()
            }]),
            container_statuses: Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                name: "app".into(),
                image: "registry/app:v2".into(),
                restart_count: 3,
                state: Some(k8s_openapi::api::core::v1::ContainerState {
                    waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        message: Some("back-off 40s".into()),
                    }),
                    ..Default::default()
                }),
                last_state: Some(k8s_openapi::api::core::v1::ContainerState {
                    terminated: Some(k8s_openapi::api::core::v1::ContainerStateTerminated {
                        exit_code: 137,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let record = PodRecord::from(&p);
        assert_eq!(record.name, "web-5d8f7c-x1");
        assert_eq!(record.controller_uid.as_deref(), Some("u"));
        assert_eq!(record.template_hash.as_deref(), Some("5d8f7c"));
        assert_eq!(
            record.unscheduled.as_deref(),
            Some("0/3 nodes are available")
        );
        assert_eq!(record.containers.len(), 2, "init containers and the app's");
        let failure = crate::cluster::pods::failure([&record]).expect("failing");
        assert_eq!(failure.pod, "web-5d8f7c-x1");
        assert_eq!(
            failure.detail,
            "container app CrashLoopBackOff (restarts: 3, last exit code 137): back-off 40s"
        );
        let pending = crate::cluster::pods::pending([&record], now).expect("pending");
        assert_eq!(pending.pending_for, std::time::Duration::from_secs(300));
        assert_eq!(pending.message, "0/3 nodes are available");

        // Being deleted: neither failing nor pending.
        p.metadata.deletion_timestamp = p.metadata.creation_timestamp.clone();
        let record = PodRecord::from(&p);
        assert_eq!(crate::cluster::pods::failure([&record]), None);
        assert_eq!(crate::cluster::pods::pending([&record], now), None);
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

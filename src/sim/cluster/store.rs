//! The object store: every object as compact JSON text (a parsed `Value` costs ~10x more, and
//! the benchmark holds 100,000 pods), one cluster-wide resourceVersion (like etcd's revision),
//! an owner index for garbage collection and the controller, and a watch history per kind that
//! watch requests replay from, kept as the API server's watch cache keeps it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

pub use super::object::{Change, EventType, Key, Kind, Stored, controller_owner, key_of, meta_str};

/// How long a kind's changes stay replayable (the API server's `eventFreshDuration`: its
/// watch cache grows to keep this much history of each resource)...
const HISTORY_FRESH: Duration = Duration::from_secs(75);
/// ...from this many changes (its lower bound, kept however old)...
const HISTORY_MIN: usize = 100;
/// ...up to this many (its upper bound). A watch from an older resourceVersion gets 410 Gone.
const HISTORY_MAX: usize = 100 * 1024;

/// One kind's replayable changes, oldest first, and the newest resourceVersion dropped.
#[derive(Default)]
struct History {
    changes: VecDeque<(Instant, Arc<Change>)>,
    compacted: u64,
}

impl History {
    /// Records a change made `now`, dropping what is both stale and beyond the lower bound, or
    /// beyond the upper bound.
    fn push(&mut self, now: Instant, change: Arc<Change>) {
        self.changes.push_back((now, change));
        while let Some((at, oldest)) = self.changes.front() {
            let len = self.changes.len();
            let stale = len > HISTORY_MIN && now.duration_since(*at) > HISTORY_FRESH;
            if !stale && len <= HISTORY_MAX {
                break;
            }
            self.compacted = oldest.rv;
            self.changes.pop_front();
        }
    }
}

pub struct Store {
    rv: u64,
    uid_seq: u64,
    objects: HashMap<Kind, BTreeMap<Key, Arc<Stored>>>,
    /// owner uid → dependents, so GC and the controller never scan every object.
    dependents: HashMap<String, BTreeSet<(Kind, String, String)>>,
    history: HashMap<Kind, History>,
    /// Set by [`Store::compact_all`]: no kind replays from before it.
    compacted_all: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(4096);
        Store {
            rv: 1,
            uid_seq: 0,
            objects: HashMap::new(),
            dependents: HashMap::new(),
            history: HashMap::new(),
            compacted_all: 0,
            tx,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The newest resourceVersion of `kind` no longer replayable.
    pub fn compacted(&self, kind: Kind) -> u64 {
        let kind = self.history.get(&kind).map_or(0, |h| h.compacted);
        kind.max(self.compacted_all)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Changes of `kind` after `rv`, or `None` when some of them are no longer retained.
    pub fn changes_since(&self, kind: Kind, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv < self.compacted(kind) {
            return None;
        }
        let Some(history) = self.history.get(&kind) else {
            return Some(Vec::new());
        };
        let start = history.changes.partition_point(|(_, c)| c.rv <= rv);
        Some(
            history
                .changes
                .range(start..)
                .map(|(_, c)| c.clone())
                .collect(),
        )
    }

    /// Makes every retained change too old: the next watch from any earlier RV gets 410.
    pub fn compact_all(&mut self) {
        self.history.clear();
        self.compacted_all = self.rv;
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.get_stored(kind, ns, name).map(|s| Arc::new(s.value()))
    }

    pub fn get_stored(&self, kind: Kind, ns: &str, name: &str) -> Option<Arc<Stored>> {
        self.objects
            .get(&kind)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    pub fn contains(&self, kind: Kind, ns: &str, name: &str) -> bool {
        self.objects
            .get(&kind)
            .is_some_and(|m| m.contains_key(&(ns.to_string(), name.to_string())))
    }

    /// Stored objects of `kind` that satisfy `keep`, in key order, unparsed.
    pub fn list_stored(
        &self,
        kind: Kind,
        ns: Option<&str>,
        keep: impl Fn(&Stored) -> bool,
    ) -> Vec<Arc<Stored>> {
        let Some(map) = self.objects.get(&kind) else {
            return Vec::new();
        };
        match ns {
            Some(ns) => map
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v)
                .filter(|v| keep(v))
                .cloned()
                .collect(),
            None => map.values().filter(|v| keep(v)).cloned().collect(),
        }
    }

    /// One page of a list: objects of `kind` after `after` (exclusive) that satisfy `keep`, at
    /// most `limit`, and the key to continue from when more remain.
    pub fn page(
        &self,
        kind: Kind,
        ns: Option<&str>,
        after: Option<&Key>,
        limit: Option<usize>,
        keep: impl Fn(&Stored) -> bool,
    ) -> (Vec<Arc<Stored>>, Option<Key>) {
        use std::ops::Bound;
        let Some(map) = self.objects.get(&kind) else {
            return (Vec::new(), None);
        };
        let start = match (after, ns) {
            (Some(a), _) => Bound::Excluded(a.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let mut items: Vec<Arc<Stored>> = Vec::new();
        let mut last: Option<&Key> = None;
        for (key, obj) in map.range((start, Bound::Unbounded)) {
            if ns.is_some_and(|ns| key.0 != ns) {
                break;
            }
            if !keep(obj) {
                continue;
            }
            if limit.is_some_and(|l| items.len() >= l) {
                return (items, last.cloned());
            }
            items.push(obj.clone());
            last = Some(key);
        }
        (items, None)
    }

    /// Every key of `kind`, without parsing the objects.
    pub fn keys(&self, kind: Kind) -> Vec<Key> {
        self.objects
            .get(&kind)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Keys of the dependents of kind `kind` of the owner with `uid`, without parsing them.
    pub fn dependent_keys(&self, uid: &str, kind: Kind) -> Vec<Key> {
        let Some(set) = self.dependents.get(uid) else {
            return Vec::new();
        };
        set.iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, ns, name)| (ns.clone(), name.clone()))
            .collect()
    }

    /// Dependents of the owner with `uid` of the given kind.
    pub fn dependents(&self, uid: &str, kind: Kind) -> Vec<Arc<Value>> {
        let Some(set) = self.dependents.get(uid) else {
            return Vec::new();
        };
        set.iter()
            .filter(|(k, _, _)| *k == kind)
            .filter_map(|(k, ns, name)| self.get(*k, ns, name))
            .collect()
    }

    pub fn next_uid(&mut self) -> String {
        self.uid_seq += 1;
        let n = self.uid_seq;
        // Looks like a UUID, deterministic per cluster.
        format!(
            "5e1a{:04x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            n >> 48 & 0xffff,
            n >> 32 & 0xffff,
            n >> 20 & 0xfff,
            n >> 8 & 0xfff,
            n
        )
    }

    /// Stores `obj` (create or replace), stamping a new resourceVersion; returns the stored copy.
    pub fn put(&mut self, kind: Kind, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let key = key_of(&obj);
        if kind != Kind::Namespace && !key.0.is_empty() {
            self.ensure_namespace(&key.0);
        }
        let stored = Arc::new(Stored::new(&obj));
        let old = self
            .objects
            .entry(kind)
            .or_default()
            .insert(key.clone(), stored.clone());
        if let Some(old) = &old {
            self.unindex(kind, &key, old);
        }
        self.index(kind, &key, &stored);
        let ty = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.record(Change {
            rv,
            kind,
            ty,
            object: stored,
            prev: old,
        });
        Arc::new(obj)
    }

    pub fn remove(&mut self, kind: Kind, ns: &str, name: &str) -> Option<Arc<Value>> {
        let key = (ns.to_string(), name.to_string());
        let old = self.objects.get_mut(&kind)?.remove(&key)?;
        self.unindex(kind, &key, &old);
        self.rv += 1;
        let rv = self.rv;
        let mut last = old.value();
        if let Some(meta) = last.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let stored = Arc::new(Stored::new(&last));
        self.record(Change {
            rv,
            kind,
            ty: EventType::Deleted,
            object: stored,
            prev: Some(old),
        });
        Some(Arc::new(last))
    }

    fn ensure_namespace(&mut self, ns: &str) {
        let exists = self
            .objects
            .get(&Kind::Namespace)
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())));
        if !exists {
            let uid = self.next_uid();
            let obj = json!({
                "kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": ns, "uid": uid, "creationTimestamp": super::objects::now_rfc3339(),
                              "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
            });
            self.put(Kind::Namespace, obj);
        }
    }

    fn index(&mut self, kind: Kind, key: &Key, obj: &Stored) {
        if let Some(uid) = &obj.owner {
            self.dependents.entry(uid.to_string()).or_default().insert((
                kind,
                key.0.clone(),
                key.1.clone(),
            ));
        }
    }

    fn unindex(&mut self, kind: Kind, key: &Key, obj: &Stored) {
        if let Some(uid) = &obj.owner
            && let Some(set) = self.dependents.get_mut(&**uid)
        {
            set.remove(&(kind, key.0.clone(), key.1.clone()));
            if set.is_empty() {
                self.dependents.remove(&**uid);
            }
        }
    }

    fn record(&mut self, change: Change) {
        let change = Arc::new(change);
        self.history
            .entry(change.kind)
            .or_default()
            .push(Instant::now(), change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(change);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pod(store: &mut Store, name: &str) {
        store.put(
            Kind::Pod,
            json!({"metadata": {"name": name, "namespace": "prod"}}),
        );
    }

    #[test]
    fn a_burst_of_changes_stays_replayable_and_per_kind() {
        let mut store = Store::new();
        store.put(
            Kind::Deployment,
            json!({"metadata": {"name": "web", "namespace": "prod"}}),
        );
        let before = store.resource_version();
        // A thousand rollouts' worth of pod churn, at once.
        for i in 0..50_000 {
            pod(&mut store, &format!("web-{}", i % 2_000));
        }
        let pods = store.changes_since(Kind::Pod, before).unwrap();
        assert_eq!(pods.len(), 50_000);
        // Another kind's history is its own: the Deployment's change is still there.
        let deployments = store.changes_since(Kind::Deployment, 0).unwrap();
        assert_eq!(deployments.len(), 1);
    }

    #[test]
    fn beyond_the_upper_bound_the_oldest_are_compacted() {
        let mut store = Store::new();
        let start = store.resource_version();
        for i in 0..HISTORY_MAX + 10 {
            pod(&mut store, &format!("p-{}", i % 100));
        }
        assert!(store.changes_since(Kind::Pod, start).is_none());
        let compacted = store.compacted(Kind::Pod);
        assert_eq!(
            store.changes_since(Kind::Pod, compacted).unwrap().len(),
            HISTORY_MAX
        );
    }

    fn change(rv: u64) -> Arc<Change> {
        Arc::new(Change {
            rv,
            kind: Kind::Pod,
            ty: EventType::Modified,
            object: Arc::new(Stored::new(&json!({"metadata": {"name": "p"}}))),
            prev: None,
        })
    }

    #[test]
    fn stale_changes_go_only_beyond_the_lower_bound() {
        let mut history = History::default();
        let t0 = Instant::now();
        for rv in 1..=150 {
            history.push(t0, change(rv));
        }
        // Fresh: all kept, though beyond the lower bound.
        assert_eq!(history.changes.len(), 150);
        // 76 s later the stale ones go, down to the lower bound (the new one counted).
        history.push(t0 + Duration::from_secs(76), change(151));
        assert_eq!(history.changes.len(), HISTORY_MIN);
        assert_eq!(history.compacted, 51);
        assert_eq!(history.changes.front().unwrap().1.rv, 52);
    }

    #[test]
    fn compact_all_makes_every_kind_too_old() {
        let mut store = Store::new();
        pod(&mut store, "a");
        let rv = store.resource_version();
        store.compact_all();
        assert!(store.changes_since(Kind::Pod, rv - 1).is_none());
        assert!(store.changes_since(Kind::Deployment, rv - 1).is_none());
        assert_eq!(store.changes_since(Kind::Pod, rv).unwrap().len(), 0);
    }
}

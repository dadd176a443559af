//! The object store: every object as compact JSON text (a parsed `Value` costs ~10x more, and
//! the benchmark holds 100,000 pods), one cluster-wide resourceVersion (like etcd's revision),
//! an owner index for garbage collection and the controller, and a bounded watch history that
//! watch requests replay from.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

pub use super::object::{Change, EventType, Key, Kind, Stored, controller_owner, key_of, meta_str};

/// How many changes watches can replay; older resourceVersions get 410 Gone.
const HISTORY: usize = 10_000;

pub struct Store {
    rv: u64,
    uid_seq: u64,
    objects: HashMap<Kind, BTreeMap<Key, Arc<Stored>>>,
    /// owner uid → dependents, so GC and the controller never scan every object.
    dependents: HashMap<String, BTreeSet<(Kind, String, String)>>,
    history: VecDeque<Arc<Change>>,
    /// Highest resourceVersion dropped from `history`: watches must start at or after it.
    compacted: u64,
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
            history: VecDeque::new(),
            compacted: 0,
            tx,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.tx.subscribe()
    }

    /// Changes after `rv`, or `None` when some of them are no longer retained.
    pub fn changes_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv < self.compacted {
            return None;
        }
        let start = self.history.partition_point(|c| c.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }

    /// Makes every retained change too old: the next watch from any earlier RV gets 410.
    pub fn compact_all(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
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
        if self.history.len() >= HISTORY
            && let Some(old) = self.history.pop_front()
        {
            self.compacted = old.rv;
        }
        self.history.push_back(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(change);
    }
}

//! What the store holds: object kinds, the stored form of an object, watch changes, and the
//! metadata accessors every module uses.

use std::sync::Arc;

use serde_json::Value;

/// The kinds of object the simulated API server stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Deployment,
    ReplicaSet,
    Pod,
    /// Stored in the core `v1` shape; `events.k8s.io/v1` is a converted view.
    Event,
    Lease,
    Namespace,
    /// Argo CD's `Application` (a custom resource, served when its CRD is installed).
    Application,
    /// Argo CD's `ApplicationSet`.
    ApplicationSet,
    /// Flux's `Kustomization`.
    Kustomization,
    /// Flux's `HelmRelease`.
    HelmRelease,
}

impl Kind {
    /// Argo CD's and Flux's kinds: custom resources, not built in.
    pub fn is_custom(self) -> bool {
        matches!(
            self,
            Kind::Application | Kind::ApplicationSet | Kind::Kustomization | Kind::HelmRelease
        )
    }
}

/// Watch event type on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// An object as stored: its JSON text, plus the fields selectors read without parsing it.
#[derive(Debug)]
pub struct Stored {
    pub namespace: Box<str>,
    /// `metadata.labels` (or null).
    pub labels: Value,
    /// The controller owner's uid (the dependents index key).
    pub owner: Option<Box<str>>,
    /// The controller owner's name (the Deployment of a ReplicaSet, the ReplicaSet of a Pod).
    pub owner_name: Option<Box<str>>,
    pub json: Box<str>,
}

impl Stored {
    /// The stored form of `obj`.
    pub fn new(obj: &Value) -> Self {
        Stored {
            namespace: meta_str(obj, "namespace").unwrap_or_default().into(),
            labels: obj
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or(Value::Null),
            owner: controller_owner(obj).map(|(_, _, uid)| uid.into()),
            owner_name: controller_owner(obj).map(|(_, name, _)| name.into()),
            json: obj.to_string().into_boxed_str(),
        }
    }

    /// The object, parsed.
    pub fn value(&self) -> Value {
        // The text was serialized from a Value by this store: it always parses.
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }
}

/// One change, as replayed and streamed to watches.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub kind: Kind,
    pub ty: EventType,
    pub object: Arc<Stored>,
    /// The object before a change, so a filtered watch can tell "stopped matching" apart.
    pub prev: Option<Arc<Stored>>,
}

/// (namespace, name); the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

/// Accessors for the metadata fields the store relies on.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The uid of the controller owner of `obj`, with the owner's kind and name.
pub fn controller_owner(obj: &Value) -> Option<(&str, &str, &str)> {
    let refs = obj.get("metadata")?.get("ownerReferences")?.as_array()?;
    let owner = refs
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        .or_else(|| refs.first())?;
    Some((
        owner.get("kind")?.as_str()?,
        owner.get("name")?.as_str()?,
        owner.get("uid")?.as_str()?,
    ))
}

/// The (namespace, name) key of an object.
pub fn key_of(obj: &Value) -> Key {
    (
        meta_str(obj, "namespace").unwrap_or_default().to_string(),
        meta_str(obj, "name").unwrap_or_default().to_string(),
    )
}

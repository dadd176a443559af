//! Which keeper of this process holds each Deployment's paused sync: a claim per keeper, a newer
//! pause superseding an older one's, and whether it has just resumed the sync.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The Deployments whose paused sync a keeper of this process holds: one keeper each (a newer
/// pause supersedes the keeper of an older one), and whether it has just resumed the sync and
/// is watching what the controller applies.
#[derive(Debug, Clone, Default)]
pub struct Kept(Arc<Mutex<HashMap<(String, String), Slot>>>);

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u64,
    resumed: bool,
}

static NEXT_CLAIM: AtomicU64 = AtomicU64::new(1);

impl Kept {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Slot>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn claim(&self, namespace: &str, name: &str, supersede: bool) -> Option<Claim> {
        let key = (namespace.to_string(), name.to_string());
        let mut slots = self.slots();
        if !supersede && slots.contains_key(&key) {
            return None;
        }
        let id = NEXT_CLAIM.fetch_add(1, Ordering::Relaxed);
        slots.insert(key.clone(), Slot { id, resumed: false });
        Some(Claim {
            kept: self.clone(),
            key,
            id,
        })
    }

    /// Whether a keeper holds this Deployment's sync paused or watches a sync it resumed.
    pub fn kept(&self, namespace: &str, name: &str) -> bool {
        self.slots()
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// Whether a keeper has just resumed this Deployment's sync and watches the controller
    /// apply Git: the release rolled back coming back is the controller's doing, not a person's.
    pub fn resumed(&self, namespace: &str, name: &str) -> bool {
        self.slots()
            .get(&(namespace.to_string(), name.to_string()))
            .is_some_and(|s| s.resumed)
    }
}

/// A keeper's hold on its Deployment in [`Kept`]; let go when dropped.
pub(super) struct Claim {
    kept: Kept,
    key: (String, String),
    id: u64,
}

impl Claim {
    /// Still this keeper's (not superseded by a newer pause).
    pub(super) fn current(&self) -> bool {
        self.kept
            .slots()
            .get(&self.key)
            .is_some_and(|s| s.id == self.id)
    }

    pub(super) fn set_resumed(&self, resumed: bool) {
        if let Some(s) = self.kept.slots().get_mut(&self.key)
            && s.id == self.id
        {
            s.resumed = resumed;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut slots = self.kept.slots();
        if slots.get(&self.key).is_some_and(|s| s.id == self.id) {
            slots.remove(&self.key);
        }
    }
}

//! How each version of each simulated app behaves: the `apps:` section of a scenario.
//!
//! Shared by the simulated cluster (pod states follow `pods`) and the simulated services
//! (health endpoint, smoke routes, request and error counters).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::changes::ChangeLog;

/// The state the pods of a version settle into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PodMode {
    /// Start, become ready after a short container start.
    #[default]
    Running,
    /// Start, exit 1, restart with back-off: `CrashLoopBackOff`.
    Crashloop,
    /// `ErrImagePull`, then `ImagePullBackOff`.
    ImagePullError,
    /// `CreateContainerConfigError` (a missing ConfigMap or Secret key).
    ConfigError,
    /// Never scheduled: `PodScheduled=False`, reason `Unschedulable`.
    Pending,
    /// Running but not ready until `ready_after` has passed.
    SlowStart,
    /// Running and ready, then OOMKilled (exit 137) once shortly after: restarted at once (no
    /// back-off on a first restart), it runs and is ready again.
    OomOnce,
}

/// What the simulated `/health` endpoint of a version answers.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthBehaviour {
    /// HTTP status code; 200 by default.
    #[serde(default)]
    pub status: Option<u16>,
    /// Version reported in the body; the app's own version by default.
    #[serde(default)]
    pub version: Option<String>,
    /// Dependency checks; `{database: ok, cache: ok}` by default.
    #[serde(default)]
    pub checks: Option<BTreeMap<String, String>>,
    /// Delay before answering.
    #[serde(default, with = "humantime_serde::option")]
    pub delay: Option<Duration>,
    /// Raw text that replaces the JSON body.
    #[serde(default)]
    pub body: Option<String>,
}

/// Behaviour of one version of one app (`namespace/name@version`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    #[serde(default)]
    pub pods: PodMode,
    #[serde(default = "default_pending_reason")]
    pub pending_reason: String,
    #[serde(default, with = "humantime_serde")]
    pub ready_after: Duration,
    #[serde(default = "default_rps")]
    pub rps: f64,
    #[serde(default)]
    pub error_ratio: f64,
    #[serde(default)]
    pub health: HealthBehaviour,
    /// Path → status for smoke checks; a path not listed answers 200.
    #[serde(default)]
    pub routes: BTreeMap<String, u16>,
    /// For `image_pull_error`, `config_error` and `pending`: the cause goes away this long after
    /// each pod is created, and the pod then starts normally. Never by default.
    #[serde(default, with = "humantime_serde::option")]
    pub recovers_after: Option<Duration>,
    /// The kubelet's message for `image_pull_error`; by default the image does not exist.
    #[serde(default)]
    pub image_pull_message: Option<String>,
}

pub fn default_pending_reason() -> String {
    "0/3 nodes are available: 3 Insufficient cpu.".to_string()
}

fn default_rps() -> f64 {
    100.0
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            pods: PodMode::Running,
            pending_reason: default_pending_reason(),
            ready_after: Duration::ZERO,
            rps: default_rps(),
            error_ratio: 0.0,
            health: HealthBehaviour::default(),
            routes: BTreeMap::new(),
            recovers_after: None,
            image_pull_message: None,
        }
    }
}

/// `namespace/name@version`, the key of a behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AppKey {
    pub namespace: String,
    pub name: String,
    pub version: String,
}

impl AppKey {
    pub fn new(namespace: &str, name: &str, version: &str) -> Self {
        AppKey {
            namespace: namespace.into(),
            name: name.into(),
            version: version.into(),
        }
    }

    /// Parses `namespace/name@version`.
    pub fn parse(s: &str) -> Option<Self> {
        let (reference, version) = s.split_once('@')?;
        let (namespace, name) = reference.split_once('/')?;
        if namespace.is_empty() || name.is_empty() || version.is_empty() || name.contains('/') {
            return None;
        }
        Some(AppKey::new(namespace, name, version))
    }
}

impl std::fmt::Display for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.namespace, self.name, self.version)
    }
}

/// The behaviour table, shared and changed while a scenario plays (`app` events).
/// A version with no entry behaves as [`Behaviour::default`].
#[derive(Debug, Clone, Default)]
pub struct Behaviours {
    inner: Arc<RwLock<HashMap<AppKey, Behaviour>>>,
    /// The Deployments (namespace, name) whose behaviours were set, for readers that follow
    /// changes instead of reading every behaviour again.
    changes: Arc<Mutex<ChangeLog<(String, String)>>>,
}

impl Behaviours {
    pub fn get(&self, key: &AppKey) -> Behaviour {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    pub fn lookup(&self, namespace: &str, name: &str, version: &str) -> Behaviour {
        self.get(&AppKey::new(namespace, name, version))
    }

    pub fn set(&self, key: AppKey, behaviour: Behaviour) {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), behaviour);
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mark(&(key.namespace, key.name));
    }

    /// The Deployments whose behaviours were set after `generation` (0, or a generation this
    /// returned before), and the generation to ask from next.
    pub fn changed_since(&self, generation: u64) -> (u64, Vec<(String, String)>) {
        let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        (changes.generation(), changes.since(generation))
    }
}

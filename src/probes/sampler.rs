//! The error-rate providers asked once per interval for every rollout watched at once: one
//! grouped Prometheus query pair (`sum by (namespace, deployment)`) and one grouped Datadog
//! request (`by {service}`) whatever the number of rollouts, split per rollout. Sessions join while they watch and read each round's
//! samples from a `watch` channel; with no member, nothing is queried.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Probes;
use crate::check::{ObjectKey, Provider};
use crate::judge::ProviderSample;

/// Every provider's sample for each rollout of one round.
#[derive(Debug, Default)]
pub struct Round {
    samples: HashMap<ObjectKey, Vec<(Provider, ProviderSample)>>,
}

impl Round {
    /// The samples for one rollout; `None` when it was not a member when the round was asked
    /// (it joined while the round was out): absent is not "no data".
    pub fn samples(&self, key: &ObjectKey) -> Option<&Vec<(Provider, ProviderSample)>> {
        self.samples.get(key)
    }
}

/// Shared between the sampler's task and its members.
struct Inner {
    /// Rollouts and how many sessions of each are members.
    members: Mutex<BTreeMap<ObjectKey, usize>>,
    joined: Notify,
    rounds: watch::Sender<Arc<Round>>,
}

impl Inner {
    fn members(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectKey, usize>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The shared provider round.
#[derive(Clone)]
pub struct Sampler {
    inner: Arc<Inner>,
}

/// A session's membership; dropping it leaves.
pub struct Member {
    inner: Arc<Inner>,
    key: ObjectKey,
    /// A new value each round.
    pub rounds: watch::Receiver<Arc<Round>>,
}

impl Member {
    /// This rollout's samples of the latest round, if it was asked for in it.
    pub fn latest(&self) -> Option<Vec<(Provider, ProviderSample)>> {
        self.rounds.borrow().samples(&self.key).cloned()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut members = self.inner.members();
        if let Some(n) = members.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                members.remove(&self.key);
            }
        }
    }
}

impl Sampler {
    /// Starts the round every `interval`, each sample covering `window`.
    pub fn start(
        probes: Probes,
        interval: Duration,
        window: Duration,
        shutdown: CancellationToken,
    ) -> Sampler {
        let (rounds, _) = watch::channel(Arc::new(Round::default()));
        let inner = Arc::new(Inner {
            members: Mutex::default(),
            joined: Notify::new(),
            rounds,
        });
        tokio::spawn(run(inner.clone(), probes, interval, window, shutdown));
        Sampler { inner }
    }

    /// Joins the round for `namespace/name`.
    pub fn join(&self, namespace: &str, name: &str) -> Member {
        let key = ObjectKey::new(namespace, name);
        *self.inner.members().entry(key.clone()).or_default() += 1;
        self.inner.joined.notify_one();
        let mut rounds = self.inner.rounds.subscribe();
        // Only rounds from now on count.
        rounds.mark_unchanged();
        Member {
            inner: self.inner.clone(),
            key,
            rounds,
        }
    }
}

async fn run(
    inner: Arc<Inner>,
    probes: Probes,
    interval: Duration,
    window: Duration,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let members: Vec<ObjectKey> = inner.members().keys().cloned().collect();
        if members.is_empty() {
            // Idle: nothing is asked until a rollout is watched, then at once.
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = inner.joined.notified() => {}
            }
            ticks.reset_immediately();
            continue;
        }
        let samples = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            s = probes.error_rates_of(&members, window) => s,
        };
        inner.rounds.send_replace(Arc::new(Round { samples }));
    }
}

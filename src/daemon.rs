//! The daemon: watches opted-in Deployments, detects rollouts and runs a session for each.
//!
//! Detection: a rollout is a rise of `deployment.kubernetes.io/revision`. A rise that restores
//! the template our own rollback wrote is not one. State recorded on the Deployment lets a new
//! process resume a watch exactly where the last one stopped.
//!
//! Here: the daemon's status, its start and the watch loop. What it remembers of each
//! Deployment and the session each rollout gets are in `detector`; what a process that starts
//! leading does with a Deployment it sees for the first time is in `first_sight`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::caches::Caches;
use crate::cluster::leader;
use crate::cluster::record::Recorder;
use crate::config::{Config, Secrets};
use crate::judge::Policy;
use crate::notify::Notifier;
use crate::probes::Probes;
use crate::probes::sampler::Sampler;
use crate::session::Context;
use crate::tasks::{Task, Tasks};
use crate::telemetry::{Metrics, MetricsError};

mod detector;
mod first_sight;

use detector::Detector;
pub(crate) use first_sight::resumable;

/// What the outside sees of a running daemon.
#[derive(Clone, Default)]
pub struct Status {
    ready: Arc<AtomicBool>,
    /// The leader Lease can never be had (refused by RBAC, no such namespace).
    cannot_lead: Arc<AtomicBool>,
    metrics: Option<Arc<Metrics>>,
    /// One token per rollback being sent or verified.
    rollbacks: tokio_util::task::TaskTracker,
    /// The rollouts watched, for the status page.
    board: crate::status::Board,
}

impl Status {
    /// True once the initial list of every watch has arrived, unless this replica can never
    /// lead (its Lease is refused): then it would never act, and must not look healthy.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && !self.cannot_lead.load(Ordering::SeqCst)
    }

    /// Marks the initial sync done.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Records into `metrics` (by default the daemon records into a registry of its own).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Status {
        self.metrics = Some(metrics);
        self
    }

    /// Rollbacks being sent or verified now.
    pub fn rollbacks_in_flight(&self) -> usize {
        self.rollbacks.len()
    }

    /// Returns once no rollback is being sent or verified; rollbacks may still start meanwhile
    /// (a drain stops the daemon after this).
    pub async fn rollbacks_done(&self) {
        self.rollbacks.close();
        self.rollbacks.wait().await;
        self.rollbacks.reopen();
    }

    /// The live picture of the rollouts this process watches.
    pub fn board(&self) -> &crate::status::Board {
        &self.board
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the Deployment watch ended")]
    WatchEnded,
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// How long a stopping daemon waits for its tasks (a leader releasing its Lease, Events being
/// written) before it returns anyway.
const STOP_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the detector lets go of the handles of sessions that ended.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs until `shutdown`; then waits, a bounded time, for every task it started to end.
pub async fn run(
    config: Config,
    secrets: Secrets,
    client: Client,
    shutdown: CancellationToken,
    status: Status,
) -> Result<(), DaemonError> {
    let metrics = match status.metrics.clone() {
        Some(m) => m,
        None => Arc::new(Metrics::register(&prometheus::Registry::new())?),
    };
    let tasks = Tasks::new(metrics.clone());
    let result = detect(config, secrets, client, shutdown, status, metrics, &tasks).await;
    if tokio::time::timeout(STOP_BOUND, tasks.wait())
        .await
        .is_err()
    {
        warn!(
            tasks = tasks.len(),
            "tasks still running after the stop bound; stopping anyway"
        );
    }
    result
}

async fn detect(
    config: Config,
    secrets: Secrets,
    client: Client,
    shutdown: CancellationToken,
    status: Status,
    metrics: Arc<Metrics>,
    tasks: &Tasks,
) -> Result<(), DaemonError> {
    let notifier = Notifier::start(&config, &secrets, metrics.clone(), shutdown.clone());
    let identity = identity(&config);
    let probes = Probes::new(&config, &secrets).with_metrics(metrics.clone());
    let sampler = probes.has_providers().then(|| {
        Sampler::start(
            probes.clone(),
            config.watch.interval.get(),
            config.judge.sample_window.get(),
            shutdown.clone(),
        )
    });
    let ctx = Arc::new(Context {
        client: client.clone(),
        policy: Policy::from_config(&config),
        probes,
        notifier,
        recorder: Recorder::new(client.clone(), identity.clone()),
        config: config.clone(),
        caches: Caches::new(client.clone(), metrics.clone()),
        sampler,
        metrics,
        tasks: tasks.clone(),
        rollbacks: status.rollbacks.clone(),
        board: status.board.clone(),
        kept: Default::default(),
    });

    // Without an election this process leads from the start.
    let (leading_tx, mut leading) = watch::channel(!config.leader_election.enabled);
    if config.leader_election.enabled {
        let le = &config.leader_election;
        let namespace = lease_namespace(&le.namespace);
        let election = leader::Election {
            namespace: namespace.clone(),
            name: le.lease_name.clone(),
            identity: identity.clone(),
            lease_duration: le.lease_duration.get(),
            renew_deadline: le.renew_deadline.get(),
            retry_period: le.retry_period.get(),
        };
        info!(%identity, lease = %le.lease_name, %namespace, "standing for leader");
        tasks.spawn(
            Task::Leader,
            leader::run(
                Api::namespaced(client.clone(), &namespace),
                election,
                leading_tx,
                leader::ElectionHealth::new(ctx.metrics.clone(), status.cannot_lead.clone()),
                shutdown.clone(),
            ),
        );
    }

    let cfg = watcher::Config::default().labels(&config.watch.selector);
    let apis = deployment_apis(&config, &client);
    let watches = apis.len();
    let mut events = stream::select_all(apis.into_iter().enumerate().map(|(i, api)| {
        watcher(api, cfg.clone())
            .default_backoff()
            // Every opted-in Deployment is kept: only what detection and sessions read.
            .modify(crate::cluster::caches::strip_deployment)
            .map(move |e| (i, e))
            .boxed()
    }));

    let (began_tx, mut began_rx) = mpsc::unbounded_channel();
    let mut detector = Detector {
        ctx,
        known: HashMap::new(),
        leader: *leading.borrow(),
        sessions: shutdown.child_token(),
        shutdown: shutdown.clone(),
        began: began_tx,
    };
    let mut synced: HashSet<usize> = HashSet::new();
    let mut last_sweep = tokio::time::Instant::now();
    // Objects seen in the current (re)list of each watch: what is missing afterwards is gone.
    let mut listing: HashMap<usize, HashSet<(String, String)>> = HashMap::new();
    info!(namespaces = ?config.watch.namespaces, selector = %config.watch.selector, mode = ?config.mode, "watching deployments");
    loop {
        let (watch, event) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            changed = leading.changed() => {
                if changed.is_ok() {
                    let now_leading = *leading.borrow();
                    if now_leading && !detector.leader {
                        detector.take_over();
                    } else if !now_leading && detector.leader {
                        detector.step_down();
                    }
                }
                continue;
            }
            Some(began) = began_rx.recv() => {
                detector.on_began(began);
                continue;
            }
            e = events.next() => match e {
                Some(e) => e,
                None => return Err(DaemonError::WatchEnded),
            },
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "deployment watch error; retrying with backoff");
                detector.ctx.metrics.watch_restart("deployments");
                continue;
            }
        };
        match event {
            watcher::Event::Init => {
                listing.insert(watch, HashSet::new());
            }
            watcher::Event::InitApply(d) => {
                if let Some(seen) = listing.get_mut(&watch) {
                    seen.insert(key(&d));
                }
                detector.on_apply(d, !synced.contains(&watch));
            }
            watcher::Event::InitDone => {
                let seen = listing.remove(&watch).unwrap_or_default();
                if synced.contains(&watch) {
                    // Deleted while the watch was down.
                    let gone: Vec<_> = detector
                        .known
                        .keys()
                        .filter(|k| {
                            !seen.contains(*k)
                                && (watches == 1
                                    || config.watch.namespaces.get(watch) == Some(&k.0))
                        })
                        .cloned()
                        .collect();
                    for k in gone {
                        detector.on_delete(&k);
                    }
                }
                synced.insert(watch);
                if synced.len() == watches && !status.ready.load(Ordering::SeqCst) {
                    info!(deployments = detector.known.len(), "initial sync complete");
                    status.set_ready();
                }
            }
            watcher::Event::Apply(d) => detector.on_apply(d, false),
            watcher::Event::Delete(d) => detector.on_delete(&key(&d)),
        }
        // Sessions that finished drop their receivers; their handles (and the Deployment
        // each holds) are let go once a second, not after every event: a burst of rollouts is
        // thousands of Deployment events, each of which would walk every known Deployment.
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = tokio::time::Instant::now();
            for k in detector.known.values_mut() {
                if k.session.as_ref().is_some_and(|s| s.updates.is_closed()) {
                    k.session = None;
                }
            }
        }
    }
}

/// This replica's name: the configured one, the pod's, or the host's.
fn identity(config: &Config) -> String {
    Some(config.leader_election.identity.clone())
        .filter(|i| !i.is_empty())
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "deploy-watchdog".into())
}

pub fn lease_namespace(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_string();
    }
    std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace").ok()
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

fn key(d: &Deployment) -> (String, String) {
    (d.namespace().unwrap_or_default(), d.name_any())
}

/// The Deployment APIs the daemon watches: one per configured namespace, or every namespace
/// when none is named.
pub fn deployment_apis(config: &Config, client: &kube::Client) -> Vec<Api<Deployment>> {
    if config.watch.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        config
            .watch
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

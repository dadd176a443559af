//! The daemon: watches opted-in Deployments, detects rollouts and runs a session for each.
//!
//! Detection: a rollout is a rise of `deployment.kubernetes.io/revision`. A rise that restores
//! the template our own rollback wrote is not one. State recorded on the Deployment lets a new
//! process resume a watch exactly where the last one stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::record::{Outcome, Recorder, RolloutState};
use crate::cluster::rollout;
use crate::config::{Config, Secrets};
use crate::judge::Policy;
use crate::notify::Notifier;
use crate::probes::Probes;
use crate::session::{self, Context, EndCause, Handle, Start};
use crate::telemetry::{Metrics, MetricsError};

/// What the outside sees of a running daemon.
#[derive(Clone, Default)]
pub struct Status {
    ready: Arc<AtomicBool>,
    notifier: Arc<std::sync::OnceLock<Notifier>>,
    metrics: Option<Arc<Metrics>>,
}

impl Status {
    /// True once the initial list of every watch has arrived.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
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

    /// Pages and messages queued or being retried.
    pub fn notifications_in_flight(&self) -> usize {
        self.notifier.get().map(Notifier::in_flight).unwrap_or(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("the Deployment watch ended")]
    WatchEnded,
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// What the detector remembers of one Deployment.
struct Known {
    revision: i64,
    version: Option<String>,
    session: Option<Handle>,
}

/// Runs until `shutdown`.
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
    let notifier = Notifier::start(&config, &secrets, metrics.clone(), shutdown.clone());
    let _ = status.notifier.set(notifier.clone());
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "deploy-watchdog".into());
    let ctx = Arc::new(Context {
        client: client.clone(),
        policy: Policy::from_config(&config),
        probes: Probes::new(&config).with_metrics(metrics.clone()),
        notifier,
        recorder: Recorder::new(client.clone(), instance),
        config: config.clone(),
        metrics,
    });

    let cfg = watcher::Config::default().labels(&config.watch.selector);
    let apis: Vec<Api<Deployment>> = if config.watch.namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        config
            .watch
            .namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    };
    let watches = apis.len();
    let mut events = stream::select_all(apis.into_iter().enumerate().map(|(i, api)| {
        watcher(api, cfg.clone())
            .default_backoff()
            .map(move |e| (i, e))
            .boxed()
    }));

    let mut known: HashMap<(String, String), Known> = HashMap::new();
    let mut synced: HashSet<usize> = HashSet::new();
    // Objects seen in the current (re)list of each watch: what is missing afterwards is gone.
    let mut listing: HashMap<usize, HashSet<(String, String)>> = HashMap::new();
    info!(namespaces = ?config.watch.namespaces, selector = %config.watch.selector, mode = ?config.mode, "watching deployments");
    loop {
        let (watch, event) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            e = events.next() => match e {
                Some(e) => e,
                None => return Err(DaemonError::WatchEnded),
            },
        };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                warn!(error = %e, "deployment watch error; retrying with backoff");
                ctx.metrics.watch_restart("deployments");
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
                on_apply(&ctx, &mut known, d, !synced.contains(&watch), &shutdown);
            }
            watcher::Event::InitDone => {
                let seen = listing.remove(&watch).unwrap_or_default();
                if synced.contains(&watch) {
                    // Deleted while the watch was down.
                    let gone: Vec<_> = known
                        .keys()
                        .filter(|k| {
                            !seen.contains(*k)
                                && (watches == 1
                                    || config.watch.namespaces.get(watch) == Some(&k.0))
                        })
                        .cloned()
                        .collect();
                    for k in gone {
                        on_delete(&mut known, &k);
                    }
                }
                synced.insert(watch);
                if synced.len() == watches && !status.ready() {
                    info!(deployments = known.len(), "initial sync complete");
                    status.set_ready();
                }
            }
            watcher::Event::Apply(d) => on_apply(&ctx, &mut known, d, false, &shutdown),
            watcher::Event::Delete(d) => on_delete(&mut known, &key(&d)),
        }
        // Sessions that finished drop their receivers.
        for k in known.values_mut() {
            if k.session.as_ref().is_some_and(|s| s.updates.is_closed()) {
                k.session = None;
            }
        }
    }
}

fn key(d: &Deployment) -> (String, String) {
    (d.namespace().unwrap_or_default(), d.name_any())
}

fn on_delete(known: &mut HashMap<(String, String), Known>, k: &(String, String)) {
    if let Some(known) = known.remove(k)
        && let Some(s) = known.session
    {
        let _ = s.end.send(Some(EndCause::Deleted));
    }
}

fn on_apply(
    ctx: &Arc<Context>,
    known: &mut HashMap<(String, String), Known>,
    d: Deployment,
    initial: bool,
    shutdown: &CancellationToken,
) {
    let d = Arc::new(d);
    let k = key(&d);
    let Some(revision) = rollout::revision(d.annotations()) else {
        // The controller has not numbered it yet.
        return;
    };
    let version = d
        .spec
        .as_ref()
        .and_then(|s| rollout::template_version(&s.template));
    let state = RolloutState::from_deployment(&d);

    let Some(entry) = known.get_mut(&k) else {
        // First sight: at start-up (resume what a previous process left open) or a Deployment
        // that was just created or opted in (not a rollout).
        let mut entry = Known {
            revision,
            version: version.clone(),
            session: None,
        };
        if initial && let Some(start) = resumable(&d, revision, state.as_ref()) {
            info!(namespace = %k.0, deployment = %k.1, revision, "resuming the watch recorded on the deployment");
            entry.session = Some(session::spawn(
                ctx.clone(),
                d.clone(),
                None,
                start,
                shutdown.child_token(),
            ));
        }
        known.insert(k, entry);
        return;
    };

    if revision > entry.revision {
        let ours = state
            .as_ref()
            .and_then(|s| s.rollback_fingerprint.as_ref())
            .is_some_and(|fp| {
                d.spec
                    .as_ref()
                    .is_some_and(|s| &rollout::template_fingerprint(&s.template) == fp)
            });
        entry.revision = revision;
        let from = std::mem::replace(&mut entry.version, version);
        if !ours {
            if let Some(old) = entry.session.take() {
                let _ = old.end.send(Some(EndCause::Superseded));
            }
            entry.session = Some(session::spawn(
                ctx.clone(),
                d.clone(),
                from,
                Start::Fresh,
                shutdown.child_token(),
            ));
            return;
        }
    }
    if let Some(s) = &entry.session {
        let _ = s.updates.send(d);
    }
}

/// A watch left open by a previous process, for the Deployment's current revision.
fn resumable(d: &Deployment, revision: i64, state: Option<&RolloutState>) -> Option<Start> {
    let state = state?;
    if state.settled {
        return None;
    }
    match state.outcome {
        None | Some(Outcome::Degraded) if state.revision == revision => {
            Some(Start::Resume(state.clone()))
        }
        Some(Outcome::RolledBack) => {
            // Sent before the restart; the revision it created is the current one.
            let restored = d
                .spec
                .as_ref()
                .map(|s| rollout::template_fingerprint(&s.template));
            (restored.as_ref() == state.rollback_fingerprint.as_ref())
                .then(|| Start::Resume(state.clone()))
        }
        _ => None,
    }
}

//! The daemon: watches opted-in Deployments, detects rollouts and runs a session for each.
//!
//! Detection: a rollout is a rise of `deployment.kubernetes.io/revision`. A rise that restores
//! the template our own rollback wrote is not one. State recorded on the Deployment lets a new
//! process resume a watch exactly where the last one stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::caches::Caches;
use crate::cluster::record::{Recorder, RolloutState};
use crate::cluster::{leader, rollout};
use crate::config::{Config, Secrets};
use crate::judge::Policy;
use crate::notify::Notifier;
use crate::phase::Phase;
use crate::probes::Probes;
use crate::probes::sampler::Sampler;
use crate::session::{self, Context, EndCause, Handle, Start};
use crate::tasks::{Task, Tasks};
use crate::telemetry::{Metrics, MetricsError};

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

/// What the detector remembers of one Deployment.
struct Known {
    /// The object's UID: a Deployment deleted and created again under the same name is another
    /// object, whose revisions start over at 1.
    uid: Option<String>,
    revision: i64,
    /// The last rollout the watchdog rolled back: its revision and the fingerprint of its
    /// template. A later revision that brings that template back is someone undoing the
    /// rollback (kubectl's undo goes to the second-highest revision), not a rollout to fight.
    rolled_back: Option<(i64, String)>,
    version: Option<String>,
    /// Every container's image, kept only for a pod with several containers: a rollout that
    /// changes a sidecar alone says which one changed.
    images: Option<Box<[(String, String)]>>,
    /// The latest object, kept only while a new leader would start a session on it (a watch
    /// left open, a rollout nobody recorded): [`Detector::take_over`] reads nothing else, and
    /// a settled Deployment is most of a large cluster.
    latest: Option<Arc<Deployment>>,
    session: Option<Handle>,
    /// It names a GitOps owner: a new leader looks for a pause an earlier process recorded.
    gitops: bool,
}

/// How long the detector waits for the ReplicaSets that tell when an unrecorded rollout began.
const LOOKUP_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// When an unrecorded rollout began, looked up for a process that starts leading.
struct Began {
    key: (String, String),
    uid: Option<String>,
    revision: i64,
    /// `None` when it cannot be told.
    at: Option<jiff::Timestamp>,
}

/// How long a stopping daemon waits for its tasks (a leader releasing its Lease, Events being
/// written) before it returns anyway.
const STOP_BOUND: std::time::Duration = std::time::Duration::from_secs(5);

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
        // Sessions that finished drop their receivers.
        for k in detector.known.values_mut() {
            if k.session.as_ref().is_some_and(|s| s.updates.is_closed()) {
                k.session = None;
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

/// Rollout detection: which revision each Deployment is at, and the session watching it.
struct Detector {
    ctx: Arc<Context>,
    known: HashMap<(String, String), Known>,
    /// Only the leader runs sessions; a standby keeps `known` current.
    leader: bool,
    /// Parent of every session's token: cancelled when leadership is lost.
    sessions: CancellationToken,
    shutdown: CancellationToken,
    /// Where look-ups of when an unrecorded rollout began report ([`Detector::on_began`]).
    began: mpsc::UnboundedSender<Began>,
}

impl Detector {
    fn spawn(&self, d: Arc<Deployment>, from: Option<String>, start: Start) -> Handle {
        session::spawn(
            self.ctx.clone(),
            d,
            session::Before {
                version: from,
                images: Vec::new(),
            },
            start,
            self.sessions.child_token(),
        )
    }

    fn on_delete(&mut self, k: &(String, String)) {
        if let Some(known) = self.known.remove(k)
            && let Some(s) = known.session
        {
            let _ = s.end.send(Some(EndCause::Deleted));
        }
    }

    /// Leadership gained: pick up every watch the previous leader left open.
    fn take_over(&mut self) {
        info!(
            deployments = self.known.len(),
            "leading: resuming open watches"
        );
        self.leader = true;
        self.sessions = self.shutdown.child_token();
        let entries: Vec<Arc<Deployment>> = self
            .known
            .values()
            .filter_map(|k| k.latest.clone())
            .collect();
        let owned: Vec<(String, String)> = self
            .known
            .iter()
            .filter(|(_, k)| k.gitops)
            .map(|(key, _)| key.clone())
            .collect();
        for (ns, name) in owned {
            self.take_up_pause(ns, name);
        }
        for d in entries {
            let session = rollout::revision(d.annotations()).and_then(|revision| {
                let state = RolloutState::from_deployment(&d);
                self.first_sight(&d, revision, state.as_ref())
            });
            if let Some(k) = self.known.get_mut(&key(&d)) {
                k.session = session;
            }
        }
    }

    /// Leadership lost: stop every session at once; the next leader resumes them.
    fn step_down(&mut self) {
        warn!("no longer leading: stopping every session");
        self.leader = false;
        self.sessions.cancel();
        for k in self.known.values_mut() {
            k.session = None;
        }
    }

    /// At start-up or takeover: a GitOps sync an earlier process paused (recorded on its owner)
    /// is kept again: reminders, the held check, the resume when Git moves on.
    fn take_up_pause(&self, namespace: String, name: String) {
        tokio::spawn(crate::gitops::keep::take_up(
            self.ctx.clone(),
            namespace,
            name,
            self.sessions.child_token(),
        ));
    }

    /// At start-up or takeover: the session for `d` at once when it resumes a recorded watch.
    /// A rollout nobody recorded that may still be judged first has its ReplicaSets read, to
    /// tell when it began; [`Detector::on_began`] then starts its session, if any.
    fn first_sight(
        &self,
        d: &Arc<Deployment>,
        revision: i64,
        state: Option<&RolloutState>,
    ) -> Option<Handle> {
        if let Some(start) = resumable(d, revision, state) {
            return Some(self.first_sight_session(d, revision, (start, true)));
        }
        if unrecorded_may_be_judged(d, revision, state, jiff::Timestamp::now(), || {
            self.window(d)
        }) {
            self.look_up_began(d.clone(), revision);
        }
        None
    }

    /// The watch window of `d`, with its overrides.
    fn window(&self, d: &Deployment) -> std::time::Duration {
        let (ns, name) = key(d);
        crate::overrides::effective(&self.ctx.config, &ns, &name, d.annotations())
            .map(|c| c.watch.window)
            .unwrap_or(self.ctx.config.watch.window)
            .get()
    }

    /// Reads `d`'s ReplicaSets in the background and reports when its rollout to `revision`
    /// began; abandoned when leadership is lost.
    fn look_up_began(&self, d: Arc<Deployment>, revision: i64) {
        let (ns, name) = key(&d);
        let api: Api<ReplicaSet> = Api::namespaced(self.ctx.client.clone(), &ns);
        let params = ListParams::default().labels(&rollout::match_labels_selector(&d));
        let report = self.began.clone();
        let stop = self.sessions.clone();
        self.ctx.tasks.spawn(Task::Session, async move {
            let listed = tokio::select! {
                _ = stop.cancelled() => return,
                listed = tokio::time::timeout(LOOKUP_BOUND, api.list(&params)) => listed,
            };
            let at = match listed {
                Ok(Ok(sets)) => rollout::began(&d, &sets.items),
                Ok(Err(e)) => {
                    warn!(namespace = %ns, deployment = %name, revision, error = %e, "cannot list the deployment's replicasets: when its rollout began is unknown");
                    None
                }
                Err(_) => {
                    warn!(namespace = %ns, deployment = %name, revision, bound = ?LOOKUP_BOUND, "no answer listing the deployment's replicasets: when its rollout began is unknown");
                    None
                }
            };
            let _ = report.send(Began {
                key: (ns, name),
                uid: d.metadata.uid.clone(),
                revision,
                at,
            });
        });
    }

    /// When an unrecorded rollout began is known (or known not to be): its session starts if
    /// [`first_sight_start`] finds one and nothing changed meanwhile (a newer revision, the
    /// object replaced, leadership lost, a session already started).
    fn on_began(&mut self, began: Began) {
        if !self.leader {
            return;
        }
        let Some(known) = self.known.get(&began.key) else {
            return;
        };
        let Some(d) = known.latest.clone() else {
            return;
        };
        if known.session.is_some()
            || known.uid != began.uid
            || rollout::revision(d.annotations()) != Some(began.revision)
        {
            return;
        }
        let state = RolloutState::from_deployment(&d);
        let start = first_sight_start(
            &d,
            began.revision,
            state.as_ref(),
            began.at,
            jiff::Timestamp::now(),
            self.window(&d),
        );
        let session = start.map(|start| self.first_sight_session(&d, began.revision, start));
        if let Some(k) = self.known.get_mut(&began.key) {
            k.session = session;
        }
    }

    /// At start-up or takeover: the session [`first_sight_start`] found for `d`.
    fn first_sight_session(
        &self,
        d: &Arc<Deployment>,
        revision: i64,
        (start, resumed): (Start, bool),
    ) -> Handle {
        let (ns, name) = key(d);
        match &start {
            _ if resumed => {
                info!(namespace = %ns, deployment = %name, revision, "resuming the watch recorded on the deployment");
            }
            // Deployed while no watchdog was leading.
            Start::Unrecorded {
                began,
                complete: true,
            } => {
                info!(namespace = %ns, deployment = %name, revision, %began, "rollout completed while no watchdog led; judging it for the rest of its window");
            }
            Start::Unrecorded { began, .. } => {
                info!(namespace = %ns, deployment = %name, revision, %began, "rollout in progress at start-up; judging it from when it began");
            }
            _ => {
                info!(namespace = %ns, deployment = %name, revision, "rollout in progress at start-up; watching it");
            }
        }
        self.spawn(d.clone(), None, start)
    }

    fn on_apply(&mut self, d: Deployment, mut initial: bool) {
        let d = Arc::new(d);
        let k = key(&d);
        if let Some(known) = self.known.get(&k)
            && known.uid.is_some()
            && known.uid != d.metadata.uid
        {
            // Deleted and created again while the watch was down: the old object's watch ends,
            // and the new one is seen as at start-up, its revisions compared only with its own.
            info!(namespace = %k.0, deployment = %k.1, "deployment replaced by a new object of the same name");
            self.on_delete(&k);
            initial = true;
        }
        let Some(revision) = rollout::revision(d.annotations()) else {
            // The controller has not numbered it yet.
            return;
        };
        let version = rollout::deployed_version(&d, &self.ctx.config.version);
        let images = several_images(&d);
        let gitops = crate::gitops::owner::discover(
            &self.ctx.config.gitops,
            &k.0,
            &k.1,
            d.labels(),
            d.annotations(),
        )
        .is_some();
        let state = RolloutState::from_deployment(&d);
        let now = jiff::Timestamp::now();
        // What a new leader would need to start a session on `d`.
        let first_sight = resumable(&d, revision, state.as_ref()).is_some()
            || unrecorded_may_be_judged(&d, revision, state.as_ref(), now, || self.window(&d));
        let rolled_back = state
            .as_ref()
            .filter(|s| s.phase.rolled_back())
            .and_then(|s| Some((s.revision, s.judged_template.clone()?)));

        if !self.known.contains_key(&k) {
            // First sight: at start-up (resume what a previous process left open) or a
            // Deployment that was just created or opted in (not a rollout).
            let keep = first_sight;
            let session = if initial && self.leader {
                self.first_sight(&d, revision, state.as_ref())
            } else {
                None
            };
            if gitops && initial && self.leader {
                self.take_up_pause(k.0.clone(), k.1.clone());
            }
            self.known.insert(
                k,
                Known {
                    uid: d.metadata.uid.clone(),
                    revision,
                    rolled_back,
                    version,
                    images,
                    latest: keep.then_some(d),
                    session,
                    gitops,
                },
            );
            return;
        }
        let leader = self.leader;
        let Some(entry) = self.known.get_mut(&k) else {
            return;
        };
        entry.latest = first_sight.then(|| d.clone());
        entry.gitops = gitops;
        if rolled_back.is_some() {
            entry.rolled_back = rolled_back;
        }
        if revision > entry.revision {
            let ours = state.as_ref().is_some_and(|s| s.restored_on(&d));
            let undone = entry
                .rolled_back
                .as_ref()
                .filter(|(_, template)| rollout::runs_template(&d, Some(template)))
                .map(|(rolled_back, _)| *rolled_back);
            entry.revision = revision;
            let from = std::mem::replace(&mut entry.version, version);
            let images_before = std::mem::replace(&mut entry.images, images);
            if let Some(rolled_back) = undone.filter(|_| !ours) {
                if leader {
                    self.rollback_undone(&d, revision, rolled_back, from);
                }
                return;
            }
            if !ours {
                if let Some(old) = entry.session.take() {
                    let _ = old.end.send(Some(EndCause::Superseded));
                }
                if leader {
                    let handle = session::spawn(
                        self.ctx.clone(),
                        d.clone(),
                        session::Before {
                            version: from,
                            images: images_before.map(Vec::from).unwrap_or_default(),
                        },
                        Start::Fresh,
                        self.sessions.child_token(),
                    );
                    if let Some(entry) = self.known.get_mut(&k) {
                        entry.session = Some(handle);
                    }
                }
                return;
            }
        }
        if let Some(s) = &entry.session {
            let _ = s.updates.send(d);
        }
    }
}

/// Every container's image of `d`'s template when it has several containers.
fn several_images(d: &Deployment) -> Option<Box<[(String, String)]>> {
    let template = &d.spec.as_ref()?.template;
    let images = crate::cluster::version::images(template);
    (images.len() > 1).then(|| images.into_boxed_slice())
}

impl Detector {
    /// Someone brought back the template of a rollout the watchdog rolled back (a
    /// `kubectl rollout undo` after ours returns to the second-highest revision: the bad
    /// release). A person chose it: it is not judged or rolled back again, only reported.
    fn rollback_undone(
        &self,
        d: &Deployment,
        revision: i64,
        rolled_back: i64,
        from: Option<String>,
    ) {
        let (ns, name) = key(d);
        if self.ctx.kept.resumed(&ns, &name) {
            // The GitOps sync was just resumed and Git still gives the release rolled back: the
            // controller's doing, which the keeper of the pause answers (paused again, restored).
            info!(namespace = %ns, deployment = %name, revision, rolled_back, "the GitOps controller brought back the rolled-back release; its pause's keeper restores it");
            return;
        }
        let version = rollout::deployed_version(d, &self.ctx.config.version);
        let to = version.as_deref().unwrap_or("the rolled-back release");
        warn!(namespace = %ns, deployment = %name, revision, rolled_back, "the rolled-back release is back (someone undid the rollback); not judging it again");
        let note = format!(
            "Revision {revision} brings back {to}, rolled back as revision {rolled_back}: someone undid the rollback; not judging or rolling it back again"
        );
        self.ctx.notifier.post(format!("⚠️ {ns}/{name}: {note}."));
        let decision = crate::cluster::record::Decision {
            event_reason: crate::cluster::record::EventReason::RollbackUndone,
            action: crate::cluster::record::EventAction::Ignore,
            note,
            revision: rolled_back,
            phase: None,
            reason: None,
            from_version: from,
            to_version: version,
        };
        let recorder = self.ctx.recorder.clone();
        let reference = crate::cluster::record::reference(d);
        self.ctx.tasks.spawn(Task::Record, async move {
            if let Err(e) = recorder.event(&reference, &decision).await {
                warn!(error = %e, "event not recorded");
            }
        });
    }
}

/// The session a process that starts leading `now` would run on `d` (at `revision`, with the
/// recorded `state`, its rollout `began` then if that could be told, watched for `window`), and
/// whether it resumes a recorded watch (else it judges a rollout that nobody recorded).
///
/// A rollout nobody recorded was deployed while no watchdog led (a failover between the deploy
/// and its first record, a start-up). One that began less than `window` ago is judged from
/// when it began: its rollout deadline counts from then, and if it is already complete, its
/// window too (what is left of it). Otherwise only one still rolling out is judged, from now; a
/// complete one is not: it may be weeks old, and its pods' history (scaling, a drain) is not
/// its release's.
fn first_sight_start(
    d: &Deployment,
    revision: i64,
    state: Option<&RolloutState>,
    began: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    window: std::time::Duration,
) -> Option<(Start, bool)> {
    if let Some(start) = resumable(d, revision, state) {
        return Some((start, true));
    }
    if !unrecorded_rollout(d, revision, state) {
        return None;
    }
    let complete = !rollout::rolling_out(d);
    match began.filter(|b| elapsed(*b, now) < window) {
        Some(began) => Some((Start::Unrecorded { began, complete }, false)),
        None => (!complete).then_some((Start::Fresh, false)),
    }
}

/// Whether `d`'s current revision is one nobody recorded that [`first_sight_start`] may judge
/// once it knows when the rollout began: still rolling out, or completed less than `window`
/// before `now` (it began earlier still), or when it completed cannot be told. `window` is
/// asked only for a revision nobody recorded.
fn unrecorded_may_be_judged(
    d: &Deployment,
    revision: i64,
    state: Option<&RolloutState>,
    now: jiff::Timestamp,
    window: impl FnOnce() -> std::time::Duration,
) -> bool {
    unrecorded_rollout(d, revision, state)
        && (rollout::rolling_out(d)
            || rollout::completed_at(d).is_none_or(|t| elapsed(t, now) < window()))
}

/// A revision after the first, not paused, that no watchdog has recorded: not the revision our
/// rollback made, nor one bringing back a release we rolled back (a person chose it).
fn unrecorded_rollout(d: &Deployment, revision: i64, state: Option<&RolloutState>) -> bool {
    let recorded = state.is_some_and(|s| {
        s.revision >= revision || s.restored_on(d) || s.rolled_back_template_on(d)
    });
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    revision > 1 && !recorded && !paused
}

/// Time from `since` to `now`; zero when `since` is later (another clock).
fn elapsed(since: jiff::Timestamp, now: jiff::Timestamp) -> std::time::Duration {
    std::time::Duration::try_from(now.duration_since(since)).unwrap_or_default()
}

/// A watch left open by a previous process, for the Deployment's current revision: resumed in
/// its recorded phase.
pub(crate) fn resumable(
    d: &Deployment,
    revision: i64,
    state: Option<&RolloutState>,
) -> Option<Start> {
    let state = state?;
    let resume = match &state.phase {
        // Decided, but the page may not have reached PagerDuty before the process stopped.
        Phase::Settled { .. } => state.page_owed(d),
        Phase::Progressing { .. } | Phase::Watching { .. } | Phase::RollingBack { .. } => {
            state.revision == revision
        }
        // Sent before the restart; the revision it created is the current one.
        Phase::Verifying { .. } => state.restored_on(d),
    };
    resume.then(|| Start::Resume(Box::new(state.clone())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

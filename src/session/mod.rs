//! One rollout's watch: phases and ticks. Probes and cluster changes become observations, the
//! judge turns them into verdicts, and the verdicts become actions (rollback, page, notify,
//! record).
//!
//! This module owns what a session is and its loop: building it for a run, stepping through
//! its phases, and moving the phase on (decided by [`Phase::next`], nowhere else). Each phase's
//! work lives in a module of its own:
//!
//! | module | what it owns |
//! |---|---|
//! | `watching` | the `Progressing` and `Watching` phases: ticks, probe rounds, observations, the judge |
//! | `actions` | what a verdict does: a page while watching, the end of a watch, the decision to roll back |
//! | `rollback` | the `RollingBack` phase: the rollback sent, retried, or found already done |
//! | `verify` | the `Verifying` phase: the rollback watched to completion and checked |
//! | `notes` | what the session says as the rollout goes: detection, pauses, unusable checks, the window |
//! | `records` | pages, the state annotation and Events |
//! | `live` | the status board's view and the live record |
//! | `gitops` | pausing a GitOps owner around the rollback |
//! | `change` | what a rollout changed beyond its version, for messages |
//! | `clock`, `supervised` | the session's clock; restarting a session after a panic |

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{error, info};

use crate::baseline::Baseline;
use crate::cluster::caches::Caches;
use crate::cluster::record::{Outcome, Recorder, RolloutState};
use crate::cluster::{pods, rollout};
use crate::config::Config;
use crate::judge::Policy;
use crate::notify::Notifier;
use crate::phase::{Happened, Phase};
use crate::probes::Probes;
use crate::probes::sampler::Sampler;

mod actions;
mod change;
mod clock;
mod gitops;
mod live;
mod notes;
mod records;
mod rollback;
mod supervised;
mod verify;
mod watching;

use change::{Change, change_note};

pub use supervised::Supervised;

/// What every session shares.
pub struct Context {
    pub client: kube::Client,
    pub config: Config,
    pub policy: Policy,
    pub probes: Probes,
    pub notifier: Notifier,
    pub recorder: Recorder,
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// ReplicaSets and Pods of the namespaces with rollouts watched.
    pub caches: Caches,
    /// The providers' shared round, when any provider is configured.
    pub sampler: Option<Sampler>,
    /// Every task the daemon runs: sessions are supervised, Events' retries tracked.
    pub tasks: crate::tasks::Tasks,
    /// One token per rollback being sent or verified: a drain waits for them.
    pub rollbacks: tokio_util::task::TaskTracker,
    /// Where the session publishes its rollout for the status page.
    pub board: crate::status::Board,
    /// The GitOps syncs this process holds paused.
    pub kept: crate::gitops::keep::Kept,
}

/// Why the detector ended a session early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    Superseded,
    Deleted,
}

/// Where a session starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A rollout just detected.
    Fresh,
    /// A rollout nobody recorded, found by a process that starts leading (a start-up, a
    /// takeover): judged from when it `began` (its new ReplicaSet's creation), so the rollout
    /// deadline counts from then; one `complete` already has its window running since then too.
    Unrecorded {
        began: jiff::Timestamp,
        complete: bool,
    },
    /// A new process picks up a watch recorded on the Deployment.
    Resume(Box<RolloutState>),
}

/// The handle the detector keeps.
pub struct Handle {
    pub revision: i64,
    pub updates: watch::Sender<Arc<Deployment>>,
    pub end: watch::Sender<Option<EndCause>>,
}

/// The identity of one rollout.
#[derive(Debug, Clone)]
struct Rollout {
    namespace: String,
    name: String,
    state: RolloutState,
}

impl Rollout {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    fn to(&self) -> &str {
        self.state
            .to_version
            .as_deref()
            .unwrap_or("the new revision")
    }
    fn from(&self) -> &str {
        self.state
            .from_version
            .as_deref()
            .unwrap_or("the previous revision")
    }
}

/// What the detector knew of the Deployment before this revision.
#[derive(Debug, Clone, Default)]
pub struct Before {
    /// The version the previous revision deployed.
    pub version: Option<String>,
    /// Every container's `(name, image)` of the previous template, when known (kept for pods
    /// with several containers); empty when not.
    pub images: Vec<(String, String)>,
}

/// Spawns a session for `deployment`'s current revision, supervised: a session that panics is
/// restarted from the state recorded on the Deployment ([`Supervised`]).
pub fn spawn(
    ctx: Arc<Context>,
    deployment: Arc<Deployment>,
    before: Before,
    start: Start,
    shutdown: CancellationToken,
) -> Handle {
    let tasks = ctx.tasks.clone();
    let (handle, session) = supervised(ctx, deployment, before, start, shutdown.clone());
    tasks.supervise(crate::tasks::Task::Session, session, shutdown);
    handle
}

/// A session for `deployment`'s current revision, not started: the detector's handle, and the
/// task that runs it (and runs it again after a panic) under [`crate::tasks::Tasks::supervise`].
pub fn supervised(
    ctx: Arc<Context>,
    deployment: Arc<Deployment>,
    before: Before,
    start: Start,
    shutdown: CancellationToken,
) -> (Handle, Supervised) {
    let revision = rollout::revision(deployment.annotations()).unwrap_or(0);
    let (updates, updates_rx) = watch::channel(deployment.clone());
    let (end, end_rx) = watch::channel(None);
    let handle = Handle {
        revision,
        updates,
        end,
    };
    let session = Supervised {
        ctx,
        deployment,
        revision,
        before,
        start,
        updates: updates_rx,
        end: end_rx,
        shutdown,
    };
    (handle, session)
}

/// One run of a session: built afresh from `start` for each run.
fn build(
    ctx: Arc<Context>,
    deployment: Arc<Deployment>,
    before: &Before,
    start: &Start,
    updates_rx: watch::Receiver<Arc<Deployment>>,
    end_rx: watch::Receiver<Option<EndCause>>,
    shutdown: CancellationToken,
) -> (Session, tracing::Span) {
    let revision = rollout::revision(deployment.annotations()).unwrap_or(0);
    let namespace = deployment.namespace().unwrap_or_default();
    let name = deployment.name_any();
    let (cfg, bad) =
        match crate::overrides::effective(&ctx.config, &namespace, &name, deployment.annotations())
        {
            Ok(c) => (c, Vec::new()),
            // One bad annotation: this Deployment falls back to the daemon's config as a whole.
            Err(bad) => (ctx.config.clone(), bad),
        };
    let mut state = match start {
        Start::Resume(s) => RolloutState::clone(s),
        Start::Fresh | Start::Unrecorded { .. } => RolloutState::detected(
            revision,
            before.version.clone(),
            rollout::deployed_version(&deployment, &cfg.version),
            deployment
                .spec
                .as_ref()
                .map(|s| rollout::template_fingerprint(&s.template)),
        ),
    };
    if let Start::Unrecorded { began, .. } = start {
        // Clamped to now: a server clock ahead of ours must not put the rollout in the future.
        state.detected_at = (*began).min(state.detected_at);
    }
    let r = Rollout {
        namespace: namespace.clone(),
        name: name.clone(),
        state,
    };
    let span = tracing::info_span!("rollout", %namespace, deployment = %name, revision);
    let detected_at = r.state.detected_at;
    let peak = crate::peak::PeakHours::from_config(&cfg.peak_hours)
        .ok()
        .and_then(|p| p.window_at(detected_at).map(str::to_string));
    let mut policy = Policy::from_config(&cfg);
    if peak.is_some()
        && let Some(n) = cfg.peak_hours.failures_before_rollback
    {
        policy.failures_before_rollback = n.get();
    }
    let change = change_note(&deployment, &cfg, before);
    let cfg_pod_grace = cfg.watch.pod_grace.get();
    let live = {
        let mut v = crate::status::view_of_state(&namespace, &name, &r.state);
        v.threshold = Some(policy.error_rate_threshold);
        v.window_seconds = Some(policy.window.as_secs());
        v.gitops_owner = crate::status::gitops_owner(&deployment.metadata);
        live::Live::start(
            &ctx.board,
            v,
            ctx.recorder.clone(),
            namespace.clone(),
            name.clone(),
            shutdown.clone(),
        )
    };
    let session = Session {
        live,
        change,
        probes: ctx.probes.reconfigured(&cfg),
        policy,
        cfg,
        peak,
        bad_annotations: bad,
        baseline: None,
        asking: None,
        caches: None,
        pods: std::sync::Mutex::new(pods::PodDiagnosis::new(detected_at, cfg_pod_grace)),
        ctx,
        r,
        updates: updates_rx,
        end: end_rx,
        shutdown,
        resumed: matches!(start, Start::Resume(_)),
        complete_at_start: matches!(start, Start::Unrecorded { complete: true, .. }),
        judge_offset: Duration::ZERO,
        clock: clock::Clock::start(),
    };
    (session, span)
}

struct Session {
    ctx: Arc<Context>,
    /// What this revision changed beyond the version, when a message should say it: a stale
    /// version label, sidecars that changed image.
    change: Option<Change>,
    /// The daemon's config with this Deployment's overrides.
    cfg: Config,
    policy: Policy,
    probes: Probes,
    /// The peak window the rollout started in.
    peak: Option<String>,
    bad_annotations: Vec<crate::overrides::BadAnnotation>,
    /// The error ratio before the rollout, when the baseline rule is on.
    baseline: Option<f64>,
    /// The previous version's answers to the other checks, while they are asked for (see
    /// [`Session::ask_baseline`]).
    asking: Option<AbortOnDropHandle<Baseline>>,
    /// Its namespace's ReplicaSets and Pods (see [`Session::subscription`]).
    caches: Option<Arc<crate::cluster::caches::Subscription>>,
    /// What the pod diagnosis remembers between observations.
    pods: std::sync::Mutex<pods::PodDiagnosis>,
    r: Rollout,
    updates: watch::Receiver<Arc<Deployment>>,
    end: watch::Receiver<Option<EndCause>>,
    shutdown: CancellationToken,
    resumed: bool,
    /// An unrecorded rollout found complete: its window started when it began.
    complete_at_start: bool,
    /// Time the Deployment spent paused before the rollout completed: the judge's clock
    /// ([`Observation::at`]) runs this far behind the time since detection.
    judge_offset: Duration,
    clock: clock::Clock,
    /// Its view on the status board and its live record.
    live: live::Live,
}

impl Session {
    /// The session: `loop { phase = step(phase) }`. Each step does its phase's work and moves
    /// the phase on through [`Session::advance`]; a step that returns `false` was stopped
    /// (shutdown, leadership lost) and leaves the recorded phase for the next process.
    async fn run(mut self) {
        let _watching = self.ctx.metrics.watching();
        if self.resumed {
            self.page_again_if_owed();
        } else {
            self.report_bad_annotations();
            // Before anything else: the new pods are about to take a share of the traffic. The
            // baseline reads the namespace's watches, which this starts if it is the first
            // rollout watched there.
            self.ask_baseline();
            // The rollout is recorded at once, so a leader taking over while the baseline is
            // asked still judges it (without a baseline: each check on its own).
            Box::pin(self.detected()).await;
            if self.complete_at_start {
                Box::pin(self.window_started(Duration::ZERO)).await;
            }
        }
        loop {
            // Each phase's work in a box of its own: a session's task is then as large as the
            // phase it is in, not as the largest of them (a thousand rollouts are watched at once).
            let go_on = match self.r.state.phase.clone() {
                Phase::Progressing { .. } | Phase::Watching { .. } => Box::pin(self.watch()).await,
                Phase::RollingBack { reason } => Box::pin(self.roll_back(reason)).await,
                Phase::Verifying { .. } => Box::pin(self.verify()).await,
                Phase::Settled { .. } => return,
            };
            if !go_on {
                return;
            }
        }
    }

    /// The phase after `happened`, decided by [`Phase::next`], with the record that carries it.
    /// `None` (and an error logged) for a transition the lifecycle does not have.
    fn advanced(&self, happened: Happened) -> Option<RolloutState> {
        match self.r.state.phase.next(happened) {
            Ok(phase) => Some(RolloutState {
                phase,
                ..self.r.state.clone()
            }),
            Err(e) => {
                error!(error = %e, "session bug: transition refused");
                None
            }
        }
    }

    /// Moves the phase on and records it: the state annotation is what a new process resumes
    /// from. An ended rollout (superseded, deleted) is not recorded: the annotation belongs to
    /// the newer rollout, or is gone.
    async fn advance(&mut self, happened: Happened) {
        let Some(state) = self.advanced(happened) else {
            return;
        };
        info!(phase = %state.phase, "phase");
        self.r.state = state;
        if !matches!(
            self.r.state.outcome(),
            Some(Outcome::Superseded | Outcome::Deleted)
        ) {
            self.save_state().await;
        }
    }
}

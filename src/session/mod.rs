//! One rollout's watch: phases and ticks. Probes and cluster changes become observations, the
//! judge turns them into verdicts, and the verdicts become actions (rollback, page, notify,
//! record).

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::pods::PodRecord;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::cluster::caches::{self, Caches, SetRecord, Subscription};
use crate::cluster::record::{Outcome, Recorder, RolloutState};
use crate::cluster::{pods, rollout};
use crate::config::Config;
use crate::judge::{
    self, Finish, Judge, Observation, Policy, ProviderSample, RolloutFacts, Verdict,
};
use crate::notify::Notifier;
use crate::phase::{Happened, Phase};
use crate::probes::Probes;
use crate::probes::sampler::{Member, Sampler};

mod actions;
mod clock;
mod gitops;
mod live;
mod records;
mod supervised;

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
    let cfg_pod_grace = cfg.watch.pod_grace;
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

/// What a rollout changed that its versions alone do not say.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    /// `v1.2.2 → v1.2.3 (image), label still says v1.2.2`, when the label is stale.
    stale: Option<String>,
    /// Containers other than the main one whose image changed, e.g. `istio-proxy
    /// docker.io/istio/proxyv2:1.22.0 → 1.22.1`.
    others: Vec<String>,
    /// The main container.
    main: Option<String>,
}

impl Change {
    /// One clause for messages: `v1.2.2 → v1.2.3 (image), label still says v1.2.2; sidecar
    /// istio-proxy … → 1.22.1 (app unchanged)`.
    fn describe(&self, same_version: bool) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.stale {
            parts.push(s.clone());
        }
        if !self.others.is_empty() {
            let main = self.main.as_deref().unwrap_or("main container");
            let mut s = format!("changed: {}", self.others.join(", "));
            if same_version {
                s.push_str(&format!(" ({main} unchanged)"));
            }
            parts.push(s);
        }
        parts.join("; ")
    }
}

fn change_note(d: &Deployment, cfg: &Config, before: &Before) -> Option<Change> {
    let reading = crate::cluster::version::read(d, &cfg.version);
    let stale = reading.stale.as_ref().map(|s| {
        crate::cluster::version::describe(
            before.version.as_deref(),
            reading.version.as_deref(),
            Some(s),
        )
    });
    let others = match (d.spec.as_ref(), before.images.is_empty()) {
        (Some(spec), false) => crate::cluster::version::other_changes(
            &before.images,
            &spec.template,
            reading.container.as_deref(),
        ),
        _ => Vec::new(),
    };
    (stale.is_some() || !others.is_empty()).then_some(Change {
        stale,
        others,
        main: reading.container,
    })
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
            // The rollout is recorded at once, so a leader taking over while the baseline is
            // asked still judges it (without a baseline: each check on its own).
            self.save_state().await;
            // Then, before anything else: the new pods are about to take a share of the traffic.
            let deployment = self.updates.borrow().clone();
            let checks = crate::baseline::ask(
                &self.ctx.client,
                &self.probes,
                &deployment,
                self.r.state.from_version.clone(),
            )
            .await;
            self.r.state.baseline = Some(Box::new(checks));
            self.detected().await;
            if self.complete_at_start {
                self.window_started(Duration::ZERO).await;
            }
            self.report_unusable_checks();
        }
        loop {
            let go_on = match self.r.state.phase.clone() {
                Phase::Progressing { .. } | Phase::Watching { .. } => self.watch().await,
                Phase::RollingBack { reason } => self.roll_back(reason).await,
                Phase::Verifying { .. } => {
                    let go_on = self.verify().await;
                    self.write_final_live();
                    go_on
                }
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

    /// The `Progressing` and `Watching` phases: probes and cluster changes become observations,
    /// the judge turns them into verdicts. Returns `false` when stopped.
    async fn watch(&mut self) -> bool {
        let caches = self.ctx.caches.subscribe(&self.r.namespace, &self.r.name);
        let mut shared: Option<Member> = match &self.ctx.sampler {
            Some(s) if self.shares_round() => Some(s.join(&self.r.namespace, &self.r.name)),
            _ => None,
        };
        let facts = RolloutFacts {
            expected_version: self.r.state.to_version.clone(),
            baseline: self.baseline().await,
            checks: self
                .r
                .state
                .baseline
                .as_deref()
                .cloned()
                .unwrap_or_default(),
        };
        self.baseline = facts.baseline;
        let mut judge = Judge::new(self.policy.clone(), facts);
        match &self.r.state.phase {
            Phase::Watching { since, .. } => {
                self.judge_offset = Duration::ZERO;
                judge.resume_window(self.since_detection(*since));
            }
            Phase::Progressing { paused } => {
                self.judge_offset = paused.until(self.clock.now());
            }
            _ => {}
        }
        if self.r.state.paged.is_some() {
            judge.already_paged(self.r.state.paged);
        }

        let mut ticks = tokio::time::interval(self.cfg.watch.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut round: Option<futures::future::BoxFuture<'static, judge::ProbeRound>> = None;
        let mut template = rollout::TemplateKeyOf::default();
        loop {
            let probes = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
                _ = self.end.changed() => {
                    let cause = *self.end.borrow();
                    if let Some(cause) = cause {
                        self.ended(cause).await;
                        return true;
                    }
                    continue;
                }
                r = async { match round.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    round = None;
                    self.ctx.metrics.probe_round(&r);
                    Some(r)
                }
                // The providers' shared round: its own observation, so a slow health endpoint
                // never holds back an error-rate sample, nor the other way round.
                changed = async { match shared.as_mut() { Some(m) => m.rounds.changed().await, None => std::future::pending().await } } => {
                    match (changed, shared.as_ref().and_then(Member::latest)) {
                        (Ok(()), Some(providers)) => {
                            let r = judge::ProbeRound { providers, ..Default::default() };
                            self.ctx.metrics.probe_round(&r);
                            Some(r)
                        }
                        (Ok(()), None) => None,
                        (Err(_), _) => {
                            // The sampler stopped: shutting down.
                            shared = None;
                            None
                        }
                    }
                }
                _ = ticks.tick(), if round.is_none() => {
                    let probes = self.probes.clone();
                    let (ns, name) = (self.r.namespace.clone(), self.r.name.clone());
                    let providers = shared.is_none();
                    round = Some(Box::pin(async move { probes.round(&ns, &name, providers).await }));
                    None
                }
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                    None
                }
                _ = caches.changed.notified() => None,
            };
            self.follow_pause().await;
            let obs = self.observe(&caches, probes, &mut template);
            let was_complete = judge.complete_at().is_some();
            let verdict = judge.observe(&obs);
            if !was_complete && let Some(at) = judge.complete_at() {
                self.window_started(at).await;
            }
            let rolling_back = matches!(verdict, Verdict::RollBack { .. });
            self.live_observed(
                &caches,
                obs.probes.as_ref(),
                judge.complete_at().is_some() && !rolling_back,
                &mut template,
            );
            match verdict {
                Verdict::Continue => {}
                Verdict::Page { reason, message } => self.degraded(reason, &message).await,
                Verdict::RollBack { reason, message } => {
                    self.quiesce_live().await;
                    self.decided_to_roll_back(reason, &message).await;
                    return true;
                }
                Verdict::Finish(Finish::Passed) => {
                    self.passed().await;
                    return true;
                }
                Verdict::Finish(Finish::Degraded { reason, message }) => {
                    self.finish_degraded(reason, &message).await;
                    return true;
                }
            }
        }
    }

    /// While rolling out, a pause (`spec.paused`) and its end are recorded: paused time does
    /// not count toward `rollout_timeout`.
    async fn follow_pause(&mut self) {
        let Phase::Progressing { paused } = self.r.state.phase else {
            return;
        };
        let now_paused = self
            .updates
            .borrow()
            .spec
            .as_ref()
            .and_then(|s| s.paused)
            .unwrap_or(false);
        let at = self.clock.now();
        match (paused.since.is_some(), now_paused) {
            (false, true) => {
                self.advance(Happened::Paused { at }).await;
                self.paused_or_resumed(true);
            }
            (true, false) => {
                self.advance(Happened::Resumed { at }).await;
                self.paused_or_resumed(false);
            }
            _ => {}
        }
        if let Phase::Progressing { paused } = self.r.state.phase {
            let judged = clock::judge_time(self.r.state.detected_at, &paused, at);
            self.judge_offset = self.since_detection(at).saturating_sub(judged);
        }
    }

    /// Counts a rollback in progress (the metric, and the token a drain waits for) until the
    /// guard drops.
    fn rolling_back(
        &self,
    ) -> (
        crate::telemetry::GaugeGuard,
        tokio_util::task::task_tracker::TaskTrackerToken,
    ) {
        (self.ctx.metrics.rolling_back(), self.ctx.rollbacks.token())
    }

    fn since_detection(&self, t: jiff::Timestamp) -> Duration {
        let d = t.duration_since(self.r.state.detected_at);
        Duration::try_from(d).unwrap_or_default()
    }

    /// Whether this rollout's error rates come from the shared round: its provider settings,
    /// interval and sample window are the daemon's (no annotation changed them).
    fn shares_round(&self) -> bool {
        let daemon = &self.ctx.config;
        self.probes.has_providers()
            && self.cfg.providers == daemon.providers
            && self.cfg.watch.interval == daemon.watch.interval
            && self.cfg.judge.sample_window == daemon.judge.sample_window
    }

    fn observe(
        &self,
        caches: &Subscription,
        probes: Option<judge::ProbeRound>,
        template: &mut rollout::TemplateKeyOf,
    ) -> Observation {
        let deployment = self.updates.borrow().clone();
        let now = self.clock.now();
        // The index answers by controller UID: these are the ones `rollout::owned` would keep.
        let sets: Vec<Arc<SetRecord>> = deployment
            .metadata
            .uid
            .as_deref()
            .map(|uid| caches.replica_sets_of(uid))
            .unwrap_or_default();
        let new_set = caches::new_replica_set(template.get(&deployment), &sets).map(|s| &s.set);
        let pods: Vec<Arc<PodRecord>> = new_set.map(|rs| caches.pods_of(rs)).unwrap_or_default();
        let new_pods: Vec<&PodRecord> = pods.iter().map(|p| p.as_ref()).collect();
        Observation {
            at: self.since_detection(now).saturating_sub(self.judge_offset),
            progress: rollout::rollout_progress(
                &deployment,
                new_set.and_then(|rs| rs.metadata.name.as_deref()),
                self.r.state.detected_at,
            ),
            pod_failure: self
                .pods
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .failure(new_pods.iter().copied(), now),
            pending: pods::pending(new_pods.iter().copied(), now),
            probes,
        }
    }

    async fn baseline(&self) -> Option<f64> {
        let b = &self.cfg.judge.baseline;
        if !b.enabled {
            return None;
        }
        let samples = self
            .ctx
            .probes
            .error_rates(&self.r.namespace, &self.r.name, b.lookback)
            .await;
        let min = self.cfg.judge.min_requests as f64;
        let ratio = samples.iter().find_map(|(_, s)| match s {
            ProviderSample::Counts { requests, errors }
                if *requests >= min && requests.is_finite() && errors.is_finite() =>
            {
                Some(errors / requests)
            }
            _ => None,
        });
        info!(baseline = ?ratio, "baseline taken");
        ratio
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn deployment(label: &str, containers: &[(&str, &str)]) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app", "namespace": "production"},
            "spec": {
                "selector": {},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/version": label}},
                    "spec": {"containers": containers.iter()
                        .map(|(n, i)| serde_json::json!({"name": n, "image": i}))
                        .collect::<Vec<_>>()},
                },
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_set_image_deploy_names_the_image_and_the_stale_label() {
        let d = deployment("v1.2.2", &[("app", "r/production/app:v1.2.3")]);
        let before = Before {
            version: Some("v1.2.2".into()),
            images: Vec::new(),
        };
        let change = change_note(&d, &Config::default(), &before).unwrap();
        assert_eq!(
            change.describe(false),
            "v1.2.2 → v1.2.3 (image), label still says v1.2.2"
        );
    }

    #[test]
    fn a_sidecar_only_change_names_the_sidecar() {
        let d = deployment(
            "v1.2.2",
            &[
                ("istio-proxy", "docker.io/istio/proxyv2:1.22.1"),
                ("app", "r/production/app:v1.2.2"),
            ],
        );
        let before = Before {
            version: Some("v1.2.2".into()),
            images: vec![
                (
                    "istio-proxy".into(),
                    "docker.io/istio/proxyv2:1.22.0".into(),
                ),
                ("app".into(), "r/production/app:v1.2.2".into()),
            ],
        };
        let change = change_note(&d, &Config::default(), &before).unwrap();
        assert_eq!(
            change.describe(true),
            "changed: istio-proxy docker.io/istio/proxyv2:1.22.0 → 1.22.1 (app unchanged)"
        );
    }

    #[test]
    fn a_plain_deploy_has_nothing_more_to_say() {
        let d = deployment("v1.2.3", &[("app", "r/production/app:v1.2.3")]);
        let before = Before {
            version: Some("v1.2.2".into()),
            images: Vec::new(),
        };
        assert_eq!(change_note(&d, &Config::default(), &before), None);
    }
}

//! One rollout's watch: phases and ticks. Probes and cluster changes become observations, the
//! judge turns them into verdicts, and the verdicts become actions (rollback, page, notify,
//! record).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::cluster::record::{self, Decision, Outcome, Recorder, RolloutState};
use crate::cluster::{pods, rollback, rollout};
use crate::config::{Config, Mode};
use crate::judge::{
    self, Finish, Judge, Observation, Policy, ProviderSample, Reason, RolloutFacts, Verdict,
};
use crate::notify::{self, Notifier, PageEvent, Payload, Severity};
use crate::probes::Probes;

/// What every session shares.
pub struct Context {
    pub client: kube::Client,
    pub config: Config,
    pub policy: Policy,
    pub probes: Probes,
    pub notifier: Notifier,
    pub recorder: Recorder,
    pub metrics: Arc<crate::telemetry::Metrics>,
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
    /// A new process picks up a watch recorded on the Deployment.
    Resume(RolloutState),
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

/// Spawns a session for `deployment`'s current revision.
pub fn spawn(
    ctx: Arc<Context>,
    deployment: Arc<Deployment>,
    from_version: Option<String>,
    start: Start,
    shutdown: CancellationToken,
) -> Handle {
    let revision = rollout::revision(deployment.annotations()).unwrap_or(0);
    let (updates, updates_rx) = watch::channel(deployment.clone());
    let (end, end_rx) = watch::channel(None);
    let namespace = deployment.namespace().unwrap_or_default();
    let name = deployment.name_any();
    let (cfg, bad) =
        match crate::overrides::effective(&ctx.config, &namespace, &name, deployment.annotations())
        {
            Ok(c) => (c, Vec::new()),
            // One bad annotation: this Deployment falls back to the daemon's config as a whole.
            Err(bad) => (ctx.config.clone(), bad),
        };
    let state = match start {
        Start::Resume(ref s) => s.clone(),
        Start::Fresh => RolloutState {
            revision,
            from_version,
            to_version: rollout::deployed_version(&deployment, &cfg.version),
            detected_at: jiff::Timestamp::now(),
            outcome: None,
            reason: None,
            rollback_fingerprint: None,
            settled: false,
            detail: None,
            window_started_at: None,
        },
    };
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
    let session = Session {
        probes: ctx.probes.reconfigured(&cfg),
        policy,
        cfg,
        peak,
        bad_annotations: bad,
        baseline: None,
        ctx,
        r,
        updates: updates_rx,
        end: end_rx,
        shutdown,
        resumed: start != Start::Fresh,
    };
    tokio::spawn(session.run().instrument(span));
    Handle {
        revision,
        updates,
        end,
    }
}

struct Session {
    ctx: Arc<Context>,
    /// The daemon's config with this Deployment's overrides.
    cfg: Config,
    policy: Policy,
    probes: Probes,
    /// The peak window the rollout started in.
    peak: Option<String>,
    bad_annotations: Vec<crate::overrides::BadAnnotation>,
    /// The error ratio before the rollout, when the baseline rule is on.
    baseline: Option<f64>,
    r: Rollout,
    updates: watch::Receiver<Arc<Deployment>>,
    end: watch::Receiver<Option<EndCause>>,
    shutdown: CancellationToken,
    resumed: bool,
}

/// The new ReplicaSet's pods and the Deployment's ReplicaSets, kept by watches.
struct Caches {
    sets: reflector::Store<ReplicaSet>,
    pods: reflector::Store<Pod>,
    /// Woken on every change of either store.
    changed: Arc<tokio::sync::Notify>,
}

impl Session {
    async fn run(mut self) {
        let _watching = self.ctx.metrics.watching();
        if self.resumed {
            self.page_again_if_owed();
            if self.r.state.settled {
                return;
            }
        }
        if self.r.state.outcome == Some(Outcome::RolledBack) {
            // Resumed after the rollback was sent: only the verification is left.
            let _rolling_back = self.ctx.metrics.rolling_back();
            self.verify(self.r.state.rollback_fingerprint.clone()).await;
            return;
        }
        if !self.resumed {
            self.report_bad_annotations();
            self.detected().await;
        }
        let caches = self.caches();
        let facts = RolloutFacts {
            expected_version: self.r.state.to_version.clone(),
            baseline: self.baseline().await,
        };
        self.baseline = facts.baseline;
        let mut judge = Judge::new(self.policy.clone(), facts);
        if let Some(started) = self.r.state.window_started_at {
            judge.resume_window(self.since_detection(started));
        }
        if self.r.state.outcome == Some(Outcome::Degraded) {
            judge.already_paged(self.r.state.reason);
        }

        let mut ticks = tokio::time::interval(self.cfg.watch.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut round: Option<futures::future::BoxFuture<'static, judge::ProbeRound>> = None;
        loop {
            let probes = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                _ = self.end.changed() => {
                    let cause = *self.end.borrow();
                    if let Some(cause) = cause {
                        self.ended(cause).await;
                        return;
                    }
                    continue;
                }
                r = async { match round.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    round = None;
                    self.ctx.metrics.probe_round(&r);
                    Some(r)
                }
                _ = ticks.tick(), if round.is_none() => {
                    let probes = self.probes.clone();
                    let (ns, name) = (self.r.namespace.clone(), self.r.name.clone());
                    round = Some(Box::pin(async move { probes.round(&ns, &name).await }));
                    None
                }
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    None
                }
                _ = caches.changed.notified() => None,
            };
            let obs = self.observe(&caches, probes);
            let was_complete = judge.complete_at().is_some();
            let verdict = judge.observe(&obs);
            if !was_complete && let Some(at) = judge.complete_at() {
                self.window_started(at).await;
            }
            match verdict {
                Verdict::Continue => {}
                Verdict::Page { reason, message } => self.degraded(reason, &message).await,
                Verdict::RollBack { reason, message } => {
                    self.roll_back(reason, &message).await;
                    return;
                }
                Verdict::Finish(Finish::Passed) => {
                    self.passed().await;
                    return;
                }
                Verdict::Finish(Finish::Degraded { reason, message }) => {
                    self.finish_degraded(reason, &message).await;
                    return;
                }
            }
        }
    }

    fn since_detection(&self, t: jiff::Timestamp) -> Duration {
        let d = t.duration_since(self.r.state.detected_at);
        Duration::try_from(d).unwrap_or_default()
    }

    fn observe(&self, caches: &Caches, probes: Option<judge::ProbeRound>) -> Observation {
        let deployment = self.updates.borrow().clone();
        let now = jiff::Timestamp::now();
        let sets: Vec<Arc<ReplicaSet>> = caches.sets.state();
        let owned = rollout::owned(&deployment, sets.iter().map(|s| s.as_ref()));
        let new_hash = rollout::new_replica_set(&deployment, &owned).and_then(rollout::hash_of);
        let pods: Vec<Arc<Pod>> = caches.pods.state();
        let new_pods: Vec<&Pod> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| {
                new_hash.is_some() && p.labels().get(rollout::HASH_LABEL) == new_hash.as_ref()
            })
            .collect();
        Observation {
            at: self.since_detection(now),
            progress: rollout::progress(&deployment),
            pod_failure: pods::failure(new_pods.iter().copied()),
            pending: pods::pending(new_pods.iter().copied(), now),
            probes,
        }
    }

    fn caches(&self) -> Caches {
        let deployment = self.updates.borrow().clone();
        let selector = deployment
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.as_ref())
            .map(|l| {
                l.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let cfg = watcher::Config::default().labels(&selector);
        let changed = Arc::new(tokio::sync::Notify::new());
        let client = &self.ctx.client;
        let ns = &self.r.namespace;
        let sets = watch_into_store(
            Api::namespaced(client.clone(), ns),
            cfg.clone(),
            self,
            &changed,
        );
        let pods = watch_into_store(Api::namespaced(client.clone(), ns), cfg, self, &changed);
        Caches {
            sets,
            pods,
            changed,
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

    // ---- actions ----

    async fn detected(&self) {
        let r = &self.r;
        info!(from = r.from(), to = r.to(), "rollout detected");
        self.ctx.metrics.detected();
        self.save_state().await;
        self.record(Decision {
            warning: false,
            event_reason: "RolloutDetected",
            action: "Watch",
            note: format!(
                "Watching the rollout of {} (from {}, revision {})",
                r.to(),
                r.from(),
                r.state.revision
            ),
            revision: r.state.revision,
            outcome: None,
            reason: None,
            from_version: r.state.from_version.clone(),
            to_version: r.state.to_version.clone(),
        });
        let mut start = format!(
            "Starting production deploy of {} to {} (from {}, revision {}); watching it for {}.",
            r.to(),
            r.key(),
            r.from(),
            r.state.revision,
            judge::human(self.policy.window)
        );
        if let Some(window) = &self.peak {
            warn!(peak_window = %window, "rollout started during peak hours");
            start.push_str(&format!(
                " ⚠️ Peak hours ({window}): this deploy is inside a window to avoid."
            ));
            self.record(Decision {
                warning: true,
                event_reason: "PeakHours",
                action: "Watch",
                note: format!("Rollout of {} started during peak hours ({window})", r.to()),
                revision: r.state.revision,
                outcome: None,
                reason: None,
                from_version: r.state.from_version.clone(),
                to_version: r.state.to_version.clone(),
            });
        }
        self.ctx.notifier.post(start);
    }

    /// Each bad annotation: a Warning Event naming it and a log line; the defaults apply.
    fn report_bad_annotations(&self) {
        for bad in &self.bad_annotations {
            warn!(annotation = %bad.annotation, problem = %bad.problem, "bad annotation; using the daemon's config for this deployment");
            self.record(Decision {
                warning: true,
                event_reason: "BadAnnotation",
                action: "Configure",
                note: format!("{bad}; this Deployment is guarded with the daemon's config instead"),
                revision: self.r.state.revision,
                outcome: None,
                reason: None,
                from_version: self.r.state.from_version.clone(),
                to_version: self.r.state.to_version.clone(),
            });
        }
    }

    async fn window_started(&mut self, at: Duration) {
        let started =
            self.r.state.detected_at + jiff::SignedDuration::try_from(at).unwrap_or_default();
        self.r.state.window_started_at = Some(started);
        info!("rollout complete; watch window started");
        self.save_state().await;
        let window = judge::human(self.policy.window);
        self.record(Decision {
            warning: false,
            event_reason: "WindowStarted",
            action: "Watch",
            note: format!(
                "Rollout of {} complete; watching it for {window}",
                self.r.to()
            ),
            revision: self.r.state.revision,
            outcome: None,
            reason: None,
            from_version: self.r.state.from_version.clone(),
            to_version: self.r.state.to_version.clone(),
        });
    }

    async fn degraded(&mut self, reason: Reason, message: &str) {
        warn!(%reason, message, "degraded: paging");
        self.r.state.outcome = Some(Outcome::Degraded);
        self.r.state.reason = Some(reason);
        self.r.state.detail = Some(message.to_string());
        self.save_state().await;
        self.page(Severity::Error, reason, Outcome::Degraded, message);
        self.ctx.notifier.post(format!(
            "🚨 Paged on-call: {} {} is degraded: {message}",
            self.r.key(),
            self.r.to()
        ));
        self.decide(
            true,
            "Degraded",
            "Page",
            Outcome::Degraded,
            reason,
            message.to_string(),
        );
    }

    async fn finish_degraded(&mut self, reason: Reason, message: &str) {
        warn!(%reason, message, "watch ended degraded");
        self.r.state.outcome = Some(Outcome::Degraded);
        self.r.state.reason = Some(reason);
        self.r.state.settled = true;
        self.save_state().await;
        self.decide(
            true,
            "Degraded",
            "Finish",
            Outcome::Degraded,
            reason,
            format!("Watch ended degraded: {message}"),
        );
    }

    async fn passed(&mut self) {
        let window = judge::human(self.policy.window);
        info!("passed");
        if self.r.state.outcome == Some(Outcome::Degraded) {
            self.ctx.notifier.page(PageEvent {
                action: notify::Action::Resolve,
                dedup_key: self.dedup_key(),
                payload: None,
            });
        }
        self.r.state.outcome = Some(Outcome::Passed);
        self.r.state.reason = Some(Reason::None);
        self.r.state.settled = true;
        self.save_state().await;
        self.ctx.notifier.post(format!(
            "✅ Production deploy of {} to {} complete: healthy for {window}.",
            self.r.to(),
            self.r.key()
        ));
        self.decide(
            false,
            "RolloutPassed",
            "Pass",
            Outcome::Passed,
            Reason::None,
            format!("{} passed its {window} watch", self.r.to()),
        );
    }

    async fn ended(&mut self, cause: EndCause) {
        let (outcome, note) = match cause {
            EndCause::Superseded => (
                Outcome::Superseded,
                format!("{} superseded by a newer rollout", self.r.to()),
            ),
            EndCause::Deleted => (
                Outcome::Deleted,
                format!("{} deleted during its watch", self.r.key()),
            ),
        };
        info!(outcome = outcome.as_str(), "session ended");
        if self.r.state.outcome == Some(Outcome::Degraded) {
            self.ctx.notifier.page(PageEvent {
                action: notify::Action::Resolve,
                dedup_key: self.dedup_key(),
                payload: None,
            });
        }
        // The state annotation now belongs to the newer rollout (or is gone): only an Event.
        self.decide(
            false,
            if cause == EndCause::Deleted {
                "RolloutDeleted"
            } else {
                "RolloutSuperseded"
            },
            "Stop",
            outcome,
            Reason::None,
            note,
        );
    }

    async fn roll_back(&mut self, reason: Reason, message: &str) {
        let r = self.r.clone();
        let _rolling_back = self.ctx.metrics.rolling_back();
        if self.cfg.mode == Mode::DryRun {
            warn!(%reason, message, "would roll back (dry run)");
            self.r.state.outcome = Some(Outcome::WouldRollBack);
            self.r.state.reason = Some(reason);
            self.r.state.settled = true;
            self.save_state().await;
            self.page(
                Severity::Error,
                reason,
                Outcome::WouldRollBack,
                &format!("would roll back (dry run): {message}"),
            );
            self.ctx.notifier.post(format!(
                "⚠️ Would roll back {} {} to {} due to {message} (dry run: nothing changed)",
                r.key(),
                r.to(),
                r.from()
            ));
            self.decide(
                true,
                "WouldRollBack",
                "RollBack",
                Outcome::WouldRollBack,
                reason,
                format!("Would roll back (dry run): {message}"),
            );
            return;
        }
        warn!(%reason, message, "rolling back");
        let mut state = self.r.state.clone();
        let started = Instant::now();
        let timer = self.ctx.metrics.rollback_timer();
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let result = rollback::execute(
                &self.ctx.client,
                &r.namespace,
                &r.name,
                r.state.revision,
                |plan| {
                    state = self.r.state.clone();
                    state.outcome = Some(Outcome::RolledBack);
                    state.reason = Some(reason);
                    state.rollback_fingerprint =
                        Some(rollout::template_fingerprint(&plan.template));
                    state.detail = Some(message.to_string());
                    state.annotations()
                },
            )
            .await;
            // A conflict or a failed `test` means the Deployment changed between read and
            // patch (another instance, a person): read again and decide again, once.
            let conflict = matches!(
                &result,
                Err(rollback::RollbackError::PatchDeployment { source: kube::Error::Api(s), .. }) if s.code == 409 || s.code == 422
            );
            if !conflict || attempts > 1 {
                break result;
            }
        };
        drop(timer);
        match result {
            Ok(plan) => {
                self.r.state = state;
                let to = plan
                    .target_version
                    .clone()
                    .unwrap_or_else(|| format!("revision {}", plan.target_revision));
                info!(elapsed = ?started.elapsed(), target_revision = plan.target_revision, "rollback sent");
                self.page(
                    Severity::Error,
                    reason,
                    Outcome::RolledBack,
                    &format!("rolled back to {to}: {message}"),
                );
                self.ctx.notifier.post(format!(
                    "⚠️ Rolled back {} {} to {to} due to {message}",
                    r.key(),
                    r.to()
                ));
                self.decide(
                    true,
                    "RolledBack",
                    "RollBack",
                    Outcome::RolledBack,
                    reason,
                    format!("Rolled back {} to {to}: {message}", r.to()),
                );
                self.verify(self.r.state.rollback_fingerprint.clone()).await;
            }
            Err(rollback::RollbackError::AlreadyRolledBack { state, .. }) => {
                info!("this rollout was already rolled back (by a previous leader): verifying it");
                self.r.state = *state;
                self.verify(self.r.state.rollback_fingerprint.clone()).await;
            }
            Err(e) => {
                warn!(error = %e, category = e.category(), "rollback failed");
                self.r.state.outcome = Some(Outcome::RollbackFailed);
                self.r.state.reason = Some(reason);
                self.r.state.settled = true;
                self.save_state().await;
                let what = format!("rollback of {} failed ({e}) after: {message}", r.to());
                self.page(Severity::Critical, reason, Outcome::RollbackFailed, &what);
                self.ctx.notifier.post(format!("🔥 {}: {what}", r.key()));
                self.decide(
                    true,
                    "RollbackFailed",
                    "RollBack",
                    Outcome::RollbackFailed,
                    reason,
                    what,
                );
            }
        }
    }

    /// Watches the rollback to completion and checks the version health reports.
    async fn verify(&mut self, fingerprint: Option<String>) {
        let deadline = Instant::now() + self.cfg.watch.rollout_timeout;
        let expected = self.r.state.from_version.clone();
        let mut ticks = tokio::time::interval(self.cfg.watch.interval.min(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last = String::from("the rollback has not completed");
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = ticks.tick() => {}
            }
            let deployment = self.updates.borrow().clone();
            let restored = deployment
                .spec
                .as_ref()
                .map(|s| Some(rollout::template_fingerprint(&s.template)) == fingerprint)
                .unwrap_or(false);
            if !restored {
                last = "the Deployment's template is no longer the restored one".into();
                continue;
            }
            if rollout::progress(&deployment) != judge::Progress::Complete {
                if let judge::Progress::Progressing(m) | judge::Progress::DeadlineExceeded(m) =
                    rollout::progress(&deployment)
                {
                    last = m;
                }
                continue;
            }
            match (
                self.ctx
                    .probes
                    .reported_version(&self.r.namespace, &self.r.name)
                    .await,
                &expected,
            ) {
                (None, _) | (_, None) => return self.verified().await,
                (Some(Ok(v)), Some(e)) if &v == e => return self.verified().await,
                (Some(Ok(v)), Some(e)) => last = format!("health reports {v}, expected {e}"),
                (Some(Err(err)), _) => last = format!("health: {err}"),
            }
        }
        let reason = self.r.state.reason.unwrap_or(Reason::None);
        let what = format!(
            "rollback of {} to {} not verified within {}: {last}",
            self.r.to(),
            self.r.from(),
            judge::human(self.cfg.watch.rollout_timeout)
        );
        warn!(what, "rollback failed verification");
        self.r.state.outcome = Some(Outcome::RollbackFailed);
        self.r.state.settled = true;
        self.save_state().await;
        self.page(Severity::Critical, reason, Outcome::RollbackFailed, &what);
        self.ctx
            .notifier
            .post(format!("🔥 {}: {what}", self.r.key()));
        self.decide(
            true,
            "RollbackFailed",
            "Verify",
            Outcome::RollbackFailed,
            reason,
            what,
        );
    }

    async fn verified(&mut self) {
        info!("rollback verified");
        self.r.state.settled = true;
        self.save_state().await;
        let reason = self.r.state.reason.unwrap_or(Reason::None);
        let note = format!(
            "Rollback verified: {} runs {} again",
            self.r.key(),
            self.r.from()
        );
        self.decide(
            false,
            "RollbackVerified",
            "Verify",
            Outcome::RolledBack,
            reason,
            note,
        );
    }

    /// A page decided before a restart or a leader change may never have reached PagerDuty.
    fn page_again_if_owed(&self) {
        let (Some(outcome), Some(detail)) = (self.r.state.outcome, self.r.state.detail.clone())
        else {
            return;
        };
        let reason = self.r.state.reason.unwrap_or(Reason::None);
        let severity = match outcome {
            Outcome::RollbackFailed => Severity::Critical,
            Outcome::RolledBack | Outcome::WouldRollBack | Outcome::Degraded => Severity::Error,
            _ => return,
        };
        info!(
            outcome = outcome.as_str(),
            "re-sending the page of a decision made before a restart"
        );
        self.page(severity, reason, outcome, &detail);
    }

    // ---- records ----

    fn dedup_key(&self) -> String {
        format!(
            "deploy-watchdog/{}/{}/{}/{}",
            self.cfg.cluster_name, self.r.namespace, self.r.name, self.r.state.revision
        )
    }

    fn page(&self, severity: Severity, reason: Reason, outcome: Outcome, message: &str) {
        let r = &self.r;
        let summary = format!("{} {} (from {}): {message}", r.key(), r.to(), r.from());
        let summary = if summary.len() > 1000 {
            format!("{}…", &summary[..summary.floor_char_boundary(999)])
        } else {
            summary
        };
        let receipt = self.ctx.notifier.page(PageEvent {
            action: notify::Action::Trigger,
            dedup_key: self.dedup_key(),
            payload: Some(Payload {
                summary,
                source: self.cfg.cluster_name.clone(),
                severity,
                component: Some(r.key()),
                group: Some(r.namespace.clone()),
                class: Some(reason.as_str().to_string()),
                custom_details: serde_json::json!({
                    "cluster": self.cfg.cluster_name,
                    "namespace": r.namespace,
                    "deployment": r.name,
                    "revision": r.state.revision,
                    "from_version": r.state.from_version,
                    "to_version": r.state.to_version,
                    "outcome": outcome.as_str(),
                    "reason": reason.as_str(),
                    "detail": message,
                    "baseline_error_ratio": self.baseline,
                    "peak_window": self.peak,
                }),
            }),
        });
        if let Some(receipt) = receipt {
            // Record delivery, so a restarted process knows whether the page is still owed.
            let recorder = self.ctx.recorder.clone();
            let (ns, name) = (r.namespace.clone(), r.name.clone());
            let delivered = BTreeMap::from([(
                record::PAGE_DELIVERED_ANNOTATION.to_string(),
                r.state.revision.to_string(),
            )]);
            tokio::spawn(
                async move {
                    if receipt.await.is_err() {
                        return;
                    }
                    for _ in 0..5 {
                        match recorder.annotate(&ns, &name, &delivered).await {
                            Ok(()) => return,
                            Err(e) => warn!(error = %e, "page delivery not recorded; retrying"),
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                .in_current_span(),
            );
        }
    }

    async fn save_state(&self) {
        if let Err(e) = self
            .ctx
            .recorder
            .annotate(&self.r.namespace, &self.r.name, &self.r.state.annotations())
            .await
        {
            warn!(error = %e, category = e.category(), "state annotation not written");
        }
    }

    fn decide(
        &self,
        warning: bool,
        event_reason: &'static str,
        action: &'static str,
        outcome: Outcome,
        reason: Reason,
        note: String,
    ) {
        info!(outcome = outcome.as_str(), %reason, note, "decision");
        // Final outcomes only: a page while degraded, or a rollback sent but not yet verified, is not one.
        if self.r.state.settled || matches!(outcome, Outcome::Superseded | Outcome::Deleted) {
            self.ctx.metrics.outcome(outcome, reason);
        }
        self.record(Decision {
            warning,
            event_reason,
            action,
            note,
            revision: self.r.state.revision,
            outcome: Some(outcome),
            reason: Some(reason),
            from_version: self.r.state.from_version.clone(),
            to_version: self.r.state.to_version.clone(),
        });
    }

    /// Events are retried in the background: an API hiccup must not lose the record.
    fn record(&self, d: Decision) {
        let recorder = self.ctx.recorder.clone();
        let reference = record::reference(&self.updates.borrow());
        let shutdown = self.shutdown.clone();
        tokio::spawn(
            async move {
                let mut backoff = Duration::from_millis(200);
                for _ in 0..10 {
                    match recorder.event(&reference, &d).await {
                        Ok(()) => return,
                        Err(e) => warn!(error = %e, category = e.category(), "event not recorded; retrying"),
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
            .in_current_span(),
        );
    }
}

/// A watch of one kind, folded into a store, running until the session ends.
fn watch_into_store<K>(
    api: Api<K>,
    cfg: watcher::Config,
    session: &Session,
    changed: &Arc<tokio::sync::Notify>,
) -> reflector::Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, cfg).default_backoff()).applied_objects();
    let shutdown = session.shutdown.clone();
    let mut end = session.end.clone();
    let changed = changed.clone();
    let metrics = session.ctx.metrics.clone();
    let kind = K::plural(&());
    tokio::spawn(
        async move {
            futures::pin_mut!(stream);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = end.changed() => return,
                    item = stream.next() => match item {
                        Some(Ok(_)) => changed.notify_one(),
                        Some(Err(e)) => {
                            warn!(error = %e, "watch error; retrying with backoff");
                            metrics.watch_restart(&kind);
                        }
                        None => return,
                    }
                }
            }
        }
        .in_current_span(),
    );
    reader
}

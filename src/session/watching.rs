//! The `Progressing` and `Watching` phases: ticks, probe rounds and cluster changes become
//! observations, and the judge turns them into verdicts.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinError;
use tokio::time::MissedTickBehavior;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, info, warn};

use super::{Session, clock};
use crate::baseline::Baseline;
use crate::cluster::caches::{self, SetRecord, Subscription};
use crate::cluster::pods::{self, PodRecord};
use crate::cluster::rollout;
use crate::judge::{self, Finish, Judge, Observation, ProviderSample, RolloutFacts, Verdict};
use crate::phase::{Happened, Phase};
use crate::probes::sampler::Member;

impl Session {
    /// The session's view of its namespace's ReplicaSets and Pods, subscribed at most once:
    /// first thing at detection, so the namespace's watches (listing it, when no rollout there
    /// is watched yet) start while the rollout is recorded and announced.
    pub(super) fn subscription(&mut self) -> Arc<Subscription> {
        self.caches
            .get_or_insert_with(|| {
                Arc::new(self.ctx.caches.subscribe(&self.r.namespace, &self.r.name))
            })
            .clone()
    }

    /// Asks the previous version for its answers to health and the smoke checks, in a task of
    /// its own: the watch goes on meanwhile, so a crash loop or a stuck rollout is not held
    /// back by a slow endpoint of the previous version (see [`Judge::checks_pending`]).
    pub(super) fn ask_baseline(&mut self) {
        let caches = self.subscription();
        let probes = self.probes.clone();
        let deployment = self.updates.borrow().clone();
        let previous = self.r.state.from_version.clone();
        let asking = tokio::spawn(
            async move { crate::baseline::ask(&caches, &probes, &deployment, previous).await }
                .in_current_span(),
        );
        self.asking = Some(AbortOnDropHandle::new(asking));
    }

    /// The previous version's answers arrived: recorded (a resumed watch judges against them)
    /// and the checks that failed there too reported as left out.
    pub(super) async fn baseline_known(&mut self, asked: Result<Baseline, JoinError>) -> Baseline {
        let checks = asked.unwrap_or_else(|e| {
            warn!(error = %e, "no baseline: asking for it failed");
            Baseline::none(self.r.state.from_version.clone())
        });
        self.r.state.baseline = Some(Box::new(checks.clone()));
        self.save_state().await;
        self.report_unusable_checks();
        checks
    }

    /// The `Progressing` and `Watching` phases: probes and cluster changes become observations,
    /// the judge turns them into verdicts. Returns `false` when stopped.
    pub(super) async fn watch(&mut self) -> bool {
        // Kept across the phases: a rollback's verification waits for it.
        let mut asking = self.asking.take();
        let go_on = self.watch_while(&mut asking).await;
        self.asking = asking;
        go_on
    }

    async fn watch_while(&mut self, asking: &mut Option<AbortOnDropHandle<Baseline>>) -> bool {
        let caches = self.subscription();
        let mut shared: Option<Member> = match &self.ctx.sampler {
            Some(s) if self.shares_round() => Some(s.join(&self.r.namespace, &self.r.name)),
            _ => None,
        };
        let facts = RolloutFacts {
            expected_version: self.r.state.to_version.clone(),
            baseline: Box::pin(self.baseline()).await,
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
        if asking.is_some() {
            judge.checks_pending();
        }

        let mut ticks = tokio::time::interval(self.cfg.watch.interval.get());
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut round: Option<futures::future::BoxFuture<'static, judge::ProbeRound>> = None;
        let mut template = rollout::TemplateKeyOf::default();
        loop {
            let probes = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
                changed = self.end.changed() => {
                    let cause = *self.end.borrow();
                    if let Some(cause) = cause {
                        Box::pin(self.ended(cause)).await;
                        return true;
                    }
                    if changed.is_err() {
                        // The detector dropped the session's handle without a cause: nobody
                        // follows this rollout any more (a closed channel is ready at once, so
                        // listening on would spin).
                        return false;
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
                asked = async { match asking.as_mut() { Some(a) => a.await, None => std::future::pending().await } } => {
                    *asking = None;
                    let checks = Box::pin(self.baseline_known(asked)).await;
                    judge.checks_known(checks);
                    None
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
                Box::pin(self.window_started(at)).await;
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
                Verdict::Page { reason, message } => {
                    Box::pin(self.degraded(reason, &message)).await
                }
                Verdict::RollBack { reason, message } => {
                    Box::pin(async {
                        self.quiesce_live().await;
                        self.decided_to_roll_back(reason, &message).await;
                    })
                    .await;
                    return true;
                }
                Verdict::Finish(Finish::Passed) => {
                    // The outcome's record carries the last values: no write of older ones
                    // may land after it.
                    Box::pin(async {
                        self.quiesce_live().await;
                        self.passed().await;
                    })
                    .await;
                    return true;
                }
                Verdict::Finish(Finish::Degraded { reason, message }) => {
                    Box::pin(async {
                        self.quiesce_live().await;
                        self.finish_degraded(reason, &message).await;
                    })
                    .await;
                    return true;
                }
            }
        }
    }

    /// While rolling out, a pause (`spec.paused`) and its end are recorded: paused time does
    /// not count toward `rollout_timeout`.
    pub(super) async fn follow_pause(&mut self) {
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
                Box::pin(self.advance(Happened::Paused { at })).await;
                self.paused_or_resumed(true);
            }
            (true, false) => {
                Box::pin(self.advance(Happened::Resumed { at })).await;
                self.paused_or_resumed(false);
            }
            _ => {}
        }
        if let Phase::Progressing { paused } = self.r.state.phase {
            let judged = clock::judge_time(self.r.state.detected_at, &paused, at);
            self.judge_offset = self.since_detection(at).saturating_sub(judged);
        }
    }

    pub(super) fn since_detection(&self, t: jiff::Timestamp) -> Duration {
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
        let sets: Vec<Arc<SetRecord>> = caches.replica_sets_of_deployment(&deployment);
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

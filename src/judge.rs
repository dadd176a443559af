//! The policy: a pure function of (policy, observations so far) → verdict.
//!
//! No IO, no clock, no async: time arrives inside each [`Observation`] as "time since the
//! rollout was detected", so unit and property tests drive every sequence directly.
//!
//! This module holds the [`Policy`] and the [`Judge`] that folds observations into verdicts;
//! what it is given and answers is in `observation`, the error-rate statistics in `evidence`,
//! the reasons in `reason`, the figures of its messages in `format`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::baseline::Baseline;
use crate::check::{CheckId, Provider};
use crate::config::Config;

mod evidence;
mod format;
mod observation;
mod reason;

pub use evidence::{Evidence, MAX_POOLED, Z_99, failing, wilson_lower_bound};
pub use format::{count, human, percent};
pub use observation::{
    Finish, HealthSample, Observation, PendingPod, PodFailure, ProbeRound, Progress,
    ProviderSample, RolloutFacts, SmokeSample, Verdict,
};
pub use reason::{ALL_REASONS, Reason};

use evidence::Pool;

/// The judge's share of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub error_rate_threshold: f64,
    pub min_requests: u64,
    pub sample_window: Duration,
    pub failures_before_rollback: u32,
    pub inconclusive_limit: u32,
    /// `Some(factor)` when the baseline rule is on.
    pub baseline_factor: Option<f64>,
    pub window: Duration,
    pub rollout_timeout: Duration,
    pub pending_timeout: Duration,
}

impl Policy {
    /// Tests' policy: the config's defaults but a 1 minute sample window.
    #[cfg(test)]
    pub(crate) fn test() -> Policy {
        Policy {
            error_rate_threshold: 0.01,
            min_requests: 20,
            sample_window: Duration::from_secs(60),
            failures_before_rollback: 3,
            inconclusive_limit: 5,
            baseline_factor: None,
            window: Duration::from_secs(900),
            rollout_timeout: Duration::from_secs(600),
            pending_timeout: Duration::from_secs(120),
        }
    }

    pub fn from_config(c: &Config) -> Policy {
        Policy {
            error_rate_threshold: c.judge.error_rate_threshold,
            min_requests: c.judge.min_requests,
            sample_window: c.judge.sample_window.get(),
            failures_before_rollback: c.judge.failures_before_rollback.get(),
            inconclusive_limit: c.judge.inconclusive_limit.get(),
            baseline_factor: c.judge.baseline.enabled.then_some(c.judge.baseline.factor),
            window: c.watch.window.get(),
            rollout_timeout: c.watch.rollout_timeout.get(),
            pending_timeout: c.watch.pending_timeout.get(),
        }
    }
}

/// The judge's memory of one rollout: counters folded from observations.
#[derive(Debug, Clone)]
pub struct Judge {
    policy: Policy,
    facts: RolloutFacts,
    complete_at: Option<Duration>,
    failures: BTreeMap<CheckId, (u32, Reason, String)>,
    /// Each error-rate provider's earlier samples, for pooling small ones.
    pools: BTreeMap<Provider, Pool>,
    /// Why each provider had no data in the latest round without any: for the blind page.
    blind_causes: BTreeMap<Provider, String>,
    inconclusive: u32,
    paged: BTreeSet<Reason>,
    /// Problems paged and still open: reason → message.
    open: BTreeMap<Reason, String>,
    /// Consecutive rounds whose health answer showed a dependency down that was already down
    /// before the deploy.
    known_down: u32,
    /// A page decided in a round that is sent with the next verdict that has room for it.
    page_due: Option<Verdict>,
    /// The previous version's answers are still being asked for: health and smoke answers
    /// cannot be blamed on the release yet and are not counted (pods, progress and the error
    /// rate are judged meanwhile).
    checks_pending: bool,
    done: bool,
}

impl Judge {
    pub fn new(policy: Policy, facts: RolloutFacts) -> Judge {
        Judge {
            policy,
            facts,
            complete_at: None,
            failures: BTreeMap::new(),
            pools: BTreeMap::new(),
            blind_causes: BTreeMap::new(),
            inconclusive: 0,
            paged: BTreeSet::new(),
            open: BTreeMap::new(),
            known_down: 0,
            page_due: None,
            checks_pending: false,
            done: false,
        }
    }

    /// The previous version's answers to the other checks are not known yet: until
    /// [`Judge::checks_known`], health and smoke answers are not counted.
    pub fn checks_pending(&mut self) {
        self.checks_pending = true;
    }

    /// What the other checks showed on the previous version: from now on health and smoke
    /// answers are judged against it.
    pub fn checks_known(&mut self, checks: Baseline) {
        self.facts.checks = checks;
        self.checks_pending = false;
    }

    /// When the rollout was first seen complete (the window starts then).
    pub fn complete_at(&self) -> Option<Duration> {
        self.complete_at
    }

    /// Resumes a watch whose window began `at` after detection (recorded before a restart).
    pub fn resume_window(&mut self, at: Duration) {
        self.complete_at = Some(at);
    }

    /// A page for `reason` went out before a restart: do not page for it again.
    pub fn already_paged(&mut self, reason: Option<Reason>) {
        if let Some(r) = reason {
            self.paged.insert(r);
            self.open.insert(r, format!("{r} (paged before a restart)"));
        }
    }

    /// Problems paged and not yet recovered.
    pub fn open_problems(&self) -> impl Iterator<Item = (&Reason, &String)> {
        self.open.iter()
    }

    /// Folds one observation in; after a `RollBack` or `Finish` every further call is `Continue`.
    pub fn observe(&mut self, obs: &Observation) -> Verdict {
        if self.done {
            return Verdict::Continue;
        }
        let verdict = self.decide(obs);
        if matches!(verdict, Verdict::RollBack { .. } | Verdict::Finish(_)) {
            self.done = true;
        }
        verdict
    }

    fn decide(&mut self, obs: &Observation) -> Verdict {
        if obs.progress == Progress::Complete && self.complete_at.is_none() {
            self.complete_at = Some(obs.at);
        }
        let complete = self.complete_at.is_some();

        // Pods that a rollback fixes: at once, no counting.
        if let Some(f) = &obs.pod_failure {
            return Verdict::RollBack {
                reason: f.reason,
                message: format!("pod {}: {}", f.pod, f.detail),
            };
        }

        let mut page = None;
        match &obs.pending {
            Some(p) if p.pending_for >= self.policy.pending_timeout => {
                let message = format!(
                    "pod {} Pending for {} (limit {}): {}",
                    p.pod,
                    human(p.pending_for),
                    human(self.policy.pending_timeout),
                    p.message
                );
                self.open.insert(Reason::Pending, message.clone());
                if self.paged.insert(Reason::Pending) {
                    page = Some(Verdict::Page {
                        reason: Reason::Pending,
                        message,
                    });
                }
            }
            None if complete => {
                self.open.remove(&Reason::Pending);
            }
            _ => {}
        }

        if !complete {
            let stuck = match &obs.progress {
                Progress::DeadlineExceeded(m) => Some(m.clone()),
                Progress::Progressing(m) if obs.at >= self.policy.rollout_timeout => Some(format!(
                    "rollout not complete after {} (limit {}): {m}",
                    human(obs.at),
                    human(self.policy.rollout_timeout)
                )),
                _ => None,
            };
            if let Some(message) = stuck {
                // Pods still Pending at the deadline: the release cannot be scheduled (often
                // its own larger resource requests); the previous version could be. Rolled
                // back with the scheduler's message; the page at `pending_timeout` went first.
                if let Some(p) = &obs.pending {
                    return Verdict::RollBack {
                        reason: Reason::Pending,
                        message: format!(
                            "{message}; pod {} Pending for {}: {}",
                            p.pod,
                            human(p.pending_for),
                            p.message
                        ),
                    };
                }
                return Verdict::RollBack {
                    reason: Reason::RolloutTimeout,
                    message,
                };
            }
        }

        if let Some(round) = &obs.probes
            && let Some(v) = self.judge_round(obs.at, round, complete)
        {
            return v;
        }
        if let Some(v) = page {
            return v;
        }
        if let Some(v) = self.page_due.take() {
            return v;
        }
        if let Some(v) = self.blind_page() {
            return v;
        }

        match self.complete_at {
            Some(start) if obs.at >= start + self.policy.window => match self.open.iter().next() {
                Some((reason, message)) => Verdict::Finish(Finish::Degraded {
                    reason: *reason,
                    message: message.clone(),
                }),
                None => Verdict::Finish(Finish::Passed),
            },
            _ => Verdict::Continue,
        }
    }

    /// Counts each check's consecutive failures; the first to reach the limit rolls back.
    fn judge_round(&mut self, at: Duration, round: &ProbeRound, complete: bool) -> Option<Verdict> {
        let mut results: Vec<(CheckId, CheckResult)> = Vec::new();
        // A check that failed on the previous version too is left out (see `baseline`).
        if let Some(h) = &round.health
            && !self.checks_pending
            && self.facts.checks.health_unusable().is_none()
        {
            let (result, known) = self.health_result(h, complete);
            results.push((CheckId::Health, result));
            let answered_as = match h {
                HealthSample::Answered { version, .. } => version.clone(),
                HealthSample::Failed(_) => None,
            };
            self.dependencies_known_down(known, answered_as);
        }
        for (name, s) in &round.smoke {
            if self.checks_pending || self.facts.checks.smoke_unusable(name).is_some() {
                continue;
            }
            let r = match s {
                SmokeSample::Passed => Ok(()),
                SmokeSample::Failed(d) => Err((
                    Reason::Smoke,
                    format!(
                        "smoke check {name}: {d} ({})",
                        self.facts.checks.compared(&CheckId::Smoke(name.clone()))
                    ),
                )),
            };
            results.push((CheckId::Smoke(name.clone()), r));
        }
        match self.error_rate_result(at, &round.providers) {
            RateResult::Fail(message) => {
                self.seen_data();
                results.push((CheckId::ErrorRate, Err((Reason::ErrorRate, message))));
            }
            RateResult::Pass => {
                self.seen_data();
                results.push((CheckId::ErrorRate, Ok(())));
            }
            RateResult::NoEvidence => self.seen_data(),
            RateResult::Inconclusive => self.inconclusive += 1,
            RateResult::NotConfigured => {}
        }

        let limit = self.policy.failures_before_rollback;
        let mut verdict = None;
        for (key, result) in results {
            match result {
                Ok(()) => {
                    self.failures.remove(&key);
                }
                Err((reason, detail)) => {
                    let entry = self
                        .failures
                        .entry(key)
                        .or_insert((0, reason, String::new()));
                    entry.0 += 1;
                    entry.1 = reason;
                    entry.2 = detail;
                    if entry.0 >= limit && verdict.is_none() {
                        let message = if limit == 1 {
                            entry.2.clone()
                        } else {
                            format!("{} for {} consecutive samples", entry.2, entry.0)
                        };
                        verdict = Some(Verdict::RollBack {
                            reason: entry.1,
                            message,
                        });
                    }
                }
            }
        }
        verdict
    }

    /// The health check's result, and, when it answered, the dependency checks failing now that
    /// were already failing on the previous version (not the release's: never a rollback).
    fn health_result(
        &self,
        h: &HealthSample,
        complete: bool,
    ) -> (CheckResult, Option<Vec<(String, String)>>) {
        let checks = &self.facts.checks;
        match h {
            HealthSample::Failed(d) => (
                Err((
                    Reason::Health,
                    format!("health: {d} ({})", checks.compared(&CheckId::Health)),
                )),
                None,
            ),
            HealthSample::Answered {
                version,
                failing_checks,
            } => {
                let (known, new): (Vec<_>, Vec<_>) = failing_checks
                    .iter()
                    .cloned()
                    .partition(|(name, _)| checks.dependency_down(name).is_some());
                if let Some((name, value)) = new.first() {
                    let more = match new.len() {
                        1 => String::new(),
                        n => format!(" (and {} more)", n - 1),
                    };
                    let compared = checks.compared(&CheckId::Dependency(name.clone()));
                    return (
                        Err((
                            Reason::DependencyCheck,
                            format!(
                                "health: dependency check {name} is {value:?}, not ok ({compared}){more}"
                            ),
                        )),
                        Some(known),
                    );
                }
                (
                    self.version_result(version.as_deref(), complete),
                    Some(known),
                )
            }
        }
    }

    /// Mixed versions are expected until the rollout completes.
    fn version_result(&self, version: Option<&str>, complete: bool) -> CheckResult {
        if complete
            && let (Some(expected), Some(seen)) = (&self.facts.expected_version, version)
            && expected != seen
        {
            return Err((
                Reason::VersionMismatch,
                format!("health: version {seen} reported, {expected} deployed"),
            ));
        }
        Ok(())
    }

    /// A dependency down before the deploy and still down is a separate incident: paged once it
    /// persists for `failures_before_rollback` rounds, open until it recovers, never a rollback.
    fn dependencies_known_down(
        &mut self,
        known: Option<Vec<(String, String)>>,
        answered_as: Option<String>,
    ) {
        let Some(known) = known else {
            // The health endpoint did not answer: nothing learnt about the dependencies.
            return;
        };
        if known.is_empty() {
            self.known_down = 0;
            self.open.remove(&Reason::DependencyCheck);
            return;
        }
        self.known_down += 1;
        if self.known_down < self.policy.failures_before_rollback {
            return;
        }
        let checks = &self.facts.checks;
        // Until the rollout completes the answer may come from a pod of the previous version.
        let new = answered_as
            .as_deref()
            .or(self.facts.expected_version.as_deref())
            .unwrap_or("the new version");
        let down: Vec<String> = known
            .iter()
            .map(|(name, value)| {
                format!(
                    "{name}: {value} on {new} and {} on {} before the deploy",
                    checks.dependency_down(name).unwrap_or_default(),
                    checks.previous()
                )
            })
            .collect();
        let message = format!(
            "{} → not rolled back: a dependency down before the deploy is a separate incident",
            down.join("; ")
        );
        self.open.insert(Reason::DependencyCheck, message.clone());
        if self.paged.insert(Reason::DependencyCheck) {
            self.page_due = Some(Verdict::Page {
                reason: Reason::DependencyCheck,
                message,
            });
        }
    }

    /// The error-rate check of one round: each provider's evidence (its sample, pooled with
    /// earlier ones when small, see [`Pool`]) judged with the confidence bound of [`failing`].
    fn error_rate_result(
        &mut self,
        at: Duration,
        providers: &[(Provider, ProviderSample)],
    ) -> RateResult {
        if providers.is_empty() {
            return RateResult::NotConfigured;
        }
        let policy = &self.policy;
        let mut failed = None;
        let mut passed = false;
        let mut low_traffic = false;
        let mut causes = BTreeMap::new();
        for (name, sample) in providers {
            let (requests, errors) = match sample {
                ProviderSample::Counts { requests, errors } => (*requests, *errors),
                ProviderSample::NoData => {
                    causes.insert(*name, "no data".to_string());
                    continue;
                }
                ProviderSample::Unavailable(e) => {
                    causes.insert(*name, format!("{} ({e})", e.category()));
                    continue;
                }
            };
            // A reset or garbage is no evidence: never a pass, never a failure, never pooled.
            if !(requests.is_finite() && errors.is_finite())
                || requests < 0.0
                || errors < 0.0
                || errors > requests
            {
                causes.insert(*name, "unusable counts".to_string());
                continue;
            }
            let pool = self.pools.entry(*name).or_default();
            let Some(evidence) = pool.evidence(at, requests, errors, policy) else {
                low_traffic = true;
                continue;
            };
            let threshold = policy.error_rate_threshold;
            let baseline = policy.baseline_factor.zip(self.facts.baseline);
            if failed.is_none() && failing(&evidence, threshold, baseline) {
                let baseline = match baseline {
                    Some((factor, base)) => format!(", baseline {} × {factor}", percent(base)),
                    None => String::new(),
                };
                let span = match evidence.samples {
                    1 => human(policy.sample_window),
                    n => format!("{n} samples of {}", human(policy.sample_window)),
                };
                failed = Some(format!(
                    "error rate {} ({} of {} requests in {span}) > {}{baseline} ({name})",
                    percent(evidence.errors / evidence.requests),
                    count(evidence.errors),
                    count(evidence.requests),
                    percent(threshold),
                ));
            }
            passed = true;
        }
        if let Some(message) = failed {
            RateResult::Fail(message)
        } else if passed {
            RateResult::Pass
        } else if low_traffic {
            RateResult::NoEvidence
        } else {
            self.blind_causes = causes;
            RateResult::Inconclusive
        }
    }

    /// A provider answered with data: the watchdog is not blind.
    fn seen_data(&mut self) {
        self.inconclusive = 0;
        self.open.remove(&Reason::ProviderBlind);
    }

    fn blind_page(&mut self) -> Option<Verdict> {
        if self.inconclusive < self.policy.inconclusive_limit {
            return None;
        }
        let causes: Vec<String> = self
            .blind_causes
            .iter()
            .map(|(provider, cause)| format!("{provider}: {cause}"))
            .collect();
        let message = format!(
            "watchdog blind: no error-rate provider had data for {} consecutive samples ({})",
            self.inconclusive,
            causes.join("; ")
        );
        self.open.insert(Reason::ProviderBlind, message.clone());
        self.paged
            .insert(Reason::ProviderBlind)
            .then_some(Verdict::Page {
                reason: Reason::ProviderBlind,
                message,
            })
    }
}

/// One check in one round: passed, or failed with a reason and the figures.
type CheckResult = Result<(), (Reason, String)>;

enum RateResult {
    NotConfigured,
    Pass,
    Fail(String),
    /// Only low-traffic samples: neither a failure nor blindness.
    NoEvidence,
    Inconclusive,
}

/// Folds a whole sequence; the first verdict that is not `Continue`, else `Continue`.
pub fn judge(policy: &Policy, facts: &RolloutFacts, observations: &[Observation]) -> Vec<Verdict> {
    let mut j = Judge::new(policy.clone(), facts.clone());
    observations
        .iter()
        .map(|o| j.observe(o))
        .filter(|v| *v != Verdict::Continue)
        .collect()
}

#[cfg(test)]
mod evidence_tests;
#[cfg(test)]
mod tests;

//! What the daemon records: one method per event (a rollout detected, an outcome, a page, a
//! provider's answer…), and the guards that count while alive or time until dropped.

use std::time::{Duration, Instant};

use prometheus::{Histogram, IntGauge};

use super::metrics::Metrics;
use crate::cluster::record::Outcome;
use crate::judge::{HealthSample, ProbeRound, ProviderSample, Reason, SmokeSample};

impl Metrics {
    /// The first action on a rollout (`action`: one of [`ACTIONS`](super::ACTIONS)), `elapsed`
    /// after its detection.
    pub fn time_to_action(&self, action: &'static str, elapsed: Duration) {
        self.time_to_action
            .with_label_values(&[action])
            .observe(elapsed.as_secs_f64());
    }

    /// A rollout was detected.
    pub fn detected(&self) {
        self.rollouts_detected.inc();
    }

    /// A rollout reached a final outcome.
    pub fn outcome(&self, outcome: Outcome, reason: Reason) {
        self.outcomes
            .with_label_values(&[outcome.as_str(), reason.as_str()])
            .inc();
    }

    /// Counts a rollout under watch until the guard drops.
    pub fn watching(&self) -> GaugeGuard {
        GaugeGuard::new(self.sessions_active.clone())
    }

    /// Counts a rollback in progress until the guard drops.
    pub fn rolling_back(&self) -> GaugeGuard {
        GaugeGuard::new(self.rollbacks_in_progress.clone())
    }

    /// Counts a paused GitOps owner of `kind` until the guard drops.
    pub fn gitops_paused(&self, kind: &'static str) -> GaugeGuard {
        GaugeGuard::new(self.gitops_paused.with_label_values(&[kind]))
    }

    /// Rollbacks being sent or verified now.
    pub fn rollbacks_in_progress(&self) -> i64 {
        self.rollbacks_in_progress.get()
    }

    /// The gauge of pages and messages queued or being retried, kept by the notifier.
    pub fn notifications_in_flight_gauge(&self) -> IntGauge {
        self.notifications_in_flight.clone()
    }

    /// Pages and messages queued or being retried now.
    pub fn notifications_in_flight(&self) -> i64 {
        self.notifications_in_flight.get()
    }

    /// Records the time to send a rollback when the timer drops.
    pub fn rollback_timer(&self) -> Timer {
        Timer::new(self.rollback_duration.clone())
    }

    /// Records the time of one provider sample; the result label comes from the sample.
    pub fn provider_sample(&self, provider: &str, started: Instant, sample: &ProviderSample) {
        self.provider_request(provider, started, provider_result(sample));
    }

    /// Records the time of one provider request with its result label (`answered`,
    /// `no_data`, or why it was unavailable: a [`ProbeError`] category such as `timeout` or
    /// `rate_limited`): a grouped request answers for many samples at once.
    ///
    /// [`ProbeError`]: crate::probes::error::ProbeError
    pub fn provider_request(&self, provider: &str, started: Instant, result: &'static str) {
        // Provider names are the config's fixed set (prometheus, datadog), not user text.
        self.provider_duration
            .with_label_values(&[provider, result])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts every check of one probe round.
    pub fn probe_round(&self, round: &ProbeRound) {
        if let Some(h) = &round.health {
            let result = match h {
                HealthSample::Answered { failing_checks, .. } if failing_checks.is_empty() => {
                    "pass"
                }
                _ => "fail",
            };
            self.check("health", result);
        }
        for (_, s) in &round.smoke {
            let result = match s {
                SmokeSample::Passed => "pass",
                SmokeSample::Failed(_) => "fail",
            };
            self.check("smoke", result);
        }
        for (_, p) in &round.providers {
            self.check("error_rate", provider_result(p));
        }
    }

    fn check(&self, check: &str, result: &str) {
        self.check_results.with_label_values(&[check, result]).inc();
    }

    /// A PagerDuty event's delivery attempt: `delivered`, `rejected` or `retried`.
    pub fn page(&self, action: &str, result: &str) {
        self.pages.with_label_values(&[action, result]).inc();
    }

    /// A Slack message's delivery attempt: `delivered`, `rejected`, `retried` or `dropped`.
    pub fn notification(&self, result: &str) {
        self.notifications.with_label_values(&[result]).inc();
    }

    /// A watch failed and restarts with backoff (`deployments`, `replicasets`, `pods`).
    pub fn watch_restart(&self, kind: &str) {
        self.watch_restarts.with_label_values(&[kind]).inc();
    }

    /// A task panicked (`task`: a [`crate::tasks::Task`] name).
    pub fn task_panic(&self, task: &str) {
        self.task_panics.with_label_values(&[task]).inc();
    }

    /// A failed leader-election attempt (`operation`: acquire or renew).
    pub fn leader_election_failure(&self, operation: &str, category: &str) {
        self.leader_election_failures
            .with_label_values(&[operation, category])
            .inc();
    }
}

fn provider_result(sample: &ProviderSample) -> &'static str {
    match sample {
        ProviderSample::Counts { .. } => "answered",
        ProviderSample::NoData => "no_data",
        ProviderSample::Unavailable(e) => e.category(),
    }
}

/// Increments a gauge now and decrements it on drop.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    fn new(g: IntGauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Observes the time since its creation into a histogram on drop.
pub struct Timer {
    histogram: Histogram,
    started: Instant,
}

impl Timer {
    fn new(histogram: Histogram) -> Timer {
        Timer {
            histogram,
            started: Instant::now(),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

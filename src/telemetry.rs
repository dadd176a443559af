//! Tracing set-up (text or JSON lines, filtered by `RUST_LOG`, default `info`) and the daemon's
//! own Prometheus metrics.
//!
//! Metric labels are bounded: an outcome, a reason, a check kind, a provider, a result. Never a
//! Deployment's name or an error string: per-Deployment detail belongs in logs and Events.

use std::io::IsTerminal;
use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use tracing_subscriber::EnvFilter;

use crate::cluster::record::Outcome;
use crate::judge::{HealthSample, ProbeRound, ProviderSample, Reason, SmokeSample};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber once; later calls are no-ops. Text lines are coloured only
/// when stderr is a terminal: a file, a pipe or `kubectl logs` gets plain text.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_logs(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").is_some(),
        ))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Whether text logs are coloured: on a terminal, unless `NO_COLOR` is set.
pub fn colour_logs(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

/// A metric could not be created or registered (a programming error: names are constants).
#[derive(Debug, thiserror::Error)]
#[error("metric `{name}` not registered: {source}")]
pub struct MetricsError {
    name: &'static str,
    source: prometheus::Error,
}

const PREFIX: &str = "deploy_watchdog";

/// Buckets for remote calls: 5 ms to 30 s.
const CALL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The daemon's metrics, registered into one [`Registry`] and shared in an `Arc`.
pub struct Metrics {
    rollouts_detected: IntCounter,
    outcomes: IntCounterVec,
    sessions_active: IntGauge,
    rollbacks_in_progress: IntGauge,
    notifications_in_flight: IntGauge,
    check_results: IntCounterVec,
    provider_duration: HistogramVec,
    rollback_duration: Histogram,
    pages: IntCounterVec,
    notifications: IntCounterVec,
    watch_restarts: IntCounterVec,
    leader_election_failures: IntCounterVec,
    task_panics: IntCounterVec,
    build_info: IntGaugeVec,
    gitops_paused: IntGaugeVec,
}

fn add<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    name: &'static str,
    made: Result<C, prometheus::Error>,
) -> Result<C, MetricsError> {
    let c = made.map_err(|source| MetricsError { name, source })?;
    registry
        .register(Box::new(c.clone()))
        .map_err(|source| MetricsError { name, source })?;
    Ok(c)
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(PREFIX)
}

fn hopts(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(PREFIX)
        .buckets(CALL_BUCKETS.to_vec())
}

impl Metrics {
    /// Creates every metric and registers it into `registry`.
    pub fn register(registry: &Registry) -> Result<Metrics, MetricsError> {
        let r = registry;
        let m = Metrics {
            rollouts_detected: add(
                r,
                "rollouts_detected_total",
                IntCounter::with_opts(opts(
                    "rollouts_detected_total",
                    "Rollouts (new revisions of opted-in Deployments) detected.",
                )),
            )?,
            outcomes: add(
                r,
                "rollout_outcomes_total",
                IntCounterVec::new(
                    opts(
                        "rollout_outcomes_total",
                        "Final outcomes of rollouts, by outcome and reason.",
                    ),
                    &["outcome", "reason"],
                ),
            )?,
            sessions_active: add(
                r,
                "watches_active",
                IntGauge::with_opts(opts(
                    "watches_active",
                    "Rollouts under watch now (progressing, in their window, or verifying a rollback).",
                )),
            )?,
            rollbacks_in_progress: add(
                r,
                "rollbacks_in_progress",
                IntGauge::with_opts(opts(
                    "rollbacks_in_progress",
                    "Rollbacks being sent or verified now; shutdown waits for them.",
                )),
            )?,
            notifications_in_flight: add(
                r,
                "notifications_in_flight",
                IntGauge::with_opts(opts(
                    "notifications_in_flight",
                    "Pages and Slack messages queued or being retried now.",
                )),
            )?,
            gitops_paused: add(
                r,
                "gitops_paused_owners",
                IntGaugeVec::new(
                    opts(
                        "gitops_paused_owners",
                        "GitOps owners (Argo CD Applications, Flux Kustomizations and HelmReleases) whose sync this daemon paused and has not resumed, by kind.",
                    ),
                    &["kind"],
                ),
            )?,
            check_results: add(
                r,
                "check_results_total",
                IntCounterVec::new(
                    opts(
                        "check_results_total",
                        "Probe results by check (health, smoke, error_rate) and result (pass, fail; for error_rate answered, no_data or why the provider was unavailable: timeout, connect, rate_limited, http_status, bad_response, partial, request).",
                    ),
                    &["check", "result"],
                ),
            )?,
            provider_duration: add(
                r,
                "provider_request_duration_seconds",
                HistogramVec::new(
                    hopts(
                        "provider_request_duration_seconds",
                        "Duration of one error-rate sample from a provider, in seconds, by provider and result.",
                    ),
                    &["provider", "result"],
                ),
            )?,
            rollback_duration: add(
                r,
                "rollback_duration_seconds",
                Histogram::with_opts(hopts(
                    "rollback_duration_seconds",
                    "Time to send one rollback (read, plan and patch the Deployment), in seconds.",
                )),
            )?,
            pages: add(
                r,
                "pages_total",
                IntCounterVec::new(
                    opts(
                        "pages_total",
                        "PagerDuty events by action (trigger, resolve) and result (delivered, rejected, retried).",
                    ),
                    &["action", "result"],
                ),
            )?,
            notifications: add(
                r,
                "notifications_total",
                IntCounterVec::new(
                    opts(
                        "notifications_total",
                        "Slack messages by result (delivered, rejected, retried, dropped).",
                    ),
                    &["result"],
                ),
            )?,
            watch_restarts: add(
                r,
                "watch_restarts_total",
                IntCounterVec::new(
                    opts(
                        "watch_restarts_total",
                        "Watch errors after which a watch restarts with backoff, by watched kind.",
                    ),
                    &["kind"],
                ),
            )?,
            leader_election_failures: add(
                r,
                "leader_election_failures_total",
                IntCounterVec::new(
                    opts(
                        "leader_election_failures_total",
                        "Failed attempts to acquire or renew the leader Lease, by operation (acquire, renew) and category (forbidden, not_found, conflict, timeout, server_error, connection, held_by_another, …).",
                    ),
                    &["operation", "category"],
                ),
            )?,
            task_panics: add(
                r,
                "task_panics_total",
                IntCounterVec::new(
                    opts(
                        "task_panics_total",
                        "Tasks that panicked, by task (session, record, leader, page). A session that panics is restarted from the state recorded on its Deployment.",
                    ),
                    &["task"],
                ),
            )?,
            build_info: add(
                r,
                "build_info",
                IntGaugeVec::new(
                    opts("build_info", "Always 1; the running build's version."),
                    &["version"],
                ),
            )?,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(m)
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

/// The registry's metrics in Prometheus' text exposition format.
pub fn encode(registry: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# metrics not encoded: {e}\n"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::check::Provider;

    fn metrics() -> (Registry, Metrics) {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        (registry, metrics)
    }

    #[test]
    fn every_metric_has_help_text_and_the_prefix() {
        let (registry, m) = metrics();
        m.detected();
        m.outcome(Outcome::RolledBack, Reason::ErrorRate);
        m.page("trigger", "delivered");
        m.notification("delivered");
        m.watch_restart("deployments");
        m.provider_sample("prometheus", Instant::now(), &ProviderSample::NoData);
        drop(m.rollback_timer());
        m.probe_round(&ProbeRound {
            health: Some(HealthSample::Failed("timed out".into())),
            smoke: vec![("home".into(), SmokeSample::Passed)],
            providers: vec![(Provider::Prometheus, ProviderSample::NoData)],
        });
        let families = registry.gather();
        assert_eq!(families.len(), 12);
        for f in &families {
            assert!(f.name().starts_with("deploy_watchdog_"), "{}", f.name());
            assert!(!f.help().is_empty(), "{} has no help", f.name());
        }
        let text = encode(&registry);
        assert!(text.contains(
            r#"deploy_watchdog_rollout_outcomes_total{outcome="rolled_back",reason="error_rate"} 1"#
        ));
        assert!(
            text.contains(r#"deploy_watchdog_check_results_total{check="health",result="fail"} 1"#)
        );
        assert!(
            text.contains(r#"deploy_watchdog_check_results_total{check="smoke",result="pass"} 1"#)
        );
        assert!(text.contains("deploy_watchdog_rollback_duration_seconds_count 1"));
    }

    #[test]
    fn smoke_check_names_never_become_labels() {
        let (registry, m) = metrics();
        m.probe_round(&ProbeRound {
            health: None,
            smoke: vec![(
                "customer-checkout-42".into(),
                SmokeSample::Failed("500".into()),
            )],
            providers: vec![],
        });
        assert!(!encode(&registry).contains("customer-checkout-42"));
    }

    #[test]
    fn guards_count_while_alive() {
        let (_registry, m) = metrics();
        let a = m.rolling_back();
        let b = m.rolling_back();
        assert_eq!(m.rollbacks_in_progress(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.rollbacks_in_progress(), 0);
    }

    #[test]
    fn registering_twice_into_one_registry_is_an_error_not_a_panic() {
        let (registry, _m) = metrics();
        assert!(Metrics::register(&registry).is_err());
    }
}

//! The daemon's metrics: their names, help texts, buckets and bounded label sets, registered
//! once into a registry, every known series exported at 0; and the registry's text exposition.

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use super::checks::CHECK_LABELS;
use crate::cluster::record::Outcome;

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

/// Buckets for the time from a rollout's detection to an action on it: 1 s to 1 h.
const ACTION_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Actions timed by `time_to_action_seconds`: a rollback (sent, refused or dry-run) and a page.
pub const ACTIONS: [&str; 2] = ["rollback", "page"];

/// HTTP methods of Kubernetes API requests (a list and a watch are GETs).
pub(super) const API_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Categories of failed Kubernetes API requests (see [`api_error_category`]).
const API_ERROR_CATEGORIES: [&str; 9] = [
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "invalid",
    "too_many_requests",
    "server_error",
    "rejected",
    "connection",
];

/// PagerDuty event actions and delivery results, Slack delivery results: every combination is
/// exported from the start (at 0), so the first failure shows as an increase.
const PAGE_ACTIONS: [&str; 2] = ["trigger", "resolve"];
const PAGE_RESULTS: [&str; 3] = ["delivered", "rejected", "retried"];
const NOTIFICATION_RESULTS: [&str; 4] = ["delivered", "rejected", "retried", "dropped"];
const GITOPS_KINDS: [&str; 3] = ["application", "kustomization", "helmrelease"];
const OUTCOMES: [Outcome; 7] = [
    Outcome::Passed,
    Outcome::RolledBack,
    Outcome::WouldRollBack,
    Outcome::Degraded,
    Outcome::RollbackFailed,
    Outcome::Superseded,
    Outcome::Deleted,
];

/// The daemon's metrics, registered into one [`Registry`] and shared in an `Arc`.
pub struct Metrics {
    pub(super) rollouts_detected: IntCounter,
    pub(super) outcomes: IntCounterVec,
    pub(super) sessions_active: IntGauge,
    pub(super) rollbacks_in_progress: IntGauge,
    pub(super) notifications_in_flight: IntGauge,
    pub(super) check_results: IntCounterVec,
    pub(super) provider_duration: HistogramVec,
    pub(super) rollback_duration: Histogram,
    pub(super) pages: IntCounterVec,
    pub(super) notifications: IntCounterVec,
    pub(super) watch_restarts: IntCounterVec,
    pub(super) leader_election_failures: IntCounterVec,
    pub(super) task_panics: IntCounterVec,
    pub(super) build_info: IntGaugeVec,
    pub(super) gitops_paused: IntGaugeVec,
    pub(super) time_to_action: HistogramVec,
    pub(super) api_errors: IntCounterVec,
    pub(super) check_value: GaugeVec,
    pub(super) check_threshold: GaugeVec,
    pub(super) check_failing: IntGaugeVec,
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
            time_to_action: add(
                r,
                "time_to_action_seconds",
                HistogramVec::new(
                    HistogramOpts::new(
                        "time_to_action_seconds",
                        "Time from a rollout's detection to the first action on it, in seconds, by action (rollback: sent, refused or dry-run; page: on-call paged while the watch goes on).",
                    )
                    .namespace(PREFIX)
                    .buckets(ACTION_BUCKETS.to_vec()),
                    &["action"],
                ),
            )?,
            api_errors: add(
                r,
                "kube_api_errors_total",
                IntCounterVec::new(
                    opts(
                        "kube_api_errors_total",
                        "Kubernetes API requests that failed, by HTTP method and category (unauthorized, forbidden, not_found, conflict, invalid, too_many_requests, server_error, rejected, connection).",
                    ),
                    &["method", "category"],
                ),
            )?,
            check_value: add(
                r,
                "check_value",
                GaugeVec::new(
                    opts(
                        "check_value",
                        "Each check's latest value for the rollouts under watch now: error_rate_<provider> the error ratio (0-1); health 1 when healthy, 0 when not; smoke the share of smoke checks passing. Removed when the watch ends.",
                    ),
                    &CHECK_LABELS,
                ),
            )?,
            check_threshold: add(
                r,
                "check_threshold",
                GaugeVec::new(
                    opts(
                        "check_threshold",
                        "The error ratio above which an error_rate check fails for a rollout under watch now (the threshold, or the baseline times its factor when higher). Removed when the watch ends.",
                    ),
                    &CHECK_LABELS,
                ),
            )?,
            check_failing: add(
                r,
                "check_failing",
                IntGaugeVec::new(
                    opts(
                        "check_failing",
                        "1 while a check of a rollout under watch now fails, 0 while it passes or has no evidence either way. Removed when the watch ends.",
                    ),
                    &CHECK_LABELS,
                ),
            )?,
        };
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        m.export_known_series();
        Ok(m)
    }

    /// Exports every known label combination of the counters, histograms and gauges at 0:
    /// a series that first appears at 1 shows no increase, so a first rollback or failed page
    /// would be invisible to `increase()` and `rate()`.
    fn export_known_series(&self) {
        for outcome in OUTCOMES {
            for reason in crate::judge::ALL_REASONS {
                self.outcomes
                    .with_label_values(&[outcome.as_str(), reason.as_str()]);
            }
        }
        for action in PAGE_ACTIONS {
            for result in PAGE_RESULTS {
                self.pages.with_label_values(&[action, result]);
            }
        }
        for result in NOTIFICATION_RESULTS {
            self.notifications.with_label_values(&[result]);
        }
        for kind in GITOPS_KINDS {
            self.gitops_paused.with_label_values(&[kind]);
        }
        for action in ACTIONS {
            self.time_to_action.with_label_values(&[action]);
        }
        for kind in ["deployments", "replicasets", "pods"] {
            self.watch_restarts.with_label_values(&[kind]);
        }
        for method in API_METHODS {
            for category in API_ERROR_CATEGORIES {
                self.api_errors.with_label_values(&[method, category]);
            }
        }
    }
}

/// The registry's metrics in Prometheus' text exposition format.
pub fn encode(registry: &Registry) -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap_or_else(|e| format!("# metrics not encoded: {e}\n"))
}

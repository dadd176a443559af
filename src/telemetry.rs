//! Tracing set-up (text or JSON lines, filtered by `RUST_LOG`, default `info`) and the daemon's
//! own Prometheus metrics.
//!
//! Metric labels are bounded: an outcome, a reason, a check kind, a provider, a result. Never an
//! error string or a user's check name. The one exception is the per-check gauges of the rollouts
//! under watch now ([`CheckGauges`]): they carry the Deployment's namespace and name, and their
//! series are removed when the watch ends, so their number is bounded by the rollouts watched at
//! once, not by history.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
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

/// Buckets for the time from a rollout's detection to an action on it: 1 s to 1 h.
const ACTION_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Actions timed by `time_to_action_seconds`: a rollback (sent, refused or dry-run) and a page.
pub const ACTIONS: [&str; 2] = ["rollback", "page"];

/// HTTP methods of Kubernetes API requests (a list and a watch are GETs).
const API_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

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
    time_to_action: HistogramVec,
    api_errors: IntCounterVec,
    check_value: GaugeVec,
    check_threshold: GaugeVec,
    check_failing: IntGaugeVec,
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

    /// The first action on a rollout (`action`: one of [`ACTIONS`]), `elapsed` after its
    /// detection.
    pub fn time_to_action(&self, action: &'static str, elapsed: Duration) {
        self.time_to_action
            .with_label_values(&[action])
            .observe(elapsed.as_secs_f64());
    }

    /// A failed Kubernetes API request.
    pub fn api_error(&self, method: &http::Method, category: &'static str) {
        let method = API_METHODS
            .iter()
            .find(|m| **m == method.as_str())
            .copied()
            .unwrap_or("OTHER");
        self.api_errors.with_label_values(&[method, category]).inc();
    }

    /// The per-check gauges of the rollout `namespace/deployment`; its series go when they drop.
    pub fn check_gauges(&self, namespace: &str, deployment: &str) -> CheckGauges {
        CheckGauges {
            value: self.check_value.clone(),
            threshold: self.check_threshold.clone(),
            failing: self.check_failing.clone(),
            namespace: namespace.to_string(),
            deployment: deployment.to_string(),
            valued: BTreeSet::new(),
            limited: BTreeSet::new(),
        }
    }

    /// A tower layer for the Kubernetes client that counts each failed request into
    /// `kube_api_errors_total`.
    pub fn api_error_layer(self: &std::sync::Arc<Self>) -> ApiErrorLayer {
        ApiErrorLayer(self.clone())
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

/// Labels of the per-check gauges. Not `namespace`: a scrape through a ServiceMonitor sets that
/// label to the daemon's own namespace.
const CHECK_LABELS: [&str; 3] = ["deployment_namespace", "deployment", "check"];

/// One check's latest reading for the per-check gauges.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReading {
    /// `error_rate_prometheus`, `error_rate_datadog`, `health` or `smoke`: never a user's name.
    pub check: &'static str,
    /// `None`: no value (no data, the provider unavailable, no traffic): the series is removed.
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub failing: bool,
}

/// The per-check gauges of one rollout under watch. Each [`CheckGauges::update`] sets the checks
/// read and removes those without a value; dropping it removes every series it set.
pub struct CheckGauges {
    value: GaugeVec,
    threshold: GaugeVec,
    failing: IntGaugeVec,
    namespace: String,
    deployment: String,
    /// Checks with a value (and a failing) series.
    valued: BTreeSet<&'static str>,
    /// Checks with a threshold series.
    limited: BTreeSet<&'static str>,
}

impl CheckGauges {
    pub fn update(&mut self, readings: &[CheckReading]) {
        let (mut valued, mut limited) = (BTreeSet::new(), BTreeSet::new());
        for r in readings {
            let labels = [self.namespace.as_str(), self.deployment.as_str(), r.check];
            let Some(value) = r.value else {
                continue;
            };
            self.value.with_label_values(&labels).set(value);
            self.failing
                .with_label_values(&labels)
                .set(i64::from(r.failing));
            valued.insert(r.check);
            if let Some(t) = r.threshold {
                self.threshold.with_label_values(&labels).set(t);
                limited.insert(r.check);
            }
        }
        for check in self.valued.difference(&valued) {
            let labels = [self.namespace.as_str(), self.deployment.as_str(), check];
            let _ = self.value.remove_label_values(&labels);
            let _ = self.failing.remove_label_values(&labels);
        }
        for check in self.limited.difference(&limited) {
            let labels = [self.namespace.as_str(), self.deployment.as_str(), check];
            let _ = self.threshold.remove_label_values(&labels);
        }
        self.valued = valued;
        self.limited = limited;
    }
}

impl Drop for CheckGauges {
    fn drop(&mut self) {
        self.update(&[]);
    }
}

/// The category of a Kubernetes API answer that is not a success: the status code's meaning,
/// or `connection` when no answer came.
pub fn api_error_category(status: Option<u16>) -> &'static str {
    match status {
        Some(401) => "unauthorized",
        Some(403) => "forbidden",
        Some(404) => "not_found",
        Some(409) => "conflict",
        Some(422) => "invalid",
        Some(429) => "too_many_requests",
        Some(c) if c >= 500 => "server_error",
        Some(_) => "rejected",
        None => "connection",
    }
}

/// A Kubernetes client for `config` whose failed requests are counted in `metrics`.
pub fn kube_client(
    config: kube::Config,
    metrics: &std::sync::Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&metrics.api_error_layer())
        .build())
}

/// Wraps the Kubernetes client's HTTP service: see [`Metrics::api_error_layer`].
#[derive(Clone)]
pub struct ApiErrorLayer(std::sync::Arc<Metrics>);

impl<S> tower::Layer<S> for ApiErrorLayer {
    type Service = ApiErrors<S>;
    fn layer(&self, inner: S) -> ApiErrors<S> {
        ApiErrors {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// The service of [`ApiErrorLayer`]: a response of 400 or more, or no response, is counted.
#[derive(Clone)]
pub struct ApiErrors<S> {
    inner: S,
    metrics: std::sync::Arc<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for ApiErrors<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.method().clone();
        let metrics = self.metrics.clone();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let answer = answer.await;
            match &answer {
                Ok(r) if r.status().as_u16() >= 400 => {
                    metrics.api_error(&method, api_error_category(Some(r.status().as_u16())));
                }
                Ok(_) => {}
                Err(_) => metrics.api_error(&method, api_error_category(None)),
            }
            answer
        })
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
        let mut gauges = m.check_gauges("shop", "web");
        gauges.update(&[reading("error_rate_prometheus", Some(0.0), Some(0.01))]);
        let families = registry.gather();
        assert_eq!(families.len(), 18);
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

    fn reading(check: &'static str, value: Option<f64>, threshold: Option<f64>) -> CheckReading {
        CheckReading {
            check,
            value,
            threshold,
            failing: false,
        }
    }

    #[test]
    fn check_gauges_follow_the_readings_and_go_when_the_watch_ends() {
        let (registry, m) = metrics();
        let mut a = m.check_gauges("shop", "web");
        let b = {
            let mut b = m.check_gauges("shop", "cart");
            b.update(&[reading("health", Some(1.0), None)]);
            b
        };
        a.update(&[
            CheckReading {
                failing: true,
                ..reading("error_rate_prometheus", Some(0.05), Some(0.01))
            },
            reading("health", Some(1.0), None),
        ]);
        let text = encode(&registry);
        let web = r#"deployment="web",deployment_namespace="shop""#;
        assert!(
            text.contains(&format!(
                r#"deploy_watchdog_check_value{{check="error_rate_prometheus",{web}}} 0.05"#
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            r#"deploy_watchdog_check_threshold{{check="error_rate_prometheus",{web}}} 0.01"#
        )));
        assert!(text.contains(&format!(
            r#"deploy_watchdog_check_failing{{check="error_rate_prometheus",{web}}} 1"#
        )));
        // The provider stops answering: no value, so no series (not a stale one).
        a.update(&[
            reading("error_rate_prometheus", None, Some(0.01)),
            reading("health", Some(0.0), None),
        ]);
        let text = encode(&registry);
        assert!(!text.contains("error_rate_prometheus"), "{text}");
        assert!(text.contains(&format!(
            r#"deploy_watchdog_check_value{{check="health",{web}}} 0"#
        )));
        drop(a);
        let text = encode(&registry);
        assert!(!text.contains(r#"deployment="web""#), "{text}");
        assert!(text.contains(r#"deployment="cart""#), "{text}");
        drop(b);
        assert!(!encode(&registry).contains("deploy_watchdog_check_value{"));
    }

    #[test]
    fn known_label_sets_are_exported_at_zero_before_anything_happens() {
        let (registry, _m) = metrics();
        let text = encode(&registry);
        for line in [
            r#"deploy_watchdog_rollout_outcomes_total{outcome="rolled_back",reason="error_rate"} 0"#,
            r#"deploy_watchdog_pages_total{action="trigger",result="retried"} 0"#,
            r#"deploy_watchdog_notifications_total{result="dropped"} 0"#,
            r#"deploy_watchdog_gitops_paused_owners{kind="application"} 0"#,
            r#"deploy_watchdog_time_to_action_seconds_count{action="rollback"} 0"#,
            r#"deploy_watchdog_kube_api_errors_total{category="connection",method="PATCH"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }

    #[tokio::test]
    async fn the_client_layer_counts_failed_api_requests_by_method_and_category() {
        use tower::{Layer, Service, ServiceExt};
        let (registry, m) = metrics();
        let m = std::sync::Arc::new(m);
        let answer = tower::service_fn(|req: http::Request<()>| async move {
            match req.uri().path() {
                "/conflict" => Ok(http::Response::builder().status(409).body(()).unwrap()),
                "/ok" => Ok(http::Response::new(())),
                _ => Err(std::io::Error::other("connection refused")),
            }
        });
        let mut svc = m.api_error_layer().layer(answer);
        for (method, path) in [("PATCH", "/conflict"), ("GET", "/ok"), ("GET", "/down")] {
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            let _ = svc.ready().await.unwrap().call(req).await;
        }
        let text = encode(&registry);
        assert!(text.contains(
            r#"deploy_watchdog_kube_api_errors_total{category="conflict",method="PATCH"} 1"#
        ));
        assert!(text.contains(
            r#"deploy_watchdog_kube_api_errors_total{category="connection",method="GET"} 1"#
        ));
        let counted: usize = text
            .lines()
            .filter(|l| {
                l.starts_with("deploy_watchdog_kube_api_errors_total{") && l.ends_with(" 1")
            })
            .count();
        assert_eq!(counted, 2, "{text}");
    }

    #[test]
    fn registering_twice_into_one_registry_is_an_error_not_a_panic() {
        let (registry, _m) = metrics();
        assert!(Metrics::register(&registry).is_err());
    }
}

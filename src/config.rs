//! Typed configuration: one YAML file, overridable by `DEPLOY_WATCHDOG__SECTION__FIELD`
//! environment variables, every field with a default, validated once at start-up.
//!
//! Secrets never come from this file: see [`Secrets`].

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the watchdog may do when a release goes bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Roll back, page and notify.
    #[default]
    Enforce,
    /// Decide and tell, but never change the Deployment (`would_roll_back`).
    #[serde(alias = "dry-run", alias = "dryrun")]
    DryRun,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub mode: Mode,
    /// Names this cluster in pages and in PagerDuty dedup keys.
    pub cluster_name: String,
    pub watch: WatchConfig,
    pub judge: JudgeConfig,
    pub health: HealthConfig,
    pub smoke: Vec<SmokeCheck>,
    pub providers: ProvidersConfig,
    pub notify: NotifyConfig,
    pub secrets: SecretFiles,
    pub version: VersionConfig,
    pub peak_hours: PeakHoursConfig,
    pub annotations: AnnotationsConfig,
    pub leader_election: LeaderElectionConfig,
    pub server: ServerConfig,
    /// Deployments applied by Argo CD or Flux.
    pub gitops: crate::gitops::GitopsConfig,
}

/// The daemon's own HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub listen: std::net::SocketAddr,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 9464)),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Enforce,
            cluster_name: "default".into(),
            watch: WatchConfig::default(),
            judge: JudgeConfig::default(),
            health: HealthConfig::default(),
            smoke: Vec::new(),
            providers: ProvidersConfig::default(),
            notify: NotifyConfig::default(),
            secrets: SecretFiles::default(),
            version: VersionConfig::default(),
            peak_hours: PeakHoursConfig::default(),
            annotations: AnnotationsConfig::default(),
            leader_election: LeaderElectionConfig::default(),
            server: ServerConfig::default(),
            gitops: crate::gitops::GitopsConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// Label selector of opted-in Deployments.
    pub selector: String,
    /// How long a completed rollout is watched.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How often health, smoke checks and providers are sampled.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A rollout not complete this long after detection fails.
    #[serde(with = "humantime_serde")]
    pub rollout_timeout: Duration,
    /// A new pod Pending this long pages with the scheduler's reason.
    #[serde(with = "humantime_serde")]
    pub pending_timeout: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            namespaces: Vec::new(),
            selector: "deploy-watchdog.io/enabled=true".into(),
            window: Duration::from_secs(15 * 60),
            interval: Duration::from_secs(10),
            rollout_timeout: Duration::from_secs(10 * 60),
            pending_timeout: Duration::from_secs(2 * 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// Error ratio above which a sample fails.
    pub error_rate_threshold: f64,
    /// A sample with fewer requests is no evidence either way.
    pub min_requests: u64,
    /// Span of each error-rate sample.
    #[serde(with = "humantime_serde")]
    pub sample_window: Duration,
    /// Consecutive failures of a check before it rolls back.
    pub failures_before_rollback: NonZeroU32,
    /// Consecutive samples without data from any provider before paging "watchdog blind".
    pub inconclusive_limit: NonZeroU32,
    pub baseline: BaselineConfig,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            error_rate_threshold: 0.01,
            min_requests: 20,
            // Four scrapes at Prometheus' default 1 m interval: `increase()` has no value
            // with fewer than two samples in its range, and a late or missed scrape must
            // not leave a sample empty.
            sample_window: Duration::from_secs(4 * 60),
            failures_before_rollback: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            inconclusive_limit: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            baseline: BaselineConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// Compare against the error ratio before the rollout.
    pub enabled: bool,
    /// How far back the baseline looks from detection.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// A failing sample must also exceed `baseline × factor`.
    pub factor: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            enabled: false,
            lookback: Duration::from_secs(15 * 60),
            factor: 2.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub enabled: bool,
    /// `{name}` and `{namespace}` are the Deployment's.
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub expect_status: u16,
    /// JSON pointer to the reported version; empty skips the version rule.
    pub version_pointer: String,
    /// JSON pointer to the map of dependency checks; empty skips them.
    pub checks_pointer: String,
    /// The value every dependency check must have.
    pub ok_value: String,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            url: "http://{name}.{namespace}.svc.cluster.local/health".into(),
            timeout: Duration::from_secs(2),
            expect_status: 200,
            version_pointer: "/version".into(),
            checks_pointer: "/checks".into(),
            ok_value: "ok".into(),
        }
    }
}

/// One configured HTTP smoke check.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeCheck {
    pub name: String,
    /// `{name}` and `{namespace}` are the Deployment's.
    pub url: String,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    #[serde(default)]
    pub expect_body_contains: Option<String>,
    #[serde(default = "default_smoke_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_method() -> String {
    "GET".into()
}
fn default_status() -> u16 {
    200
}
fn default_smoke_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Error-rate providers; a provider named here is enabled.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvidersConfig {
    pub prometheus: Option<PrometheusConfig>,
    pub datadog: Option<DatadogConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    pub url: String,
    /// Request count over the sample; `{namespace}`, `{name}` and `{window}` are filled in.
    pub requests_query: String,
    /// Error count over the sample, same placeholders.
    pub errors_query: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often Prometheus scrapes the apps (its `scrape_interval`, or the ServiceMonitor's
    /// `interval`): a sample window under 4 of these is warned about.
    #[serde(with = "humantime_serde")]
    pub scrape_interval: Duration,
    /// One pair of queries per interval for every rollout watched at once.
    pub grouped: GroupedQueries,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: "http://prometheus-server.monitoring.svc.cluster.local".into(),
            requests_query:
                r#"sum(increase(http_requests_total{namespace="{namespace}",deployment="{name}"}[{window}]))"#
                    .into(),
            errors_query: r#"sum(increase(http_requests_total{namespace="{namespace}",deployment="{name}",code=~"5.."}[{window}]))"#
                .into(),
            timeout: Duration::from_secs(5),
            scrape_interval: Duration::from_secs(60),
            grouped: GroupedQueries::default(),
        }
    }
}

impl PrometheusConfig {
    /// The grouped queries, when they stand for the per-Deployment ones: on, and either the
    /// per-Deployment queries are the defaults or the grouped ones were written too. A user
    /// who changed only `requests_query`/`errors_query` gets exactly those, per Deployment.
    pub fn grouping(&self) -> Option<&GroupedQueries> {
        grouping_applies(self).then_some(&self.grouped)
    }
}

/// A provider with per-Deployment and grouped queries.
trait Grouping: Default {
    /// `grouped.enabled`.
    fn grouped_enabled(&self) -> bool;
    /// The per-Deployment requests and errors queries, then the grouped ones.
    fn all_queries(&self) -> [&str; 4];
}

/// The two providers' configs name their fields alike.
macro_rules! grouping {
    ($($provider:ty),*) => {$(
        impl Grouping for $provider {
            fn grouped_enabled(&self) -> bool {
                self.grouped.enabled
            }
            fn all_queries(&self) -> [&str; 4] {
                let g = &self.grouped;
                [&self.requests_query, &self.errors_query, &g.requests_query, &g.errors_query]
            }
        }
    )*};
}

grouping!(PrometheusConfig, DatadogConfig);

/// Whether grouped queries stand for the per-Deployment ones: on, and either the per-Deployment
/// queries are the defaults or the grouped ones were written too (a user who changed only the
/// per-Deployment queries meant exactly those).
fn grouping_applies<P: Grouping>(provider: &P) -> bool {
    let defaults = P::default();
    let (q, d) = (provider.all_queries(), defaults.all_queries());
    provider.grouped_enabled() && (q[..2] == d[..2] || q[2..] != d[2..])
}

/// Queries answering for many Deployments at once, one series per Deployment, told apart by
/// two labels. `{namespaces}` and `{names}` are filled with regular-expression alternations of
/// the watched rollouts' namespaces and names (`prod|staging`), `{window}` as in the
/// per-Deployment queries.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupedQueries {
    pub enabled: bool,
    pub requests_query: String,
    pub errors_query: String,
    /// The label naming a series' namespace.
    pub namespace_label: String,
    /// The label naming a series' Deployment.
    pub deployment_label: String,
}

impl Default for GroupedQueries {
    fn default() -> Self {
        GroupedQueries {
            enabled: true,
            requests_query: r#"sum by (namespace, deployment) (increase(http_requests_total{namespace=~"{namespaces}",deployment=~"{names}"}[{window}]))"#.into(),
            errors_query: r#"sum by (namespace, deployment) (increase(http_requests_total{namespace=~"{namespaces}",deployment=~"{names}",code=~"5.."}[{window}]))"#.into(),
            namespace_label: "namespace".into(),
            deployment_label: "deployment".into(),
        }
    }
}

/// The Datadog metrics query API (`POST /api/v2/query/timeseries`), by default on the APM trace
/// metrics of the Deployment's service. Trace metrics carry `env`, `service`, `version`,
/// `resource`, `http.status_code`, `http.status_class` and the Agent's host tags, not the tags of
/// the pod (`kube_namespace`, `kube_deployment`): the defaults filter on `service` and `env`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatadogConfig {
    /// The Datadog site: `datadoghq.com`, `us3.datadoghq.com`, `us5.datadoghq.com`,
    /// `datadoghq.eu`, `ap1.datadoghq.com`, `ap2.datadoghq.com`, `uk1.datadoghq.com`,
    /// `ddog-gov.com`, `us2.ddog-gov.com`, or another hostname; the API is `https://api.<site>`.
    pub site: String,
    /// Overrides the API base URL derived from `site` (a proxy, a test server).
    pub url: Option<String>,
    /// The APM operation of the trace metrics: `trace.<operation>.hits` and `.errors`.
    pub operation: String,
    /// The `service` tag of a Deployment's traces (its `DD_SERVICE`, or the
    /// `tags.datadoghq.com/service` label): `{name}` and `{namespace}` are the Deployment's.
    pub service: String,
    /// Adds `env:<env>` to the default queries' scope (`{env_filter}`): the `DD_ENV` of the
    /// watched apps.
    pub env: Option<String>,
    /// Request count over the sample; `{name}`, `{namespace}`, `{service_name}`, `{operation}` and
    /// `{env_filter}` (`,env:<env>` or nothing) are filled in. The points are summed.
    pub requests_query: String,
    /// Error count over the sample, same placeholders.
    pub errors_query: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long Datadog takes to make points queryable: the sample window ends this long
    /// before now, so its last points are complete.
    #[serde(with = "humantime_serde")]
    pub ingestion_delay: Duration,
    /// One request per interval for every rollout watched at once.
    pub grouped: DatadogGrouped,
}

/// Datadog queries answering for many Deployments at once, one series per Deployment, told
/// apart by their group tags. Datadog refuses the symbolic scope syntax (`,`, `!`) mixed with
/// `AND`/`OR`/`NOT`/`IN`, so these use the functional one throughout: `{services}`, `{names}`
/// and `{namespaces}` are filled with comma-separated lists (`a, b`) of the watched rollouts'
/// services (see [`DatadogConfig::service`]), names and namespaces, a value that is an operator
/// word (`in`, `not`, `and`, `or`) in double quotes; `{env_and}` with ` AND env:<env>` or
/// nothing, `{operation}` as in the per-Deployment queries.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatadogGrouped {
    pub enabled: bool,
    pub requests_query: String,
    pub errors_query: String,
    /// The group tag naming a series' namespace; empty: the series are told apart by
    /// `name_tag` alone.
    pub namespace_tag: String,
    /// The group tag naming a series' Deployment: `service` (its value as
    /// [`DatadogConfig::service`] makes it) or another tag holding the Deployment's name.
    pub name_tag: String,
}

impl Default for DatadogGrouped {
    fn default() -> Self {
        DatadogGrouped {
            enabled: true,
            requests_query: "sum:trace.{operation}.hits{service IN ({services}){env_and}} by {service}.as_count()".into(),
            errors_query: "sum:trace.{operation}.errors{service IN ({services}){env_and}} by {service}.as_count()".into(),
            namespace_tag: String::new(),
            name_tag: "service".into(),
        }
    }
}

impl Default for DatadogConfig {
    fn default() -> Self {
        DatadogConfig {
            site: "datadoghq.com".into(),
            url: None,
            operation: "http.request".into(),
            service: "{name}".into(),
            env: None,
            requests_query:
                "sum:trace.{operation}.hits{service:{service_name}{env_filter}}.as_count()".into(),
            errors_query:
                "sum:trace.{operation}.errors{service:{service_name}{env_filter}}.as_count()".into(),
            timeout: Duration::from_secs(5),
            ingestion_delay: Duration::from_secs(30),
            grouped: DatadogGrouped::default(),
        }
    }
}

/// The Datadog sites the API is known on (`api.<site>`).
pub const DATADOG_SITES: &[&str] = &[
    "datadoghq.com",
    "us3.datadoghq.com",
    "us5.datadoghq.com",
    "datadoghq.eu",
    "ap1.datadoghq.com",
    "ap2.datadoghq.com",
    "uk1.datadoghq.com",
    "ddog-gov.com",
    "us2.ddog-gov.com",
];

impl DatadogConfig {
    /// The grouped queries, when they stand for the per-Deployment ones (the rule of
    /// [`PrometheusConfig::grouping`]).
    pub fn grouping(&self) -> Option<&DatadogGrouped> {
        grouping_applies(self).then_some(&self.grouped)
    }

    /// The API base URL: `url` when given, else `https://api.<site>` (a leading `app.` of a
    /// site copied from the browser is dropped).
    pub fn base_url(&self) -> String {
        match &self.url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let site = self.site.trim().trim_end_matches('/');
                let site = site.strip_prefix("app.").unwrap_or(site);
                format!("https://api.{site}")
            }
        }
    }
}

fn site_ok(site: &str) -> Result<(), String> {
    let site = site.strip_prefix("app.").unwrap_or(site);
    if DATADOG_SITES.contains(&site) {
        return Ok(());
    }
    let labels: Vec<&str> = site.split('.').collect();
    let hostname = labels.len() >= 2
        && site.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if hostname {
        Ok(())
    } else {
        Err(format!(
            "{site:?} is not a Datadog site (one of {}, or a hostname)",
            DATADOG_SITES.join(", ")
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    pub pagerduty: PagerDutyConfig,
    pub slack: SlackConfig,
    /// In `enforce` mode, start even when neither PagerDuty nor Slack can be reached (no key,
    /// no webhook, or both disabled): rollbacks then tell nobody. Off: such a start is refused.
    pub allow_silent: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagerDutyConfig {
    /// Pages only when a routing key is given (environment or file).
    pub enabled: bool,
    /// Events API v2 base: `https://events.pagerduty.com` (US) or `https://events.eu.pagerduty.com`
    /// (EU), or the full URL (`…/v2/enqueue`).
    pub url: String,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for PagerDutyConfig {
    fn default() -> Self {
        PagerDutyConfig {
            enabled: true,
            url: "https://events.pagerduty.com".into(),
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// Posts only when a webhook URL is given (environment or file).
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            enabled: true,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Files that hold secrets (mounted Secrets, systemd credentials); each falls back to its
/// environment variable.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretFiles {
    pub pagerduty_routing_key_file: Option<PathBuf>,
    pub slack_webhook_url_file: Option<PathBuf>,
    pub datadog_api_key_file: Option<PathBuf>,
    pub datadog_app_key_file: Option<PathBuf>,
}

/// Where the deployed version comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    /// The main container's image tag; the label (`key`, on the pod template, else an
    /// annotation of the Deployment) only when the image has no tag. A label that disagrees
    /// with the image is stale (`kubectl set image` leaves it behind) and reported.
    PreferImage,
    /// A pod-template label (`key`), else the main container's image tag.
    Label,
    /// The main container's image tag.
    Image,
    /// A Deployment annotation (`key`).
    Annotation,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersionConfig {
    pub source: VersionSource,
    /// The label or annotation that holds the version.
    pub key: String,
    /// The container whose image is the deployed version; empty: the container named like the
    /// Deployment, else the first that is not a known sidecar (`istio-proxy`, …).
    pub container: String,
}

impl Default for VersionConfig {
    fn default() -> Self {
        VersionConfig {
            source: VersionSource::PreferImage,
            key: "app.kubernetes.io/version".into(),
            container: String::new(),
        }
    }
}

/// Deploy windows to avoid (the runbook's 9–11 am and 2–4 pm ET).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeakHoursConfig {
    /// IANA time zone the windows are in.
    pub time_zone: String,
    pub windows: Vec<PeakWindow>,
    /// Stricter policy for rollouts that start inside a window.
    pub failures_before_rollback: Option<NonZeroU32>,
}

impl Default for PeakHoursConfig {
    fn default() -> Self {
        PeakHoursConfig {
            time_zone: "UTC".into(),
            windows: Vec::new(),
            failures_before_rollback: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeakWindow {
    /// `mon` … `sun`; empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM`, local time in `time_zone`.
    pub start: String,
    /// `HH:MM`, after `start`.
    pub end: String,
}

/// Per-Deployment overrides through `deploy-watchdog.io/` annotations.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnotationsConfig {
    /// Honour overrides at all.
    pub enabled: bool,
    /// Hosts an annotation's URL may name: exact names or `*.suffix`. A name without dots (a
    /// Service in the Deployment's namespace) is always allowed; IP literals only when listed.
    pub allowed_hosts: Vec<String>,
}

impl Default for AnnotationsConfig {
    fn default() -> Self {
        AnnotationsConfig {
            enabled: true,
            allowed_hosts: vec!["*.svc".into(), "*.svc.cluster.local".into()],
        }
    }
}

/// Several replicas elect one leader on a Lease; only the leader acts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderElectionConfig {
    pub enabled: bool,
    /// The Lease's namespace; empty: `$POD_NAMESPACE`, else the service account's namespace.
    pub namespace: String,
    pub lease_name: String,
    /// This replica's name; empty: `$POD_NAME`, else the host name.
    pub identity: String,
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_period: Duration,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            enabled: false,
            namespace: String::new(),
            lease_name: "deploy-watchdog".into(),
            identity: String::new(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A config that cannot be used: names the field and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Load(String),
    #[error("config field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

const ENV_PREFIX: &str = "DEPLOY_WATCHDOG";

impl Config {
    /// Reads a YAML file, applies `DEPLOY_WATCHDOG__…` overrides from the environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_sources(&text, config::FileFormat::Yaml, true)
    }

    /// Parses config text (YAML) without environment overrides.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_sources(text, config::FileFormat::Yaml, false)
    }

    /// Merges a JSON object (a scenario's `config:`) over the defaults.
    pub fn from_json(value: &serde_json::Value) -> Result<Config, ConfigError> {
        Config::from_sources(&value.to_string(), config::FileFormat::Json, false)
    }

    fn from_sources(
        text: &str,
        format: config::FileFormat,
        env: bool,
    ) -> Result<Config, ConfigError> {
        if format == config::FileFormat::Yaml {
            // Environment overrides may repair what the file alone gets wrong.
            let overridden = env
                && std::env::vars_os()
                    .any(|(k, _)| k.to_string_lossy().starts_with("DEPLOY_WATCHDOG__"));
            strict_yaml(text, !overridden)?;
        }
        let mut builder = config::Config::builder();
        if !text.trim().is_empty() {
            builder = builder.add_source(config::File::from_str(text, format));
        }
        if env {
            builder = builder.add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("watch.namespaces")
                    .try_parsing(true),
            );
        }
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(merged).map_err(|e| {
            let field = e.path().to_string();
            ConfigError::Invalid {
                field,
                problem: e.into_inner().to_string(),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// What `check-config` can say about notifications from the file alone (secrets may come
    /// from the environment `run` is given): `Some` when `enforce` names no sink's secret file.
    pub fn silent_warning(&self) -> Option<String> {
        if self.mode != Mode::Enforce || self.notify.allow_silent {
            return None;
        }
        let named = (self.notify.pagerduty.enabled
            && self.secrets.pagerduty_routing_key_file.is_some())
            || (self.notify.slack.enabled && self.secrets.slack_webhook_url_file.is_some());
        (!named).then(|| {
            format!(
                "no PagerDuty or Slack secret file is named here: `run` starts only if its environment \
gives one ({ENV_PAGERDUTY_ROUTING_KEY}, {ENV_SLACK_WEBHOOK_URL}, or DEPLOY_WATCHDOG__SECRETS__* naming a file); \
otherwise it refuses: {SILENT_REFUSED}"
            )
        })
    }

    /// What is valid but likely to leave the watchdog blind, one sentence each: a window of
    /// Prometheus samples too short for its scrape interval (`increase()` needs two samples in
    /// its range; four leave room for a late or missed scrape).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(p) = &self.providers.prometheus else {
            return out;
        };
        let scrape = p.scrape_interval;
        let mut windows = vec![("judge.sample_window", self.judge.sample_window)];
        if self.judge.baseline.enabled {
            windows.push(("judge.baseline.lookback", self.judge.baseline.lookback));
        }
        for (field, window) in windows {
            let (w, s) = (crate::judge::human(window), crate::judge::human(scrape));
            if window < scrape * 2 {
                out.push(format!(
                    "{field} {w} holds fewer than two scrapes at providers.prometheus.scrape_interval {s}: increase() over it has no value and every Prometheus sample will be empty"
                ));
            } else if window < scrape * 4 {
                out.push(format!(
                    "{field} {w} is under 4 scrapes at providers.prometheus.scrape_interval {s}: a late or missed scrape leaves a Prometheus sample empty"
                ));
            }
        }
        out
    }

    /// Checks what types cannot: ranges, relations between fields, URL templates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, problem: String| ConfigError::Invalid {
            field: field.into(),
            problem,
        };
        let positive = |field: &str, d: Duration| {
            if d.is_zero() {
                Err(bad(field, "must be longer than 0s".into()))
            } else {
                Ok(())
            }
        };
        positive("watch.window", self.watch.window)?;
        positive("watch.interval", self.watch.interval)?;
        positive("watch.rollout_timeout", self.watch.rollout_timeout)?;
        positive("watch.pending_timeout", self.watch.pending_timeout)?;
        positive("judge.sample_window", self.judge.sample_window)?;
        positive("health.timeout", self.health.timeout)?;
        if self.watch.interval > self.watch.window {
            return Err(bad(
                "watch.interval",
                format!(
                    "{} is longer than watch.window ({}): the window would see no sample",
                    humantime::format_duration(self.watch.interval),
                    humantime::format_duration(self.watch.window)
                ),
            ));
        }
        let t = self.judge.error_rate_threshold;
        if !(t > 0.0 && t < 1.0) {
            return Err(bad(
                "judge.error_rate_threshold",
                format!("{t} is not a ratio between 0 and 1 (0.01 is 1 %)"),
            ));
        }
        if !(self.judge.baseline.factor.is_finite() && self.judge.baseline.factor >= 1.0) {
            return Err(bad(
                "judge.baseline.factor",
                format!("{} must be 1.0 or more", self.judge.baseline.factor),
            ));
        }
        if self.judge.baseline.enabled {
            positive("judge.baseline.lookback", self.judge.baseline.lookback)?;
        }
        labels_selector_ok(&self.watch.selector).map_err(|p| bad("watch.selector", p))?;
        for (i, ns) in self.watch.namespaces.iter().enumerate() {
            if !is_dns_label(ns) {
                return Err(bad(
                    &format!("watch.namespaces[{i}]"),
                    format!("{ns:?} is not a namespace name"),
                ));
            }
        }
        if self.cluster_name.trim().is_empty() {
            return Err(bad("cluster_name", "must not be empty".into()));
        }
        if self.health.enabled {
            url_template_ok(&self.health.url).map_err(|p| bad("health.url", p))?;
            status_ok(self.health.expect_status).map_err(|p| bad("health.expect_status", p))?;
            for (field, pointer) in [
                ("health.version_pointer", &self.health.version_pointer),
                ("health.checks_pointer", &self.health.checks_pointer),
            ] {
                if !pointer.is_empty() && !pointer.starts_with('/') {
                    return Err(bad(
                        field,
                        format!("{pointer:?} is not a JSON pointer (it starts with /)"),
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.smoke.iter().enumerate() {
            let field = |f: &str| format!("smoke[{i}].{f}");
            if s.name.trim().is_empty() {
                return Err(bad(&field("name"), "must not be empty".into()));
            }
            if !names.insert(&s.name) {
                return Err(bad(&field("name"), format!("{:?} is used twice", s.name)));
            }
            url_template_ok(&s.url).map_err(|p| bad(&field("url"), p))?;
            status_ok(s.expect_status).map_err(|p| bad(&field("expect_status"), p))?;
            if http::Method::from_bytes(s.method.as_bytes()).is_err() {
                return Err(bad(
                    &field("method"),
                    format!("{:?} is not an HTTP method", s.method),
                ));
            }
            positive(&field("timeout"), s.timeout)?;
        }
        if let Some(p) = &self.providers.prometheus {
            url_template_ok(&p.url).map_err(|e| bad("providers.prometheus.url", e))?;
            positive("providers.prometheus.timeout", p.timeout)?;
            positive("providers.prometheus.scrape_interval", p.scrape_interval)?;
            for (field, q) in [
                ("providers.prometheus.requests_query", &p.requests_query),
                ("providers.prometheus.errors_query", &p.errors_query),
            ] {
                if q.trim().is_empty() {
                    return Err(bad(field, "must not be empty".into()));
                }
            }
            if p.grouped.enabled {
                grouped_ok(
                    "providers.prometheus.grouped",
                    [&p.grouped.requests_query, &p.grouped.errors_query],
                    &[
                        ("namespace_label", &p.grouped.namespace_label),
                        ("deployment_label", &p.grouped.deployment_label),
                    ],
                )?;
            }
        }
        if let Some(d) = &self.providers.datadog {
            site_ok(&d.site).map_err(|e| bad("providers.datadog.site", e))?;
            if let Some(url) = &d.url {
                url_template_ok(url).map_err(|e| bad("providers.datadog.url", e))?;
            }
            positive("providers.datadog.timeout", d.timeout)?;
            let segment = |s: &str| {
                !s.is_empty()
                    && !s.starts_with('.')
                    && !s.ends_with('.')
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            };
            if !segment(&d.operation) {
                return Err(bad(
                    "providers.datadog.operation",
                    format!(
                        "{:?} is not an APM operation name (e.g. http.request, web.request)",
                        d.operation
                    ),
                ));
            }
            if let Some(env) = &d.env
                && (env.trim().is_empty() || env.contains([',', '{', '}', ' ']))
            {
                return Err(bad(
                    "providers.datadog.env",
                    format!("{env:?} is not a Datadog tag value"),
                ));
            }
            let service = fill(&d.service, "namespace", "name", &[]);
            if service.trim().is_empty()
                || service.contains([',', '{', '}', ' ', '(', ')', '"', '!'])
            {
                return Err(bad(
                    "providers.datadog.service",
                    format!(
                        "{:?} does not make a Datadog tag value of a Deployment's {{name}} and {{namespace}}",
                        d.service
                    ),
                ));
            }
            for (field, q) in [
                ("providers.datadog.requests_query", &d.requests_query),
                ("providers.datadog.errors_query", &d.errors_query),
            ] {
                if q.trim().is_empty() {
                    return Err(bad(field, "must not be empty".into()));
                }
            }
            if d.grouped.enabled {
                // An empty namespace tag tells the series apart by the name tag alone.
                grouped_ok(
                    "providers.datadog.grouped",
                    [&d.grouped.requests_query, &d.grouped.errors_query],
                    &[("name_tag", &d.grouped.name_tag)],
                )?;
            }
        }
        let le = &self.leader_election;
        if le.enabled {
            positive("leader_election.retry_period", le.retry_period)?;
            if le.renew_deadline >= le.lease_duration {
                return Err(bad(
                    "leader_election.renew_deadline",
                    "must be shorter than lease_duration: a leader must stop before another may start".into(),
                ));
            }
            if le.retry_period >= le.renew_deadline {
                return Err(bad(
                    "leader_election.retry_period",
                    "must be shorter than renew_deadline".into(),
                ));
            }
        }
        crate::peak::PeakHours::from_config(&self.peak_hours).map_err(|(f, p)| bad(&f, p))?;
        if self.version.key.trim().is_empty() && self.version.source != VersionSource::Image {
            return Err(bad("version.key", "must name a label or annotation".into()));
        }
        crate::notify::pagerduty::endpoint(&self.notify.pagerduty.url)
            .map_err(|p| bad("notify.pagerduty.url", p))?;
        Ok(())
    }
}

/// Reads the file's own YAML with exact types before the `config` crate merges it: that crate
/// coerces (`min_requests: 1.5` becomes 1, `enabled: 2` becomes true) and reports some type
/// errors without the field's path.
fn strict_yaml(text: &str, validate: bool) -> Result<(), ConfigError> {
    let value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| ConfigError::Load(e.to_string()))?;
    if value.is_null() {
        return Ok(());
    }
    let config: Config =
        serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Invalid {
            field: e.path().to_string(),
            problem: e.into_inner().to_string(),
        })?;
    // Values the `config` crate cannot carry (`.nan`, `.inf`) are refused here, by field.
    if validate { config.validate() } else { Ok(()) }
}

/// Fills `{name}`, `{namespace}` (and any `extra` pairs) into a template.
pub fn fill(template: &str, namespace: &str, name: &str, extra: &[(&str, &str)]) -> String {
    let mut out = template
        .replace("{namespace}", namespace)
        .replace("{name}", name);
    for (k, v) in extra {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Checks a provider's grouped settings under `prefix`: the two queries and the two names
/// telling series apart must not be empty, and the queries answer for every watched rollout
/// at once, so they cannot name one.
fn grouped_ok(prefix: &str, queries: [&str; 2], tags: &[(&str, &str)]) -> Result<(), ConfigError> {
    let bad = |field: &str, problem: &str| ConfigError::Invalid {
        field: format!("{prefix}.{field}"),
        problem: problem.into(),
    };
    let queries = [("requests_query", queries[0]), ("errors_query", queries[1])];
    for (field, value) in queries.iter().chain(tags) {
        if value.trim().is_empty() {
            return Err(bad(
                field,
                "must not be empty (or set grouped.enabled: false)",
            ));
        }
    }
    for (field, q) in queries {
        if q.contains("{name}") || q.contains("{namespace}") || q.contains("{service_name}") {
            return Err(bad(
                field,
                "answers for every watched rollout at once: use {names} and {namespaces} (Datadog: {services}), not {name}, {namespace} or {service_name}",
            ));
        }
    }
    Ok(())
}

fn url_template_ok(template: &str) -> Result<(), String> {
    let sample = fill(template, "namespace", "name", &[]);
    let url = url::Url::parse(&sample).map_err(|e| format!("{template:?} is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(format!(
            "{template:?}: scheme {other:?} is not http or https"
        )),
    }
}

fn status_ok(status: u16) -> Result<(), String> {
    if (100..=599).contains(&status) {
        Ok(())
    } else {
        Err(format!("{status} is not an HTTP status"))
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn labels_selector_ok(selector: &str) -> Result<(), String> {
    if selector.trim().is_empty() {
        return Err("must not be empty: an empty selector would opt in every Deployment".into());
    }
    for term in selector.split(',') {
        let term = term.trim();
        let key = term.split(['=', '!', ' ']).next().unwrap_or_default();
        if key.is_empty() {
            return Err(format!("{term:?} is not a label selector term"));
        }
    }
    Ok(())
}

/// Secrets, from files named in the config or from the environment; never logged.
#[derive(Clone, Default)]
pub struct Secrets {
    pub pagerduty_routing_key: Option<String>,
    pub slack_webhook_url: Option<String>,
    /// `DD-API-KEY` of the Datadog provider.
    pub datadog_api_key: Option<String>,
    /// `DD-APPLICATION-KEY` of the Datadog provider.
    pub datadog_app_key: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |s: &Option<String>| if s.is_some() { "<redacted>" } else { "<none>" };
        f.debug_struct("Secrets")
            .field("pagerduty_routing_key", &shown(&self.pagerduty_routing_key))
            .field("slack_webhook_url", &shown(&self.slack_webhook_url))
            .field("datadog_api_key", &shown(&self.datadog_api_key))
            .field("datadog_app_key", &shown(&self.datadog_app_key))
            .finish()
    }
}

/// Why `run` refuses an `enforce` config with no notification sink.
pub const SILENT_REFUSED: &str = "mode is enforce but no notification sink is configured, so a rollback would tell nobody. \
Configure PagerDuty (a routing key in DEPLOY_WATCHDOG_PAGERDUTY_ROUTING_KEY or in the file \
secrets.pagerduty_routing_key_file names, with notify.pagerduty.enabled: true) or Slack (a webhook \
URL in DEPLOY_WATCHDOG_SLACK_WEBHOOK_URL or in the file secrets.slack_webhook_url_file names, with \
notify.slack.enabled: true); or set notify.allow_silent: true to accept it, or mode: dry_run";

/// One notification sink's state at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkState {
    pub name: &'static str,
    pub on: bool,
    pub detail: String,
}

/// Environment variables of the secrets.
pub const ENV_PAGERDUTY_ROUTING_KEY: &str = "DEPLOY_WATCHDOG_PAGERDUTY_ROUTING_KEY";
pub const ENV_SLACK_WEBHOOK_URL: &str = "DEPLOY_WATCHDOG_SLACK_WEBHOOK_URL";
/// Datadog's own names for its keys, as its agent and API clients read them.
pub const ENV_DATADOG_API_KEY: &str = "DD_API_KEY";
pub const ENV_DATADOG_APP_KEY: &str = "DD_APP_KEY";
/// Also accepted for the application key when `DD_APP_KEY` is unset.
pub const ENV_DATADOG_APPLICATION_KEY: &str = "DD_APPLICATION_KEY";

impl Secrets {
    /// Reads each secret from its file when one is configured, else from its environment variable.
    pub fn load(files: &SecretFiles) -> Result<Secrets, ConfigError> {
        let read = |file: &Option<PathBuf>,
                    env: &str,
                    field: &str|
         -> Result<Option<String>, ConfigError> {
            match file {
                // An absent file is an unset secret (an optional key of a mounted Secret, an
                // optional credential): the sinks' states are logged at start-up, and a sink or
                // provider that needs it is refused by `check`.
                Some(path) if !path.exists() => Ok(None),
                Some(path) => std::fs::read_to_string(path)
                    .map(|s| Some(s.trim().to_string()).filter(|s| !s.is_empty()))
                    .map_err(|e| ConfigError::Invalid {
                        field: format!("secrets.{field}"),
                        problem: format!("cannot read {}: {e}", path.display()),
                    }),
                None => Ok(std::env::var(env)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())),
            }
        };
        let secrets = Secrets {
            pagerduty_routing_key: read(
                &files.pagerduty_routing_key_file,
                ENV_PAGERDUTY_ROUTING_KEY,
                "pagerduty_routing_key_file",
            )?,
            slack_webhook_url: read(
                &files.slack_webhook_url_file,
                ENV_SLACK_WEBHOOK_URL,
                "slack_webhook_url_file",
            )?,
            datadog_api_key: read(
                &files.datadog_api_key_file,
                ENV_DATADOG_API_KEY,
                "datadog_api_key_file",
            )?,
            datadog_app_key: match read(
                &files.datadog_app_key_file,
                ENV_DATADOG_APP_KEY,
                "datadog_app_key_file",
            )? {
                Some(key) => Some(key),
                None if files.datadog_app_key_file.is_none() => {
                    read(&None, ENV_DATADOG_APPLICATION_KEY, "datadog_app_key_file")?
                }
                None => None,
            },
        };
        if let Some(url) = &secrets.slack_webhook_url
            && url::Url::parse(url).is_err()
        {
            // The value itself is a secret: name where it came from, never what it is.
            return Err(ConfigError::Invalid {
                field: "secrets.slack_webhook_url_file".into(),
                problem: format!(
                    "the Slack webhook URL (from the file or {ENV_SLACK_WEBHOOK_URL}) is not a URL"
                ),
            });
        }
        Ok(secrets)
    }

    /// Loads the secrets `config` names and checks that every enabled provider has its keys.
    pub fn load_for(config: &Config) -> Result<Secrets, ConfigError> {
        let secrets = Secrets::load(&config.secrets)?;
        secrets.check(config)?;
        Ok(secrets)
    }

    /// The notification sinks' states, one line each, as logged at start-up: `on`, `disabled`
    /// (by the config) or `off` with what is missing. Never shows a secret.
    pub fn sink_states(&self, config: &Config) -> [SinkState; 2] {
        let state = |name: &'static str,
                     enabled: bool,
                     secret: &Option<String>,
                     what: &str,
                     file: &Option<PathBuf>,
                     env: &str| {
            let (on, detail) = match (enabled, secret) {
                (true, Some(_)) => (true, "on".to_string()),
                (false, _) => (false, format!("disabled (notify.{name}.enabled: false)")),
                (true, None) => (
                    false,
                    match file {
                        Some(path) => {
                            format!("off: no {what} ({} is absent or empty)", path.display())
                        }
                        None => format!("off: no {what} ({env} is unset and no file is named)"),
                    },
                ),
            };
            SinkState { name, on, detail }
        };
        [
            state(
                "pagerduty",
                config.notify.pagerduty.enabled,
                &self.pagerduty_routing_key,
                "routing key",
                &config.secrets.pagerduty_routing_key_file,
                ENV_PAGERDUTY_ROUTING_KEY,
            ),
            state(
                "slack",
                config.notify.slack.enabled,
                &self.slack_webhook_url,
                "webhook URL",
                &config.secrets.slack_webhook_url_file,
                ENV_SLACK_WEBHOOK_URL,
            ),
        ]
    }

    /// A provider that cannot authenticate is a config error, not a blind watchdog; a watchdog
    /// that would roll back telling nobody is one too, unless the config accepts it; so is a
    /// routing key PagerDuty would refuse every page of.
    pub fn check(&self, config: &Config) -> Result<(), ConfigError> {
        if config.notify.pagerduty.enabled
            && let Some(key) = &self.pagerduty_routing_key
            && !crate::notify::pagerduty::routing_key_ok(key)
        {
            // The value itself is a secret: name where it came from, never what it is.
            return Err(ConfigError::Invalid {
                field: "secrets.pagerduty_routing_key_file".into(),
                problem: format!(
                    "the PagerDuty routing key (from the file or {ENV_PAGERDUTY_ROUTING_KEY}) is not an Events API v2 integration key: those are 32 letters and digits (a service's Integration Key, not a REST API key)"
                ),
            });
        }
        if config.providers.datadog.is_some() {
            for (secret, field, file, env) in [
                (
                    &self.datadog_api_key,
                    "secrets.datadog_api_key_file",
                    &config.secrets.datadog_api_key_file,
                    ENV_DATADOG_API_KEY,
                ),
                (
                    &self.datadog_app_key,
                    "secrets.datadog_app_key_file",
                    &config.secrets.datadog_app_key_file,
                    ENV_DATADOG_APP_KEY,
                ),
            ] {
                if secret.is_none() {
                    let problem = match file {
                        Some(path) => format!(
                            "providers.datadog is enabled but its key is missing: {} is absent or empty",
                            path.display()
                        ),
                        None => format!(
                            "providers.datadog is enabled but its key is missing: set {env} or name a file here"
                        ),
                    };
                    return Err(ConfigError::Invalid {
                        field: field.into(),
                        problem,
                    });
                }
            }
        }
        if config.mode == Mode::Enforce
            && !config.notify.allow_silent
            && !self.sink_states(config).iter().any(|s| s.on)
        {
            return Err(ConfigError::Invalid {
                field: "notify".into(),
                problem: SILENT_REFUSED.into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let c = Config::from_yaml("").expect("defaults are valid");
        assert_eq!(c, Config::default());
        assert_eq!(c.watch.window, Duration::from_secs(900));
        assert_eq!(c.judge.error_rate_threshold, 0.01);
        assert_eq!(c.judge.failures_before_rollback.get(), 3);
    }

    #[test]
    fn scenario_style_config_merges_over_defaults() {
        let c = Config::from_yaml(
            "mode: dry_run\nwatch: {window: 4s, interval: 100ms}\njudge: {baseline: {enabled: true, lookback: 1s}}\n",
        )
        .expect("valid");
        assert_eq!(c.mode, Mode::DryRun);
        assert_eq!(c.watch.window, Duration::from_secs(4));
        assert_eq!(c.watch.interval, Duration::from_millis(100));
        assert_eq!(c.watch.rollout_timeout, Duration::from_secs(600));
        assert!(c.judge.baseline.enabled);
        assert_eq!(c.judge.baseline.factor, 2.0);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            ("watch: {window: soon}", "watch.window"),
            ("watch: {windw: 4s}", "watch"),
            (
                "judge: {error_rate_threshold: 5}",
                "judge.error_rate_threshold",
            ),
            (
                "judge: {failures_before_rollback: 0}",
                "judge.failures_before_rollback",
            ),
            ("judge: {min_requests: -1}", "judge.min_requests"),
            ("mode: yolo", "mode"),
            ("watch: {interval: 1h, window: 1m}", "watch.interval"),
            ("health: {url: 'not a url'}", "health.url"),
            ("smoke: [{name: home, url: 'ftp://x/'}]", "smoke[0].url"),
            (
                "smoke: [{name: a, url: 'http://x/'}, {name: a, url: 'http://y/'}]",
                "smoke[1].name",
            ),
            ("watch: {namespaces: [Prod]}", "watch.namespaces[0]"),
            ("judge: {baseline: {factor: 0.5}}", "judge.baseline.factor"),
            ("providers: {graphite: {}}", "providers"),
            ("server: {listen: 'localhost'}", "server.listen"),
            ("server: {port: 9464}", "server"),
        ];
        for (yaml, field) in cases {
            let err = Config::from_yaml(yaml).expect_err(yaml).to_string();
            assert!(err.contains(field), "{yaml}: {err:?} should name {field}");
        }
    }

    #[test]
    fn a_window_under_four_scrapes_is_warned_about() {
        let warnings = |yaml: &str| Config::from_yaml(yaml).expect("valid").warnings();
        // The defaults: a 4m window over a 1m scrape.
        assert!(warnings("providers: {prometheus: {}}").is_empty());
        assert!(
            warnings("judge: {sample_window: 1m}").is_empty(),
            "no Prometheus"
        );
        let w = warnings("judge: {sample_window: 1m}\nproviders: {prometheus: {}}");
        assert!(
            w.len() == 1 && w[0].contains("judge.sample_window 1m holds fewer than two scrapes"),
            "{w:?}"
        );
        let w = warnings("judge: {sample_window: 2m}\nproviders: {prometheus: {}}");
        assert!(w.len() == 1 && w[0].contains("is under 4 scrapes"), "{w:?}");
        let w = warnings(
            "judge: {sample_window: 1m, baseline: {enabled: true, lookback: 30s}}\nproviders: {prometheus: {scrape_interval: 15s}}",
        );
        assert!(
            w.len() == 1 && w[0].starts_with("judge.baseline.lookback 30s"),
            "{w:?}"
        );
    }

    #[test]
    fn naming_a_provider_enables_it_with_its_defaults() {
        let c = Config::from_yaml("providers: {datadog: {}}").expect("valid");
        assert_eq!(c.providers.datadog, Some(DatadogConfig::default()));
        assert_eq!(c.providers.prometheus, None);
        let c = Config::from_yaml("providers: {prometheus: {}, datadog: {}}").expect("valid");
        assert!(c.providers.prometheus.is_some() && c.providers.datadog.is_some());
    }

    #[test]
    fn datadog_grouping_stands_for_the_per_deployment_queries_only_when_it_asks_the_same() {
        let d = |yaml: &str| {
            Config::from_yaml(yaml)
                .expect("valid")
                .providers
                .datadog
                .expect("datadog")
        };
        let defaults = d("providers: {datadog: {}}");
        assert_eq!(defaults.grouping(), Some(&DatadogGrouped::default()));
        assert_eq!(
            d("providers: {datadog: {grouped: {enabled: false}}}").grouping(),
            None
        );
        // Only the per-Deployment queries changed: the grouped defaults no longer ask the same.
        let own = "requests_query: 'sum:my.hits{service:{name}}.as_count()'";
        assert_eq!(
            d(&format!("providers: {{datadog: {{{own}}}}}")).grouping(),
            None
        );
        let both = d(&format!(
            "providers: {{datadog: {{{own}, grouped: {{requests_query: 'sum:my.hits{{service IN ({{names}})}} by {{kube_namespace,service}}.as_count()'}}}}}}"
        ));
        assert!(
            both.grouping()
                .is_some_and(|g| g.requests_query.starts_with("sum:my.hits"))
        );
        // Off, its queries are not checked.
        assert!(
            Config::from_yaml(
                "providers: {datadog: {grouped: {enabled: false, requests_query: ''}}}"
            )
            .is_ok()
        );
    }

    #[test]
    fn datadog_settings_good_and_bad() {
        let good = [
            ("providers: {datadog: {}}", "https://api.datadoghq.com"),
            (
                "providers: {datadog: {site: datadoghq.eu}}",
                "https://api.datadoghq.eu",
            ),
            (
                "providers: {datadog: {site: us5.datadoghq.com}}",
                "https://api.us5.datadoghq.com",
            ),
            (
                "providers: {datadog: {site: ap2.datadoghq.com}}",
                "https://api.ap2.datadoghq.com",
            ),
            (
                "providers: {datadog: {site: app.ddog-gov.com}}",
                "https://api.ddog-gov.com",
            ),
            (
                "providers: {datadog: {site: datadog.internal.example}}",
                "https://api.datadog.internal.example",
            ),
            (
                "providers: {datadog: {url: 'http://127.0.0.1:8126/', operation: web.request, env: prod, timeout: 2s}}",
                "http://127.0.0.1:8126",
            ),
        ];
        for (yaml, base) in good {
            let c = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            let d = c.providers.datadog.expect("enabled");
            assert_eq!(d.base_url(), base, "{yaml}");
        }
        let bad = [
            (
                "providers: {datadog: {site: 'not a site'}}",
                "providers.datadog.site",
            ),
            (
                "providers: {datadog: {site: localhost}}",
                "providers.datadog.site",
            ),
            (
                "providers: {datadog: {site: 'https://api.datadoghq.com'}}",
                "providers.datadog.site",
            ),
            (
                "providers: {datadog: {url: 'ftp://x'}}",
                "providers.datadog.url",
            ),
            (
                "providers: {datadog: {operation: 'http request'}}",
                "providers.datadog.operation",
            ),
            (
                "providers: {datadog: {operation: ''}}",
                "providers.datadog.operation",
            ),
            (
                "providers: {datadog: {env: 'a,b'}}",
                "providers.datadog.env",
            ),
            (
                "providers: {datadog: {timeout: 0s}}",
                "providers.datadog.timeout",
            ),
            (
                "providers: {datadog: {errors_query: ' '}}",
                "providers.datadog.errors_query",
            ),
            ("providers: {datadog: {api_key: abc}}", "providers.datadog"),
        ];
        for (yaml, field) in bad {
            let err = Config::from_yaml(yaml).expect_err(yaml).to_string();
            assert!(err.contains(field), "{yaml}: {err:?} should name {field}");
        }
    }

    /// A routing key of PagerDuty's form: 32 letters and digits.
    const ROUTING_KEY: &str = "R0UTING0KEY0OF0THIRTY0TWO0CHARS0";

    #[test]
    fn datadog_without_keys_is_a_config_error_naming_the_secret() {
        let c = Config::from_yaml("providers: {datadog: {}}").expect("valid");
        let none = Secrets::default();
        let err = none.check(&c).expect_err("no keys").to_string();
        assert!(err.contains("secrets.datadog_api_key_file") && err.contains("DD_API_KEY"));
        let api_only = Secrets {
            datadog_api_key: Some("k".into()),
            ..Secrets::default()
        };
        let err = api_only.check(&c).expect_err("no app key").to_string();
        assert!(err.contains("secrets.datadog_app_key_file") && err.contains("DD_APP_KEY"));
        let both = Secrets {
            datadog_api_key: Some("k".into()),
            datadog_app_key: Some("a".into()),
            pagerduty_routing_key: Some(ROUTING_KEY.into()),
            ..Secrets::default()
        };
        assert!(both.check(&c).is_ok());
        let dry_run = Config::from_yaml("mode: dry_run").expect("valid");
        assert!(none.check(&dry_run).is_ok());
    }

    #[test]
    fn enforce_without_any_notification_sink_is_refused_unless_allowed() {
        let enforce = Config::default();
        let err = Secrets::default()
            .check(&enforce)
            .expect_err("silent enforce")
            .to_string();
        for needle in [
            "config field `notify`",
            "PagerDuty",
            "DEPLOY_WATCHDOG_PAGERDUTY_ROUTING_KEY",
            "secrets.pagerduty_routing_key_file",
            "Slack",
            "DEPLOY_WATCHDOG_SLACK_WEBHOOK_URL",
            "secrets.slack_webhook_url_file",
            "notify.allow_silent: true",
        ] {
            assert!(err.contains(needle), "{err} does not name {needle}");
        }
        // A key for a sink the config disables is no sink either.
        let disabled =
            Config::from_yaml("notify: {pagerduty: {enabled: false}, slack: {enabled: false}}")
                .expect("valid");
        let keys = Secrets {
            pagerduty_routing_key: Some(ROUTING_KEY.into()),
            slack_webhook_url: Some("https://hooks.example/x".into()),
            ..Secrets::default()
        };
        assert!(keys.check(&disabled).is_err());
        assert!(keys.check(&enforce).is_ok());
        for one in [
            Secrets {
                pagerduty_routing_key: Some(ROUTING_KEY.into()),
                ..Secrets::default()
            },
            Secrets {
                slack_webhook_url: Some("https://hooks.example/x".into()),
                ..Secrets::default()
            },
        ] {
            assert!(one.check(&enforce).is_ok(), "{one:?}");
        }
        let allowed = Config::from_yaml("notify: {allow_silent: true}").expect("valid");
        assert!(Secrets::default().check(&allowed).is_ok());
        let dry_run = Config::from_yaml("mode: dry_run").expect("valid");
        assert!(Secrets::default().check(&dry_run).is_ok());
    }

    #[test]
    fn sink_states_say_what_is_missing_and_never_the_secret() {
        let c = Config::from_yaml(
            "notify: {slack: {enabled: false}}\nsecrets: {pagerduty_routing_key_file: /nonexistent/pd-key}",
        )
        .expect("valid");
        let secrets = Secrets::load(&c.secrets).expect("an absent file is an unset secret");
        assert!(secrets.pagerduty_routing_key.is_none());
        let [pd, slack] = secrets.sink_states(&c);
        assert!(
            !pd.on && pd.detail.contains("/nonexistent/pd-key"),
            "{pd:?}"
        );
        assert!(!slack.on && slack.detail.contains("disabled"), "{slack:?}");
        let on = Secrets {
            pagerduty_routing_key: Some("SECRET-KEY".into()),
            ..Secrets::default()
        };
        let [pd, _] = on.sink_states(&c);
        assert!(pd.on && pd.detail == "on", "{pd:?}");
    }

    #[test]
    fn check_config_warns_when_the_file_names_no_sink() {
        let warning = Config::default().silent_warning().expect("a warning");
        assert!(warning.contains("PagerDuty") && warning.contains("notify.allow_silent"));
        for quiet in [
            "mode: dry_run",
            "notify: {allow_silent: true}",
            "secrets: {slack_webhook_url_file: /run/secrets/slack}",
            "secrets: {pagerduty_routing_key_file: /run/secrets/pd}",
        ] {
            let c = Config::from_yaml(quiet).expect(quiet);
            assert_eq!(c.silent_warning(), None, "{quiet}");
        }
        let disabled = Config::from_yaml(
            "notify: {pagerduty: {enabled: false}}\nsecrets: {pagerduty_routing_key_file: /run/secrets/pd}",
        )
        .expect("valid");
        assert!(disabled.silent_warning().is_some());
    }

    #[test]
    fn datadog_keys_come_from_their_files() {
        let dir = std::env::temp_dir().join(format!("dw-dd-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (api, app) = (dir.join("api"), dir.join("app"));
        std::fs::write(&api, "APIKEY\n").expect("write");
        std::fs::write(&app, "APPKEY").expect("write");
        let files = SecretFiles {
            datadog_api_key_file: Some(api),
            datadog_app_key_file: Some(app),
            ..SecretFiles::default()
        };
        let s = Secrets::load(&files).expect("readable");
        assert_eq!(s.datadog_api_key.as_deref(), Some("APIKEY"));
        assert_eq!(s.datadog_app_key.as_deref(), Some("APPKEY"));
        let missing = SecretFiles {
            datadog_api_key_file: Some(dir.join("nope")),
            ..SecretFiles::default()
        };
        // An absent file is an unset key: a provider that needs it is refused, naming the file.
        let absent = Secrets::load(&missing).expect("an absent file is an unset key");
        assert!(absent.datadog_api_key.is_none());
        let mut config = Config::from_yaml("providers: {datadog: {}}").expect("valid");
        config.secrets = missing;
        let err = Secrets::load_for(&config)
            .expect_err("missing key")
            .to_string();
        assert!(
            err.contains("secrets.datadog_api_key_file") && err.contains("nope"),
            "{err}"
        );
        // A file that cannot be read is an error, not an unset key.
        let unreadable = SecretFiles {
            datadog_api_key_file: Some(dir.clone()),
            ..SecretFiles::default()
        };
        let err = Secrets::load(&unreadable)
            .expect_err("a directory")
            .to_string();
        assert!(err.contains("secrets.datadog_api_key_file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fill_replaces_placeholders() {
        assert_eq!(
            fill(
                "http://{name}.{namespace}.svc/{x}",
                "prod",
                "app",
                &[("x", "health")]
            ),
            "http://app.prod.svc/health"
        );
    }

    #[test]
    fn a_routing_key_pagerduty_would_refuse_stops_start_up_without_showing_it() {
        let with = |key: &str| Secrets {
            pagerduty_routing_key: Some(key.into()),
            ..Secrets::default()
        };
        let config = Config::default();
        for key in ["u+REST0API0KEY000000", "R0UTING0KEY0SIMULATED0000000000"] {
            let err = with(key).check(&config).expect_err("refused").to_string();
            assert!(err.contains("secrets.pagerduty_routing_key_file"), "{err}");
            assert!(!err.contains(key), "{err}");
        }
        assert!(
            with("0123456789abcdef0123456789abcdef")
                .check(&config)
                .is_ok()
        );
        let mut off = Config::default();
        off.notify.pagerduty.enabled = false;
        off.notify.allow_silent = true;
        assert!(with("short").check(&off).is_ok(), "not paging: not checked");
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let s = Secrets {
            pagerduty_routing_key: Some("R0UT1NGKEY".into()),
            slack_webhook_url: None,
            datadog_api_key: Some("DDAPIKEY0123".into()),
            datadog_app_key: Some("DDAPPKEY0123".into()),
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("R0UT1NGKEY"));
        assert!(!shown.contains("DDAPIKEY0123") && !shown.contains("DDAPPKEY0123"));
        assert!(shown.contains("<redacted>"));
    }
}

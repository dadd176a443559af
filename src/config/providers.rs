//! Error-rate providers: Prometheus and Datadog.

use super::duration::{Delay, Period, Timeout};

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::values::UrlTemplate;

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
    pub url: UrlTemplate,
    /// Request count over the sample; `{namespace}`, `{name}` and `{window}` are filled in.
    pub requests_query: String,
    /// Error count over the sample, same placeholders.
    pub errors_query: String,
    pub timeout: Timeout,
    /// How often Prometheus scrapes the apps (its `scrape_interval`, or the ServiceMonitor's
    /// `interval`): a sample window under 4 of these is warned about.
    pub scrape_interval: Period,
    /// One pair of queries per interval for every rollout watched at once.
    pub grouped: GroupedQueries,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            url: UrlTemplate::known("http://prometheus-server.monitoring.svc.cluster.local"),
            requests_query:
                r#"sum(increase(http_requests_total{namespace="{namespace}",deployment="{name}"}[{window}]))"#
                    .into(),
            errors_query: r#"sum(increase(http_requests_total{namespace="{namespace}",deployment="{name}",code=~"5.."}[{window}]))"#
                .into(),
            timeout: const { Timeout::from_secs(5) },
            scrape_interval: const { Period::from_secs(60) },
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
    pub url: Option<UrlTemplate>,
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
    pub timeout: Timeout,
    /// How long Datadog takes to make points queryable: the sample window ends this long
    /// before now, so its last points are complete.
    pub ingestion_delay: Delay,
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
            timeout: const { Timeout::from_secs(5) },
            ingestion_delay: const { Delay::from_secs(30) },
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

pub(super) fn site_ok(site: &str) -> Result<(), String> {
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

/// Checks a provider's grouped settings under `prefix`: the two queries and the two names
/// telling series apart must not be empty, and the queries answer for every watched rollout
/// at once, so they cannot name one.
pub(super) fn grouped_ok(
    prefix: &str,
    queries: [&str; 2],
    tags: &[(&str, &str)],
) -> Result<(), ConfigError> {
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

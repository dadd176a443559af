//! Typed configuration: one YAML file, overridable by `DEPLOY_WATCHDOG__SECTION__FIELD`
//! environment variables, every field with a default, validated once at start-up.
//!
//! Secrets never come from this file: see [`Secrets`].

mod checks;
mod cluster;
mod duration;
mod env;
mod notify;
mod policy;
mod providers;
mod secrets;
#[cfg(test)]
mod tests;
mod validate;
mod values;

pub use checks::{HealthConfig, SmokeCheck};
pub use cluster::{
    AnnotationsConfig, LeaderElectionConfig, ServerConfig, VersionConfig, VersionSource,
};
pub use duration::{
    Bounded, Delay, DurationLimit, LeaseSpan, Lookback, Period, RolloutSpan, SampleSpan, Timeout,
    deadline,
};
pub use notify::{NotifyConfig, PagerDutyConfig, SlackConfig};
pub use policy::{BaselineConfig, JudgeConfig, PeakHoursConfig, PeakWindow, WatchConfig};
pub use providers::{
    DATADOG_SITES, DatadogConfig, DatadogGrouped, GroupedQueries, PrometheusConfig, ProvidersConfig,
};
pub use secrets::{
    ENV_DATADOG_API_KEY, ENV_DATADOG_APP_KEY, ENV_DATADOG_APPLICATION_KEY,
    ENV_PAGERDUTY_ROUTING_KEY, ENV_SLACK_WEBHOOK_URL, SILENT_REFUSED, SecretFiles, Secrets,
    SinkState,
};
pub use values::{HttpMethod, HttpStatus, UrlTemplate, fill};

use std::path::Path;

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

impl Config {
    /// Reads a YAML file, applies `DEPLOY_WATCHDOG__…` overrides from the environment, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        // A variable that is not Unicode cannot name a field or hold a value: it is no override.
        Config::from_text(
            &text,
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Parses config text (YAML) without environment overrides.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        Config::from_text(text, std::iter::empty())
    }

    /// Parses the YAML once, lays the environment's overrides over it, and reads it with exact
    /// types (`min_requests: 1.5` is an error, not 1), naming the field of any error.
    fn from_text(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut value: serde_norway::Value =
            serde_norway::from_str(text).map_err(|e| ConfigError::Load(e.to_string()))?;
        env::overlay(&mut value, env)?;
        if value.is_null() {
            value = serde_norway::Value::Mapping(serde_norway::Mapping::new());
        }
        let config: Config =
            serde_path_to_error::deserialize(value).map_err(|e| ConfigError::Invalid {
                field: e.path().to_string(),
                problem: e.into_inner().to_string(),
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
        let scrape = p.scrape_interval.get();
        let mut windows = vec![("judge.sample_window", self.judge.sample_window.get())];
        if self.judge.baseline.enabled {
            windows.push((
                "judge.baseline.lookback",
                self.judge.baseline.lookback.get(),
            ));
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
}

//! Typed configuration: one YAML file, overridable by `DEPLOY_WATCHDOG__SECTION__FIELD`
//! environment variables, every field with a default, validated once at start-up.
//!
//! Secrets never come from this file: see [`Secrets`].

mod checks;
mod cluster;
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
pub use values::{DurationLimit, HttpMethod, HttpStatus, UrlTemplate, deadline, fill};

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

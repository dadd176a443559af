//! Secrets, read from files named in the config or from the environment, and what start-up
//! requires of them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError, Mode};

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

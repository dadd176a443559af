//! Where rollbacks are told: PagerDuty and Slack.

use super::duration::Timeout;

use serde::{Deserialize, Serialize};

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
    pub timeout: Timeout,
}

impl Default for PagerDutyConfig {
    fn default() -> Self {
        PagerDutyConfig {
            enabled: true,
            url: "https://events.pagerduty.com".into(),
            timeout: const { Timeout::from_secs(5) },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// Posts only when a webhook URL is given (environment or file).
    pub enabled: bool,
    pub timeout: Timeout,
}

impl Default for SlackConfig {
    fn default() -> Self {
        SlackConfig {
            enabled: true,
            timeout: const { Timeout::from_secs(5) },
        }
    }
}

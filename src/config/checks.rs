//! The app's own checks: its health endpoint and the HTTP smoke checks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

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

//! The app's own checks: its health endpoint and the HTTP smoke checks.

use super::duration::Timeout;

use serde::{Deserialize, Serialize};

use super::values::{HttpMethod, HttpStatus, UrlTemplate};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    pub enabled: bool,
    /// `{name}` and `{namespace}` are the Deployment's.
    pub url: UrlTemplate,
    pub timeout: Timeout,
    pub expect_status: HttpStatus,
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
            url: UrlTemplate::known("http://{name}.{namespace}.svc.cluster.local/health"),
            timeout: const { Timeout::from_secs(2) },
            expect_status: HttpStatus::OK,
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
    pub url: UrlTemplate,
    #[serde(default)]
    pub method: HttpMethod,
    #[serde(default)]
    pub expect_status: HttpStatus,
    #[serde(default)]
    pub expect_body_contains: Option<String>,
    #[serde(default = "default_smoke_timeout")]
    pub timeout: Timeout,
}

fn default_smoke_timeout() -> Timeout {
    const { Timeout::from_secs(2) }
}

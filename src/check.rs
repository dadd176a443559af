//! Names for what is judged and what is asked: the checks the judge counts failures of, the
//! error-rate providers, and the object a probe is about.

use std::fmt;

/// One check of a rollout, as the judge counts its consecutive failures.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckId {
    /// The health endpoint: status, body, version.
    Health,
    /// One dependency check in the health endpoint's body, by name.
    Dependency(String),
    /// One configured smoke check, by name.
    Smoke(String),
    /// The error rate, over every provider.
    ErrorRate,
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckId::Health => f.write_str("health"),
            CheckId::Dependency(name) => write!(f, "dependency/{name}"),
            CheckId::Smoke(name) => write!(f, "smoke/{name}"),
            CheckId::ErrorRate => f.write_str("error_rate"),
        }
    }
}

/// An error-rate provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    Prometheus,
    Datadog,
}

impl Provider {
    /// Every provider, in the order their samples are listed.
    pub const ALL: [Provider; 2] = [Provider::Prometheus, Provider::Datadog];

    /// The name in config, messages and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Prometheus => "prometheus",
            Provider::Datadog => "datadog",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A namespaced object, e.g. a Deployment: what the probes and the provider rounds are keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_in_messages_and_labels() {
        assert_eq!(CheckId::Smoke("home".into()).to_string(), "smoke/home");
        assert_eq!(
            CheckId::Dependency("db".into()).to_string(),
            "dependency/db"
        );
        assert_eq!(CheckId::ErrorRate.to_string(), "error_rate");
        assert_eq!(Provider::Datadog.to_string(), "datadog");
        assert_eq!(
            ObjectKey::new("production", "app").to_string(),
            "production/app"
        );
    }
}

//! How the daemon reads Deployments and runs beside its peers: the version source, the
//! annotation overrides, leader election and its own HTTP endpoints.

use super::duration::LeaseSpan;

use serde::{Deserialize, Serialize};

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
    pub lease_duration: LeaseSpan,
    pub renew_deadline: LeaseSpan,
    pub retry_period: LeaseSpan,
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            enabled: false,
            namespace: String::new(),
            lease_name: "deploy-watchdog".into(),
            identity: String::new(),
            lease_duration: const { LeaseSpan::from_secs(15) },
            renew_deadline: const { LeaseSpan::from_secs(10) },
            retry_period: const { LeaseSpan::from_secs(2) },
        }
    }
}

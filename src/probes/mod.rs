//! Probes: each asks one source and returns an observation for the judge. They never fail:
//! whatever goes wrong becomes part of the observation (a failed check, or "inconclusive").

pub mod health;
pub mod prometheus;
pub mod smoke;

use std::sync::Once;
use std::time::Duration;

use crate::config::{self, Config};
use crate::judge::ProbeRound;

/// Bodies above this are cut off: a health endpoint or a provider cannot exhaust our memory.
pub const MAX_BODY: usize = 1 << 20;

static TLS_PROVIDER: Once = Once::new();

/// The one HTTP client: rustls (ring), a connect timeout, no redirects to other hosts.
pub fn http_client() -> reqwest::Client {
    TLS_PROVIDER.call_once(|| {
        // Another part of the process may have installed it already: that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("deploy-watchdog/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Reads at most [`MAX_BODY`] bytes of a response.
pub async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("body larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A short description of a request error, without the URL (it may carry a secret).
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused or unreachable".into()
    } else if e.is_body() || e.is_decode() {
        "unreadable body".into()
    } else {
        let text = e.to_string();
        match e.url() {
            Some(url) => text.replace(url.as_str(), "<url>"),
            None => text,
        }
    }
}

/// Every probe of one Deployment, configured once.
#[derive(Clone)]
pub struct Probes {
    client: reqwest::Client,
    config: Config,
    prometheus: Option<prometheus::Prometheus>,
    metrics: Option<std::sync::Arc<crate::telemetry::Metrics>>,
}

impl Probes {
    pub fn new(config: &Config) -> Probes {
        let client = http_client();
        let prometheus = config
            .providers
            .prometheus
            .clone()
            .map(|p| prometheus::Prometheus::new(client.clone(), p));
        Probes {
            client,
            config: config.clone(),
            prometheus,
            metrics: None,
        }
    }

    /// Times every provider request into `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::telemetry::Metrics>) -> Probes {
        self.metrics = Some(metrics);
        self
    }

    /// One round: health, smoke checks and providers, concurrently.
    pub async fn round(&self, namespace: &str, name: &str) -> ProbeRound {
        let health = async {
            if !self.config.health.enabled {
                return None;
            }
            let url = config::fill(&self.config.health.url, namespace, name, &[]);
            Some(health::probe(&self.client, &self.config.health, &url).await)
        };
        let smoke = futures::future::join_all(self.config.smoke.iter().map(|check| async move {
            let url = config::fill(&check.url, namespace, name, &[]);
            (
                check.name.clone(),
                smoke::probe(&self.client, check, &url).await,
            )
        }));
        let providers = self.error_rates(namespace, name, self.config.judge.sample_window);
        let (health, smoke, providers) = tokio::join!(health, smoke, providers);
        ProbeRound {
            health,
            smoke,
            providers,
        }
    }

    /// Every provider's counts over `window` ending now.
    pub async fn error_rates(
        &self,
        namespace: &str,
        name: &str,
        window: Duration,
    ) -> Vec<(String, crate::judge::ProviderSample)> {
        let mut out = Vec::new();
        if let Some(p) = &self.prometheus {
            let started = std::time::Instant::now();
            let sample = p.sample(namespace, name, window).await;
            if let Some(m) = &self.metrics {
                m.provider_sample("prometheus", started, &sample);
            }
            out.push(("prometheus".to_string(), sample));
        }
        out
    }

    /// The version `/health` reports now, for verifying a rollback.
    pub async fn reported_version(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Result<String, String>> {
        if !self.config.health.enabled || self.config.health.version_pointer.is_empty() {
            return None;
        }
        let url = config::fill(&self.config.health.url, namespace, name, &[]);
        Some(
            match health::probe(&self.client, &self.config.health, &url).await {
                crate::judge::HealthSample::Answered {
                    version: Some(v), ..
                } => Ok(v),
                crate::judge::HealthSample::Answered { version: None, .. } => {
                    Err("no version in the body".into())
                }
                crate::judge::HealthSample::Failed(e) => Err(e),
            },
        )
    }
}

//! Probes: each asks one source and returns an observation for the judge. They never fail:
//! whatever goes wrong becomes part of the observation (a failed check, or "inconclusive").

pub mod datadog;
pub mod error;
pub mod health;
pub mod prometheus;
pub mod sampler;
pub mod smoke;

use std::collections::HashMap;
use std::sync::Once;
use std::time::Duration;

use crate::check::{ObjectKey, Provider};
use crate::config::{self, Config, Secrets};
use crate::judge::ProbeRound;
use error::ProbeError;

/// Bodies above this are cut off: a health endpoint or a provider cannot exhaust our memory.
pub const MAX_BODY: usize = 1 << 20;

static TLS_PROVIDER: Once = Once::new();

/// Redirects followed at most; each must stay on the same scheme, host and port.
const MAX_REDIRECTS: usize = 3;

/// The one HTTP client: rustls (ring), a connect timeout, no redirects to other hosts; or why
/// it cannot be built. `run` asks once at start-up, so a process that runs has one.
pub fn try_http_client() -> Result<reqwest::Client, reqwest::Error> {
    TLS_PROVIDER.call_once(|| {
        // Another part of the process may have installed it already: that is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .redirect(same_origin_redirects())
        .user_agent(concat!("deploy-watchdog/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The one HTTP client ([`try_http_client`]). Never a client without the same-origin redirect
/// policy (a default one would carry a routing key or webhook path to another host): building
/// it fails only without a usable TLS backend, which `run` refuses at start-up, so this cannot
/// fail in a process that got that far.
pub fn http_client() -> reqwest::Client {
    match try_http_client() {
        Ok(client) => client,
        Err(e) => panic!("no HTTP client can be built (checked at start-up): {e}"),
    }
}

/// Follows a redirect only to the origin first asked: a 307 from a Slack or PagerDuty look-alike
/// must not re-send the webhook path or the routing key to another host. A refused redirect is
/// returned as the 3xx answer, which every caller treats as a failure.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt.previous().first().is_some_and(|first| {
            first.scheme() == attempt.url().scheme()
                && first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if same_origin {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Reads at most `max` bytes of a response; a larger announced length is refused unread.
pub async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("body larger than {max} bytes"));
    }
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
        let text = match e.url() {
            Some(url) => text.replace(url.as_str(), "<url>"),
            None => text,
        };
        scrub_urls(&text)
    }
}

/// One provider's answer, bounded by its timeout (a little more, so the provider's own, more
/// precise message wins); `timed_out` stands in for it past that.
async fn bounded<T>(
    limit: Duration,
    answer: impl std::future::Future<Output = T>,
    timed_out: impl FnOnce() -> T,
) -> T {
    tokio::time::timeout(limit + Duration::from_millis(500), answer)
        .await
        .unwrap_or_else(|_| timed_out())
}

/// A sample that did not come within its bound.
fn sample_timed_out() -> crate::judge::ProviderSample {
    crate::judge::ProviderSample::Unavailable(ProbeError::Timeout("timed out".into()))
}

/// The samples of the providers configured, in a fixed order.
fn named(
    prometheus: Option<crate::judge::ProviderSample>,
    datadog: Option<crate::judge::ProviderSample>,
) -> Vec<(Provider, crate::judge::ProviderSample)> {
    [
        (Provider::Prometheus, prometheus),
        (Provider::Datadog, datadog),
    ]
    .into_iter()
    .filter_map(|(provider, sample)| Some((provider, sample?)))
    .collect()
}

/// Replaces anything that looks like a URL with `<url>`: a redirect target or a URL spelled
/// differently from the one configured could still carry a webhook path.
pub fn scrub_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .char_indices()
            .rev()
            .find(|(_, c)| !c.is_ascii_alphanumeric() && !"+-.".contains(*c))
            .map_or(0, |(j, c)| j + c.len_utf8());
        let mut end = rest[i..]
            .find(|c: char| c.is_whitespace() || "()<>\"'".contains(c))
            .map_or(rest.len(), |j| i + j);
        // Punctuation that ends a sentence is not part of the URL.
        while end > i + 3 && rest[..end].ends_with(['.', ',', ';', ':', '!', '?']) {
            end -= 1;
        }
        out.push_str(&rest[..start]);
        out.push_str("<url>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A grouped request's samples of every member, or why there are none.
type GroupedAnswer = Result<HashMap<ObjectKey, crate::judge::ProviderSample>, ProbeError>;

/// Every probe of one Deployment, configured once.
#[derive(Clone)]
pub struct Probes {
    client: reqwest::Client,
    config: Config,
    prometheus: Option<prometheus::Prometheus>,
    datadog: Option<datadog::Datadog>,
    metrics: Option<std::sync::Arc<crate::telemetry::Metrics>>,
    /// Answers in place of the network, when set ([`Probes::scripted`]).
    script: Option<std::sync::Arc<dyn Script>>,
}

/// What the probes answer in place of the network: for a test that drives sessions in virtual
/// time, where real sockets do not work (tokio's paused clock jumps ahead whenever every task
/// waits, a socket read included). Each call stands for the requests it replaces.
pub trait Script: Send + Sync + 'static {
    /// One round, as [`Probes::round`] takes it: health, smoke checks and, when `providers`,
    /// every provider's counts.
    fn round(&self, namespace: &str, name: &str, providers: bool) -> ProbeRound;
    /// Every provider's counts over `window` ending now ([`Probes::error_rates`]).
    fn error_rates(
        &self,
        namespace: &str,
        name: &str,
        window: Duration,
    ) -> Vec<(Provider, crate::judge::ProviderSample)>;
    /// The version `/health` reports now ([`Probes::reported_version`]).
    fn reported_version(&self, namespace: &str, name: &str) -> Option<Result<String, String>>;
}

impl Probes {
    /// A Datadog provider without both keys is left out (`Secrets::check` refuses that config
    /// at start-up).
    pub fn new(config: &Config, secrets: &Secrets) -> Probes {
        let client = http_client();
        let prometheus = config
            .providers
            .prometheus
            .clone()
            .map(|p| prometheus::Prometheus::new(client.clone(), p));
        let datadog = match (
            &config.providers.datadog,
            &secrets.datadog_api_key,
            &secrets.datadog_app_key,
        ) {
            (Some(d), Some(api), Some(app)) => Some(datadog::Datadog::new(
                client.clone(),
                d.clone(),
                datadog::Keys {
                    api: api.clone(),
                    app: app.clone(),
                },
            )),
            (Some(_), _, _) => {
                tracing::warn!(
                    "providers.datadog is configured without both keys: Datadog is not queried"
                );
                None
            }
            (None, _, _) => None,
        };
        Probes {
            client,
            config: config.clone(),
            prometheus,
            datadog,
            metrics: None,
            script: None,
        }
    }

    /// Probes that ask `script` instead of the network, with `config` for everything else
    /// (which checks exist, the sample window).
    pub fn scripted(config: &Config, script: std::sync::Arc<dyn Script>) -> Probes {
        Probes {
            client: http_client(),
            config: config.clone(),
            prometheus: None,
            datadog: None,
            metrics: None,
            script: Some(script),
        }
    }

    /// The same HTTP client with another config (a Deployment's overrides).
    pub fn reconfigured(&self, config: &Config) -> Probes {
        let prometheus = config
            .providers
            .prometheus
            .clone()
            .map(|p| prometheus::Prometheus::new(self.client.clone(), p));
        // The Datadog client keeps its keys and its rate-limit state, shared with every session.
        let datadog = match (&self.datadog, &config.providers.datadog) {
            (Some(d), Some(cfg)) => Some(d.with_config(cfg.clone())),
            _ => None,
        };
        Probes {
            client: self.client.clone(),
            config: config.clone(),
            prometheus,
            datadog,
            metrics: self.metrics.clone(),
            script: self.script.clone(),
        }
    }

    /// One provider's sample, timed into `metrics`.
    async fn timed(
        &self,
        provider: Provider,
        sample: impl std::future::Future<Output = crate::judge::ProviderSample>,
    ) -> crate::judge::ProviderSample {
        let started = std::time::Instant::now();
        let sample = sample.await;
        if let Some(m) = &self.metrics {
            m.provider_sample(provider.as_str(), started, &sample);
        }
        sample
    }

    /// Times every provider request into `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::telemetry::Metrics>) -> Probes {
        self.metrics = Some(metrics);
        self
    }

    /// One round: health, smoke checks and, unless the shared sampler asks them (`providers`
    /// false), the error-rate providers, concurrently.
    pub async fn round(&self, namespace: &str, name: &str, providers: bool) -> ProbeRound {
        if let Some(script) = &self.script {
            return script.round(namespace, name, providers);
        }
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
        let providers = async {
            if providers {
                self.error_rates(namespace, name, self.config.judge.sample_window)
                    .await
            } else {
                Vec::new()
            }
        };
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
        window: impl Into<Duration>,
    ) -> Vec<(Provider, crate::judge::ProviderSample)> {
        let window = window.into();
        if let Some(script) = &self.script {
            return script.error_rates(namespace, name, window);
        }
        // Every provider at once, each bounded by its own timeout; the answers in a fixed order.
        let (prometheus, datadog) = tokio::join!(
            self.prometheus_sample(namespace, name, window),
            self.datadog_sample(namespace, name, window)
        );
        named(prometheus, datadog)
    }

    /// Prometheus' counts for one Deployment, if Prometheus is configured.
    async fn prometheus_sample(
        &self,
        namespace: &str,
        name: &str,
        window: Duration,
    ) -> Option<crate::judge::ProviderSample> {
        let p = self.prometheus.as_ref()?;
        let sample = bounded(
            p.timeout(),
            p.sample(namespace, name, window),
            sample_timed_out,
        );
        Some(self.timed(Provider::Prometheus, sample).await)
    }

    /// Datadog's counts for one Deployment, if Datadog is configured.
    async fn datadog_sample(
        &self,
        namespace: &str,
        name: &str,
        window: Duration,
    ) -> Option<crate::judge::ProviderSample> {
        let d = self.datadog.as_ref()?;
        let sample = bounded(
            d.timeout(),
            d.sample(namespace, name, window),
            sample_timed_out,
        );
        Some(self.timed(Provider::Datadog, sample).await)
    }

    /// Every provider's counts over `window` ending now, for each of `members`: each provider
    /// in one grouped request (Prometheus: a query pair) when its config allows, else one
    /// sample per member.
    pub async fn error_rates_of(
        &self,
        members: &[ObjectKey],
        window: Duration,
    ) -> HashMap<ObjectKey, Vec<(Provider, crate::judge::ProviderSample)>> {
        use crate::judge::ProviderSample;
        let providers = &self.config.providers;
        let prometheus_grouping = providers.prometheus.as_ref().and_then(|p| p.grouping());
        let datadog_grouping = providers.datadog.as_ref().and_then(|d| d.grouping());
        let prometheus = async {
            let (Some(p), Some(g)) = (&self.prometheus, prometheus_grouping) else {
                return None;
            };
            let answer = p.sample_grouped(g, members, window);
            Some(
                self.timed_grouped(Provider::Prometheus, p.timeout(), answer)
                    .await,
            )
        };
        let datadog = async {
            let (Some(d), Some(g)) = (&self.datadog, datadog_grouping) else {
                return None;
            };
            let answer = d.sample_grouped(g, members, window);
            Some(
                self.timed_grouped(Provider::Datadog, d.timeout(), answer)
                    .await,
            )
        };
        // A provider that cannot group is asked once per member, as a session alone would.
        let one_by_one = futures::future::join_all(members.iter().map(|key| async move {
            let (ns, name) = (key.namespace.as_str(), key.name.as_str());
            let prometheus = async {
                match prometheus_grouping {
                    None => self.prometheus_sample(ns, name, window).await,
                    Some(_) => None,
                }
            };
            let datadog = async {
                match datadog_grouping {
                    None => self.datadog_sample(ns, name, window).await,
                    Some(_) => None,
                }
            };
            tokio::join!(prometheus, datadog)
        }));
        let (prometheus, datadog, one_by_one) = tokio::join!(prometheus, datadog, one_by_one);
        let of = |grouped: &Option<GroupedAnswer>, key: &ObjectKey| match grouped {
            Some(Ok(m)) => Some(m.get(key).cloned().unwrap_or(ProviderSample::NoData)),
            Some(Err(e)) => Some(ProviderSample::Unavailable(e.clone())),
            None => None,
        };
        members
            .iter()
            .zip(one_by_one)
            .map(|(key, (own_prometheus, own_datadog))| {
                let samples = named(
                    own_prometheus.or_else(|| of(&prometheus, key)),
                    own_datadog.or_else(|| of(&datadog, key)),
                );
                (key.clone(), samples)
            })
            .collect()
    }

    /// One grouped request of `provider`, bounded by its timeout (a little more, so the
    /// provider's own message wins) and timed into `metrics` as one observation.
    async fn timed_grouped(
        &self,
        provider: Provider,
        limit: Duration,
        answer: impl std::future::Future<Output = GroupedAnswer>,
    ) -> GroupedAnswer {
        let started = std::time::Instant::now();
        let answer = bounded(limit, answer, || {
            Err(ProbeError::Timeout("timed out".into()))
        })
        .await;
        if let Some(m) = &self.metrics {
            let result = match &answer {
                Ok(_) => "answered",
                Err(e) => e.category(),
            };
            m.provider_request(provider.as_str(), started, result);
        }
        answer
    }

    /// Whether any error-rate provider is configured.
    pub fn has_providers(&self) -> bool {
        self.prometheus.is_some() || self.datadog.is_some()
    }

    /// The version `/health` reports now, for verifying a rollback.
    pub async fn reported_version(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Result<String, String>> {
        if let Some(script) = &self.script {
            return script.reported_version(namespace, name);
        }
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

#[cfg(test)]
mod tests {
    use super::scrub_urls;

    #[test]
    fn urls_are_scrubbed_from_error_text() {
        assert_eq!(
            scrub_urls("error sending request for url (https://hooks.slack.com/services/T/B/x)"),
            "error sending request for url (<url>)"
        );
        assert_eq!(
            scrub_urls("redirect to http://a/b and HTTPS://c?d=e: refused"),
            "redirect to <url> and <url>: refused"
        );
        assert_eq!(scrub_urls("no url here"), "no url here");
        assert_eq!(scrub_urls("://"), "<url>");
        assert_eq!(scrub_urls("é://x é"), "é<url> é");
    }
}

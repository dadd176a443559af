//! The Datadog provider: the requests and errors queries over the sample window, both in one
//! `POST /api/v2/query/timeseries` (one formula each), their points summed.
//!
//! Trace metrics carry `env`, `service` and `version` (and the Agent's host tags), never the
//! pod's `kube_namespace`: a Deployment is found by its service (`service` in the config, the
//! Deployment's name by default) and the configured `env`.
//!
//! Grouped, one request answers for every watched rollout: the grouped queries name them all
//! (`service IN (…)`, grouped `by {service}`) and the series are told apart by their group tags.
//!
//! The sample window ends `ingestion_delay` before now: Datadog's latest points are not yet
//! complete, and a window ending now would count too few requests.
//!
//! Datadog limits metric queries per organisation and says so in `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (seconds until the period ends). After a 429, or an answer that used the
//! last request of the period, no call is made until the reset: every session shares the one
//! client, and meanwhile the provider is unavailable (inconclusive), never a pass or a failure.
//!
//! One concern a module: [`query`] writes the queries (placeholders, `IN (…)` lists, batches
//! of members), [`client`] sends them and keeps to the rate limit, [`response`] reads the
//! answers; this module ties them into one sample per Deployment or per round.

mod client;
mod query;
mod response;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::error::ProbeError;
use super::prometheus::{combine, member_sample};
use crate::check::ObjectKey;
use crate::config::{DatadogConfig, DatadogGrouped};
use crate::judge::ProviderSample;

pub use client::backoff;
pub use query::{MAX_GROUPED_QUERY, batches, list};
pub use response::{parse, parse_grouped};

/// The two keys, sent as `DD-API-KEY` and `DD-APPLICATION-KEY`; never printed.
#[derive(Clone)]
pub struct Keys {
    pub api: String,
    pub app: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// A Datadog metrics client for one organisation, shared by every session.
#[derive(Clone)]
pub struct Datadog {
    client: reqwest::Client,
    cfg: DatadogConfig,
    endpoint: String,
    keys: Keys,
    /// No call before this instant: the rate limit is exhausted until its reset.
    blocked_until: Arc<Mutex<Option<Instant>>>,
}

impl Datadog {
    pub fn new(client: reqwest::Client, cfg: DatadogConfig, keys: Keys) -> Datadog {
        let endpoint = format!("{}/api/v2/query/timeseries", cfg.base_url());
        Datadog {
            client,
            cfg,
            endpoint,
            keys,
            blocked_until: Arc::default(),
        }
    }

    /// The same client (keys, rate-limit state) with another config: a Deployment's overrides.
    pub fn with_config(&self, cfg: DatadogConfig) -> Datadog {
        Datadog {
            endpoint: format!("{}/api/v2/query/timeseries", cfg.base_url()),
            cfg,
            ..self.clone()
        }
    }

    /// The bound of one query.
    pub fn timeout(&self) -> Duration {
        self.cfg.timeout.get()
    }

    /// Requests and errors of one Deployment over `window` ending now.
    pub async fn sample(&self, namespace: &str, name: &str, window: Duration) -> ProviderSample {
        let (requests, errors) = self.queries(namespace, name);
        let (status, body) = match self
            .post([&requests, &errors], window, super::MAX_BODY)
            .await
        {
            Ok(answer) => answer,
            Err(e) => return ProviderSample::Unavailable(e),
        };
        let mut answers = parse(status, &body, 2).into_iter();
        match (answers.next(), answers.next()) {
            (Some(requests), Some(errors)) => combine(requests, errors),
            _ => ProviderSample::Unavailable(ProbeError::BadResponse("no answer".into())),
        }
    }

    /// Requests and errors of every rollout in `members` over `window` ending now, in one
    /// request (several when the members would make a query longer than
    /// [`MAX_GROUPED_QUERY`], still far fewer than one per rollout; those go out at once, and
    /// the members of a failed one are unavailable). A member with no requests series has no
    /// data; one with no errors series, zero errors. `Err` when no request was answered.
    pub async fn sample_grouped(
        &self,
        g: &DatadogGrouped,
        members: &[ObjectKey],
        window: Duration,
    ) -> Result<HashMap<ObjectKey, ProviderSample>, ProbeError> {
        // A query's length is its text without the lists plus each list as often as it occurs.
        let shapes: Vec<(usize, usize, usize)> = [&g.requests_query, &g.errors_query]
            .iter()
            .map(|q| {
                // A service list is about as long as the names' (their default template).
                (
                    self.fill(
                        q,
                        "",
                        "",
                        &[("namespaces", ""), ("names", ""), ("services", "")],
                    )
                    .len(),
                    q.matches("{namespaces}").count(),
                    q.matches("{names}").count() + q.matches("{services}").count(),
                )
            })
            .collect();
        let length = |ns: usize, names: usize| {
            shapes
                .iter()
                .map(|(base, n_ns, n_names)| base + n_ns * ns + n_names * names)
                .max()
                .unwrap_or(0)
        };
        let batches = batches(members, MAX_GROUPED_QUERY, length);
        let answers =
            futures::future::join_all(batches.iter().map(|b| self.sample_batch(g, b, window)))
                .await;
        if let Some(Err(e)) = answers.iter().find(|a| a.is_err())
            && answers.iter().all(Result::is_err)
        {
            return Err(e.clone());
        }
        let mut out = HashMap::with_capacity(members.len());
        for (batch, answer) in batches.iter().zip(&answers) {
            for &key in batch {
                let sample = match answer {
                    Ok([requests, errors]) => {
                        member_sample(requests, errors, &self.series_key(g, key))
                    }
                    Err(e) => ProviderSample::Unavailable(e.clone()),
                };
                out.insert(key.clone(), sample);
            }
        }
        Ok(out)
    }

    /// The group tags' values that name a member's series: its namespace (none when the
    /// series are told apart by their name tag alone) and, for the `service` tag, its service.
    fn series_key(&self, g: &DatadogGrouped, key: &ObjectKey) -> ObjectKey {
        let (namespace, name) = (&key.namespace, &key.name);
        let ns = if g.namespace_tag.is_empty() {
            String::new()
        } else {
            namespace.clone()
        };
        let name = if g.name_tag == "service" {
            self.service(namespace, name)
        } else {
            name.clone()
        };
        ObjectKey::new(ns, name)
    }

    /// One grouped request for `batch`: its namespaces, names and services as lists.
    async fn sample_batch(
        &self,
        g: &DatadogGrouped,
        batch: &[&ObjectKey],
        window: Duration,
    ) -> Result<[HashMap<ObjectKey, f64>; 2], ProbeError> {
        let namespaces: BTreeSet<&str> = batch.iter().map(|k| k.namespace.as_str()).collect();
        let names: BTreeSet<&str> = batch.iter().map(|k| k.name.as_str()).collect();
        let services: BTreeSet<String> = batch
            .iter()
            .map(|k| self.service(&k.namespace, &k.name))
            .collect();
        let namespaces: Vec<&str> = namespaces.into_iter().collect();
        let names: Vec<&str> = names.into_iter().collect();
        let services: Vec<&str> = services.iter().map(String::as_str).collect();
        let (requests, errors) = self.grouped_queries(g, &namespaces, &names, &services);
        // Room for two series of a few hundred points per member, never less than one query's.
        let max_body = super::MAX_BODY.max(batch.len() * 16 * 1024);
        let (status, body) = self.post([&requests, &errors], window, max_body).await?;
        parse_grouped(status, &body, &g.namespace_tag, &g.name_tag)
    }
}

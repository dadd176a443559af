//! The checks that do not ask RBAC: notification sinks, the opted-in Deployments and their
//! annotations, the error-rate providers, each Deployment's health URL, the GitOps CRDs.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;

use super::{Check, Finding, Severity, Target};
use crate::check::Provider;
use crate::config::{Config, Mode, Secrets};
use crate::gitops::{FoundBy, GitopsMode, OwnerKind};
use crate::judge::{HealthSample, ProviderSample};
use crate::probes::error::ProbeError;

/// Health endpoints asked at once.
const HEALTH_CONCURRENCY: usize = 16;

/// PagerDuty turned on without a routing key blocks in `enforce` (a rollback pages nobody);
/// Slack without a webhook URL is a warning; a sink the config turns off is a choice.
pub fn sinks(config: &Config, secrets: &Secrets) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in secrets.sink_states(config) {
        let subject = format!("notify.{}", s.name);
        let enabled = match s.name {
            "pagerduty" => config.notify.pagerduty.enabled,
            _ => config.notify.slack.enabled,
        };
        if s.on || !enabled {
            out.push(Finding::ok(Check::Sinks, subject, s.detail));
            continue;
        }
        let (severity, consequence, fix) = if s.name == "pagerduty" {
            (
                if config.mode == Mode::Enforce {
                    Severity::Blocking
                } else {
                    Severity::Warning
                },
                "pages go nowhere: a rollback, a failed rollback or a blind watch wakes nobody",
                format!(
                    "give the routing key (secret file secrets.pagerduty_routing_key_file, or {}), or set notify.pagerduty.enabled: false to run without paging",
                    crate::config::ENV_PAGERDUTY_ROUTING_KEY
                ),
            )
        } else {
            (
                Severity::Warning,
                "nothing is posted to Slack",
                format!(
                    "give the webhook URL (secrets.slack_webhook_url_file, or {}), or set notify.slack.enabled: false",
                    crate::config::ENV_SLACK_WEBHOOK_URL
                ),
            )
        };
        out.push(Finding::problem(
            severity,
            Check::Sinks,
            subject,
            format!("{}: {consequence}", s.detail),
            fix,
        ));
    }
    out
}

/// No Deployment opted in, and annotations that cannot be used.
pub fn deployments(config: &Config, targets: &[Target]) -> Vec<Finding> {
    let mut out = Vec::new();
    let scope = if config.watch.namespaces.is_empty() {
        "every namespace".to_string()
    } else {
        config.watch.namespaces.join(", ")
    };
    if targets.is_empty() {
        out.push(Finding::problem(
            Severity::Warning,
            Check::Deployments,
            "watch.selector",
            format!(
                "no Deployment matches {:?} in {scope}: nothing is watched",
                config.watch.selector
            ),
            format!(
                "label the Deployments to guard ({}), or change watch.selector / watch.namespaces",
                config.watch.selector
            ),
        ));
        return out;
    }
    out.push(Finding::ok(
        Check::Deployments,
        "watch.selector",
        format!("{} opted-in Deployments in {scope}", targets.len()),
    ));
    for t in targets.iter().filter(|t| t.config.is_none()) {
        let empty = BTreeMap::new();
        let annotations = t.meta.annotations.as_ref().unwrap_or(&empty);
        let bad = match crate::overrides::effective(config, &t.namespace, &t.name, annotations) {
            Err(bad) => bad,
            Ok(_) => continue,
        };
        for b in bad {
            out.push(Finding::problem(
                Severity::Warning,
                Check::Deployments,
                format!("{}/{}", t.namespace, t.name),
                format!(
                    "annotation {}: {}; the rollouts of this Deployment are not judged",
                    b.annotation, b.problem
                ),
                format!("fix or remove the annotation {}", b.annotation),
            ));
        }
    }
    out
}

/// How one provider answered a Deployment's queries.
enum Answer {
    Data {
        requests: f64,
        errors: f64,
    },
    NoData,
    /// Answered, but not usably right now (429, partial data): reachable.
    Limited(ProbeError),
    Broken(ProbeError),
}

fn answer(sample: &ProviderSample) -> Answer {
    match sample {
        ProviderSample::Counts { requests, errors } => Answer::Data {
            requests: *requests,
            errors: *errors,
        },
        ProviderSample::NoData => Answer::NoData,
        ProviderSample::Unavailable(e @ (ProbeError::RateLimited(_) | ProbeError::Partial(_))) => {
            Answer::Limited(e.clone())
        }
        ProviderSample::Unavailable(e) => Answer::Broken(e.clone()),
    }
}

/// Each configured provider asked the configured queries (the Deployment's own, overrides
/// included) for up to `samples` opted-in Deployments, once; with none opted in, for a sample
/// Deployment. Unreachable, refused or failing queries block when no provider is usable: every
/// rollout would be judged blind.
pub async fn providers(
    config: &Config,
    secrets: &Secrets,
    targets: &[Target],
    samples: usize,
) -> Vec<Finding> {
    let configured: Vec<Provider> = Provider::ALL
        .into_iter()
        .filter(|p| match p {
            Provider::Prometheus => config.providers.prometheus.is_some(),
            Provider::Datadog => config.providers.datadog.is_some(),
        })
        .collect();
    if configured.is_empty() {
        return vec![Finding::problem(
            Severity::Warning,
            Check::Providers,
            "providers",
            "no error-rate provider is configured: rollouts are judged by pods, health and smoke checks only",
            "configure providers.prometheus or providers.datadog",
        )];
    }
    let probes = crate::probes::Probes::new(config, secrets);
    let asked: Vec<(String, String, Arc<Config>)> = {
        let usable: Vec<_> = targets
            .iter()
            .filter_map(|t| Some((t.namespace.clone(), t.name.clone(), t.config.clone()?)))
            .take(samples)
            .collect();
        if usable.is_empty() {
            vec![(
                "default".to_string(),
                "deploy-watchdog-doctor".to_string(),
                Arc::new(config.clone()),
            )]
        } else {
            usable
        }
    };
    let sample_only = targets.is_empty();
    let rounds = futures::future::join_all(asked.iter().map(|(ns, name, cfg)| {
        let probes = probes.reconfigured(cfg);
        async move { probes.error_rates(ns, name, cfg.judge.sample_window).await }
    }))
    .await;
    let window = crate::judge::human(config.judge.sample_window);
    let mut findings = Vec::new();
    let mut usable_any = false;
    let mut broken = Vec::new();
    for provider in configured {
        let field = format!("providers.{}", provider.as_str());
        let answers: Vec<(&str, &str, Answer)> = asked
            .iter()
            .zip(&rounds)
            .filter_map(|((ns, name, _), round)| {
                let sample = round.iter().find(|(p, _)| *p == provider)?;
                Some((ns.as_str(), name.as_str(), answer(&sample.1)))
            })
            .collect();
        let data = answers.iter().find_map(|(ns, name, a)| match a {
            Answer::Data { requests, errors } => Some((ns, name, *requests, *errors)),
            _ => None,
        });
        if let Some((ns, name, requests, errors)) = data {
            usable_any = true;
            findings.push(Finding::ok(
                Check::Providers,
                field,
                format!(
                    "answers the configured queries with data: {} requests, {} errors for {ns}/{name} over {window}",
                    crate::judge::count(requests),
                    crate::judge::count(errors)
                ),
            ));
            continue;
        }
        if answers.iter().any(|(_, _, a)| matches!(a, Answer::NoData)) {
            usable_any = true;
            let names: Vec<String> = answers
                .iter()
                .filter(|(_, _, a)| matches!(a, Answer::NoData))
                .map(|(ns, name, _)| format!("{ns}/{name}"))
                .collect();
            findings.push(if sample_only {
                Finding::ok(
                    Check::Providers,
                    field,
                    "reachable; its queries answer (no Deployment is opted in to check their data)",
                )
            } else {
                Finding::problem(
                    Severity::Warning,
                    Check::Providers,
                    field.clone(),
                    format!(
                        "reachable, but the configured queries return no data for {} over {window}: those rollouts cannot be judged by their error rate",
                        names.join(", ")
                    ),
                    format!(
                        "check {field}.requests_query and errors_query (or the Deployment's query annotations): their metric and labels must match the series the app exports, with {{namespace}} and {{name}} filled in"
                    ),
                )
            });
            continue;
        }
        if let Some(e) = answers.iter().find_map(|(_, _, a)| match a {
            Answer::Limited(e) => Some(e),
            _ => None,
        }) {
            usable_any = true;
            findings.push(Finding::problem(
                Severity::Warning,
                Check::Providers,
                field.clone(),
                format!("reachable, but its answer was not usable now: {e}"),
                format!("check the provider's rate limits and health; samples taken like this are inconclusive, not failures ({field})"),
            ));
            continue;
        }
        let Some(e) = answers.iter().find_map(|(_, _, a)| match a {
            Answer::Broken(e) => Some(e.clone()),
            _ => None,
        }) else {
            continue;
        };
        broken.push(findings.len());
        findings.push(broken_finding(provider, &field, &e));
    }
    // One usable provider keeps the error-rate checks going: the others only warn.
    if usable_any {
        for i in broken {
            findings[i].severity = Severity::Warning;
        }
    }
    findings
}

/// A provider that could not be asked at all: why, and what to change.
fn broken_finding(provider: Provider, field: &str, e: &ProbeError) -> Finding {
    let (what, fix) = match e {
        ProbeError::Connect(_) => (
            "unreachable",
            format!(
                "check {field}.url: its name must resolve from the watchdog's pod and the port accept connections (a NetworkPolicy may block it)"
            ),
        ),
        ProbeError::Timeout(_) => (
            "no answer in time",
            format!("check {field}.url and {field}.timeout; the provider may be overloaded"),
        ),
        ProbeError::Status {
            status: 401 | 403, ..
        } => (
            "refuses the watchdog's credentials",
            match provider {
                Provider::Datadog => "check the Datadog API and application keys (secrets.datadog_api_key_file, secrets.datadog_app_key_file) and providers.datadog.site".to_string(),
                Provider::Prometheus => format!("{field}.url asks for credentials the watchdog does not send: point it at an endpoint that serves the query API without them (inside the cluster)"),
            },
        ),
        _ => (
            "does not answer the configured queries",
            format!(
                "check {field}.url (the query API's base) and {field}.requests_query / errors_query: the provider refused them"
            ),
        ),
    };
    Finding::problem(
        Severity::Blocking,
        Check::Providers,
        field,
        format!("{what}: {e}; every rollout's error rate is unknown (blind) while this lasts"),
        fix,
    )
}

/// Each opted-in Deployment's health endpoint asked once, through the URL the daemon would
/// use (the config's template or the Deployment's `deploy-watchdog.io/health-url`).
pub async fn health(targets: &[Target]) -> Vec<Finding> {
    let client = crate::probes::http_client();
    let asked: Vec<(String, String, Arc<Config>)> = targets
        .iter()
        .filter_map(|t| {
            let cfg = t.config.clone()?;
            cfg.health
                .enabled
                .then(|| (t.namespace.clone(), t.name.clone(), cfg))
        })
        .collect();
    if asked.is_empty() {
        return Vec::new();
    }
    let answers: Vec<(String, String, String, HealthSample)> =
        futures::stream::iter(asked.into_iter().map(|(ns, name, cfg)| {
            let client = client.clone();
            async move {
                let url = cfg.health.url.fill(&ns, &name);
                let sample = crate::probes::health::probe(&client, &cfg.health, &url).await;
                (ns, name, url, sample)
            }
        }))
        .buffered(HEALTH_CONCURRENCY)
        .collect()
        .await;
    let mut out = Vec::new();
    let mut answered = 0;
    for (ns, name, url, sample) in &answers {
        match sample {
            HealthSample::Answered { .. } => answered += 1,
            HealthSample::Failed(e) => out.push(Finding::problem(
                Severity::Warning,
                Check::Health,
                format!("{ns}/{name}"),
                format!(
                    "the health URL {url} does not answer as expected: {e}; while it does not, its rollouts are judged without health"
                ),
                "serve the health JSON there, point the annotation deploy-watchdog.io/health-url at the endpoint it has, or change health.url (the template the daemon fills with {name} and {namespace})",
            )),
        }
    }
    if answered > 0 {
        out.insert(
            0,
            Finding::ok(
                Check::Health,
                "health.url",
                format!(
                    "{answered} of {} opted-in Deployments answer at their health URL",
                    answers.len()
                ),
            ),
        );
    }
    out
}

/// The GitOps owners the opted-in Deployments' own marks name (Argo CD's tracking annotation,
/// Flux's labels), by kind, with the Deployments; Deployments whose GitOps mode is `off` and
/// Argo CD's instance label (which Helm sets too) are left out.
pub fn gitops_owners(targets: &[Target]) -> BTreeMap<&'static str, (OwnerKind, Vec<String>)> {
    let mut out: BTreeMap<&'static str, (OwnerKind, Vec<String>)> = BTreeMap::new();
    let empty = BTreeMap::new();
    for t in targets {
        let Some(cfg) = &t.config else { continue };
        if cfg.gitops.mode == GitopsMode::Off {
            continue;
        }
        let meta = &t.meta;
        let owner = crate::gitops::owner::discover(
            &cfg.gitops,
            &t.namespace,
            &t.name,
            meta.labels.as_ref().unwrap_or(&empty),
            meta.annotations.as_ref().unwrap_or(&empty),
        );
        if let Some(o) = owner.filter(|o| o.found_by == FoundBy::Mark) {
            out.entry(o.kind.as_str())
                .or_insert_with(|| (o.kind, Vec::new()))
                .1
                .push(format!("{}/{}", t.namespace, t.name));
        }
    }
    out
}

/// Whether the CRD of each GitOps kind in use is served (discovery of its group version).
pub async fn gitops_crds(
    client: &kube::Client,
    owners: &BTreeMap<&'static str, (OwnerKind, Vec<String>)>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for (kind, deployments) in owners.values() {
        let (group, version, _, plural) = kind.resource();
        let subject = format!("{plural}.{group}");
        let gv = format!("{group}/{version}");
        let served =
            tokio::time::timeout(super::CALL_TIMEOUT, client.list_api_group_resources(&gv)).await;
        let list = deployments.join(", ");
        out.push(match served {
            Ok(Ok(l)) if l.resources.iter().any(|r| r.name == plural) => Finding::ok(
                Check::Gitops,
                subject,
                format!("{gv} is served: the owners of {list} can be paused"),
            ),
            Ok(Ok(_)) | Ok(Err(kube::Error::Api(_))) => Finding::problem(
                Severity::Warning,
                Check::Gitops,
                subject,
                format!(
                    "the CRD is not installed ({gv} is not served), yet these Deployments carry its owner's marks: {list}; they are rolled back as if unmanaged, and a controller running elsewhere would re-apply the bad release"
                ),
                "install the GitOps controller here, or set gitops: off (or the annotation deploy-watchdog.io/gitops: off) for Deployments it does not manage",
            ),
            Ok(Err(e)) => Finding::problem(
                Severity::Warning,
                Check::Gitops,
                subject,
                format!("cannot ask discovery for {gv}: {e}"),
                "check the API server's health and the kubeconfig",
            ),
            Err(_) => Finding::problem(
                Severity::Warning,
                Check::Gitops,
                subject,
                format!("discovery of {gv} did not answer within {:?}", super::CALL_TIMEOUT),
                "check the API server's health",
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_that_refuses_the_keys_is_told_apart_from_one_that_is_unreachable() {
        let refused = broken_finding(
            Provider::Datadog,
            "providers.datadog",
            &ProbeError::status(403, Some("Forbidden".into())),
        );
        assert!(
            refused
                .message
                .starts_with("refuses the watchdog's credentials")
        );
        assert!(
            refused
                .fix
                .as_deref()
                .unwrap_or_default()
                .contains("datadog_api_key_file")
        );
        let unreachable = broken_finding(
            Provider::Prometheus,
            "providers.prometheus",
            &ProbeError::Connect("connection refused or unreachable".into()),
        );
        assert!(unreachable.message.starts_with("unreachable"));
        let bad_query = broken_finding(
            Provider::Prometheus,
            "providers.prometheus",
            &ProbeError::status(400, Some("bad_data: parse error".into())),
        );
        assert!(
            bad_query
                .message
                .starts_with("does not answer the configured queries")
        );
        assert!(bad_query.message.contains("bad_data"));
        for f in [refused, unreachable, bad_query] {
            assert_eq!(f.severity, Severity::Blocking);
        }
    }

    #[test]
    fn pagerduty_without_a_key_blocks_only_in_enforce_and_slack_only_warns() {
        let mut config = Config::default();
        let secrets = Secrets::default();
        let found = sinks(&config, &secrets);
        assert_eq!(found[0].subject, "notify.pagerduty");
        assert_eq!(found[0].severity, Severity::Blocking);
        assert_eq!(found[1].severity, Severity::Warning);
        config.mode = Mode::DryRun;
        assert_eq!(sinks(&config, &secrets)[0].severity, Severity::Warning);
        config.notify.pagerduty.enabled = false;
        assert_eq!(sinks(&config, &secrets)[0].severity, Severity::Ok);
    }
}

//! `deploy-watchdog doctor`, and the same checks once at start-up: what will not work, said
//! before a rollout needs it. A new install otherwise fails silently: no PagerDuty key and pages
//! go nowhere, a Prometheus URL that does not resolve and every rollout is judged blind, a
//! health URL no Service answers, a verb RBAC refuses only when the rollback is sent.
//!
//! Each check gives [`Finding`]s: a [`Severity`], the object or config field it is about, what
//! is wrong, and the fix. [`Severity::Blocking`] means the daemon cannot do its job (see
//! [`exit_code`]); a warning is a part of it that will not work.

pub mod checks;
pub mod rbac;
pub mod render;

use std::sync::Arc;
use std::time::Duration;

use kube::api::{ListParams, ObjectMeta};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Secrets};

/// Exit status of `doctor` when a finding blocks the daemon (a config that cannot be loaded is
/// [`crate::cli::EXIT_BAD_CONFIG`]).
pub const EXIT_BLOCKING: u8 = 1;

/// Every call to the API server here is bounded.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many opted-in Deployments have their provider queries run: one with data is
/// enough to show the queries work; a few guard against one without traffic.
const PROVIDER_SAMPLES: usize = 3;

/// Opted-in Deployments per page of their list.
const LIST_PAGE: u32 = 100;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Checked and works.
    Ok,
    /// A part of the watchdog's job will not work (one Deployment's health, Slack, Events).
    Warning,
    /// The daemon cannot do its job: it cannot detect or roll back, cannot page, or judges
    /// every rollout blind.
    Blocking,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Blocking => "blocking",
        }
    }
}

/// Which check found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Cluster,
    Sinks,
    Providers,
    Rbac,
    Deployments,
    Health,
    Gitops,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Cluster => "cluster",
            Check::Sinks => "sinks",
            Check::Providers => "providers",
            Check::Rbac => "rbac",
            Check::Deployments => "deployments",
            Check::Health => "health",
            Check::Gitops => "gitops",
        }
    }
}

/// One thing the doctor found. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub check: Check,
    /// The config field or the object it is about: `notify.pagerduty`, `providers.prometheus`,
    /// `patch deployments.apps (all namespaces)`, `production/api`, `applications.argoproj.io`.
    pub subject: String,
    pub message: String,
    /// What to do about it; none for [`Severity::Ok`].
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: Check, subject: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding {
            severity: Severity::Ok,
            check,
            subject: subject.into(),
            message: message.into(),
            fix: None,
        }
    }

    pub fn problem(
        severity: Severity,
        check: Check,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            severity,
            check,
            subject: subject.into(),
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// 0 when nothing blocks the daemon, [`EXIT_BLOCKING`] otherwise.
pub fn exit_code(findings: &[Finding]) -> u8 {
    if findings.iter().any(|f| f.severity == Severity::Blocking) {
        EXIT_BLOCKING
    } else {
        0
    }
}

/// An opted-in Deployment with the config that applies to it (its annotations over `config`).
pub struct Target {
    pub namespace: String,
    pub name: String,
    /// What the checks read of the Deployment: its labels and annotations.
    pub meta: ObjectMeta,
    /// `None` when an annotation could not be used (a finding says which); shared with the
    /// other Deployments' when no annotation changes it.
    pub config: Option<Arc<Config>>,
}

/// Every check, against the cluster `client` reaches, in a fixed order: sinks, cluster access,
/// RBAC, the opted-in Deployments and their annotations, providers, health, GitOps.
pub async fn examine(config: &Config, secrets: &Secrets, client: &kube::Client) -> Vec<Finding> {
    let mut out = checks::sinks(config, secrets);
    match tokio::time::timeout(CALL_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(v)) => out.push(Finding::ok(
            Check::Cluster,
            "API server",
            format!("Kubernetes {} answers", v.git_version),
        )),
        answer => {
            let why = match answer {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {CALL_TIMEOUT:?}"),
            };
            out.push(unreachable_cluster(why));
            // Nothing else in the cluster can be asked; the providers still can.
            out.extend(checks::providers(config, secrets, &[], PROVIDER_SAMPLES).await);
            return out;
        }
    }
    let (targets, mut deployments) = match opted_in(config, client).await {
        Ok(t) => {
            let found = checks::deployments(config, &t);
            (t, found)
        }
        Err(e) => (
            Vec::new(),
            vec![Finding::problem(
                Severity::Blocking,
                Check::Deployments,
                "deployments.apps",
                format!("cannot list the opted-in Deployments: {e}"),
                "see the RBAC findings: the daemon needs list and watch on deployments.apps",
            )],
        ),
    };
    let owners = checks::gitops_owners(&targets);
    let (rbac, providers, health, gitops) = tokio::join!(
        rbac::check(config, client, &owners),
        checks::providers(config, secrets, &targets, PROVIDER_SAMPLES),
        checks::health(&targets),
        checks::gitops_crds(client, &owners),
    );
    out.extend(rbac);
    out.append(&mut deployments);
    out.extend(providers);
    out.extend(health);
    out.extend(gitops);
    out
}

/// The blocking finding of an API server that cannot be reached.
pub fn unreachable_cluster(why: String) -> Finding {
    Finding::problem(
        Severity::Blocking,
        Check::Cluster,
        "API server",
        format!("cannot reach Kubernetes: {why}"),
        "give --kubeconfig, set $KUBECONFIG, or run in a pod with a ServiceAccount; check that the API server is reachable from here",
    )
}

/// The Deployments the daemon watches: its label selector in its namespaces (every namespace
/// when none is named), sorted.
async fn opted_in(config: &Config, client: &kube::Client) -> Result<Vec<Target>, String> {
    let base = Arc::new(config.clone());
    let apis = crate::daemon::deployment_apis(config, client);
    let mut out = Vec::new();
    for api in apis {
        // In pages, each kept only as far as the checks read it: at start-up this runs beside
        // the daemon, in a cluster of thousands of opted-in Deployments.
        let mut params = ListParams::default()
            .labels(&config.watch.selector)
            .limit(LIST_PAGE);
        loop {
            let list = tokio::time::timeout(CALL_TIMEOUT, api.list(&params))
                .await
                .map_err(|_| format!("no answer within {CALL_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())?;
            for d in list.items {
                let meta = ObjectMeta {
                    labels: d.metadata.labels,
                    annotations: d.metadata.annotations,
                    ..ObjectMeta::default()
                };
                let namespace = d.metadata.namespace.unwrap_or_default();
                let name = d.metadata.name.unwrap_or_default();
                let empty = Default::default();
                let annotations = meta.annotations.as_ref().unwrap_or(&empty);
                let config =
                    crate::overrides::effective_shared(&base, &namespace, &name, annotations).ok();
                out.push(Target {
                    namespace,
                    name,
                    meta,
                    config,
                });
            }
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(next) => params = params.continue_token(&next),
                None => break,
            }
        }
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// The start-up checks: run once beside the daemon, each finding that is not `ok` logged once
/// as a warning (the sinks' states are logged by `run` itself), and all of them put on the
/// status page and `/api/v1/findings`.
pub async fn at_startup(
    config: Config,
    secrets: Secrets,
    client: kube::Client,
    board: crate::status::Board,
) {
    let findings = examine(&config, &secrets, &client).await;
    // `run` has logged each sink's state already, before it looked for the cluster.
    for f in findings
        .iter()
        .filter(|f| f.severity != Severity::Ok && f.check != Check::Sinks)
    {
        tracing::warn!(
            check = f.check.as_str(),
            severity = f.severity.as_str(),
            subject = %f.subject,
            fix = f.fix.as_deref().unwrap_or_default(),
            "doctor: {}: {}",
            f.subject,
            f.message
        );
    }
    let problems = findings
        .iter()
        .filter(|f| f.severity != Severity::Ok)
        .count();
    tracing::info!(
        findings = findings.len(),
        problems,
        "start-up checks done (`deploy-watchdog doctor` runs them on demand)"
    );
    board.set_findings(findings);
}

//! RBAC: every verb the daemon needs, asked with `SelfSubjectAccessReview` (what `kubectl auth
//! can-i` asks), so a refusal is found now rather than when a rollback is sent.
//!
//! The rules here are the chart's (`helm/deploy-watchdog/templates/`): a test compares them, so
//! the two cannot drift apart.

use std::collections::BTreeMap;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::{Check, Finding, Severity};
use crate::config::Config;
use crate::gitops::{GitopsMode, OwnerKind};

/// One RBAC rule: verbs on a resource of an API group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// What the daemon does in each watched namespace (the chart's `deploy-watchdog.watchRules`):
/// watch Deployments, their ReplicaSets and Pods; patch Deployments (the rollback and the
/// recorded state); record Events.
pub const WATCH_RULES: [Rule; 4] = [
    Rule {
        group: "apps",
        resource: "deployments",
        verbs: &["get", "list", "watch", "patch"],
    },
    Rule {
        group: "apps",
        resource: "replicasets",
        verbs: &["get", "list", "watch"],
    },
    Rule {
        group: "",
        resource: "pods",
        verbs: &["get", "list", "watch"],
    },
    Rule {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
];

/// Leader election, in the Lease's namespace.
pub const LEASE_RULE: Rule = Rule {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "update", "patch"],
};

/// What pausing and resuming a GitOps owner of `kind` needs (the chart's `rbac.gitops`).
pub fn gitops_rules(kind: OwnerKind) -> &'static [Rule] {
    match kind {
        OwnerKind::Application => &[
            Rule {
                group: "argoproj.io",
                resource: "applications",
                verbs: &["get", "patch"],
            },
            Rule {
                group: "argoproj.io",
                resource: "applicationsets",
                verbs: &["get"],
            },
        ],
        OwnerKind::Kustomization => &[Rule {
            group: "kustomize.toolkit.fluxcd.io",
            resource: "kustomizations",
            verbs: &["get", "patch"],
        }],
        OwnerKind::HelmRelease => &[Rule {
            group: "helm.toolkit.fluxcd.io",
            resource: "helmreleases",
            verbs: &["get", "patch"],
        }],
    }
}

/// One question: may the daemon `verb` `resource` in `namespace` (empty: every namespace)?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub namespace: String,
}

impl Ask {
    /// `deployments.apps`, `pods`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// `patch deployments.apps (all namespaces)`.
    pub fn describe(&self) -> String {
        let what = self.qualified();
        let scope = if self.namespace.is_empty() {
            "all namespaces".to_string()
        } else {
            format!("namespace {}", self.namespace)
        };
        format!("{} {what} ({scope})", self.verb)
    }

    /// What the daemon cannot do without it, and how bad that is.
    fn consequence(&self) -> (Severity, &'static str) {
        match (self.resource, self.verb) {
            ("deployments", "patch") => (
                Severity::Blocking,
                "no rollback can be sent and no state recorded on the Deployment",
            ),
            ("deployments" | "replicasets" | "pods", _) => {
                (Severity::Blocking, "rollouts cannot be detected or judged")
            }
            ("leases", _) => (
                Severity::Blocking,
                "this replica can never lead, so it never acts (and /readyz stays false)",
            ),
            ("events", _) => (
                Severity::Warning,
                "decisions are not recorded as Events (kubectl describe, status and history do not show them)",
            ),
            _ => (
                Severity::Warning,
                "the GitOps owner cannot be paused: such a Deployment is not rolled back, on-call is paged with the commands to run",
            ),
        }
    }
}

/// Every question for `config`: the watch rules in each watched namespace, the Lease when
/// leader election is on, and the GitOps rules of the owner kinds in use when the GitOps mode
/// pauses owners (`page_only` only reads them).
pub fn asks(config: &Config, lease_namespace: &str, gitops_kinds: &[OwnerKind]) -> Vec<Ask> {
    let mut out = Vec::new();
    let namespaces: Vec<String> = if config.watch.namespaces.is_empty() {
        vec![String::new()]
    } else {
        config.watch.namespaces.clone()
    };
    let mut add = |rule: &Rule, namespace: &str, only: Option<&[&str]>| {
        for verb in rule.verbs {
            if only.is_none_or(|o| o.contains(verb)) {
                out.push(Ask {
                    verb,
                    group: rule.group,
                    resource: rule.resource,
                    namespace: namespace.to_string(),
                });
            }
        }
    };
    for ns in &namespaces {
        for rule in &WATCH_RULES {
            add(rule, ns, None);
        }
    }
    if config.leader_election.enabled {
        add(&LEASE_RULE, lease_namespace, None);
    }
    let only = match config.gitops.mode {
        GitopsMode::Off => Some(&[][..]),
        GitopsMode::PageOnly => Some(&["get"][..]),
        GitopsMode::Pause => None,
    };
    for kind in gitops_kinds {
        for rule in gitops_rules(*kind) {
            add(rule, "", only);
        }
    }
    out
}

/// Asks every question of [`asks`] with a SelfSubjectAccessReview, all at once, each bounded.
pub async fn check(
    config: &Config,
    client: &kube::Client,
    owners: &BTreeMap<&'static str, (OwnerKind, Vec<String>)>,
) -> Vec<Finding> {
    let kinds: Vec<OwnerKind> = owners.values().map(|(k, _)| *k).collect();
    let lease_ns = crate::daemon::lease_namespace(&config.leader_election.namespace);
    let asks = asks(config, &lease_ns, &kinds);
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answers = futures::future::join_all(asks.iter().map(|a| {
        let api = api.clone();
        async move {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(a.verb.to_string()),
                        group: Some(a.group.to_string()),
                        resource: Some(a.resource.to_string()),
                        namespace: Some(a.namespace.clone()).filter(|n| !n.is_empty()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            match tokio::time::timeout(
                super::CALL_TIMEOUT,
                api.create(&PostParams::default(), &review),
            )
            .await
            {
                Ok(Ok(r)) => Ok(r.status.map(|s| (s.allowed, s.reason))),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", super::CALL_TIMEOUT)),
            }
        }
    }))
    .await;
    let mut out = Vec::new();
    let mut allowed = 0;
    for (ask, answer) in asks.iter().zip(answers) {
        match answer {
            Ok(Some((true, _))) => allowed += 1,
            Ok(Some((false, reason))) => {
                let (severity, consequence) = ask.consequence();
                let reason = reason
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                out.push(Finding::problem(
                    severity,
                    Check::Rbac,
                    ask.describe(),
                    format!("RBAC does not allow it{reason}: {consequence}"),
                    format!(
                        "grant {verb} on {what} to the watchdog's ServiceAccount (the chart's rbac.create does); check with `kubectl auth can-i {verb} {what}{ns} --as system:serviceaccount:NAMESPACE:NAME`",
                        verb = ask.verb,
                        what = ask.qualified(),
                        ns = if ask.namespace.is_empty() { " -A".to_string() } else { format!(" -n {}", ask.namespace) },
                    ),
                ));
            }
            Ok(None) => out.push(Finding::problem(
                Severity::Warning,
                Check::Rbac,
                ask.describe(),
                "the SelfSubjectAccessReview came back without a status",
                "check the API server's authorization setup",
            )),
            Err(e) => out.push(Finding::problem(
                Severity::Warning,
                Check::Rbac,
                ask.describe(),
                format!("cannot ask (SelfSubjectAccessReview): {e}"),
                "the ServiceAccount needs create on selfsubjectaccessreviews.authorization.k8s.io (every authenticated user has it by default)",
            )),
        }
    }
    if allowed > 0 {
        out.insert(
            0,
            Finding::ok(
                Check::Rbac,
                "rbac",
                format!(
                    "{allowed} of {} verbs the daemon needs are allowed",
                    asks.len()
                ),
            ),
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    type Grants = BTreeSet<(String, String, String)>;

    /// The rules of every Role and ClusterRole the chart can render: the watch rules (a
    /// `define`), the Lease Role and the GitOps ClusterRole with every kind switched on. The
    /// template lines are dropped; what remains is the YAML of the rules.
    fn chart_grants() -> Grants {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/helm/deploy-watchdog/templates"
        );
        let helpers = std::fs::read_to_string(format!("{dir}/_helpers.tpl")).unwrap();
        let start = helpers
            .find("define \"deploy-watchdog.watchRules\"")
            .expect("the chart defines its watch rules");
        let body = &helpers[start..];
        let body = &body[body.find('\n').unwrap() + 1..body.find("{{- end").unwrap()];
        let mut grants = Grants::new();
        let mut add = |rules: &serde_norway::Value| {
            for r in rules.as_sequence().into_iter().flatten() {
                let list = |k: &str| -> Vec<String> {
                    r[k].as_sequence()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect()
                };
                for g in list("apiGroups") {
                    for res in list("resources") {
                        for v in list("verbs") {
                            grants.insert((g.clone(), res.clone(), v));
                        }
                    }
                }
            }
        };
        add(&serde_norway::from_str(body).unwrap());
        let rbac = std::fs::read_to_string(format!("{dir}/rbac.yaml")).unwrap();
        let plain: String = rbac
            .lines()
            .filter(|l| !l.contains("{{"))
            .map(|l| format!("{l}\n"))
            .collect();
        for doc in plain.split("\n---\n") {
            let v: serde_norway::Value = serde_norway::from_str(doc).unwrap_or_default();
            if matches!(v["kind"].as_str(), Some("Role" | "ClusterRole")) {
                add(&v["rules"]);
            }
        }
        grants
    }

    fn ours(rules: impl IntoIterator<Item = Rule>) -> Grants {
        rules
            .into_iter()
            .flat_map(|r| {
                r.verbs
                    .iter()
                    .map(move |v| (r.group.to_string(), r.resource.to_string(), v.to_string()))
            })
            .collect()
    }

    #[test]
    fn the_verbs_asked_are_exactly_the_charts_rules() {
        let mut rules: Vec<Rule> = WATCH_RULES.to_vec();
        rules.push(LEASE_RULE);
        for kind in [
            OwnerKind::Application,
            OwnerKind::Kustomization,
            OwnerKind::HelmRelease,
        ] {
            rules.extend_from_slice(gitops_rules(kind));
        }
        let chart = chart_grants();
        assert!(chart.len() > 10, "the chart's rules were read: {chart:?}");
        assert_eq!(ours(rules), chart);
    }

    #[test]
    fn every_watched_namespace_is_asked_and_the_lease_only_with_an_election() {
        let mut config = Config::default();
        let all = asks(&config, "ops", &[]);
        assert!(all.iter().all(|a| a.namespace.is_empty()));
        assert!(!all.iter().any(|a| a.resource == "leases"));
        assert!(
            all.iter()
                .any(|a| a.verb == "patch" && a.resource == "deployments")
        );
        config.watch.namespaces = vec!["a".into(), "b".into()];
        config.leader_election.enabled = true;
        let some = asks(&config, "ops", &[OwnerKind::Kustomization]);
        assert_eq!(
            some.iter().filter(|a| a.resource == "deployments").count(),
            8
        );
        assert!(
            some.iter()
                .any(|a| a.resource == "leases" && a.namespace == "ops")
        );
        assert!(
            some.iter()
                .any(|a| a.resource == "kustomizations" && a.verb == "patch")
        );
        config.gitops.mode = GitopsMode::PageOnly;
        let page_only = asks(&config, "ops", &[OwnerKind::Kustomization]);
        assert!(
            !page_only
                .iter()
                .any(|a| a.resource == "kustomizations" && a.verb == "patch")
        );
    }
}

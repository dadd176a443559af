//! Blame only the release: what the previous version showed for each check before the new pods
//! took traffic, and the rule that leaves out of the verdict what it already did.
//!
//! The baseline is asked at detection, of the previous version's pods (through the Service, while
//! no pod of the new ReplicaSet is ready to take a share of its traffic). Then:
//! - a dependency check failing on both versions is a separate incident: paged, never rolled back;
//! - a health endpoint or smoke check failing on the previous version too (no `/health` at all, a
//!   404, another JSON shape) is unusable for this Deployment: left out of the verdict, with a
//!   Warning saying how to configure it, and left out of the rollback's verification too;
//! - a check with no baseline (no ready pod of the previous version, or a new pod already ready)
//!   is judged on its own, as it always was.
//!
//! The error ratio has its own baseline (`judge.baseline`), taken from the providers.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use serde::{Deserialize, Serialize};

use crate::check::CheckId;
use crate::cluster::caches::Subscription;
use crate::judge::{HealthSample, SmokeSample};

/// How a check is named in a message to a person.
fn describe(check: &CheckId) -> String {
    match check {
        CheckId::Health => "health".to_string(),
        CheckId::Dependency(name) => format!("dependency check {name}"),
        CheckId::Smoke(name) => format!("smoke check {name}"),
        CheckId::ErrorRate => "error rate".to_string(),
    }
}

/// What one check showed on the previous version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shown {
    Passed,
    /// Failed on every answer the previous version gave; why.
    Failed(String),
}

/// Every check's baseline for one rollout. Persisted with the rollout's state, so a watch resumed
/// after a restart (when the previous version's pods may be gone) judges by the same rule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Baseline {
    /// The previous version the checks were asked of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The health endpoint; `None` when it was not asked or no answer was the previous version's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Shown>,
    /// Dependency checks not `ok` on the previous version: name → value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, String>,
    /// Smoke checks by name; a check missing was not asked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub smoke: BTreeMap<String, Shown>,
}

impl Baseline {
    /// No answers of the previous version (`version`): every check is judged on its own.
    pub fn none(version: Option<String>) -> Baseline {
        Baseline {
            version,
            ..Baseline::default()
        }
    }

    /// A baseline from the previous version's answers: a check counts as failing there only when
    /// every answer failed it, so one slow reply is not taken for a check that never worked.
    pub fn from_answers(
        version: Option<String>,
        health: &[HealthSample],
        smoke: &[(String, SmokeSample)],
    ) -> Baseline {
        let answered: Vec<&Vec<(String, String)>> = health
            .iter()
            .filter_map(|h| match h {
                HealthSample::Answered { failing_checks, .. } => Some(failing_checks),
                HealthSample::Failed(_) => None,
            })
            .collect();
        let health_shown = match (answered.is_empty(), health.first()) {
            (_, None) => None,
            (false, _) => Some(Shown::Passed),
            (true, Some(HealthSample::Failed(why))) => Some(Shown::Failed(why.clone())),
            (true, Some(HealthSample::Answered { .. })) => None,
        };
        let mut dependencies = BTreeMap::new();
        if let Some((first, rest)) = answered.split_first() {
            for (name, value) in first.iter() {
                if rest.iter().all(|f| f.iter().any(|(n, _)| n == name)) {
                    dependencies.insert(name.clone(), value.clone());
                }
            }
        }
        let mut by_name: BTreeMap<String, Shown> = BTreeMap::new();
        for (name, sample) in smoke {
            let shown = match sample {
                SmokeSample::Passed => Shown::Passed,
                SmokeSample::Failed(why) => Shown::Failed(why.clone()),
            };
            let entry = by_name.entry(name.clone()).or_insert(shown.clone());
            if shown == Shown::Passed {
                *entry = Shown::Passed;
            }
        }
        Baseline {
            version,
            health: health_shown,
            dependencies,
            smoke: by_name,
        }
    }

    /// The previous version's name for messages.
    pub fn previous(&self) -> &str {
        self.version.as_deref().unwrap_or("the previous version")
    }

    /// Why the health endpoint is left out of the verdict, when it failed on the previous
    /// version too.
    pub fn health_unusable(&self) -> Option<&str> {
        match &self.health {
            Some(Shown::Failed(why)) => Some(why),
            _ => None,
        }
    }

    /// Why smoke check `name` is left out of the verdict, when it failed on the previous version.
    pub fn smoke_unusable(&self, name: &str) -> Option<&str> {
        match self.smoke.get(name) {
            Some(Shown::Failed(why)) => Some(why),
            _ => None,
        }
    }

    /// The value dependency check `name` had on the previous version, when it was not ok there.
    pub fn dependency_down(&self, name: &str) -> Option<&str> {
        self.dependencies.get(name).map(String::as_str)
    }

    /// The checks left out of the verdict and why, for the Warning and the Slack note.
    pub fn unusable(&self) -> Vec<(CheckId, &str)> {
        let health = self.health_unusable().map(|why| (CheckId::Health, why));
        let smoke = self.smoke.iter().filter_map(|(name, shown)| match shown {
            Shown::Failed(why) => Some((CheckId::Smoke(name.clone()), why.as_str())),
            Shown::Passed => None,
        });
        health.into_iter().chain(smoke).collect()
    }

    /// How a check compared with the previous version, for a message about its failure on the
    /// new one: `ok on v1.2.2 before the deploy`, `no baseline: …`.
    pub fn compared(&self, check: &CheckId) -> String {
        let previous = self.previous();
        let shown = match check {
            CheckId::Health => self.health.as_ref(),
            CheckId::Smoke(name) => self.smoke.get(name),
            // The error ratio's baseline is the providers' (`judge.baseline`).
            CheckId::ErrorRate => None,
            CheckId::Dependency(name) => {
                return match (self.dependency_down(name), &self.health) {
                    (Some(value), _) => format!("{value} on {previous} before the deploy"),
                    (None, Some(Shown::Passed)) => format!("ok on {previous} before the deploy"),
                    _ => format!("no baseline from {previous}"),
                };
            }
        };
        match shown {
            Some(Shown::Passed) => format!("passed on {previous} before the deploy"),
            Some(Shown::Failed(why)) => format!("{why} on {previous} before the deploy"),
            None => format!("no baseline from {previous}"),
        }
    }

    /// How to make a check that never worked on this Deployment usable.
    pub fn advice(check: &CheckId) -> &'static str {
        match check {
            CheckId::Health => {
                "point health.url (or the deploy-watchdog.io/health-url annotation) at an endpoint that answers the expected JSON, set health.version_pointer/checks_pointer to its shape, or set health.enabled: false"
            }
            CheckId::ErrorRate => {
                "set judge.baseline (or the error-rate queries) so the previous version's error ratio is known"
            }
            CheckId::Smoke(_) | CheckId::Dependency(_) => {
                "fix the check's url, expect_status or expect_body_contains (config smoke, or the deploy-watchdog.io/smoke annotation), or remove it"
            }
        }
    }

    /// The note of a Warning Event and of Slack for one check left out of the verdict.
    pub fn left_out_note(&self, check: &CheckId, why: &str, new_version: &str) -> String {
        format!(
            "{} left out of the verdict for {new_version}: {why} on {} before the deploy too, so it cannot tell a bad release; {}",
            describe(check),
            self.previous(),
            Baseline::advice(check)
        )
    }
}

/// Answers asked of the previous version at most: one per ready pod, up to this many, so one
/// slow reply is not taken for a check that never worked.
const MAX_ANSWERS: u32 = 3;

/// Asks the previous version's pods every check, through the Service, while they are the only
/// ready ones (a new pod ready to take its share would answer for the new version). When a pod
/// of the new ReplicaSet became ready meanwhile, only health answers that name the previous
/// version are kept; a check without an answer of the previous version has no baseline and is
/// judged on its own.
pub async fn ask(
    caches: &Subscription,
    probes: &crate::probes::Probes,
    deployment: &Deployment,
    previous: Option<String>,
) -> Baseline {
    let no_baseline = || Baseline::none(previous.clone());
    let (Some(namespace), Some(name)) = (
        deployment.metadata.namespace.as_deref(),
        deployment.metadata.name.as_deref(),
    ) else {
        return no_baseline();
    };
    if tokio::time::timeout(SYNC_LIMIT, caches.synced())
        .await
        .is_err()
    {
        tracing::warn!(
            "no baseline: the namespace's ReplicaSets and Pods were not listed within {SYNC_LIMIT:?}"
        );
        return no_baseline();
    }
    let old_ready = match ready_pods(caches, deployment) {
        Ready { old, new: 0 } if old > 0 => old,
        ready => {
            tracing::info!(
                old = ready.old,
                new = ready.new,
                "no baseline: the previous version is not alone in serving"
            );
            return no_baseline();
        }
    };
    // At once, so a slow or silent endpoint delays the watch by one timeout, not several; the
    // Service spreads the requests over the pods.
    let rounds = futures::future::join_all(
        (0..old_ready.min(MAX_ANSWERS)).map(|_| probes.round(namespace, name, false)),
    )
    .await;
    let alone = ready_pods(caches, deployment).new == 0;
    let mut health = Vec::new();
    let mut smoke = Vec::new();
    for round in rounds {
        if alone {
            health.extend(round.health);
            smoke.extend(round.smoke);
        } else {
            // A new pod became ready meanwhile: only an answer that names its version counts.
            health.extend(round.health.filter(|h| {
                matches!(h, HealthSample::Answered { version: Some(v), .. } if Some(v) == previous.as_ref())
            }));
        }
    }
    let baseline = Baseline::from_answers(previous.clone(), &health, &smoke);
    tracing::info!(?baseline, "baseline of the checks taken");
    baseline
}

/// How long the baseline waits for its namespace's watches to list it: past this, the
/// previous version's pods cannot be told from the new ones, and there is no baseline.
const SYNC_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Ready pods of the previous versions and of the new ReplicaSet.
struct Ready {
    old: u32,
    new: u32,
}

/// Counts the Deployment's ready pods by ReplicaSet, as its namespace's watches show them now
/// (what the Service's endpoints follow).
fn ready_pods(caches: &Subscription, deployment: &Deployment) -> Ready {
    let sets = caches.replica_sets_of_deployment(deployment);
    let template = deployment
        .spec
        .as_ref()
        .map(|s| crate::cluster::rollout::template_key(&s.template));
    let new_set = crate::cluster::caches::new_replica_set(template, &sets)
        .and_then(|s| s.set.metadata.uid.clone());
    let mut ready = Ready { old: 0, new: 0 };
    for set in &sets {
        let serving = caches
            .pods_of(&set.set)
            .iter()
            .filter(|p| p.ready && !p.deleting)
            .count() as u32;
        if set.set.metadata.uid.is_some() && set.set.metadata.uid == new_set {
            ready.new += serving;
        } else {
            ready.old += serving;
        }
    }
    ready
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(failing: &[(&str, &str)]) -> HealthSample {
        HealthSample::Answered {
            version: Some("v1.2.2".into()),
            failing_checks: failing
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn a_health_endpoint_that_never_answered_is_unusable() {
        let b = Baseline::from_answers(
            Some("v1.2.2".into()),
            &[
                HealthSample::Failed("HTTP 404, expected 200".into()),
                HealthSample::Failed("HTTP 404, expected 200".into()),
            ],
            &[],
        );
        assert_eq!(b.health_unusable(), Some("HTTP 404, expected 200"));
        assert_eq!(
            b.unusable(),
            vec![(CheckId::Health, "HTTP 404, expected 200")]
        );
        assert!(
            b.left_out_note(&CheckId::Health, "HTTP 404, expected 200", "v1.2.3")
                .starts_with("health left out of the verdict for v1.2.3: HTTP 404, expected 200 on v1.2.2 before the deploy too")
        );
    }

    #[test]
    fn one_good_answer_makes_the_health_endpoint_usable() {
        let b = Baseline::from_answers(
            Some("v1.2.2".into()),
            &[HealthSample::Failed("timed out".into()), answered(&[])],
            &[],
        );
        assert_eq!(b.health, Some(Shown::Passed));
        assert_eq!(b.health_unusable(), None);
        assert_eq!(
            b.compared(&CheckId::Health),
            "passed on v1.2.2 before the deploy"
        );
    }

    #[test]
    fn a_dependency_is_down_before_the_deploy_only_when_every_answer_says_so() {
        let b = Baseline::from_answers(
            Some("v1.2.2".into()),
            &[
                answered(&[("database", "timeout"), ("cache", "slow")]),
                answered(&[("database", "timeout")]),
            ],
            &[],
        );
        assert_eq!(b.dependency_down("database"), Some("timeout"));
        assert_eq!(b.dependency_down("cache"), None);
        assert_eq!(
            b.compared(&CheckId::Dependency("database".into())),
            "timeout on v1.2.2 before the deploy"
        );
        assert_eq!(
            b.compared(&CheckId::Dependency("cache".into())),
            "ok on v1.2.2 before the deploy"
        );
    }

    #[test]
    fn a_smoke_check_failing_on_every_answer_is_unusable() {
        let b = Baseline::from_answers(
            None,
            &[],
            &[
                ("home".into(), SmokeSample::Passed),
                (
                    "status".into(),
                    SmokeSample::Failed("HTTP 404, expected 200".into()),
                ),
                (
                    "status".into(),
                    SmokeSample::Failed("HTTP 404, expected 200".into()),
                ),
                ("flaky".into(), SmokeSample::Failed("timed out".into())),
                ("flaky".into(), SmokeSample::Passed),
            ],
        );
        assert_eq!(b.health, None);
        assert_eq!(b.smoke_unusable("home"), None);
        assert_eq!(b.smoke_unusable("flaky"), None);
        assert_eq!(b.smoke_unusable("status"), Some("HTTP 404, expected 200"));
        assert_eq!(
            b.compared(&CheckId::Health),
            "no baseline from the previous version"
        );
    }

    #[test]
    fn no_answer_is_no_baseline() {
        let b = Baseline::from_answers(Some("v1".into()), &[], &[]);
        assert_eq!(
            b,
            Baseline {
                version: Some("v1".into()),
                ..Baseline::default()
            }
        );
        assert!(b.unusable().is_empty());
    }

    #[test]
    fn the_baseline_survives_a_round_trip_through_the_recorded_state() {
        let b = Baseline::from_answers(
            Some("v1.2.2".into()),
            &[HealthSample::Failed("body is not JSON".into())],
            &[("home".into(), SmokeSample::Passed)],
        );
        let json = serde_json::to_string(&b).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Baseline>(&json).ok(), Some(b));
    }
    /// The judge with a baseline, as a session builds it.
    mod judged {
        use super::*;
        use crate::judge::{Judge, Observation, Policy, ProbeRound, Reason, RolloutFacts, Verdict};

        fn judge(checks: Baseline) -> Judge {
            Judge::new(
                Policy::test(),
                RolloutFacts {
                    expected_version: Some("v1.2.3".into()),
                    baseline: None,
                    checks,
                },
            )
        }

        fn tick(secs: u64, health: HealthSample, smoke: Vec<(String, SmokeSample)>) -> Observation {
            Observation::complete(
                secs,
                ProbeRound {
                    health: Some(health),
                    smoke,
                    providers: vec![],
                },
            )
        }

        fn new_version(failing: &[(&str, &str)]) -> HealthSample {
            HealthSample::Answered {
                version: Some("v1.2.3".into()),
                failing_checks: failing
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
            }
        }

        fn verdicts(j: &mut Judge, obs: impl IntoIterator<Item = Observation>) -> Vec<Verdict> {
            obs.into_iter()
                .map(|o| j.observe(&o))
                .filter(|v| *v != Verdict::Continue)
                .collect()
        }

        fn database_down_before() -> Baseline {
            Baseline::from_answers(
                Some("v1.2.2".into()),
                &[answered(&[("database", "timeout")])],
                &[],
            )
        }

        #[test]
        fn a_dependency_down_on_both_versions_pages_once_and_never_rolls_back() {
            let mut j = judge(database_down_before());
            let vs = verdicts(
                &mut j,
                (1..=20).map(|i| tick(i * 10, new_version(&[("database", "timeout")]), vec![])),
            );
            assert_eq!(
                vs,
                vec![Verdict::Page {
                    reason: Reason::DependencyCheck,
                    message: "database: timeout on v1.2.3 and timeout on v1.2.2 before the deploy → not rolled back: a dependency down before the deploy is a separate incident".into(),
                }]
            );
            // Still down at the end of the window: degraded, for the dependency.
            let end = j.observe(&tick(1000, new_version(&[("database", "timeout")]), vec![]));
            assert!(
                matches!(
                    &end,
                    Verdict::Finish(crate::judge::Finish::Degraded {
                        reason: Reason::DependencyCheck,
                        ..
                    })
                ),
                "{end:?}"
            );
        }

        #[test]
        fn a_dependency_down_before_the_deploy_that_recovers_lets_the_release_pass() {
            let mut j = judge(database_down_before());
            let mut obs: Vec<_> = (1..=5)
                .map(|i| tick(i * 10, new_version(&[("database", "timeout")]), vec![]))
                .collect();
            obs.extend((6..=20).map(|i| tick(i * 10, new_version(&[]), vec![])));
            obs.push(tick(1000, new_version(&[]), vec![]));
            let vs = verdicts(&mut j, obs);
            assert_eq!(vs.len(), 2, "{vs:?}");
            assert!(matches!(
                vs[0],
                Verdict::Page {
                    reason: Reason::DependencyCheck,
                    ..
                }
            ));
            assert_eq!(vs[1], Verdict::Finish(crate::judge::Finish::Passed));
        }

        #[test]
        fn a_dependency_failing_only_with_the_new_version_still_rolls_back_naming_the_baseline() {
            let mut j = judge(database_down_before());
            let failing = || new_version(&[("cache", "refused"), ("database", "timeout")]);
            let vs = verdicts(&mut j, (1..=3).map(|i| tick(i * 10, failing(), vec![])));
            assert_eq!(
                vs,
                vec![Verdict::RollBack {
                    reason: Reason::DependencyCheck,
                    message: "health: dependency check cache is \"refused\", not ok (ok on v1.2.2 before the deploy) for 3 consecutive samples".into(),
                }]
            );
        }

        #[test]
        fn a_health_endpoint_failing_on_both_versions_is_left_out_and_others_judge() {
            let checks = Baseline::from_answers(
                Some("v1.2.2".into()),
                &[HealthSample::Failed("HTTP 404, expected 200".into())],
                &[("home".into(), SmokeSample::Passed)],
            );
            let mut j = judge(checks.clone());
            let not_found = || HealthSample::Failed("HTTP 404, expected 200".into());
            let home = || vec![("home".to_string(), SmokeSample::Passed)];
            assert!(
                verdicts(&mut j, (1..=10).map(|i| tick(i * 10, not_found(), home()))).is_empty()
            );
            // The smoke check still judges.
            let mut j = judge(checks);
            let broken = || {
                vec![(
                    "home".to_string(),
                    SmokeSample::Failed("HTTP 503, expected 200".into()),
                )]
            };
            let vs = verdicts(&mut j, (1..=3).map(|i| tick(i * 10, not_found(), broken())));
            assert_eq!(
                vs,
                vec![Verdict::RollBack {
                    reason: Reason::Smoke,
                    message: "smoke check home: HTTP 503, expected 200 (passed on v1.2.2 before the deploy) for 3 consecutive samples".into(),
                }]
            );
        }

        #[test]
        fn a_health_endpoint_that_worked_before_the_deploy_fails_the_release() {
            let checks = Baseline::from_answers(Some("v1.2.2".into()), &[answered(&[])], &[]);
            let mut j = judge(checks);
            let failing = || HealthSample::Failed("HTTP 404, expected 200".into());
            let vs = verdicts(&mut j, (1..=3).map(|i| tick(i * 10, failing(), vec![])));
            assert_eq!(
                vs,
                vec![Verdict::RollBack {
                    reason: Reason::Health,
                    message: "health: HTTP 404, expected 200 (passed on v1.2.2 before the deploy) for 3 consecutive samples".into(),
                }]
            );
        }

        #[test]
        fn a_smoke_check_failing_before_the_deploy_is_left_out() {
            let checks = Baseline::from_answers(
                Some("v1.2.2".into()),
                &[answered(&[])],
                &[(
                    "status".into(),
                    SmokeSample::Failed("HTTP 404, expected 200".into()),
                )],
            );
            let mut j = judge(checks);
            let status = || {
                vec![(
                    "status".to_string(),
                    SmokeSample::Failed("HTTP 404, expected 200".into()),
                )]
            };
            assert!(
                verdicts(
                    &mut j,
                    (1..=10).map(|i| tick(i * 10, new_version(&[]), status()))
                )
                .is_empty()
            );
        }
    }
}

//! The live record: each check's latest value, written by the session on the Deployment (the
//! annotation [`LIVE_ANNOTATION`]) so that `status` can show it with only a kubeconfig.
//!
//! Versioned: a reader ignores a record of a version it does not know, and a Deployment
//! recorded by an older daemon (no such annotation) simply shows no values.
//!
//! A Deployment's generation rises with each change of its annotations, and `kubectl rollout
//! status` waits for the controller to observe it: the record is written only once the
//! rollout is complete (the window has started), when a check changes state, and with the
//! record of the rollout's outcome. Values that merely move (an error ratio from 0.10 % to
//! 0.12 %) wait for the next of those: a watched rollout costs the API server no write while
//! nothing changes, and the record says when its values were taken.

use serde::{Deserialize, Serialize};

use super::{CheckState, CheckView};
use crate::check::Provider;
use crate::judge::{self, HealthSample, Policy, ProbeRound, ProviderSample, SmokeSample};
use crate::telemetry::CheckReading;

/// JSON [`LiveRecord`] of the rollout being watched.
pub const LIVE_ANNOTATION: &str = "deploy-watchdog.io/live";
/// The record's format version.
pub const VERSION: u32 = 1;

/// What the live annotation holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveRecord {
    pub version: u32,
    /// The rollout's revision: a record left by an earlier rollout (the rollback copies the old
    /// ReplicaSet's annotations back) is not this one's.
    pub revision: i64,
    /// When the values were taken.
    pub at: jiff::Timestamp,
    /// The watch window's length, in seconds (overrides included).
    pub window_seconds: u64,
    pub checks: Vec<CheckView>,
}

impl LiveRecord {
    /// The record of `revision` on a Deployment, if one of a known version is there.
    pub fn read(
        annotations: &std::collections::BTreeMap<String, String>,
        revision: i64,
    ) -> Option<LiveRecord> {
        let raw = annotations.get(LIVE_ANNOTATION)?;
        let version: serde_json::Value = serde_json::from_str(raw).ok()?;
        if version.get("version").and_then(serde_json::Value::as_u64) != Some(VERSION.into()) {
            return None;
        }
        let record: LiveRecord = serde_json::from_value(version).ok()?;
        (record.revision == revision).then_some(record)
    }
}

/// The latest answer of each check, merged from probe rounds: the providers' round and the
/// health/smoke round arrive apart.
#[derive(Debug, Clone, Default)]
pub struct Latest {
    health: Option<HealthSample>,
    smoke: Vec<(String, SmokeSample)>,
    providers: Vec<(Provider, ProviderSample)>,
    pub at: Option<jiff::Timestamp>,
}

impl Latest {
    pub fn update(&mut self, round: &ProbeRound, now: jiff::Timestamp) {
        if round.health.is_some() {
            self.health = round.health.clone();
        }
        if !round.smoke.is_empty() {
            self.smoke = round.smoke.clone();
        }
        if !round.providers.is_empty() {
            self.providers = round.providers.clone();
        }
        self.at = Some(now);
    }

    /// The pooled error ratio of the providers that answered with enough traffic.
    pub fn error_ratio(&self, min_requests: u64) -> Option<f64> {
        self.providers.iter().find_map(|(_, s)| match s {
            ProviderSample::Counts { requests, errors }
                if *requests >= min_requests as f64 && *requests > 0.0 =>
            {
                Some(errors / requests)
            }
            _ => None,
        })
    }

    /// Each check against its condition.
    pub fn checks(
        &self,
        policy: &Policy,
        baseline: Option<f64>,
        expected_version: Option<&str>,
    ) -> Vec<CheckView> {
        let mut out = Vec::new();
        let limit = judge::percent(policy.error_rate_threshold);
        let condition = match (policy.baseline_factor, baseline) {
            (Some(f), Some(b)) => format!(
                "≤ {limit}, or ≤ {f}× baseline ({}), over ≥ {} requests",
                judge::percent(b * f),
                policy.min_requests
            ),
            _ => format!("≤ {limit} over ≥ {} requests", policy.min_requests),
        };
        for (provider, sample) in &self.providers {
            let (value, state) = match sample {
                ProviderSample::Counts { requests, errors } => {
                    let (ratio, state) = error_rate_state(policy, baseline, *requests, *errors);
                    let value = format!(
                        "{} ({} of {} requests)",
                        judge::percent(ratio),
                        judge::count(*errors),
                        judge::count(*requests)
                    );
                    (value, state)
                }
                ProviderSample::NoData => ("no data".to_string(), CheckState::Unknown),
                ProviderSample::Unavailable(e) => {
                    (format!("unavailable: {e}"), CheckState::Unknown)
                }
            };
            out.push(CheckView {
                name: format!("error rate ({provider})"),
                value,
                condition: condition.clone(),
                baseline: baseline.map(judge::percent),
                state,
            });
        }
        match &self.health {
            Some(HealthSample::Failed(e)) => out.push(CheckView {
                name: "health".into(),
                value: e.clone(),
                condition: health_condition(expected_version),
                baseline: None,
                state: CheckState::Failing,
            }),
            Some(HealthSample::Answered {
                version,
                failing_checks,
            }) => {
                let mismatch =
                    matches!((expected_version, version.as_deref()), (Some(e), Some(v)) if e != v);
                out.push(CheckView {
                    name: "health".into(),
                    value: match version {
                        Some(v) => format!("200, version {v}"),
                        None => "200".into(),
                    },
                    condition: health_condition(expected_version),
                    baseline: None,
                    state: if mismatch {
                        CheckState::Failing
                    } else {
                        CheckState::Ok
                    },
                });
                for (name, value) in failing_checks {
                    out.push(CheckView {
                        name: format!("dependency {name}"),
                        value: value.clone(),
                        condition: "ok".into(),
                        baseline: None,
                        state: CheckState::Failing,
                    });
                }
            }
            None => {}
        }
        for (name, sample) in &self.smoke {
            let (value, state) = match sample {
                SmokeSample::Passed => ("passed".to_string(), CheckState::Ok),
                SmokeSample::Failed(e) => (e.clone(), CheckState::Failing),
            };
            out.push(CheckView {
                name: format!("smoke {name}"),
                value,
                condition: "passes".into(),
                baseline: None,
                state,
            });
        }
        out
    }
}

impl Latest {
    /// Each check's latest reading, for the per-check gauges: an error rate with its limit, the
    /// health endpoint (1 when it answers with the expected version and every dependency ok),
    /// the share of smoke checks passing.
    pub fn readings(
        &self,
        policy: &Policy,
        baseline: Option<f64>,
        expected_version: Option<&str>,
    ) -> Vec<CheckReading> {
        let mut out = Vec::new();
        let limit = match (policy.baseline_factor, baseline) {
            (Some(f), Some(b)) => policy.error_rate_threshold.max(b * f),
            _ => policy.error_rate_threshold,
        };
        for (provider, sample) in &self.providers {
            let check = match provider {
                Provider::Prometheus => "error_rate_prometheus",
                Provider::Datadog => "error_rate_datadog",
            };
            let (value, failing) = match sample {
                ProviderSample::Counts { requests, errors } if *requests > 0.0 => {
                    let (ratio, state) = error_rate_state(policy, baseline, *requests, *errors);
                    (Some(ratio), state == CheckState::Failing)
                }
                _ => (None, false),
            };
            out.push(CheckReading {
                check,
                value,
                threshold: Some(limit),
                failing,
            });
        }
        if let Some(h) = &self.health {
            let healthy = match h {
                HealthSample::Failed(_) => false,
                HealthSample::Answered {
                    version,
                    failing_checks,
                } => {
                    failing_checks.is_empty()
                        && !matches!((expected_version, version.as_deref()), (Some(e), Some(v)) if e != v)
                }
            };
            out.push(CheckReading {
                check: "health",
                value: Some(if healthy { 1.0 } else { 0.0 }),
                threshold: None,
                failing: !healthy,
            });
        }
        if !self.smoke.is_empty() {
            let passed = self
                .smoke
                .iter()
                .filter(|(_, s)| matches!(s, SmokeSample::Passed))
                .count();
            out.push(CheckReading {
                check: "smoke",
                value: Some(passed as f64 / self.smoke.len() as f64),
                threshold: None,
                failing: passed < self.smoke.len(),
            });
        }
        out
    }
}

/// An error-rate sample's ratio and state: failing over the threshold (and over the baseline
/// times its factor, with a baseline), unknown under the minimum of requests.
fn error_rate_state(
    policy: &Policy,
    baseline: Option<f64>,
    requests: f64,
    errors: f64,
) -> (f64, CheckState) {
    let ratio = if requests > 0.0 {
        errors / requests
    } else {
        0.0
    };
    let over = ratio > policy.error_rate_threshold
        && match (policy.baseline_factor, baseline) {
            (Some(f), Some(b)) => ratio > b * f,
            _ => true,
        };
    let state = if requests < policy.min_requests as f64 {
        CheckState::Unknown
    } else if over {
        CheckState::Failing
    } else {
        CheckState::Ok
    };
    (ratio, state)
}

fn health_condition(expected: Option<&str>) -> String {
    match expected {
        Some(v) => format!("200 with version {v}, dependencies ok"),
        None => "200, dependencies ok".into(),
    }
}

/// When the session writes the live record while it watches: not before the window starts,
/// then at once when a check changes state (ok, failing, unknown) or a check comes or goes.
#[derive(Debug, Default)]
pub struct Cadence {
    written: Option<Vec<(String, CheckState)>>,
}

impl Cadence {
    pub fn due(&self, checks: &[CheckView]) -> bool {
        match &self.written {
            None => !checks.is_empty(),
            Some(last) => *last != states(checks),
        }
    }

    pub fn written(&mut self, checks: &[CheckView]) {
        self.written = Some(states(checks));
    }
}

fn states(checks: &[CheckView]) -> Vec<(String, CheckState)> {
    checks.iter().map(|c| (c.name.clone(), c.state)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::from_config(&crate::config::Config::default())
    }

    fn round(requests: f64, errors: f64) -> ProbeRound {
        ProbeRound {
            providers: vec![(
                Provider::Prometheus,
                ProviderSample::Counts { requests, errors },
            )],
            ..Default::default()
        }
    }

    #[test]
    fn an_error_rate_over_the_threshold_is_failing_and_says_its_value_and_condition() {
        let mut l = Latest::default();
        let p = policy();
        let errors = 1000.0 * p.error_rate_threshold * 3.0;
        l.update(&round(1000.0, errors), jiff::Timestamp::UNIX_EPOCH);
        let c = &l.checks(&p, None, None)[0];
        assert_eq!(c.name, "error rate (prometheus)");
        assert_eq!(c.state, CheckState::Failing);
        assert!(c.value.contains(&judge::percent(errors / 1000.0)), "{c:?}");
        assert!(
            c.condition
                .contains(&judge::percent(p.error_rate_threshold))
        );
        l.update(&round(1000.0, 0.0), jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(l.checks(&p, None, None)[0].state, CheckState::Ok);
        l.update(&round(1.0, 1.0), jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(l.checks(&p, None, None)[0].state, CheckState::Unknown);
    }

    #[test]
    fn a_health_round_does_not_forget_the_providers() {
        let mut l = Latest::default();
        l.update(&round(1000.0, 0.0), jiff::Timestamp::UNIX_EPOCH);
        l.update(
            &ProbeRound {
                health: Some(HealthSample::Answered {
                    version: Some("v1".into()),
                    failing_checks: vec![("db".into(), "down".into())],
                }),
                ..Default::default()
            },
            jiff::Timestamp::UNIX_EPOCH,
        );
        let names: Vec<_> = l
            .checks(&policy(), None, Some("v2"))
            .into_iter()
            .map(|c| (c.name, c.state))
            .collect();
        assert_eq!(
            names,
            [
                ("error rate (prometheus)".to_string(), CheckState::Ok),
                ("health".to_string(), CheckState::Failing),
                ("dependency db".to_string(), CheckState::Failing),
            ]
        );
    }

    #[test]
    fn the_record_is_written_when_a_check_changes_state_not_when_its_value_moves() {
        let mut l = Latest::default();
        let p = policy();
        let mut cadence = Cadence::default();
        assert!(!cadence.due(&[]), "no check yet: nothing to write");
        l.update(&round(1000.0, 0.0), jiff::Timestamp::UNIX_EPOCH);
        let ok = l.checks(&p, None, None);
        assert!(cadence.due(&ok), "the first values are written");
        cadence.written(&ok);
        l.update(&round(2000.0, 1.0), jiff::Timestamp::UNIX_EPOCH);
        let moved = l.checks(&p, None, None);
        assert_ne!(moved, ok, "the value moved");
        assert!(!cadence.due(&moved), "a moving value alone is not written");
        l.update(&round(1000.0, 900.0), jiff::Timestamp::UNIX_EPOCH);
        let failing = l.checks(&p, None, None);
        assert!(cadence.due(&failing), "ok to failing is written");
        cadence.written(&failing);
        l.update(&round(1.0, 1.0), jiff::Timestamp::UNIX_EPOCH);
        assert!(
            cadence.due(&l.checks(&p, None, None)),
            "failing to unknown is written"
        );
        l.update(&round(1000.0, 0.0), jiff::Timestamp::UNIX_EPOCH);
        assert!(
            cadence.due(&l.checks(&p, None, None)),
            "failing to ok is written"
        );
    }

    #[test]
    fn a_record_of_another_version_or_revision_is_not_read() {
        let record = LiveRecord {
            version: VERSION,
            revision: 4,
            at: jiff::Timestamp::UNIX_EPOCH,
            window_seconds: 600,
            checks: Vec::new(),
        };
        let mut a = std::collections::BTreeMap::from([(
            LIVE_ANNOTATION.to_string(),
            serde_json::to_string(&record).unwrap_or_default(),
        )]);
        assert_eq!(LiveRecord::read(&a, 4), Some(record));
        assert_eq!(LiveRecord::read(&a, 5), None);
        a.insert(
            LIVE_ANNOTATION.into(),
            r#"{"version":2,"revision":4,"whatever":true}"#.into(),
        );
        assert_eq!(LiveRecord::read(&a, 4), None);
    }
}

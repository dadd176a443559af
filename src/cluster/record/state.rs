//! The state annotation: what a new process needs to resume a rollout, versioned.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use super::{
    Outcome, PAGE_DELIVERED_ANNOTATION, STATE_ANNOTATION, STATE_DIGEST_ANNOTATION,
    VERDICT_ANNOTATION, digest,
};
use crate::judge::Reason;
use crate::phase::Phase;

/// The version of the state annotation this process writes. A record without `v` is version 1
/// (an outcome, a `settled` flag and the window's start, from which [`StateV1::phase`] works the
/// phase out once); a record of a newer version than this is not read.
pub const STATE_VERSION: u32 = 2;

/// What a new process needs to resume a rollout's watch exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    pub revision: i64,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub detected_at: jiff::Timestamp,
    /// Where the rollout is: what a new process resumes from.
    pub phase: Phase,
    /// A problem paged while the watch goes on (the rollout is degraded but not settled): a
    /// resumed watch does not page for it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paged: Option<Reason>,
    /// Set with the rollback patch: the restored template's fingerprint, so the revision the
    /// rollback creates is never judged as a new rollout.
    #[serde(default)]
    pub rollback_fingerprint: Option<String>,
    /// The message of the last decision that paged, so a new process can page again if the
    /// previous one died before PagerDuty accepted it (the dedup key makes a repeat harmless).
    #[serde(default)]
    pub detail: Option<String>,
    /// The fingerprint of the pod template judged: a rollback is sent only while the Deployment
    /// still runs it, and once rolled back, a revision that brings it back again (someone's
    /// `kubectl rollout undo` after ours) is not fought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judged_template: Option<String>,
    /// What each check showed on the previous version before the deploy, so a resumed watch
    /// judges by the same baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Box<crate::baseline::Baseline>>,
}

/// The state annotation as version 1 wrote it.
#[derive(Debug, Clone, Deserialize)]
struct StateV1 {
    revision: i64,
    from_version: Option<String>,
    to_version: Option<String>,
    detected_at: jiff::Timestamp,
    #[serde(default)]
    outcome: Option<Outcome>,
    #[serde(default)]
    reason: Option<Reason>,
    #[serde(default)]
    rollback_fingerprint: Option<String>,
    #[serde(default)]
    settled: bool,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    window_started_at: Option<jiff::Timestamp>,
    #[serde(default)]
    judged_template: Option<String>,
}

impl StateV1 {
    /// The phase a version-1 record stands for: `settled` made its outcome final; a rollback
    /// sent but not settled was being verified; `degraded` without `settled` was a page while
    /// the watch went on.
    fn phase(&self) -> (Phase, Option<Reason>) {
        let reason = self.reason.unwrap_or(Reason::None);
        let watching = || match self.window_started_at {
            Some(since) => Phase::Watching { since, until: None },
            None => Phase::start(),
        };
        match (self.settled, self.outcome) {
            (true, Some(outcome)) => (Phase::Settled { outcome, reason }, None),
            (true, None) => (
                Phase::Settled {
                    outcome: Outcome::Passed,
                    reason,
                },
                None,
            ),
            (false, Some(Outcome::RolledBack)) => (Phase::Verifying { reason }, None),
            (false, Some(Outcome::Degraded)) => (watching(), self.reason),
            (false, None) => (watching(), None),
            (false, Some(outcome)) => (Phase::Settled { outcome, reason }, None),
        }
    }
}

impl From<StateV1> for RolloutState {
    fn from(v1: StateV1) -> RolloutState {
        let (phase, paged) = v1.phase();
        RolloutState {
            revision: v1.revision,
            from_version: v1.from_version,
            to_version: v1.to_version,
            detected_at: v1.detected_at,
            phase,
            paged,
            rollback_fingerprint: v1.rollback_fingerprint,
            detail: v1.detail,
            judged_template: v1.judged_template,
            baseline: None,
        }
    }
}

/// The state as written: [`RolloutState`] with its version.
#[derive(Serialize)]
struct Versioned<'a> {
    v: u32,
    #[serde(flatten)]
    state: &'a RolloutState,
}

impl RolloutState {
    /// A rollout just detected.
    pub fn detected(
        revision: i64,
        from_version: Option<String>,
        to_version: Option<String>,
        judged_template: Option<String>,
    ) -> RolloutState {
        RolloutState {
            revision,
            from_version,
            to_version,
            detected_at: jiff::Timestamp::now(),
            phase: Phase::start(),
            paged: None,
            rollback_fingerprint: None,
            detail: None,
            judged_template,
            baseline: None,
        }
    }

    /// Tests' rollout: `revision`, from v1 to v2, detected at the Unix epoch and not yet judged.
    #[cfg(test)]
    pub(crate) fn test(revision: i64) -> RolloutState {
        RolloutState {
            detected_at: jiff::Timestamp::UNIX_EPOCH,
            ..RolloutState::detected(revision, Some("v1".into()), Some("v2".into()), None)
        }
    }

    /// Reads a state annotation of any version up to [`STATE_VERSION`].
    pub fn parse(text: &str) -> Option<RolloutState> {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        match value.get("v").map(serde_json::Value::as_u64) {
            None => serde_json::from_value::<StateV1>(value)
                .ok()
                .map(Into::into),
            Some(Some(v)) if v <= u64::from(STATE_VERSION) => serde_json::from_value(value).ok(),
            _ => None,
        }
    }

    /// The outcome, once settled.
    pub fn outcome(&self) -> Option<Outcome> {
        self.phase.outcome()
    }

    /// Whether the Deployment runs the template this rollout's rollback restored.
    pub fn restored_on(&self, d: &Deployment) -> bool {
        crate::cluster::rollout::runs_template(d, self.rollback_fingerprint.as_deref())
    }

    /// Whether this rollout's state calls for a page that PagerDuty has not yet accepted.
    pub fn page_owed(&self, d: &Deployment) -> bool {
        let pages = self.paged.is_some()
            || matches!(
                self.phase,
                Phase::Verifying { .. }
                    | Phase::Settled {
                        outcome: Outcome::RolledBack
                            | Outcome::RollbackFailed
                            | Outcome::WouldRollBack
                            | Outcome::Degraded,
                        ..
                    }
            );
        let delivered = d
            .annotations()
            .get(PAGE_DELIVERED_ANNOTATION)
            .and_then(|r| r.parse::<i64>().ok());
        pages && self.detail.is_some() && delivered != Some(self.revision)
    }

    /// Whether this rollout was rolled back and the Deployment runs its judged template again:
    /// someone undid the rollback.
    pub fn rolled_back_template_on(&self, d: &Deployment) -> bool {
        self.phase.rolled_back()
            && crate::cluster::rollout::runs_template(d, self.judged_template.as_deref())
    }

    pub fn from_deployment(d: &Deployment) -> Option<RolloutState> {
        RolloutState::parse(d.annotations().get(STATE_ANNOTATION)?)
    }

    /// What people read in the verdict annotation: the outcome, or how far it got.
    fn verdict(&self) -> Option<&'static str> {
        match (&self.phase, self.paged) {
            (Phase::Settled { outcome, .. }, _) => Some(outcome.as_str()),
            (Phase::RollingBack { .. }, _) => Some("rolling_back"),
            (Phase::Verifying { .. }, _) => Some(Outcome::RolledBack.as_str()),
            (_, Some(_)) => Some(Outcome::Degraded.as_str()),
            _ => None,
        }
    }

    /// The annotations that carry this state.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let state = serde_json::to_string(&Versioned {
            v: STATE_VERSION,
            state: self,
        })
        .unwrap_or_default();
        let mut a = BTreeMap::from([
            (STATE_DIGEST_ANNOTATION.to_string(), digest(&state)),
            (STATE_ANNOTATION.to_string(), state),
        ]);
        if let Some(v) = self.verdict() {
            a.insert(VERDICT_ANNOTATION.to_string(), v.to_string());
        }
        a
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cluster::record::go_encodes_alike;

    fn state() -> RolloutState {
        RolloutState {
            detail: Some("error rate 3.4 % > 1 % & rising <fast>".into()),
            ..RolloutState::test(2)
        }
    }

    #[test]
    fn the_state_digest_is_ascii_and_follows_the_state() {
        let mut state = state();
        let a = state.annotations();
        let d = &a[STATE_DIGEST_ANNOTATION];
        assert!(go_encodes_alike(d) && d.is_ascii() && d.len() == 16);
        assert!(!go_encodes_alike(&a[STATE_ANNOTATION]));
        state.phase = Phase::Settled {
            outcome: Outcome::Passed,
            reason: Reason::None,
        };
        assert_ne!(&state.annotations()[STATE_DIGEST_ANNOTATION], d);
    }

    #[test]
    fn the_state_is_written_with_its_version_and_reads_back() {
        let mut state = state();
        state.phase = Phase::Verifying {
            reason: Reason::Health,
        };
        state.rollback_fingerprint = Some("abc".into());
        let a = state.annotations();
        assert!(
            a[STATE_ANNOTATION].starts_with(r#"{"v":2,"#),
            "{}",
            a[STATE_ANNOTATION]
        );
        assert_eq!(RolloutState::parse(&a[STATE_ANNOTATION]), Some(state));
        assert_eq!(a[VERDICT_ANNOTATION], "rolled_back");
    }

    #[test]
    fn a_newer_version_of_the_state_is_not_read() {
        let text = state().annotations()[STATE_ANNOTATION].replace(r#""v":2"#, r#""v":3"#);
        assert_eq!(RolloutState::parse(&text), None);
    }

    /// Version-1 records, as the previous release wrote them, and the phase each stands for.
    #[test]
    fn a_version_one_record_is_read_as_its_phase() {
        let t = "2026-01-01T00:00:00Z";
        let w = "2026-01-01T00:01:00Z";
        let v1 = |rest: &str| {
            format!(
                r#"{{"revision":3,"from_version":"v1","to_version":"v2","detected_at":"{t}"{rest}}}"#
            )
        };
        let since: jiff::Timestamp = w.parse().unwrap();
        let cases: Vec<(String, Phase, Option<Reason>)> = vec![
            (v1(""), Phase::start(), None),
            (
                v1(r#","outcome":null,"settled":false,"window_started_at":"2026-01-01T00:01:00Z""#),
                Phase::Watching { since, until: None },
                None,
            ),
            (
                v1(r#","outcome":"degraded","reason":"pending","settled":false,"detail":"x""#),
                Phase::start(),
                Some(Reason::Pending),
            ),
            (
                v1(
                    r#","outcome":"degraded","reason":"provider_blind","settled":false,"window_started_at":"2026-01-01T00:01:00Z""#,
                ),
                Phase::Watching { since, until: None },
                Some(Reason::ProviderBlind),
            ),
            (
                v1(r#","outcome":"degraded","reason":"pending","settled":true"#),
                Phase::Settled {
                    outcome: Outcome::Degraded,
                    reason: Reason::Pending,
                },
                None,
            ),
            (
                v1(
                    r#","outcome":"rolled_back","reason":"health","settled":false,"rollback_fingerprint":"f""#,
                ),
                Phase::Verifying {
                    reason: Reason::Health,
                },
                None,
            ),
            (
                v1(r#","outcome":"rolled_back","reason":"health","settled":true"#),
                Phase::Settled {
                    outcome: Outcome::RolledBack,
                    reason: Reason::Health,
                },
                None,
            ),
            (
                v1(r#","outcome":"passed","reason":"none","settled":true"#),
                Phase::Settled {
                    outcome: Outcome::Passed,
                    reason: Reason::None,
                },
                None,
            ),
        ];
        for (text, phase, paged) in cases {
            let state = RolloutState::parse(&text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!((state.phase, state.paged), (phase, paged), "{text}");
            assert_eq!(state.revision, 3);
        }
    }
}

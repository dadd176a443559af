//! A rollout's lifecycle: one [`Phase`], recorded on the Deployment, and the one function that
//! moves it on ([`Phase::next`]).
//!
//! A session is `loop { phase = step(phase).await }`: each step does the phase's work (watch and
//! judge, send the rollback, verify it) until something [`Happened`]; [`Phase::next`] decides
//! the phase that follows, and the session records it before anything else. A new process —
//! after a restart or a leader change — resumes from the recorded phase, and the scenario runner
//! reads the same record; nothing works the phase out from flags, outcomes or message text.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::judge::Reason;

/// How a rollout ended (docs/policy.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Passed,
    RolledBack,
    WouldRollBack,
    /// The watch ended with a paged problem still open. Only ever final: a page while the watch
    /// goes on is [`crate::cluster::record::RolloutState::paged`].
    Degraded,
    RollbackFailed,
    Superseded,
    Deleted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::RolledBack => "rolled_back",
            Outcome::WouldRollBack => "would_roll_back",
            Outcome::Degraded => "degraded",
            Outcome::RollbackFailed => "rollback_failed",
            Outcome::Superseded => "superseded",
            Outcome::Deleted => "deleted",
        }
    }
}

/// Where a rollout is. Serialised (tagged by `name`) into the state annotation and into every
/// Event the watchdog writes about the rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Phase {
    /// Pods are rolling out; the watch window has not begun.
    Progressing {
        /// Time the Deployment has spent paused (`spec.paused`) so far: it does not count
        /// toward `rollout_timeout`, as the deployment controller does not count it toward the
        /// progress deadline.
        #[serde(default, skip_serializing_if = "Paused::is_never")]
        paused: Paused,
    },
    /// The rollout completed at `since`; the watch window runs until `until`.
    Watching {
        since: jiff::Timestamp,
        /// Absent in a record written by a version that did not keep it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<jiff::Timestamp>,
    },
    /// The judge decided to roll back for `reason`; the rollback is not sent yet.
    RollingBack { reason: Reason },
    /// The rollback for `reason` was sent (or someone else's was found); checking that the
    /// Deployment runs the previous version again.
    Verifying { reason: Reason },
    /// Nothing is left to do.
    Settled { outcome: Outcome, reason: Reason },
}

/// Paused time of a rollout: the total of pauses that ended, and the start of one going on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Paused {
    #[serde(default, with = "humantime_serde")]
    pub total: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<jiff::Timestamp>,
}

impl Paused {
    fn is_never(&self) -> bool {
        *self == Paused::default()
    }

    /// Paused time up to `now`, the pause going on included.
    pub fn until(&self, now: jiff::Timestamp) -> Duration {
        let current = self
            .since
            .map(|s| Duration::try_from(now.duration_since(s)).unwrap_or_default())
            .unwrap_or_default();
        self.total.saturating_add(current)
    }
}

/// What ended a step: the input of [`Phase::next`].
#[derive(Debug, Clone, PartialEq)]
pub enum Happened {
    /// The Deployment was paused (`spec.paused` became true) while rolling out.
    Paused { at: jiff::Timestamp },
    /// … and resumed.
    Resumed { at: jiff::Timestamp },
    /// The rollout completed at `at`: the window runs until `until`.
    Complete {
        at: jiff::Timestamp,
        until: jiff::Timestamp,
    },
    /// The judge decided to roll back.
    RollBack { reason: Reason },
    /// The judge decided to roll back, in dry-run mode: nothing is sent.
    WouldRollBack { reason: Reason },
    /// The rollback was sent, or found already done (by a previous leader, by a person).
    RollbackSent,
    /// The rollback was refused for good, or not verified in time.
    RollbackFailed,
    /// The rollback was not sent because it would not stick (a GitOps owner above would undo
    /// it): paged instead.
    RollbackWithheld,
    /// The Deployment runs the previous version again.
    Verified,
    /// The window ended with nothing open.
    Passed,
    /// The window ended with a paged problem still open.
    EndedDegraded { reason: Reason },
    /// A newer rollout started, or the Deployment was deleted.
    Ended(Outcome),
}

/// A [`Happened`] that cannot happen in a phase: a bug in the session, never in the input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{happened:?} cannot happen while {phase}")]
pub struct InvalidTransition {
    pub phase: Phase,
    pub happened: Happened,
}

impl Phase {
    /// The phase of a rollout just detected.
    pub fn start() -> Phase {
        Phase::Progressing {
            paused: Paused::default(),
        }
    }

    /// The phase that follows `self` once `happened`. The only place a phase is decided.
    pub fn next(&self, happened: Happened) -> Result<Phase, InvalidTransition> {
        use Happened as H;
        use Phase as P;
        let next = match (self, &happened) {
            (P::Settled { .. }, _) => None,
            // Ending is possible from every open phase; a rollback sent is verified first.
            (_, H::Ended(outcome @ (Outcome::Superseded | Outcome::Deleted))) => Some(P::Settled {
                outcome: *outcome,
                reason: Reason::None,
            }),
            (P::Progressing { paused }, H::Paused { at }) => Some(P::Progressing {
                paused: Paused {
                    total: paused.total,
                    since: paused.since.or(Some(*at)),
                },
            }),
            (P::Progressing { paused }, H::Resumed { at }) => Some(P::Progressing {
                paused: Paused {
                    total: paused.until(*at),
                    since: None,
                },
            }),
            (P::Progressing { .. }, H::Complete { at, until }) => Some(P::Watching {
                since: *at,
                until: Some(*until),
            }),
            (P::Progressing { .. } | P::Watching { .. }, H::RollBack { reason }) => {
                Some(P::RollingBack { reason: *reason })
            }
            (P::Progressing { .. } | P::Watching { .. }, H::WouldRollBack { reason }) => {
                Some(P::Settled {
                    outcome: Outcome::WouldRollBack,
                    reason: *reason,
                })
            }
            (P::Watching { .. }, H::Passed) => Some(P::Settled {
                outcome: Outcome::Passed,
                reason: Reason::None,
            }),
            (P::Progressing { .. } | P::Watching { .. }, H::EndedDegraded { reason }) => {
                Some(P::Settled {
                    outcome: Outcome::Degraded,
                    reason: *reason,
                })
            }
            // A previous leader's rollback is found while judging: verify it.
            (P::Progressing { .. } | P::Watching { .. }, H::RollbackSent) => None,
            (P::RollingBack { reason }, H::RollbackSent) => Some(P::Verifying { reason: *reason }),
            (P::RollingBack { reason } | P::Verifying { reason }, H::RollbackFailed) => {
                Some(P::Settled {
                    outcome: Outcome::RollbackFailed,
                    reason: *reason,
                })
            }
            (P::RollingBack { reason }, H::RollbackWithheld) => Some(P::Settled {
                outcome: Outcome::Degraded,
                reason: *reason,
            }),
            (P::Verifying { reason }, H::Verified) => Some(P::Settled {
                outcome: Outcome::RolledBack,
                reason: *reason,
            }),
            _ => None,
        };
        next.ok_or_else(|| InvalidTransition {
            phase: self.clone(),
            happened,
        })
    }

    /// The outcome, once settled.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Phase::Settled { outcome, .. } => Some(*outcome),
            _ => None,
        }
    }

    pub fn is_settled(&self) -> bool {
        matches!(self, Phase::Settled { .. })
    }

    /// Whether a rollback was sent for this rollout (it may not be verified yet).
    pub fn rolled_back(&self) -> bool {
        matches!(
            self,
            Phase::Verifying { .. }
                | Phase::Settled {
                    outcome: Outcome::RolledBack,
                    ..
                }
        )
    }

    /// The reason a rollback or an outcome was decided for, when one was.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Phase::RollingBack { reason }
            | Phase::Verifying { reason }
            | Phase::Settled { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// The phase's name, as serialised: `progressing`, `watching`, `rolling_back`, …
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Progressing { .. } => "progressing",
            Phase::Watching { .. } => "watching",
            Phase::RollingBack { .. } => "rolling_back",
            Phase::Verifying { .. } => "verifying",
            Phase::Settled { .. } => "settled",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Settled { outcome, reason } => {
                write!(f, "settled ({}, {reason})", outcome.as_str())
            }
            other => f.write_str(other.name()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(secs: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn watching() -> Phase {
        Phase::Watching {
            since: t(10),
            until: Some(t(70)),
        }
    }

    #[test]
    fn every_transition_of_the_lifecycle_is_decided_by_next() {
        use Happened as H;
        let progressing = Phase::start();
        let rolling_back = Phase::RollingBack {
            reason: Reason::Health,
        };
        let verifying = Phase::Verifying {
            reason: Reason::Health,
        };
        let settled = |outcome, reason| Phase::Settled { outcome, reason };
        let cases: Vec<(Phase, Happened, Option<Phase>)> = vec![
            (
                progressing.clone(),
                H::Complete {
                    at: t(10),
                    until: t(70),
                },
                Some(watching()),
            ),
            (
                progressing.clone(),
                H::RollBack {
                    reason: Reason::Health,
                },
                Some(rolling_back.clone()),
            ),
            (
                watching(),
                H::RollBack {
                    reason: Reason::Health,
                },
                Some(rolling_back.clone()),
            ),
            (
                watching(),
                H::WouldRollBack {
                    reason: Reason::Smoke,
                },
                Some(settled(Outcome::WouldRollBack, Reason::Smoke)),
            ),
            (
                watching(),
                H::Passed,
                Some(settled(Outcome::Passed, Reason::None)),
            ),
            (progressing.clone(), H::Passed, None),
            (
                progressing.clone(),
                H::EndedDegraded {
                    reason: Reason::ProviderBlind,
                },
                Some(settled(Outcome::Degraded, Reason::ProviderBlind)),
            ),
            (
                rolling_back.clone(),
                H::RollbackSent,
                Some(verifying.clone()),
            ),
            (
                rolling_back.clone(),
                H::RollbackFailed,
                Some(settled(Outcome::RollbackFailed, Reason::Health)),
            ),
            (rolling_back.clone(), H::Verified, None),
            (
                verifying.clone(),
                H::Verified,
                Some(settled(Outcome::RolledBack, Reason::Health)),
            ),
            (
                verifying.clone(),
                H::RollbackFailed,
                Some(settled(Outcome::RollbackFailed, Reason::Health)),
            ),
            (
                watching(),
                H::Ended(Outcome::Superseded),
                Some(settled(Outcome::Superseded, Reason::None)),
            ),
            (
                verifying.clone(),
                H::Ended(Outcome::Deleted),
                Some(settled(Outcome::Deleted, Reason::None)),
            ),
            (watching(), H::Ended(Outcome::Passed), None),
            (
                settled(Outcome::Passed, Reason::None),
                H::Ended(Outcome::Superseded),
                None,
            ),
            (watching(), H::Paused { at: t(20) }, None),
        ];
        for (phase, happened, want) in cases {
            let got = phase.next(happened.clone()).ok();
            assert_eq!(got, want, "{phase} + {happened:?}");
        }
    }

    #[test]
    fn paused_time_adds_up_over_several_pauses() {
        let p = Phase::start()
            .next(Happened::Paused { at: t(0) })
            .unwrap()
            .next(Happened::Paused { at: t(5) })
            .unwrap()
            .next(Happened::Resumed { at: t(30) })
            .unwrap()
            .next(Happened::Paused { at: t(40) })
            .unwrap();
        let Phase::Progressing { paused } = p else {
            panic!("{p}")
        };
        assert_eq!(paused.total, Duration::from_secs(30));
        assert_eq!(paused.since, Some(t(40)));
        assert_eq!(paused.until(t(50)), Duration::from_secs(40));
    }

    #[test]
    fn a_phase_reads_back_as_written() {
        for p in [
            Phase::start(),
            Phase::Progressing {
                paused: Paused {
                    total: Duration::from_millis(1500),
                    since: Some(t(3)),
                },
            },
            watching(),
            Phase::RollingBack {
                reason: Reason::ErrorRate,
            },
            Phase::Verifying {
                reason: Reason::Crashloop,
            },
            Phase::Settled {
                outcome: Outcome::Degraded,
                reason: Reason::Pending,
            },
        ] {
            let text = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Phase>(&text).unwrap(), p, "{text}");
        }
        assert_eq!(
            serde_json::to_string(&Phase::start()).unwrap(),
            r#"{"name":"progressing"}"#
        );
    }
}

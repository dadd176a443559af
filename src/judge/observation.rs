//! What the judge is given and what it answers: the facts known before a rollout, each
//! [`Observation`] (rollout progress, pods, one round of probes) and the [`Verdict`].

use std::time::Duration;

use super::Reason;
use crate::baseline::Baseline;
use crate::check::Provider;
use crate::probes::error::ProbeError;

/// What is known of one rollout before any observation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RolloutFacts {
    /// The version the new revision should report once complete.
    pub expected_version: Option<String>,
    /// Error ratio before the rollout, when the baseline rule is on and a provider answered.
    pub baseline: Option<f64>,
    /// What the other checks showed on the previous version before the deploy.
    pub checks: Baseline,
}

/// Rollout progress as `kubectl rollout status` reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Still rolling out; the message is kubectl's waiting line.
    Progressing(String),
    Complete,
    /// The Deployment's Progressing condition says `ProgressDeadlineExceeded`.
    DeadlineExceeded(String),
}

/// A pod of the new ReplicaSet that is failing in a way a rollback fixes.
#[derive(Debug, Clone, PartialEq)]
pub struct PodFailure {
    pub pod: String,
    pub reason: Reason,
    /// e.g. `CrashLoopBackOff (restarts: 3, last exit code 1)`.
    pub detail: String,
}

/// The longest-pending pod of the new ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingPod {
    pub pod: String,
    pub pending_for: Duration,
    /// The scheduler's message.
    pub message: String,
}

/// What the health endpoint answered.
#[derive(Debug, Clone, PartialEq)]
pub enum HealthSample {
    /// Timeout, refused connection, wrong status or a body that is not the expected JSON.
    Failed(String),
    /// 200 with the expected JSON.
    Answered {
        version: Option<String>,
        /// Dependency checks whose value is not `ok`: (name, value).
        failing_checks: Vec<(String, String)>,
    },
}

/// One smoke check's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum SmokeSample {
    Passed,
    Failed(String),
}

/// What one error-rate provider answered for the sample window.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderSample {
    Counts {
        requests: f64,
        errors: f64,
    },
    /// The provider answered but has no series for this Deployment.
    NoData,
    /// Down, timed out, an error status, rate-limited, partial or an unreadable answer.
    Unavailable(ProbeError),
}

/// One round of probes at an interval tick.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProbeRound {
    /// `None` when health checking is off.
    pub health: Option<HealthSample>,
    pub smoke: Vec<(String, SmokeSample)>,
    /// By provider; empty when no provider is configured.
    pub providers: Vec<(Provider, ProviderSample)>,
}

/// Everything seen at one moment of a rollout's watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Time since the rollout was detected, less the time the Deployment spent paused before
    /// it completed (paused time does not count toward `rollout_timeout`).
    pub at: Duration,
    pub progress: Progress,
    pub pod_failure: Option<PodFailure>,
    pub pending: Option<PendingPod>,
    /// `None` for an observation made on a cluster change between ticks.
    pub probes: Option<ProbeRound>,
}

#[cfg(test)]
impl Observation {
    /// Tests' observation: a round of probes `secs` after detection, the rollout complete.
    pub(crate) fn complete(secs: u64, round: ProbeRound) -> Observation {
        Observation {
            at: Duration::from_secs(secs),
            progress: Progress::Complete,
            pod_failure: None,
            pending: None,
            probes: Some(round),
        }
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Continue,
    /// Page on-call (the rollout is degraded) and keep watching.
    Page {
        reason: Reason,
        message: String,
    },
    /// Roll back (or, in dry-run, say so) and stop judging.
    RollBack {
        reason: Reason,
        message: String,
    },
    /// The watch is over.
    Finish(Finish),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Passed,
    /// Ended with a paged problem still open (capacity, or blind to the end).
    Degraded {
        reason: Reason,
        message: String,
    },
}

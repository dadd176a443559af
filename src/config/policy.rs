//! What is watched and how it is judged: the watch window, the judge's thresholds, peak hours.

use super::duration::{Delay, Lookback, Period, RolloutSpan, SampleSpan};
use std::num::NonZeroU32;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Namespaces to watch; empty watches all.
    pub namespaces: Vec<String>,
    /// Label selector of opted-in Deployments.
    pub selector: String,
    /// How long a completed rollout is watched.
    pub window: RolloutSpan,
    /// How often health, smoke checks and providers are sampled.
    pub interval: Period,
    /// A rollout not complete this long after detection fails.
    pub rollout_timeout: RolloutSpan,
    /// A new pod Pending this long pages with the scheduler's reason.
    pub pending_timeout: RolloutSpan,
    /// How long a possibly transient pod state (one restart, a transient image pull error,
    /// `CreateContainerConfigError`) may last before it fails the rollout.
    pub pod_grace: Delay,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            namespaces: Vec::new(),
            selector: "deploy-watchdog.io/enabled=true".into(),
            window: const { RolloutSpan::from_secs(15 * 60) },
            interval: const { Period::from_secs(10) },
            rollout_timeout: const { RolloutSpan::from_secs(10 * 60) },
            pending_timeout: const { RolloutSpan::from_secs(2 * 60) },
            pod_grace: const { Delay::from_secs(90) },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// Error ratio above which a sample fails.
    pub error_rate_threshold: f64,
    /// A sample with fewer requests is no evidence either way.
    pub min_requests: u64,
    /// Span of each error-rate sample.
    pub sample_window: SampleSpan,
    /// Consecutive failures of a check before it rolls back.
    pub failures_before_rollback: NonZeroU32,
    /// Consecutive samples without data from any provider before paging "watchdog blind".
    pub inconclusive_limit: NonZeroU32,
    pub baseline: BaselineConfig,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            error_rate_threshold: 0.01,
            min_requests: 20,
            // Four scrapes at Prometheus' default 1 m interval: `increase()` has no value
            // with fewer than two samples in its range, and a late or missed scrape must
            // not leave a sample empty.
            sample_window: const { SampleSpan::from_secs(4 * 60) },
            failures_before_rollback: NonZeroU32::new(3).unwrap_or(NonZeroU32::MIN),
            inconclusive_limit: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            baseline: BaselineConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// Compare against the error ratio before the rollout.
    pub enabled: bool,
    /// How far back the baseline looks from detection.
    pub lookback: Lookback,
    /// A failing sample must also exceed `baseline × factor`.
    pub factor: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            enabled: false,
            lookback: const { Lookback::from_secs(15 * 60) },
            factor: 2.0,
        }
    }
}

/// Deploy windows to avoid (the runbook's 9–11 am and 2–4 pm ET).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PeakHoursConfig {
    /// IANA time zone the windows are in.
    pub time_zone: String,
    pub windows: Vec<PeakWindow>,
    /// Stricter policy for rollouts that start inside a window.
    pub failures_before_rollback: Option<NonZeroU32>,
}

impl Default for PeakHoursConfig {
    fn default() -> Self {
        PeakHoursConfig {
            time_zone: "UTC".into(),
            windows: Vec::new(),
            failures_before_rollback: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeakWindow {
    /// `mon` … `sun`; empty means every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM`, local time in `time_zone`.
    pub start: String,
    /// `HH:MM`, after `start`.
    pub end: String,
}

//! What the watchdog is doing, for people: one shape ([`Report`]) that `deploy-watchdog status
//! -o json`, `GET /api/v1/rollouts` and the status page share.
//!
//! The daemon keeps the live picture in a [`Board`] (sessions publish to it; the status page
//! reads it). `status` reads the same picture from the cluster alone: the state annotation,
//! the live annotation ([`live::LIVE_ANNOTATION`]), the ReplicaSets, the Pods and the Events.

use serde::{Deserialize, Serialize};

use crate::cluster::record::RolloutState;
use crate::phase::Phase;

pub mod board;
pub mod cli;
pub mod live;
pub mod page;
pub mod read;
pub mod render;

pub use board::Board;

/// Everything `status -o json` and `/api/v1/rollouts` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Rollouts: those being watched first, then the last one judged of each Deployment.
    pub rollouts: Vec<RolloutView>,
    /// Recent verdicts, newest first.
    pub recent: Vec<VerdictView>,
    /// What the daemon's start-up checks found (`deploy-watchdog doctor`); empty from
    /// `status`, which reads the cluster.
    #[serde(default)]
    pub findings: Vec<crate::doctor::Finding>,
}

/// One rollout as people look at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub namespace: String,
    pub name: String,
    pub revision: i64,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    /// [`phase_of`]: `rolling_out`, `watching`, `rolling_back`, `degraded`, or the outcome.
    pub phase: String,
    pub detected_at: jiff::Timestamp,
    pub window_started_at: Option<jiff::Timestamp>,
    /// When the watch window ends (known once it started).
    pub window_ends_at: Option<jiff::Timestamp>,
    /// Seconds left in the window while it runs.
    pub window_left_seconds: Option<u64>,
    /// Each check's latest value against its condition.
    pub checks: Vec<CheckView>,
    /// When the check values were taken.
    pub checks_at: Option<jiff::Timestamp>,
    pub pods: Option<PodsView>,
    /// The GitOps tool that owns the Deployment, when its labels say so (`argocd:app`, `flux:ns/name`).
    pub gitops_owner: Option<String>,
    /// The watchdog's latest Event on this rollout.
    pub last_action: Option<ActionView>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    /// What the decision said.
    pub detail: Option<String>,
    /// The error ratio over the watch (status page chart); empty when unknown.
    #[serde(default)]
    pub error_rate: Vec<RatePoint>,
    /// The error-rate threshold the chart draws.
    pub threshold: Option<f64>,
    /// The error ratio before the rollout, when the baseline rule is on.
    pub baseline: Option<f64>,
    /// The watch window's length in seconds (the chart's width).
    pub window_seconds: Option<u64>,
}

/// One check: its latest value, what it must be, and the baseline when there is one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckView {
    /// `error rate (prometheus)`, `health`, `dependency db`, `smoke checkout`.
    pub name: String,
    pub value: String,
    pub condition: String,
    pub baseline: Option<String>,
    pub state: CheckState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckState {
    Ok,
    Failing,
    /// No answer, no data or too little traffic: no evidence either way.
    Unknown,
}

impl CheckState {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckState::Ok => "ok",
            CheckState::Failing => "failing",
            CheckState::Unknown => "unknown",
        }
    }
}

/// The pods of the new and the old ReplicaSets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodsView {
    pub new_ready: i32,
    pub new_desired: i32,
    pub old_ready: i32,
    /// Container restarts in the new ReplicaSet's pods.
    pub restarts: i32,
}

/// An Event the watchdog recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionView {
    pub at: Option<jiff::Timestamp>,
    /// The Event's reason, e.g. `RolledBack`.
    pub reason: String,
    pub note: String,
    pub warning: bool,
}

/// One verdict (a decision with an outcome).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictView {
    pub namespace: String,
    pub name: String,
    pub revision: i64,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub note: String,
    pub at: Option<jiff::Timestamp>,
}

/// One point of the error-rate chart: seconds since the rollout was detected, and the ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RatePoint {
    pub t: f64,
    pub ratio: f64,
}

/// The phase of a recorded rollout, as people read it: the recorded [`Phase`], with a watch
/// that paged (and goes on) shown as `degraded` and a settled one as its outcome.
pub fn phase_of(state: &RolloutState) -> &'static str {
    match &state.phase {
        Phase::Progressing { .. } if state.paged.is_some() => "degraded",
        Phase::Progressing { .. } => "rolling_out",
        Phase::Watching { .. } if state.paged.is_some() => "degraded",
        Phase::Watching { .. } => "watching",
        Phase::RollingBack { .. } => "rolling_back",
        Phase::Verifying { .. } => "verifying",
        Phase::Settled { outcome, .. } => outcome.as_str(),
    }
}

/// When the window started: only a watching rollout records it.
pub fn window_started(state: &RolloutState) -> Option<jiff::Timestamp> {
    match &state.phase {
        Phase::Watching { since, .. } => Some(*since),
        _ => None,
    }
}

/// Whether a phase is still being watched or acted on.
pub fn is_live(phase: &str) -> bool {
    matches!(
        phase,
        "rolling_out" | "watching" | "rolling_back" | "verifying" | "degraded"
    )
}

/// The GitOps owner that the Deployment's own labels and annotations name: Argo CD's tracking
/// (annotation `argocd.argoproj.io/tracking-id`, or its default label
/// `app.kubernetes.io/instance` when Argo CD's annotation is also there) or Flux's
/// Kustomization and HelmRelease labels.
pub fn gitops_owner(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    let labels = meta.labels.as_ref();
    let annotations = meta.annotations.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).cloned();
    if let Some(id) = annotations.and_then(|a| a.get("argocd.argoproj.io/tracking-id")) {
        // `<app>:<group>/<kind>:<namespace>/<name>`
        let app = id.split(':').next().unwrap_or(id);
        return Some(format!("argocd:{app}"));
    }
    if let Some(name) = label("kustomize.toolkit.fluxcd.io/name") {
        let ns = label("kustomize.toolkit.fluxcd.io/namespace").unwrap_or_default();
        return Some(format!("flux:kustomization {ns}/{name}"));
    }
    if let Some(name) = label("helm.toolkit.fluxcd.io/name") {
        let ns = label("helm.toolkit.fluxcd.io/namespace").unwrap_or_default();
        return Some(format!("flux:helmrelease {ns}/{name}"));
    }
    None
}

/// The parts of a view that come from the state annotation.
pub fn view_of_state(namespace: &str, name: &str, state: &RolloutState) -> RolloutView {
    RolloutView {
        namespace: namespace.to_string(),
        name: name.to_string(),
        revision: state.revision,
        from_version: state.from_version.clone(),
        to_version: state.to_version.clone(),
        phase: phase_of(state).to_string(),
        detected_at: state.detected_at,
        window_started_at: window_started(state),
        window_ends_at: None,
        window_left_seconds: None,
        checks: Vec::new(),
        checks_at: None,
        pods: None,
        gitops_owner: None,
        last_action: None,
        outcome: state.phase.outcome().map(|o| o.as_str().to_string()),
        reason: state
            .phase
            .reason()
            .or(state.paged)
            .map(|r| r.as_str().to_string()),
        detail: state.detail.clone(),
        error_rate: Vec::new(),
        threshold: None,
        baseline: None,
        window_seconds: None,
    }
}

impl RolloutView {
    /// Sets the window's end and the time left in it at `now`.
    pub fn set_window(&mut self, window: std::time::Duration, now: jiff::Timestamp) {
        self.window_seconds = Some(window.as_secs());
        let Some(started) = self.window_started_at else {
            return;
        };
        let Ok(window) = jiff::SignedDuration::try_from(window) else {
            return;
        };
        let Ok(ends) = started.checked_add(window) else {
            return;
        };
        self.window_ends_at = Some(ends);
        self.window_left_seconds =
            is_live(&self.phase).then(|| ends.duration_since(now).as_secs().max(0) as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::record::Outcome;
    use crate::judge::Reason;

    fn state() -> RolloutState {
        RolloutState::test(3)
    }

    #[test]
    fn the_phase_follows_the_record() {
        let mut s = state();
        assert_eq!(phase_of(&s), "rolling_out");
        s.phase = Phase::Watching {
            since: jiff::Timestamp::UNIX_EPOCH,
            until: None,
        };
        assert_eq!(phase_of(&s), "watching");
        assert_eq!(window_started(&s), Some(jiff::Timestamp::UNIX_EPOCH));
        s.paged = Some(Reason::DependencyCheck);
        assert_eq!(phase_of(&s), "degraded");
        s.phase = Phase::RollingBack {
            reason: Reason::Health,
        };
        assert_eq!(phase_of(&s), "rolling_back");
        s.phase = Phase::Verifying {
            reason: Reason::Health,
        };
        assert_eq!(phase_of(&s), "verifying");
        assert!(is_live(phase_of(&s)));
        s.phase = Phase::Settled {
            outcome: Outcome::RolledBack,
            reason: Reason::Health,
        };
        assert_eq!(phase_of(&s), "rolled_back");
        assert!(!is_live(phase_of(&s)));
    }

    #[test]
    fn time_left_counts_down_from_the_window_start_and_is_never_negative() {
        let mut v = view_of_state("ns", "app", &state());
        v.window_started_at = Some("2026-01-01T00:00:00Z".parse().unwrap_or_default());
        v.phase = "watching".into();
        let now = "2026-01-01T00:04:00Z".parse().unwrap_or_default();
        v.set_window(std::time::Duration::from_secs(600), now);
        assert_eq!(v.window_left_seconds, Some(360));
        let later = "2026-01-01T00:20:00Z".parse().unwrap_or_default();
        v.set_window(std::time::Duration::from_secs(600), later);
        assert_eq!(v.window_left_seconds, Some(0));
        v.phase = "passed".into();
        v.set_window(std::time::Duration::from_secs(600), now);
        assert_eq!(v.window_left_seconds, None);
    }
}

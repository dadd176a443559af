//! What a session says as the rollout goes, beyond its decisions: the rollout detected, a bad
//! annotation, a pause and its end, checks left out of the verdict, the watch window started.

use std::time::Duration;

use tracing::{info, warn};

use super::Session;
use crate::cluster::record::{EventAction, EventReason};
use crate::judge;
use crate::phase::Happened;

impl Session {
    pub(super) async fn detected(&self) {
        let r = &self.r;
        info!(from = r.from(), to = r.to(), "rollout detected");
        self.ctx.metrics.detected();
        self.save_state().await;
        let same_version = r.state.from_version == r.state.to_version;
        let change = self
            .change
            .as_ref()
            .map(|c| format!(": {}", c.describe(same_version)))
            .unwrap_or_default();
        if let Some(stale) = self.change.as_ref().and_then(|c| c.stale.as_ref()) {
            warn!(change = %stale, "version label disagrees with the image; the image is what runs");
            self.note(
                EventReason::VersionLabelStale,
                EventAction::Watch,
                format!(
                    "{stale}: the image is what runs, so the rollout is judged as {}",
                    r.to()
                ),
            );
        }
        self.note(
            EventReason::RolloutDetected,
            EventAction::Watch,
            format!(
                "Watching the rollout of {} (from {}, revision {}){change}{}",
                r.to(),
                r.from(),
                r.state.revision,
                self.gitops_note()
            ),
        );
        let mut start = format!(
            "Starting production deploy of {} to {} (from {}, revision {}{change}); watching it for {}.",
            r.to(),
            r.key(),
            r.from(),
            r.state.revision,
            judge::human(self.policy.window)
        );
        if let Some(window) = &self.peak {
            warn!(peak_window = %window, "rollout started during peak hours");
            start.push_str(&format!(
                " ⚠️ Peak hours ({window}): this deploy is inside a window to avoid."
            ));
            self.note(
                EventReason::PeakHours,
                EventAction::Watch,
                format!("Rollout of {} started during peak hours ({window})", r.to()),
            );
        }
        self.ctx.notifier.post(start);
    }

    /// Each bad annotation: a Warning Event naming it and a log line; the defaults apply.
    pub(super) fn report_bad_annotations(&self) {
        for bad in &self.bad_annotations {
            warn!(annotation = %bad.annotation, problem = %bad.problem, "bad annotation; using the daemon's config for this deployment");
            self.note(
                EventReason::BadAnnotation,
                EventAction::Configure,
                format!("{bad}; this Deployment is guarded with the daemon's config instead"),
            );
        }
    }

    /// A pause or its end, while rolling out: a Normal Event, so people see why the rollout
    /// deadline moved.
    pub(super) fn paused_or_resumed(&self, paused: bool) {
        let (reason, note) = if paused {
            info!("deployment paused; paused time does not count toward the rollout timeout");
            (
                EventReason::RolloutPaused,
                format!(
                    "Rollout of {} paused: the time it stays paused does not count toward the rollout timeout ({}); the other checks go on",
                    self.r.to(),
                    judge::human(self.cfg.watch.rollout_timeout)
                ),
            )
        } else {
            info!("deployment resumed");
            (
                EventReason::RolloutResumed,
                format!("Rollout of {} resumed", self.r.to()),
            )
        };
        self.note(reason, EventAction::Watch, note);
    }

    /// Each check that failed on the previous version too: left out of the verdict, with a
    /// Warning Event and a Slack note saying how to make it usable.
    pub(super) fn report_unusable_checks(&self) {
        let Some(baseline) = &self.r.state.baseline else {
            return;
        };
        for (check, why) in baseline.unusable() {
            let note = baseline.left_out_note(&check, why, self.r.to());
            warn!(%check, why, "check failed on the previous version too; left out of the verdict");
            self.ctx
                .notifier
                .post(format!("ℹ️ {}: {note}", self.r.key()));
            self.note(EventReason::CheckUnusable, EventAction::Configure, note);
        }
    }

    pub(super) async fn window_started(&mut self, at: Duration) {
        let later = |t: jiff::Timestamp, d: Duration| {
            jiff::SignedDuration::try_from(d)
                .ok()
                .and_then(|d| t.checked_add(d).ok())
                .unwrap_or(t)
        };
        let started = later(
            self.r.state.detected_at,
            at.saturating_add(self.judge_offset),
        );
        let until = later(started, self.policy.window);
        info!("rollout complete; watch window started");
        self.advance(Happened::Complete { at: started, until })
            .await;
        let mut window = judge::human(self.policy.window);
        if self.complete_at_start {
            // Complete before this process led: its window has been running since it began.
            let left =
                Duration::try_from(until.duration_since(self.clock.now())).unwrap_or_default();
            window = format!(
                "the rest of its {window} window ({}; it completed while no watchdog led)",
                judge::human(left)
            );
        }
        self.note(
            EventReason::WindowStarted,
            EventAction::Watch,
            format!(
                "Rollout of {} complete; watching it for {window}",
                self.r.to()
            ),
        );
    }
}

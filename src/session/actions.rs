//! What a session does on a verdict: roll back and verify, page, tell Slack, finish.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use super::{EndCause, Session};
use crate::cluster::record::{Decision, Outcome};
use crate::cluster::{rollback, rollout};
use crate::config::{self, Mode};
use crate::judge::{self, Reason};
use crate::notify::{self, PageEvent, Severity};

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
            self.record(Decision {
                warning: true,
                event_reason: "VersionLabelStale",
                action: "Watch",
                note: format!(
                    "{stale}: the image is what runs, so the rollout is judged as {}",
                    r.to()
                ),
                revision: r.state.revision,
                outcome: None,
                reason: None,
                from_version: r.state.from_version.clone(),
                to_version: r.state.to_version.clone(),
            });
        }
        self.record(Decision {
            warning: false,
            event_reason: "RolloutDetected",
            action: "Watch",
            note: format!(
                "Watching the rollout of {} (from {}, revision {}){change}",
                r.to(),
                r.from(),
                r.state.revision
            ),
            revision: r.state.revision,
            outcome: None,
            reason: None,
            from_version: r.state.from_version.clone(),
            to_version: r.state.to_version.clone(),
        });
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
            self.record(Decision {
                warning: true,
                event_reason: "PeakHours",
                action: "Watch",
                note: format!("Rollout of {} started during peak hours ({window})", r.to()),
                revision: r.state.revision,
                outcome: None,
                reason: None,
                from_version: r.state.from_version.clone(),
                to_version: r.state.to_version.clone(),
            });
        }
        self.ctx.notifier.post(start);
    }

    /// Each bad annotation: a Warning Event naming it and a log line; the defaults apply.
    pub(super) fn report_bad_annotations(&self) {
        for bad in &self.bad_annotations {
            warn!(annotation = %bad.annotation, problem = %bad.problem, "bad annotation; using the daemon's config for this deployment");
            self.record(Decision {
                warning: true,
                event_reason: "BadAnnotation",
                action: "Configure",
                note: format!("{bad}; this Deployment is guarded with the daemon's config instead"),
                revision: self.r.state.revision,
                outcome: None,
                reason: None,
                from_version: self.r.state.from_version.clone(),
                to_version: self.r.state.to_version.clone(),
            });
        }
    }

    pub(super) async fn window_started(&mut self, at: Duration) {
        let started =
            self.r.state.detected_at + jiff::SignedDuration::try_from(at).unwrap_or_default();
        self.r.state.window_started_at = Some(started);
        info!("rollout complete; watch window started");
        self.save_state().await;
        let window = judge::human(self.policy.window);
        self.record(Decision {
            warning: false,
            event_reason: "WindowStarted",
            action: "Watch",
            note: format!(
                "Rollout of {} complete; watching it for {window}",
                self.r.to()
            ),
            revision: self.r.state.revision,
            outcome: None,
            reason: None,
            from_version: self.r.state.from_version.clone(),
            to_version: self.r.state.to_version.clone(),
        });
    }

    pub(super) async fn degraded(&mut self, reason: Reason, message: &str) {
        warn!(%reason, message, "degraded: paging");
        self.r.state.outcome = Some(Outcome::Degraded);
        self.r.state.reason = Some(reason);
        self.r.state.detail = Some(message.to_string());
        self.save_state().await;
        self.page(Severity::Error, reason, Outcome::Degraded, message);
        self.ctx.notifier.post(format!(
            "🚨 Paged on-call: {} {} is degraded: {message}",
            self.r.key(),
            self.r.to()
        ));
        self.decide(
            true,
            "Degraded",
            "Page",
            Outcome::Degraded,
            reason,
            message.to_string(),
        );
    }

    pub(super) async fn finish_degraded(&mut self, reason: Reason, message: &str) {
        warn!(%reason, message, "watch ended degraded");
        self.r.state.outcome = Some(Outcome::Degraded);
        self.r.state.reason = Some(reason);
        self.r.state.settled = true;
        self.save_state().await;
        self.decide(
            true,
            "Degraded",
            "Finish",
            Outcome::Degraded,
            reason,
            format!("Watch ended degraded: {message}"),
        );
    }

    pub(super) async fn passed(&mut self) {
        let window = judge::human(self.policy.window);
        info!("passed");
        if self.r.state.outcome == Some(Outcome::Degraded) {
            self.ctx.notifier.page(PageEvent {
                action: notify::Action::Resolve,
                dedup_key: self.dedup_key(),
                payload: None,
            });
        }
        self.r.state.outcome = Some(Outcome::Passed);
        self.r.state.reason = Some(Reason::None);
        self.r.state.settled = true;
        self.save_state().await;
        self.ctx.notifier.post(format!(
            "✅ Production deploy of {} to {} complete: healthy for {window}.",
            self.r.to(),
            self.r.key()
        ));
        self.decide(
            false,
            "RolloutPassed",
            "Pass",
            Outcome::Passed,
            Reason::None,
            format!("{} passed its {window} watch", self.r.to()),
        );
    }

    pub(super) async fn ended(&mut self, cause: EndCause) {
        let (outcome, note) = match cause {
            EndCause::Superseded => (
                Outcome::Superseded,
                format!("{} superseded by a newer rollout", self.r.to()),
            ),
            EndCause::Deleted => (
                Outcome::Deleted,
                format!("{} deleted during its watch", self.r.key()),
            ),
        };
        info!(outcome = outcome.as_str(), "session ended");
        if self.r.state.outcome == Some(Outcome::Degraded) {
            self.ctx.notifier.page(PageEvent {
                action: notify::Action::Resolve,
                dedup_key: self.dedup_key(),
                payload: None,
            });
        }
        // The state annotation now belongs to the newer rollout (or is gone): only an Event.
        self.decide(
            false,
            if cause == EndCause::Deleted {
                "RolloutDeleted"
            } else {
                "RolloutSuperseded"
            },
            "Stop",
            outcome,
            Reason::None,
            note,
        );
    }

    pub(super) async fn roll_back(&mut self, reason: Reason, message: &str) {
        let r = self.r.clone();
        let _rolling_back = self.rolling_back();
        if self.cfg.mode == Mode::DryRun {
            warn!(%reason, message, "would roll back (dry run)");
            self.r.state.outcome = Some(Outcome::WouldRollBack);
            self.r.state.reason = Some(reason);
            self.r.state.settled = true;
            self.save_state().await;
            self.page(
                Severity::Error,
                reason,
                Outcome::WouldRollBack,
                &format!("would roll back (dry run): {message}"),
            );
            self.ctx.notifier.post(format!(
                "⚠️ Would roll back {} {} to {} due to {message} (dry run: nothing changed)",
                r.key(),
                r.to(),
                r.from()
            ));
            self.decide(
                true,
                "WouldRollBack",
                "RollBack",
                Outcome::WouldRollBack,
                reason,
                format!("Would roll back (dry run): {message}"),
            );
            return;
        }
        warn!(%reason, message, "rolling back");
        let mut state = self.r.state.clone();
        let started = Instant::now();
        let timer = self.ctx.metrics.rollback_timer();
        let mut conflicts = 0;
        let mut backoffs =
            crate::backoff::Policy::new(Duration::from_millis(200), Duration::from_secs(5)).start();
        let mut backoff = backoffs.next_wait();
        let mut paged_retry = false;
        let deadline = config::deadline(Instant::now(), self.cfg.watch.rollout_timeout);
        let result = loop {
            let result = rollback::execute_judged(
                &self.ctx.client,
                &r.namespace,
                &r.name,
                r.state.revision,
                r.state.judged_template.as_deref(),
                |plan| {
                    state = self.r.state.clone();
                    state.outcome = Some(Outcome::RolledBack);
                    state.reason = Some(reason);
                    state.rollback_fingerprint =
                        Some(rollout::template_fingerprint(&plan.template));
                    state.detail = Some(message.to_string());
                    state.annotations()
                },
            )
            .await;
            // A conflict or a failed `test` means the Deployment changed between read and
            // patch (another instance, a person): read again and decide again, once.
            let conflict = matches!(
                &result,
                Err(rollback::RollbackError::PatchDeployment { source: kube::Error::Api(s), .. }) if s.code == 409 || s.code == 422
            );
            if conflict && conflicts == 0 {
                conflicts += 1;
                continue;
            }
            // An API server that is briefly unreachable or overloaded is no reason to give up
            // on a rollback: retry with backoff until the rollout deadline, paging at once.
            let transient = result
                .as_ref()
                .err()
                .is_some_and(rollback::RollbackError::is_transient);
            if !transient || Instant::now() + backoff > deadline {
                break result;
            }
            if let Err(e) = &result {
                warn!(error = %e, retry_in = ?backoff, "rollback not sent yet; retrying");
                if !paged_retry {
                    paged_retry = true;
                    let what = format!(
                        "rolling back ({message}); the API server did not take the rollback yet ({e}), retrying"
                    );
                    self.page(Severity::Error, reason, Outcome::RolledBack, &what);
                }
            }
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = backoffs.next_wait();
        };
        drop(timer);
        match result {
            Ok(plan) => {
                self.r.state = state;
                let to = plan
                    .target_version
                    .clone()
                    .unwrap_or_else(|| format!("revision {}", plan.target_revision));
                info!(elapsed = ?started.elapsed(), target_revision = plan.target_revision, "rollback sent");
                self.page(
                    Severity::Error,
                    reason,
                    Outcome::RolledBack,
                    &format!("rolled back to {to}: {message}"),
                );
                let change = self
                    .change
                    .as_ref()
                    .filter(|c| !c.others.is_empty())
                    .map(|c| format!(" ({})", c.describe(to == r.to())))
                    .unwrap_or_default();
                self.ctx.notifier.post(format!(
                    "⚠️ Rolled back {} {}{change} to {to} due to {message}",
                    r.key(),
                    r.to()
                ));
                self.decide(
                    true,
                    "RolledBack",
                    "RollBack",
                    Outcome::RolledBack,
                    reason,
                    format!("Rolled back {} to {to}: {message}", r.to()),
                );
                self.verify(self.r.state.rollback_fingerprint.clone()).await;
            }
            Err(
                e @ (rollback::RollbackError::Superseded { .. }
                | rollback::RollbackError::TemplateReplaced { .. }),
            ) => {
                // The watch had not reported the newer rollout yet (or the controller has not
                // numbered it yet); its own session judges it.
                info!(error = %e, "not rolling back: a newer rollout started");
                self.ended(EndCause::Superseded).await;
            }
            Err(rollback::RollbackError::AlreadyRestored {
                target_revision,
                fingerprint,
                ..
            }) => {
                self.already_rolled_back(reason, message, target_revision, fingerprint)
                    .await;
            }
            Err(rollback::RollbackError::AlreadyRolledBack { state, .. }) => {
                info!("this rollout was already rolled back (by a previous leader): verifying it");
                self.r.state = *state;
                self.verify(self.r.state.rollback_fingerprint.clone()).await;
            }
            Err(e) => {
                warn!(error = %e, category = e.category(), "rollback failed");
                self.r.state.outcome = Some(Outcome::RollbackFailed);
                self.r.state.reason = Some(reason);
                self.r.state.settled = true;
                self.save_state().await;
                let what = format!("rollback of {} failed ({e}) after: {message}", r.to());
                self.page(Severity::Critical, reason, Outcome::RollbackFailed, &what);
                self.ctx.notifier.post(format!("🔥 {}: {what}", r.key()));
                self.decide(
                    true,
                    "RollbackFailed",
                    "RollBack",
                    Outcome::RollbackFailed,
                    reason,
                    what,
                );
            }
        }
    }

    /// kubectl's "skipped rollback": the Deployment already runs the template of the revision a
    /// rollback would restore (someone's `kubectl rollout undo` landed first). Not a failure:
    /// that template is recorded as the restored one, so its revision is not judged as a new
    /// rollout, and the rollback is verified as if sent.
    pub(super) async fn already_rolled_back(
        &mut self,
        reason: Reason,
        message: &str,
        target_revision: i64,
        restored: Option<String>,
    ) {
        info!(
            target_revision,
            "not rolling back: the deployment already runs the previous revision's template"
        );
        self.r.state.outcome = Some(Outcome::RolledBack);
        self.r.state.reason = Some(reason);
        self.r.state.rollback_fingerprint = restored;
        let to = self.r.from().to_string();
        let what = format!(
            "already back on {to} (someone rolled back first; no rollback sent): {message}"
        );
        self.r.state.detail = Some(what.clone());
        self.save_state().await;
        self.page(Severity::Error, reason, Outcome::RolledBack, &what);
        self.ctx.notifier.post(format!(
            "⚠️ {} {} is already rolled back to {to} (someone ran the rollback first) after {message}",
            self.r.key(),
            self.r.to()
        ));
        self.decide(
            true,
            "RolledBack",
            "RollBack",
            Outcome::RolledBack,
            reason,
            format!("{} already rolled back to {to}: {message}", self.r.to()),
        );
        self.verify(self.r.state.rollback_fingerprint.clone()).await;
    }

    /// Watches the rollback to completion and checks the version health reports.
    pub(super) async fn verify(&mut self, fingerprint: Option<String>) {
        let deadline = config::deadline(Instant::now(), self.cfg.watch.rollout_timeout);
        let expected = self.r.state.from_version.clone();
        let mut ticks = tokio::time::interval(self.cfg.watch.interval.min(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last = String::from("the rollback has not completed");
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => break,
                _ = ticks.tick() => {}
            }
            let deployment = self.updates.borrow().clone();
            let restored = rollout::runs_template(&deployment, fingerprint.as_deref());
            if !restored {
                last = "the Deployment's template is no longer the restored one".into();
                continue;
            }
            match rollout::progress(&deployment) {
                judge::Progress::Complete => {}
                judge::Progress::Progressing(m) | judge::Progress::DeadlineExceeded(m) => {
                    last = m;
                    continue;
                }
            }
            match (
                self.ctx
                    .probes
                    .reported_version(&self.r.namespace, &self.r.name)
                    .await,
                &expected,
            ) {
                (None, _) | (_, None) => return self.verified().await,
                (Some(Ok(v)), Some(e)) if &v == e => return self.verified().await,
                (Some(Ok(v)), Some(e)) => last = format!("health reports {v}, expected {e}"),
                (Some(Err(err)), _) => last = format!("health: {err}"),
            }
        }
        let reason = self.r.state.reason.unwrap_or(Reason::None);
        let what = format!(
            "rollback of {} to {} not verified within {}: {last}",
            self.r.to(),
            self.r.from(),
            judge::human(self.cfg.watch.rollout_timeout)
        );
        warn!(what, "rollback failed verification");
        self.r.state.outcome = Some(Outcome::RollbackFailed);
        self.r.state.settled = true;
        self.save_state().await;
        self.page(Severity::Critical, reason, Outcome::RollbackFailed, &what);
        self.ctx
            .notifier
            .post(format!("🔥 {}: {what}", self.r.key()));
        self.decide(
            true,
            "RollbackFailed",
            "Verify",
            Outcome::RollbackFailed,
            reason,
            what,
        );
    }

    pub(super) async fn verified(&mut self) {
        info!("rollback verified");
        self.r.state.settled = true;
        self.save_state().await;
        let reason = self.r.state.reason.unwrap_or(Reason::None);
        let note = format!(
            "Rollback verified: {} runs {} again",
            self.r.key(),
            self.r.from()
        );
        self.decide(
            false,
            "RollbackVerified",
            "Verify",
            Outcome::RolledBack,
            reason,
            note,
        );
    }

    /// A page decided before a restart or a leader change may never have reached PagerDuty;
    /// one whose delivery the previous process recorded is not sent again.
    pub(super) fn page_again_if_owed(&self) {
        let (Some(outcome), Some(detail)) = (self.r.state.outcome, self.r.state.detail.clone())
        else {
            return;
        };
        if !self.r.state.page_owed(&self.updates.borrow()) {
            return;
        }
        let reason = self.r.state.reason.unwrap_or(Reason::None);
        let severity = match outcome {
            Outcome::RollbackFailed => Severity::Critical,
            Outcome::RolledBack | Outcome::WouldRollBack | Outcome::Degraded => Severity::Error,
            _ => return,
        };
        info!(
            outcome = outcome.as_str(),
            "re-sending the page of a decision made before a restart"
        );
        self.page(severity, reason, outcome, &detail);
    }
}

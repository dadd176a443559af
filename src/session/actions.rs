//! What a session does on a verdict: roll back and verify, page, tell Slack, finish.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use super::{EndCause, Session};
use crate::cluster::record::{EventAction, EventReason, Outcome};
use crate::cluster::{rollback, rollout};
use crate::config::{self, Mode};
use crate::judge::{self, Reason};
use crate::notify::{self, PageEvent, Severity};
use crate::phase::{Happened, Phase};

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

    /// A page while the watch goes on: recorded (not a phase change), so a resumed watch does
    /// not page for the same problem again.
    pub(super) async fn degraded(&mut self, reason: Reason, message: &str) {
        warn!(%reason, message, "degraded: paging");
        self.r.state.paged = Some(reason);
        self.r.state.detail = Some(message.to_string());
        self.save_state().await;
        self.page(Severity::Error, reason, Outcome::Degraded, message);
        self.ctx.notifier.post(format!(
            "🚨 Paged on-call: {} {} is degraded: {message}",
            self.r.key(),
            self.r.to()
        ));
        self.decide(
            EventReason::Degraded,
            EventAction::Page,
            reason,
            message.to_string(),
        );
    }

    pub(super) async fn finish_degraded(&mut self, reason: Reason, message: &str) {
        warn!(%reason, message, "watch ended degraded");
        self.advance(Happened::EndedDegraded { reason }).await;
        self.decide(
            EventReason::Degraded,
            EventAction::Finish,
            reason,
            format!("Watch ended degraded: {message}"),
        );
    }

    pub(super) async fn passed(&mut self) {
        let window = judge::human(self.policy.window);
        info!("passed");
        if self.r.state.paged.is_some() {
            self.ctx.notifier.page(PageEvent {
                action: notify::Action::Resolve,
                dedup_key: self.dedup_key(),
                payload: None,
            });
        }
        self.advance(Happened::Passed).await;
        self.ctx.notifier.post(format!(
            "✅ Production deploy of {} to {} complete: healthy for {window}.",
            self.r.to(),
            self.r.key()
        ));
        self.decide(
            EventReason::RolloutPassed,
            EventAction::Pass,
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
        if self.r.state.paged.is_some() {
            self.ctx.notifier.page(PageEvent {
                action: notify::Action::Resolve,
                dedup_key: self.dedup_key(),
                payload: None,
            });
        }
        // The state annotation now belongs to the newer rollout (or is gone): only an Event.
        self.advance(Happened::Ended(outcome)).await;
        self.decide(
            if cause == EndCause::Deleted {
                EventReason::RolloutDeleted
            } else {
                EventReason::RolloutSuperseded
            },
            EventAction::Stop,
            Reason::None,
            note,
        );
    }

    /// The judge decided to roll back: in dry-run mode that is the end (a page says what would
    /// have happened); else the decision is recorded before the rollback is sent, so a new
    /// process sends it if this one stops first.
    pub(super) async fn decided_to_roll_back(&mut self, reason: Reason, message: &str) {
        let r = self.r.clone();
        if self.cfg.mode == Mode::DryRun {
            warn!(%reason, message, "would roll back (dry run)");
            let what = format!("would roll back (dry run): {message}");
            self.r.state.detail = Some(what.clone());
            self.advance(Happened::WouldRollBack { reason }).await;
            self.page(Severity::Error, reason, Outcome::WouldRollBack, &what);
            self.ctx.notifier.post(format!(
                "⚠️ Would roll back {} {} to {} due to {message} (dry run: nothing changed)",
                r.key(),
                r.to(),
                r.from()
            ));
            self.decide(
                EventReason::WouldRollBack,
                EventAction::RollBack,
                reason,
                format!("Would roll back (dry run): {message}"),
            );
            return;
        }
        self.r.state.detail = Some(message.to_string());
        self.advance(Happened::RollBack { reason }).await;
    }

    /// The `RollingBack` phase: sends the rollback, retrying a transient refusal until the
    /// rollout deadline. Returns `false` when stopped.
    pub(super) async fn roll_back(&mut self, reason: Reason) -> bool {
        let r = self.r.clone();
        let message = r.state.detail.clone().unwrap_or_else(|| reason.to_string());
        let message = message.as_str();
        let _rolling_back = self.rolling_back();
        let Some(paused) = self.gitops_before_undo(reason, message).await else {
            return true;
        };
        let paused_note = paused
            .as_ref()
            .map(|p| {
                format!(
                    "; paused {} so Git does not re-apply {} (resumes when Git moves on; by hand: {})",
                    p.describe(),
                    r.to(),
                    p.manual_resume()
                )
            })
            .unwrap_or_default();
        let keep_on_deployment = paused
            .as_ref()
            .map(crate::gitops::Paused::deployment_annotations)
            .unwrap_or_default();
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
                    // Recorded with the rollback, in the same write: the phase and the
                    // restored template.
                    state = self
                        .advanced(Happened::RollbackSent)
                        .unwrap_or_else(|| self.r.state.clone());
                    state.rollback_fingerprint =
                        Some(rollout::template_fingerprint(&plan.template));
                    state.detail = Some(message.to_string());
                    let mut annotations = state.annotations();
                    // kubectl's undo replaces the Deployment's annotations with the old
                    // ReplicaSet's: a pause written on the Deployment rides in the same patch.
                    annotations.extend(keep_on_deployment.clone());
                    annotations
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
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = backoffs.next_wait();
        };
        drop(timer);
        match result {
            Ok(plan) => {
                info!(phase = %state.phase, "phase");
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
                    &format!("rolled back to {to}: {message}{paused_note}"),
                );
                let change = self
                    .change
                    .as_ref()
                    .filter(|c| !c.others.is_empty())
                    .map(|c| format!(" ({})", c.describe(to == r.to())))
                    .unwrap_or_default();
                self.ctx.notifier.post(format!(
                    "⚠️ Rolled back {} {}{change} to {to} due to {message}{paused_note}",
                    r.key(),
                    r.to()
                ));
                if let Some(p) = paused.clone() {
                    self.keep_paused(p);
                }
                self.decide(
                    EventReason::RolledBack,
                    EventAction::RollBack,
                    reason,
                    format!("Rolled back {} to {to}: {message}", r.to()),
                );
            }
            Err(
                e @ (rollback::RollbackError::Superseded { .. }
                | rollback::RollbackError::TemplateReplaced { .. }),
            ) => {
                // The watch had not reported the newer rollout yet (or the controller has not
                // numbered it yet); its own session judges it.
                info!(error = %e, "not rolling back: a newer rollout started");
                if let Some(p) = &paused {
                    self.unpause(p).await;
                }
                self.ended(EndCause::Superseded).await;
            }
            Err(rollback::RollbackError::AlreadyRestored {
                target_revision,
                fingerprint,
                ..
            }) => {
                if let Some(p) = paused {
                    self.r.state.rollback_fingerprint = fingerprint.clone();
                    self.keep_paused(p);
                }
                self.already_rolled_back(reason, message, target_revision, fingerprint)
                    .await;
            }
            Err(rollback::RollbackError::AlreadyRolledBack { state, .. }) => {
                // The recorded phase is the previous leader's: verifying, or settled.
                info!(phase = %state.phase, "this rollout was already rolled back (by a previous leader)");
                self.r.state = *state;
                if let Some(p) = paused {
                    self.keep_paused(p);
                }
            }
            Err(e) => {
                warn!(error = %e, category = e.category(), "rollback failed");
                if let Some(p) = &paused {
                    self.unpause(p).await;
                }
                let what = format!("rollback of {} failed ({e}) after: {message}", r.to());
                self.r.state.detail = Some(what.clone());
                self.advance(Happened::RollbackFailed).await;
                self.page(Severity::Critical, reason, Outcome::RollbackFailed, &what);
                self.ctx.notifier.post(format!("🔥 {}: {what}", r.key()));
                self.decide(
                    EventReason::RollbackFailed,
                    EventAction::RollBack,
                    reason,
                    what,
                );
            }
        }
        true
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
        self.r.state.rollback_fingerprint = restored;
        let to = self.r.from().to_string();
        let what = format!(
            "already back on {to} (someone rolled back first; no rollback sent): {message}"
        );
        self.r.state.detail = Some(what.clone());
        self.advance(Happened::RollbackSent).await;
        self.page(Severity::Error, reason, Outcome::RolledBack, &what);
        self.ctx.notifier.post(format!(
            "⚠️ {} {} is already rolled back to {to} (someone ran the rollback first) after {message}",
            self.r.key(),
            self.r.to()
        ));
        self.decide(
            EventReason::RolledBack,
            EventAction::RollBack,
            reason,
            format!("{} already rolled back to {to}: {message}", self.r.to()),
        );
    }

    /// The `Verifying` phase: watches the rollback to completion and checks the version health
    /// reports. Returns `false` when stopped.
    pub(super) async fn verify(&mut self) -> bool {
        let _rolling_back = self.rolling_back();
        let fingerprint = self.r.state.rollback_fingerprint.clone();
        let deadline = config::deadline(Instant::now(), self.cfg.watch.rollout_timeout);
        let expected = self.r.state.from_version.clone();
        let mut ticks = tokio::time::interval(self.cfg.watch.interval.min(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last = String::from("the rollback has not completed");
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
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
            // A health endpoint that failed on the previous version before the deploy cannot
            // tell whether it runs again: the rollout's completion is the verification.
            let health_usable = self
                .r
                .state
                .baseline
                .as_ref()
                .is_none_or(|b| b.health_unusable().is_none());
            let reported = match health_usable {
                true => {
                    self.ctx
                        .probes
                        .reported_version(&self.r.namespace, &self.r.name)
                        .await
                }
                false => None,
            };
            match (reported, &expected) {
                (None, _) | (_, None) => return self.verified().await,
                (Some(Ok(v)), Some(e)) if &v == e => return self.verified().await,
                (Some(Ok(v)), Some(e)) => last = format!("health reports {v}, expected {e}"),
                (Some(Err(err)), _) => last = format!("health: {err}"),
            }
        }
        let reason = self.r.state.phase.reason().unwrap_or(Reason::None);
        let what = format!(
            "rollback of {} to {} not verified within {}: {last}",
            self.r.to(),
            self.r.from(),
            judge::human(self.cfg.watch.rollout_timeout)
        );
        warn!(what, "rollback failed verification");
        self.r.state.detail = Some(what.clone());
        self.advance(Happened::RollbackFailed).await;
        self.page(Severity::Critical, reason, Outcome::RollbackFailed, &what);
        self.ctx
            .notifier
            .post(format!("🔥 {}: {what}", self.r.key()));
        self.decide(
            EventReason::RollbackFailed,
            EventAction::Verify,
            reason,
            what,
        );
        true
    }

    pub(super) async fn verified(&mut self) -> bool {
        info!("rollback verified");
        self.advance(Happened::Verified).await;
        let reason = self.r.state.phase.reason().unwrap_or(Reason::None);
        let note = format!(
            "Rollback verified: {} runs {} again",
            self.r.key(),
            self.r.from()
        );
        self.decide(
            EventReason::RollbackVerified,
            EventAction::Verify,
            reason,
            note,
        );
        true
    }

    /// A page decided before a restart or a leader change may never have reached PagerDuty;
    /// one whose delivery the previous process recorded is not sent again.
    pub(super) fn page_again_if_owed(&self) {
        let Some(detail) = self.r.state.detail.clone() else {
            return;
        };
        if !self.r.state.page_owed(&self.updates.borrow()) {
            return;
        }
        let (outcome, reason) = match (&self.r.state.phase, self.r.state.paged) {
            (Phase::Settled { outcome, reason }, _) => (*outcome, *reason),
            (Phase::Verifying { reason }, _) => (Outcome::RolledBack, *reason),
            (_, Some(paged)) => (Outcome::Degraded, paged),
            _ => return,
        };
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

//! The `RollingBack` phase: the rollback sent as `kubectl rollout undo` would (retried while the
//! API server refuses it for a while), or found already done, paged and told.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{EndCause, Session};
use crate::cluster::record::{EventAction, EventReason, Outcome};
use crate::cluster::{rollback, rollout};
use crate::config;
use crate::judge::Reason;
use crate::notify::Severity;
use crate::phase::Happened;

impl Session {
    /// Counts a rollback in progress (the metric, and the token a drain waits for) until the
    /// guard drops.
    pub(super) fn rolling_back(
        &self,
    ) -> (
        crate::telemetry::GaugeGuard,
        tokio_util::task::task_tracker::TaskTrackerToken,
    ) {
        (self.ctx.metrics.rolling_back(), self.ctx.rollbacks.token())
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
                    // The decision is recorded, so a process taking over sends it.
                    self.save_state().await;
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
}

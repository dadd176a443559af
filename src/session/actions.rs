//! What a session does on a verdict of the judge: page while the watch goes on, finish it
//! (passed, degraded, ended by the detector), or decide to roll back (the rollback itself is
//! `rollback`'s).

use tracing::{info, warn};

use super::{EndCause, Session};
use crate::cluster::record::{EventAction, EventReason, Outcome};
use crate::config::Mode;
use crate::judge::{self, Reason};
use crate::notify::{self, PageEvent, Severity};
use crate::phase::Happened;

impl Session {
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
        // Recorded with the rollback itself, in its patch: a write before it would only delay
        // it. A rollback the API server does not take at once is recorded before it is retried
        // (see `roll_back`), so a new process goes on sending it.
        if let Some(state) = self.advanced(Happened::RollBack { reason }) {
            info!(phase = %state.phase, "phase");
            self.r.state = state;
            self.publish_state();
        }
    }
}

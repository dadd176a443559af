//! The `Verifying` phase: the rollback watched to completion, and the version health reports
//! checked, before it counts as done.

use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use super::Session;
use crate::cluster::record::{EventAction, EventReason, Outcome};
use crate::cluster::rollout;
use crate::config;
use crate::judge::{self, Reason};
use crate::notify::Severity;
use crate::phase::Happened;

impl Session {
    /// The `Verifying` phase: watches the rollback to completion and checks the version health
    /// reports. Returns `false` when stopped.
    pub(super) async fn verify(&mut self) -> bool {
        let _rolling_back = self.rolling_back();
        // Rolled back before the previous version's answers arrived: they say which checks can
        // verify it.
        if let Some(asking) = self.asking.take() {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return false,
                asked = asking => {
                    self.baseline_known(asked).await;
                }
            }
        }
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
}

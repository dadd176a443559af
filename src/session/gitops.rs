//! The session's side of GitOps: pause the owner's sync before the rollback, stop and page
//! instead when the rollback would not stick, and hand a paused sync to its keeper.

use tracing::{info, warn};

use super::Session;
use crate::cluster::record::{self, EventAction, EventReason, Outcome};
use crate::gitops::{self, Paused, Prepared};
use crate::judge::Reason;
use crate::notify::Severity;
use crate::phase::Happened;

impl Session {
    /// The GitOps owner named on the Deployment, for messages: ` (applied from Git by Argo CD
    /// Application argocd/payments)`, or nothing.
    pub(super) fn gitops_note(&self) -> String {
        let d = self.updates.borrow().clone();
        use kube::ResourceExt;
        gitops::owner::discover(
            &self.cfg.gitops,
            &self.r.namespace,
            &self.r.name,
            d.labels(),
            d.annotations(),
        )
        .filter(|_| self.cfg.gitops.mode != gitops::GitopsMode::Off)
        .map(|o| format!(" (applied from Git by {o})"))
        .unwrap_or_default()
    }

    /// Before a rollback: pause the owner's sync. `None`: the rollback must not be sent (the
    /// decision is recorded and paged); `Some(paused)`: roll back.
    pub(super) async fn gitops_before_undo(
        &mut self,
        reason: Reason,
        message: &str,
    ) -> Option<Option<Paused>> {
        let deployment = self.updates.borrow().clone();
        match gitops::prepare(&self.ctx.client, &self.cfg.gitops, &deployment).await {
            Prepared::Unmanaged => Some(None),
            Prepared::NotRunning { owner, why } => {
                warn!(%owner, why, "GitOps owner named but not re-applying: rolling back as usual");
                self.gitops_event(
                    EventReason::GitOpsOwnerInactive,
                    format!("Rolling back without a pause: {why}"),
                );
                Some(None)
            }
            Prepared::Paused(p) => {
                info!(owner = %p.owner, method = ?p.method, "GitOps sync paused before the rollback");
                self.gitops_event(
                    EventReason::GitOpsPaused,
                    format!(
                        "Paused {} before rolling back; it resumes when Git moves past {}; to resume by hand: {}",
                        p.describe(),
                        p.record.revision.as_deref().unwrap_or("the bad revision"),
                        p.manual_resume()
                    ),
                );
                Some(Some(p))
            }
            Prepared::Stop { owner, why, fix } => {
                warn!(%owner, why, "not rolling back: it would not stick");
                let what = format!(
                    "NOT rolled back ({message}): {owner} applies {} from Git and would re-apply it; {why}. To roll back by hand: {fix}",
                    self.r.to()
                );
                self.r.state.detail = Some(what.clone());
                self.advance(Happened::RollbackWithheld).await;
                self.page(Severity::Error, reason, Outcome::Degraded, &what);
                self.ctx.notifier.post(format!(
                    "🚨 Paged on-call: {} {}: {what}",
                    self.r.key(),
                    self.r.to()
                ));
                self.decide(
                    EventReason::GitOpsNotRolledBack,
                    EventAction::Page,
                    reason,
                    what,
                );
                None
            }
        }
    }

    /// The rollback under a paused sync was sent: a keeper checks it holds and resumes the
    /// sync when Git moves on.
    pub(super) fn keep_paused(&self, paused: Paused) {
        gitops::keep::keep(gitops::keep::Keeper {
            client: self.ctx.client.clone(),
            cfg: self.cfg.gitops.clone(),
            paused,
            restored: self.r.state.rollback_fingerprint.clone(),
            bad: self.r.state.judged_template.clone(),
            poll: self.cfg.watch.interval.get(),
            notifier: self.ctx.notifier.clone(),
            recorder: self.ctx.recorder.clone(),
            reference: record::reference(&self.updates.borrow()),
            revision: self.r.state.revision,
            metrics: self.ctx.metrics.clone(),
            shutdown: self.shutdown.clone(),
            cluster: self.cfg.cluster_name.clone(),
            kept: self.ctx.kept.clone(),
        });
    }

    /// A paused sync whose rollback was not sent: put it back at once.
    pub(super) async fn unpause(&self, paused: &Paused) {
        if let Err(e) = gitops::resume(&self.ctx.client, paused).await {
            warn!(error = %e, category = e.category(), "cannot resume the GitOps sync");
            self.ctx.notifier.post(format!(
                "⚠️ {}: {} is still paused and the rollback was not sent; resume it by hand: {}",
                self.r.key(),
                paused.describe(),
                paused.manual_resume()
            ));
        }
    }

    fn gitops_event(&self, event_reason: EventReason, note: String) {
        self.note(event_reason, EventAction::GitOps, note);
    }
}

//! What a keeper tells: an Event on the Deployment, a note to Slack, and the critical page when
//! a pause is lost.

use tracing::warn;

use super::Keeper;
use crate::cluster::record::{Decision, EventAction, EventReason};
use crate::notify::{self, PageEvent, Payload, Severity};

impl Keeper {
    pub(super) fn event(&self, event_reason: EventReason, note: String) {
        let recorder = self.recorder.clone();
        let reference = self.reference.clone();
        let d = Decision {
            event_reason,
            action: EventAction::GitOps,
            note,
            revision: self.revision,
            phase: None,
            reason: None,
            from_version: None,
            to_version: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.event(&reference, &d).await {
                warn!(error = %e, category = e.category(), "GitOps event not recorded");
            }
        });
    }

    /// A critical page of its own (like a failed rollback's): the bad release runs again.
    pub(super) fn page(&self, message: &str) {
        let p = &self.paused;
        let summary = format!("{}: {message}", p.record.deployment);
        let summary = if summary.len() > 1000 {
            format!("{}…", &summary[..summary.floor_char_boundary(999)])
        } else {
            summary
        };
        let receipt = self.notifier.page(PageEvent {
            action: notify::Action::Trigger,
            dedup_key: notify::pagerduty::capped_dedup_key(&format!(
                "deploy-watchdog/{}/{}/{}/{}/critical",
                self.cluster, p.namespace, p.name, self.revision
            )),
            payload: Some(Payload {
                summary,
                source: self.cluster.clone(),
                severity: Severity::Critical,
                component: Some(p.record.deployment.clone()),
                group: Some(p.namespace.clone()),
                class: Some("gitops_pause_lost".into()),
                custom_details: serde_json::json!({
                    "cluster": self.cluster,
                    "namespace": p.namespace,
                    "deployment": p.name,
                    "revision": self.revision,
                    "outcome": "degraded",
                    "owner": p.owner.to_string(),
                    "detail": message,
                }),
            }),
        });
        if receipt.is_none() {
            warn!("no PagerDuty configured: on-call was not paged that the GitOps pause was lost");
        }
    }

    /// Our pause was undone while we held it (our record is still there, the sync is on): the
    /// owner re-applies Git, which gives the release rolled back. Said once — Event, Slack and
    /// a critical page with the exact fix — and our record is taken off, so no process keeps or
    /// takes up a pause that is no longer there.
    pub(super) async fn lost(&self, why: Option<String>) {
        let p = &self.paused;
        let (cause, fix) = crate::gitops::why_lost(&self.client, &self.cfg, p).await;
        let why = why.unwrap_or(cause);
        warn!(
            why,
            "the GitOps pause was lost: the rolled-back release will be applied again"
        );
        let note = format!(
            "The pause of {} was undone ({why}): it re-applies Git, which gives the release rolled back, and deploy-watchdog does not fight it. Fix: {fix}",
            p.owner
        );
        self.event(EventReason::GitOpsPauseLost, note.clone());
        self.notifier
            .post(format!("🔥 {}: {note}.", p.record.deployment));
        self.page(&note);
        if let Err(e) = crate::gitops::forget(&self.client, p).await {
            warn!(error = %e, category = e.category(), "cannot take our record off the owner");
        }
    }
}

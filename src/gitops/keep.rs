//! After a rollback under a paused sync: check the rollback held through the controller's next
//! sync, remind Slack while the sync stays paused, and resume it exactly as it was once Git
//! moves on. One task per paused owner; the pause itself is recorded on the paused object, so a
//! person (or a later process) can always see and undo it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use super::{GitopsConfig, Paused};
use crate::cluster::record::{Decision, EventAction, EventReason, Recorder};
use crate::cluster::rollout;
use crate::notify::Notifier;
use crate::telemetry::Metrics;

/// Everything the task needs.
pub struct Keeper {
    pub client: kube::Client,
    pub cfg: GitopsConfig,
    pub paused: Paused,
    /// The fingerprint of the template the rollback restored.
    pub restored: Option<String>,
    /// How often the owner is read.
    pub poll: Duration,
    pub notifier: Notifier,
    pub recorder: Recorder,
    pub reference: ObjectReference,
    /// The rollout rolled back (for the Events).
    pub revision: i64,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

/// Runs a keeper in its own task.
pub fn keep(k: Keeper) {
    let span = tracing::info_span!("gitops", owner = %k.paused.owner, deployment = %k.paused.record.deployment);
    tokio::spawn(k.run().instrument(span));
}

impl Keeper {
    fn event(&self, event_reason: EventReason, note: String) {
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

    async fn run(self) {
        let _paused = self.metrics.gitops_paused(self.paused.owner.kind.as_str());
        let p = &self.paused;
        let what = p.describe();
        let since = Instant::now();
        let period = super::sync_period(&self.client, &self.cfg, p).await;
        // The controller's next sync has surely happened by then.
        let check_at = since + period + period / 2 + self.poll;
        let mut checked = false;
        let mut reminded = since;
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                // The pause stays, recorded on the object, for the next process or a person.
                _ = self.shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let now = match super::now(&self.client, p).await {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, category = e.category(), "cannot read the paused GitOps owner");
                    continue;
                }
            };
            if !now.recorded && !now.holds {
                info!("the sync was resumed by someone else");
                self.event(
                    EventReason::GitOpsResumed,
                    format!("{what} was resumed by someone else"),
                );
                return;
            }
            if !checked && Instant::now() >= check_at {
                checked = true;
                self.check_held(now.holds, period).await;
            }
            let moved = now.revision.is_some() && now.revision != p.record.revision;
            if moved {
                let revision = now.revision.clone().unwrap_or_default();
                match super::resume(&self.client, p).await {
                    Ok(()) => {
                        info!(%revision, "Git moved on: sync resumed");
                        let note = format!(
                            "Git moved on to {revision}: resumed {} as it was before the pause; the new rollout is judged as usual",
                            p.owner
                        );
                        self.event(EventReason::GitOpsResumed, note.clone());
                        self.notifier
                            .post(format!("▶️ {}: {note}.", p.record.deployment));
                        return;
                    }
                    Err(e) => {
                        warn!(error = %e, category = e.category(), "cannot resume the GitOps sync; retrying")
                    }
                }
            }
            if Instant::now().duration_since(reminded) >= self.cfg.reminder_interval {
                reminded = Instant::now();
                self.notifier.post(format!(
                    "⏸️ Still paused by deploy-watchdog since the rollback of {} {} ago: {what}. It resumes when Git moves past {}; to resume by hand: {}",
                    p.record.deployment,
                    crate::judge::human(since.elapsed()),
                    p.record.revision.as_deref().unwrap_or("the bad revision"),
                    p.manual_resume()
                ));
            }
        }
    }

    /// After the controller's next sync: is the pause still in force and the rollback still in
    /// place?
    async fn check_held(&self, pause_holds: bool, period: Duration) {
        let p = &self.paused;
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &p.namespace);
        let restored = match tokio::time::timeout(super::CALL_TIMEOUT, api.get(&p.name)).await {
            Ok(Ok(d)) => rollout::runs_template(&d, self.restored.as_deref()),
            _ => return,
        };
        let period = crate::judge::human(period);
        if pause_holds && restored {
            info!("the rollback held through the GitOps controller's sync");
            self.event(
                EventReason::GitOpsPauseHeld,
                format!(
                    "The rollback held past {}'s sync period ({period})",
                    p.owner
                ),
            );
        } else {
            let what = if pause_holds {
                "the Deployment no longer runs the restored template"
            } else {
                "the pause was undone"
            };
            warn!(what, "the rollback did not hold under GitOps");
            let note = format!(
                "The rollback did not hold past {}'s sync period ({period}): {what}",
                p.owner
            );
            self.event(EventReason::GitOpsPauseLost, note.clone());
            self.notifier
                .post(format!("🔥 {}: {note}.", p.record.deployment));
        }
    }
}

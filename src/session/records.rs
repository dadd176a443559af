//! How a session records: pages (and a page owed after a restart), the state annotation, Events.

use std::collections::BTreeMap;
use std::time::Duration;

use tracing::{Instrument, error, info, warn};

use super::Session;
use crate::cluster::record::{self, Decision, EventAction, EventReason, Outcome};
use crate::judge::Reason;
use crate::notify::{self, PageEvent, Payload, Severity};
use crate::phase::Phase;
use crate::tasks::Task;

/// Recording how a page ended (its refusal as an Event, its delivery as an annotation).
const RECEIPT_BACKOFF: crate::backoff::Policy =
    crate::backoff::Policy::new(Duration::from_millis(500), Duration::from_secs(2));

impl Session {
    /// The rollout's PagerDuty dedup key: its pages, and the `resolve` of a degraded rollout
    /// that recovers, all go to one incident.
    /// Capped to PagerDuty's 255 characters: cluster names are unbounded and Deployment names
    /// run to 253 characters, and PagerDuty refuses a longer key.
    pub(super) fn dedup_key(&self) -> String {
        notify::pagerduty::capped_dedup_key(&format!(
            "deploy-watchdog/{}/{}/{}/{}",
            self.cfg.cluster_name, self.r.namespace, self.r.name, self.r.state.revision
        ))
    }

    /// The key a page of `severity` goes to. PagerDuty adds a trigger on an open incident to
    /// its log and notifies nobody, so a critical follow-up ("the rollback failed") sent to the
    /// rollout's incident would reach nobody once on-call has acknowledged the first page: it
    /// gets an incident of its own, with a key of its own that is just as stable.
    fn dedup_key_for(&self, severity: Severity) -> String {
        match severity {
            Severity::Critical => notify::pagerduty::capped_dedup_key(&format!(
                "deploy-watchdog/{}/{}/{}/{}/critical",
                self.cfg.cluster_name, self.r.namespace, self.r.name, self.r.state.revision
            )),
            _ => self.dedup_key(),
        }
    }

    pub(super) fn page(&self, severity: Severity, reason: Reason, outcome: Outcome, message: &str) {
        let r = &self.r;
        let summary = format!("{} {} (from {}): {message}", r.key(), r.to(), r.from());
        let summary = if summary.len() > 1000 {
            format!("{}…", &summary[..summary.floor_char_boundary(999)])
        } else {
            summary
        };
        let refused = Decision {
            event_reason: EventReason::PageRejected,
            action: EventAction::Page,
            note: summary.clone(),
            revision: r.state.revision,
            phase: Some(r.state.phase.clone()),
            reason: None,
            from_version: r.state.from_version.clone(),
            to_version: r.state.to_version.clone(),
        };
        let receipt = self.ctx.notifier.page(PageEvent {
            action: notify::Action::Trigger,
            dedup_key: self.dedup_key_for(severity),
            payload: Some(Payload {
                summary,
                source: self.cfg.cluster_name.clone(),
                severity,
                component: Some(r.key()),
                group: Some(r.namespace.clone()),
                class: Some(reason.as_str().to_string()),
                custom_details: serde_json::json!({
                    "cluster": self.cfg.cluster_name,
                    "namespace": r.namespace,
                    "deployment": r.name,
                    "revision": r.state.revision,
                    "from_version": r.state.from_version,
                    "to_version": r.state.to_version,
                    "outcome": outcome.as_str(),
                    "reason": reason.as_str(),
                    "detail": message,
                    "baseline_error_ratio": self.baseline,
                    "peak_window": self.peak,
                }),
            }),
        });
        if let Some(receipt) = receipt {
            // Record delivery, so a restarted process knows whether the page is still owed; a
            // page refused for good is said where people look: the log and the Deployment's Events.
            let reference = record::reference(&self.updates.borrow());
            let recorder = self.ctx.recorder.clone();
            let (ns, name) = (r.namespace.clone(), r.name.clone());
            let delivered = BTreeMap::from([(
                record::PAGE_DELIVERED_ANNOTATION.to_string(),
                r.state.revision.to_string(),
            )]);
            self.ctx.tasks.spawn(
                Task::Record,
                async move {
                    let mut backoff = RECEIPT_BACKOFF.start();
                    match receipt.await {
                        Ok(Ok(())) => {}
                        Ok(Err(why)) => {
                            error!(error = %why, ?severity, "PagerDuty refused the page for good: on-call was not paged");
                            let d = Decision {
                                note: format!(
                                    "PagerDuty refused the page ({why}); on-call was not paged for: {}",
                                    refused.note
                                ),
                                ..refused
                            };
                            for _ in 0..5 {
                                match recorder.event(&reference, &d).await {
                                    Ok(()) => return,
                                    Err(e) => warn!(error = %e, "page refusal not recorded; retrying"),
                                }
                                tokio::time::sleep(backoff.next_wait()).await;
                            }
                            return;
                        }
                        // The daemon stopped first.
                        Err(_) => return,
                    }
                    for _ in 0..5 {
                        match recorder.annotate(&ns, &name, &delivered).await {
                            Ok(()) => return,
                            Err(e) => warn!(error = %e, "page delivery not recorded; retrying"),
                        }
                        tokio::time::sleep(backoff.next_wait()).await;
                    }
                }
                .in_current_span(),
            );
        }
    }

    /// Writes the state annotation, trying a few times over about a second: it is what a new
    /// process resumes from. A settled rollout's live record rides in the same write.
    pub(super) async fn save_state(&self) {
        self.publish_state();
        let mut annotations = self.r.state.annotations();
        annotations.extend(self.settled_live());
        let mut backoff =
            crate::backoff::Policy::new(Duration::from_millis(100), Duration::from_secs(1)).start();
        for attempt in 1..=4 {
            match self
                .ctx
                .recorder
                .annotate(&self.r.namespace, &self.r.name, &annotations)
                .await
            {
                Ok(()) => return,
                Err(e) if attempt == 4 => {
                    warn!(error = %e, category = e.category(), "state annotation not written");
                }
                Err(_) => {
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
            }
        }
    }

    /// An Event for a decision about the rollout, in the phase it led to. A settled phase is
    /// counted as the rollout's outcome; a page while watching, or a rollback sent but not yet
    /// verified, is not one.
    pub(super) fn decide(
        &self,
        event_reason: EventReason,
        action: EventAction,
        reason: Reason,
        note: String,
    ) {
        info!(event = event_reason.as_str(), phase = %self.r.state.phase, %reason, note, "decision");
        self.publish_decision(event_reason, reason, &note);
        let timed = match action {
            EventAction::RollBack => Some("rollback"),
            EventAction::Page => Some("page"),
            _ => None,
        };
        if let Some(timed) = timed {
            let elapsed = self.since_detection(self.clock.now());
            self.ctx.metrics.time_to_action(timed, elapsed);
        }
        if let Some(outcome) = self.r.state.outcome() {
            self.ctx.metrics.outcome(outcome, reason);
        }
        self.record(Decision {
            event_reason,
            action,
            note,
            revision: self.r.state.revision,
            phase: Some(self.r.state.phase.clone()),
            reason: Some(reason),
            from_version: self.r.state.from_version.clone(),
            to_version: self.r.state.to_version.clone(),
        });
    }

    /// An Event that is not a decision (a rollout detected, a pause, a bad annotation).
    pub(super) fn note(&self, event_reason: EventReason, action: EventAction, note: String) {
        self.record(Decision {
            event_reason,
            action,
            note,
            revision: self.r.state.revision,
            phase: Some(self.r.state.phase.clone()),
            reason: None,
            from_version: self.r.state.from_version.clone(),
            to_version: self.r.state.to_version.clone(),
        });
    }

    /// Events are retried in the background: an API hiccup must not lose the record.
    pub(super) fn record(&self, d: Decision) {
        let recorder = self.ctx.recorder.clone();
        let reference = record::reference(&self.updates.borrow());
        let shutdown = self.shutdown.clone();
        self.ctx.tasks.spawn(
            Task::Record,
            async move {
                let mut backoff = crate::backoff::Policy::new(
                    Duration::from_millis(200),
                    Duration::from_secs(10),
                )
                .start();
                for _ in 0..10 {
                    match recorder.event(&reference, &d).await {
                        Ok(()) => return,
                        Err(e) => warn!(error = %e, category = e.category(), "event not recorded; retrying"),
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
            }
            .in_current_span(),
        );
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

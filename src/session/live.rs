//! What a session shows while it watches: its view on the status board, and the live record
//! (each check's latest value) on the Deployment for `status`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};

use super::Session;
use crate::cluster::caches::{self, Subscription};
use crate::cluster::record::{EventReason, Recorder};
use crate::cluster::rollout;
use crate::judge::{ProbeRound, Reason};
use crate::status::live::{Cadence, LIVE_ANNOTATION, Latest, LiveRecord, VERSION};
use crate::status::{self, PodsView, RatePoint, VerdictView, board};

/// A session's live state.
pub(super) struct Live {
    entry: board::Entry,
    latest: Latest,
    cadence: Cadence,
    /// The latest record to write; a task of its own writes it, so a slow API server never
    /// holds back the watch.
    record: watch::Sender<Option<LiveRecord>>,
    /// Held by the writer while it writes: a rollback waits for it (see [`Session::quiesce_live`]).
    gate: Arc<Mutex<()>>,
    /// No record is written any more: a rollback is under way.
    paused: bool,
    /// Each check's value on `/metrics`, from the first observation until the session ends.
    gauges: Option<crate::telemetry::CheckGauges>,
}

impl Live {
    pub(super) fn start(
        board: &status::Board,
        view: status::RolloutView,
        recorder: Recorder,
        namespace: String,
        name: String,
        shutdown: CancellationToken,
    ) -> Live {
        let (record, rx) = watch::channel(None);
        let gate = Arc::new(Mutex::new(()));
        tokio::spawn(
            write_records(recorder, namespace, name, rx, gate.clone(), shutdown).in_current_span(),
        );
        Live {
            entry: board.entry(view),
            latest: Latest::default(),
            cadence: Cadence::default(),
            record,
            gate,
            paused: false,
            gauges: None,
        }
    }
}

/// Writes each new record, the latest only; a failed write is retried by the next record or
/// a few times for the last one. A newer record (or the record withdrawn for a rollback) drops
/// the write under way: an API server that hangs never holds back a rollback.
async fn write_records(
    recorder: Recorder,
    namespace: String,
    name: String,
    mut rx: watch::Receiver<Option<LiveRecord>>,
    gate: Arc<Mutex<()>>,
    shutdown: CancellationToken,
) {
    // A newer record arrived during a write: taken at once.
    let mut newer_seen = false;
    loop {
        if !newer_seen {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
        newer_seen = false;
        // The gate first, then the value: a rollback that withdrew the record and took the
        // gate is never followed by a write of the withdrawn value.
        let _writing = gate.lock().await;
        let Some(record) = rx.borrow_and_update().clone() else {
            continue;
        };
        let json = serde_json::to_string(&record).unwrap_or_default();
        let annotations = BTreeMap::from([(LIVE_ANNOTATION.to_string(), json)]);
        for attempt in 0..3 {
            // Once the session has ended (the sender is gone) its last record is still written.
            let newer = async {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = newer => {
                    newer_seen = true;
                    break;
                }
                written = recorder.annotate(&namespace, &name, &annotations) => match written {
                    Ok(()) => break,
                    Err(e) => debug!(error = %e, attempt, "live record not written"),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

impl Session {
    /// After each observation: the checks, the chart and the pods on the board, and the live
    /// record when [`Cadence`] says so.
    pub(super) fn live_observed(
        &mut self,
        caches: &Subscription,
        round: Option<&ProbeRound>,
        complete: bool,
        template: &mut rollout::TemplateKeyOf,
    ) {
        let now = jiff::Timestamp::now();
        let at = self.since_detection(now).as_secs_f64();
        if let Some(round) = round {
            self.live.latest.update(round, now);
        }
        let ratio = round
            .filter(|r| !r.providers.is_empty())
            .and_then(|_| self.live.latest.error_ratio(1));
        let checks = self.live.latest.checks(
            &self.policy,
            self.baseline,
            self.r.state.to_version.as_deref(),
        );
        let readings = self.live.latest.readings(
            &self.policy,
            self.baseline,
            self.r.state.to_version.as_deref(),
        );
        let (metrics, r) = (&self.ctx.metrics, &self.r);
        self.live
            .gauges
            .get_or_insert_with(|| metrics.check_gauges(&r.namespace, &r.name))
            .update(&readings);
        let pods = self.pods_view(caches, template);
        let baseline = self.baseline;
        let checks_at = self.live.latest.at;
        let state = self.r.state.clone();
        let live_checks = checks.clone();
        self.live.entry.update(|v| {
            v.phase = status::phase_of(&state).to_string();
            v.window_started_at = status::window_started(&state);
            v.checks = live_checks;
            v.checks_at = checks_at;
            v.pods = Some(pods);
            v.baseline = baseline;
            if let Some(ratio) = ratio {
                board::push_point(&mut v.error_rate, RatePoint { t: at, ratio });
            }
        });
        if complete && self.live.cadence.due(&checks) {
            self.write_live(checks);
        }
    }

    /// Before a rollback: no more live records, and none being written. The rollback's patch
    /// tests the Deployment's generation, which every annotation change raises.
    pub(super) async fn quiesce_live(&mut self) {
        self.live.paused = true;
        self.live.record.send_replace(None);
        drop(self.live.gate.lock().await);
    }

    /// The live record that rides with the record of a settled rollout, in the same write: the
    /// values it was decided on (for a rollback, before it). `None` before any check answered.
    pub(super) fn settled_live(&self) -> Option<(String, String)> {
        let checks = self.live.latest.checks(
            &self.policy,
            self.baseline,
            self.r.state.to_version.as_deref(),
        );
        if checks.is_empty() || !self.r.state.phase.is_settled() {
            return None;
        }
        let record = self.live_record(checks);
        let json = serde_json::to_string(&record).ok()?;
        Some((LIVE_ANNOTATION.to_string(), json))
    }

    fn live_record(&self, checks: Vec<status::CheckView>) -> LiveRecord {
        LiveRecord {
            version: VERSION,
            revision: self.r.state.revision,
            at: self.live.latest.at.unwrap_or_else(jiff::Timestamp::now),
            window_seconds: self.policy.window.as_secs(),
            checks,
        }
    }

    fn write_live(&mut self, checks: Vec<status::CheckView>) {
        if self.live.paused {
            return;
        }
        self.live.cadence.written(&checks);
        let record = self.live_record(checks);
        self.live.record.send_replace(Some(record));
    }

    /// The pods, from the Deployment's own counts (the caches keep no ReplicaSet status): the
    /// up-to-date replicas that are ready, the other ready ones, and the new pods' restarts.
    fn pods_view(&self, caches: &Subscription, template: &mut rollout::TemplateKeyOf) -> PodsView {
        let deployment = self.updates.borrow().clone();
        let status = deployment.status.clone().unwrap_or_default();
        let ready = status.ready_replicas.unwrap_or(0);
        let new_ready = status.updated_replicas.unwrap_or(0).min(ready);
        let sets = caches.replica_sets_of_deployment(&deployment);
        let restarts = caches::new_replica_set(template.get(&deployment), &sets)
            .map(|rs| &rs.set)
            .map(|rs| {
                caches
                    .pods_of(rs)
                    .iter()
                    .flat_map(|p| p.containers.iter().map(|c| c.restarts))
                    .sum()
            })
            .unwrap_or(0);
        PodsView {
            new_ready,
            new_desired: deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            old_ready: ready - new_ready,
            restarts,
        }
    }

    /// The record changed (a decision, the window, the rollback verified): the board follows.
    pub(super) fn publish_state(&self) {
        let state = self.r.state.clone();
        self.live.entry.update(|v| {
            v.phase = status::phase_of(&state).to_string();
            v.window_started_at = status::window_started(&state);
            v.outcome = state.phase.outcome().map(|o| o.as_str().to_string());
            v.reason = state
                .phase
                .reason()
                .or(state.paged)
                .map(|r| r.as_str().to_string());
            v.detail = state.detail.clone();
        });
    }

    /// A decision: the board's recent verdicts and the rollout's last action. Its outcome is the
    /// phase it led to, as people read it (`rolling_back`, `degraded`, or the final outcome).
    pub(super) fn publish_decision(&self, event_reason: EventReason, reason: Reason, note: &str) {
        let now = jiff::Timestamp::now();
        let state = self.r.state.clone();
        let shown = status::phase_of(&state);
        self.live.entry.update(|v| {
            v.last_action = Some(status::ActionView {
                at: Some(now),
                reason: event_reason.as_str().to_string(),
                note: note.to_string(),
                warning: event_reason.is_warning(),
            });
            v.phase = shown.to_string();
            v.outcome = state.phase.outcome().map(|o| o.as_str().to_string());
            v.reason = Some(reason.as_str().to_string());
            if v.detail.is_none() {
                v.detail = Some(note.to_string());
            }
        });
        self.live.entry.verdict(VerdictView {
            namespace: self.r.namespace.clone(),
            name: self.r.name.clone(),
            revision: self.r.state.revision,
            from_version: self.r.state.from_version.clone(),
            to_version: self.r.state.to_version.clone(),
            outcome: shown.to_string(),
            reason: Some(reason.as_str().to_string()),
            note: note.to_string(),
            at: Some(now),
        });
    }
}

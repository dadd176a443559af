//! First sight of a Deployment by a process that starts leading (at start-up or a takeover):
//! a recorded watch resumed in its phase, or a rollout nobody recorded judged from when it began,
//! told by its ReplicaSets.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::{Detector, key};
use crate::cluster::record::RolloutState;
use crate::cluster::rollout;
use crate::phase::Phase;
use crate::session::{Handle, Start};
use crate::tasks::Task;

/// How long the detector waits for the ReplicaSets that tell when an unrecorded rollout began.
const LOOKUP_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// When an unrecorded rollout began, looked up for a process that starts leading.
pub(super) struct Began {
    key: (String, String),
    uid: Option<String>,
    revision: i64,
    /// `None` when it cannot be told.
    at: Option<jiff::Timestamp>,
}

impl Detector {
    /// At start-up or takeover: the session for `d` at once when it resumes a recorded watch.
    /// A rollout nobody recorded that may still be judged first has its ReplicaSets read, to
    /// tell when it began; [`Detector::on_began`] then starts its session, if any.
    pub(super) fn first_sight(
        &self,
        d: &Arc<Deployment>,
        revision: i64,
        state: Option<&RolloutState>,
    ) -> Option<Handle> {
        if let Some(start) = resumable(d, revision, state) {
            return Some(self.first_sight_session(d, revision, (start, true)));
        }
        if unrecorded_may_be_judged(d, revision, state, jiff::Timestamp::now(), || {
            self.window(d)
        }) {
            self.look_up_began(d.clone(), revision);
        }
        None
    }

    /// The watch window of `d`, with its overrides.
    pub(super) fn window(&self, d: &Deployment) -> std::time::Duration {
        let (ns, name) = key(d);
        crate::overrides::effective(&self.ctx.config, &ns, &name, d.annotations())
            .map(|c| c.watch.window)
            .unwrap_or(self.ctx.config.watch.window)
            .get()
    }

    /// Reads `d`'s ReplicaSets in the background and reports when its rollout to `revision`
    /// began; abandoned when leadership is lost.
    fn look_up_began(&self, d: Arc<Deployment>, revision: i64) {
        let (ns, name) = key(&d);
        let api: Api<ReplicaSet> = Api::namespaced(self.ctx.client.clone(), &ns);
        let params = ListParams::default().labels(&rollout::match_labels_selector(&d));
        let report = self.began.clone();
        let stop = self.sessions.clone();
        self.ctx.tasks.spawn(Task::Session, async move {
            let listed = tokio::select! {
                _ = stop.cancelled() => return,
                listed = tokio::time::timeout(LOOKUP_BOUND, api.list(&params)) => listed,
            };
            let at = match listed {
                Ok(Ok(sets)) => rollout::began(&d, &sets.items),
                Ok(Err(e)) => {
                    warn!(namespace = %ns, deployment = %name, revision, error = %e, "cannot list the deployment's replicasets: when its rollout began is unknown");
                    None
                }
                Err(_) => {
                    warn!(namespace = %ns, deployment = %name, revision, bound = ?LOOKUP_BOUND, "no answer listing the deployment's replicasets: when its rollout began is unknown");
                    None
                }
            };
            let _ = report.send(Began {
                key: (ns, name),
                uid: d.metadata.uid.clone(),
                revision,
                at,
            });
        });
    }

    /// When an unrecorded rollout began is known (or known not to be): its session starts if
    /// [`first_sight_start`] finds one and nothing changed meanwhile (a newer revision, the
    /// object replaced, leadership lost, a session already started).
    pub(super) fn on_began(&mut self, began: Began) {
        if !self.leader {
            return;
        }
        let Some(known) = self.known.get(&began.key) else {
            return;
        };
        let Some(d) = known.latest.clone() else {
            return;
        };
        // A session that ended has dropped its receiver (its handle is let go later).
        if known
            .session
            .as_ref()
            .is_some_and(|s| !s.updates.is_closed())
            || known.uid != began.uid
            || rollout::revision(d.annotations()) != Some(began.revision)
        {
            return;
        }
        let state = RolloutState::from_deployment(&d);
        let start = first_sight_start(
            &d,
            began.revision,
            state.as_ref(),
            began.at,
            jiff::Timestamp::now(),
            self.window(&d),
        );
        let session = start.map(|start| self.first_sight_session(&d, began.revision, start));
        if let Some(k) = self.known.get_mut(&began.key) {
            k.session = session;
        }
    }

    /// At start-up or takeover: the session [`first_sight_start`] found for `d`.
    fn first_sight_session(
        &self,
        d: &Arc<Deployment>,
        revision: i64,
        (start, resumed): (Start, bool),
    ) -> Handle {
        let (ns, name) = key(d);
        match &start {
            _ if resumed => {
                info!(namespace = %ns, deployment = %name, revision, "resuming the watch recorded on the deployment");
            }
            // Deployed while no watchdog was leading.
            Start::Unrecorded {
                began,
                complete: true,
            } => {
                info!(namespace = %ns, deployment = %name, revision, %began, "rollout completed while no watchdog led; judging it for the rest of its window");
            }
            Start::Unrecorded { began, .. } => {
                info!(namespace = %ns, deployment = %name, revision, %began, "rollout in progress at start-up; judging it from when it began");
            }
            _ => {
                info!(namespace = %ns, deployment = %name, revision, "rollout in progress at start-up; watching it");
            }
        }
        self.spawn(d.clone(), None, start)
    }
}

/// The session a process that starts leading `now` would run on `d` (at `revision`, with the
/// recorded `state`, its rollout `began` then if that could be told, watched for `window`), and
/// whether it resumes a recorded watch (else it judges a rollout that nobody recorded).
///
/// A rollout nobody recorded was deployed while no watchdog led (a failover between the deploy
/// and its first record, a start-up). One that began less than `window` ago is judged from
/// when it began: its rollout deadline counts from then, and if it is already complete, its
/// window too (what is left of it). Otherwise only one still rolling out is judged, from now; a
/// complete one is not: it may be weeks old, and its pods' history (scaling, a drain) is not
/// its release's.
pub(super) fn first_sight_start(
    d: &Deployment,
    revision: i64,
    state: Option<&RolloutState>,
    began: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
    window: std::time::Duration,
) -> Option<(Start, bool)> {
    if let Some(start) = resumable(d, revision, state) {
        return Some((start, true));
    }
    if !unrecorded_rollout(d, revision, state) {
        return None;
    }
    let complete = !rollout::rolling_out(d);
    match began.filter(|b| elapsed(*b, now) < window) {
        Some(began) => Some((Start::Unrecorded { began, complete }, false)),
        None => (!complete).then_some((Start::Fresh, false)),
    }
}

/// Whether `d`'s current revision is one nobody recorded that [`first_sight_start`] may judge
/// once it knows when the rollout began: still rolling out, or completed less than `window`
/// before `now` (it began earlier still), or when it completed cannot be told. `window` is
/// asked only for a revision nobody recorded.
pub(super) fn unrecorded_may_be_judged(
    d: &Deployment,
    revision: i64,
    state: Option<&RolloutState>,
    now: jiff::Timestamp,
    window: impl FnOnce() -> std::time::Duration,
) -> bool {
    unrecorded_rollout(d, revision, state)
        && (rollout::rolling_out(d)
            || rollout::completed_at(d).is_none_or(|t| elapsed(t, now) < window()))
}

/// A revision after the first, not paused, that no watchdog has recorded: not the revision our
/// rollback made, nor one bringing back a release we rolled back (a person chose it).
fn unrecorded_rollout(d: &Deployment, revision: i64, state: Option<&RolloutState>) -> bool {
    let recorded = state.is_some_and(|s| {
        s.revision >= revision || s.restored_on(d) || s.rolled_back_template_on(d)
    });
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    revision > 1 && !recorded && !paused
}

/// Time from `since` to `now`; zero when `since` is later (another clock).
fn elapsed(since: jiff::Timestamp, now: jiff::Timestamp) -> std::time::Duration {
    std::time::Duration::try_from(now.duration_since(since)).unwrap_or_default()
}

/// A watch left open by a previous process, for the Deployment's current revision: resumed in
/// its recorded phase.
pub(crate) fn resumable(
    d: &Deployment,
    revision: i64,
    state: Option<&RolloutState>,
) -> Option<Start> {
    let state = state?;
    let resume = match &state.phase {
        // Decided, but the page may not have reached PagerDuty before the process stopped.
        Phase::Settled { .. } => state.page_owed(d),
        Phase::Progressing { .. } | Phase::Watching { .. } | Phase::RollingBack { .. } => {
            state.revision == revision
        }
        // Sent before the restart; the revision it created is the current one.
        Phase::Verifying { .. } => state.restored_on(d),
    };
    resume.then(|| Start::Resume(Box::new(state.clone())))
}

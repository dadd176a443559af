//! A session under supervision: when a run panics, the panic is said on the Deployment (a
//! Warning Event), and the session runs again from the state recorded there, as a new leader
//! would resume it. A panic must never leave a rollout unwatched: no rollback, no page.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

use super::{Before, Context, EndCause, Start, build};
use crate::backoff;
use crate::cluster::record::{self, Decision, EventAction, EventReason, RolloutState};
use crate::cluster::rollout;

/// Reading the Deployment again after a panic: a few tries, then the watch's latest copy.
const READ_ATTEMPTS: u32 = 5;
const READ_BACKOFF: backoff::Policy =
    backoff::Policy::new(Duration::from_millis(200), Duration::from_secs(5));
/// Recording the panic as an Event.
const EVENT_ATTEMPTS: u32 = 5;

/// A session the supervisor can run, and run again after a panic. See [`super::supervised`].
pub struct Supervised {
    pub(super) ctx: Arc<Context>,
    /// The Deployment the next run starts from.
    pub(super) deployment: Arc<Deployment>,
    /// The revision this session watches.
    pub(super) revision: i64,
    pub(super) before: Before,
    pub(super) start: Start,
    /// Kept unread: each run gets its own copy and sees every change the detector sent.
    pub(super) updates: watch::Receiver<Arc<Deployment>>,
    pub(super) end: watch::Receiver<Option<EndCause>>,
    pub(super) shutdown: CancellationToken,
}

impl crate::tasks::Restart for Supervised {
    fn run(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let (session, span) = build(
            self.ctx.clone(),
            self.deployment.clone(),
            &self.before,
            &self.start,
            self.updates.clone(),
            self.end.clone(),
            self.shutdown.clone(),
        );
        session.run().instrument(span)
    }

    fn panicked(&mut self, message: &str) -> impl Future<Output = bool> + Send + '_ {
        let message = message.to_string();
        async move { self.restart_from_record(&message).await }
    }
}

impl Supervised {
    /// The revision this session watches.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Says the panic on the Deployment, reads the state recorded there and prepares the run
    /// that resumes it; false when nothing is left to watch.
    async fn restart_from_record(&mut self, message: &str) -> bool {
        let latest = self.updates.borrow().clone();
        let (namespace, name) = (latest.namespace().unwrap_or_default(), latest.name_any());
        let span = tracing::info_span!("rollout", %namespace, deployment = %name, revision = self.revision);
        self.report(&latest, message);
        let Some(d) = self.read(&namespace, &name).instrument(span.clone()).await else {
            info!(parent: &span, "the deployment is gone: nothing to resume");
            return false;
        };
        let state = RolloutState::from_deployment(&d);
        match restart_from(&d, self.revision, state.as_ref()) {
            Some(start) => {
                let recorded = matches!(start, Start::Resume(_));
                warn!(parent: &span, recorded, "restarting the watch after a panic");
                // Nothing recorded yet: an unrecorded rollout still counts from when it began.
                if recorded || !matches!(self.start, Start::Unrecorded { .. }) {
                    self.start = start;
                }
                self.deployment = d;
                true
            }
            None => {
                info!(parent: &span, "the watch was settled or superseded before the panic: not restarted");
                false
            }
        }
    }

    /// A Warning Event on the Deployment, retried in the background.
    fn report(&self, d: &Deployment, message: &str) {
        let (from_version, to_version) = match &self.start {
            Start::Resume(s) => (s.from_version.clone(), s.to_version.clone()),
            Start::Fresh | Start::Unrecorded { .. } => (
                self.before.version.clone(),
                rollout::deployed_version(d, &self.ctx.config.version),
            ),
        };
        let decision = Decision {
            event_reason: EventReason::SessionPanicked,
            action: EventAction::Restart,
            note: format!(
                "The watch of revision {} stopped on an internal error ({message}); it resumes from the state recorded on the Deployment",
                self.revision
            ),
            revision: self.revision,
            phase: match &self.start {
                Start::Resume(s) => Some(s.phase.clone()),
                Start::Fresh | Start::Unrecorded { .. } => None,
            },
            reason: None,
            from_version,
            to_version,
        };
        let recorder = self.ctx.recorder.clone();
        let reference = record::reference(d);
        let shutdown = self.shutdown.clone();
        self.ctx
            .tasks
            .spawn(crate::tasks::Task::Record, async move {
                let mut backoff = READ_BACKOFF.start();
                for _ in 0..EVENT_ATTEMPTS {
                    match recorder.event(&reference, &decision).await {
                        Ok(()) => return,
                        Err(e) => warn!(error = %e, "panic event not recorded; retrying"),
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
            });
    }

    /// The Deployment as the API server has it now (the watch's copy may lag behind what the
    /// session wrote just before it panicked); the watch's latest copy when the API server does
    /// not answer; `None` when the Deployment is gone.
    async fn read(&self, namespace: &str, name: &str) -> Option<Arc<Deployment>> {
        let api: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), namespace);
        let mut backoff = READ_BACKOFF.start();
        for attempt in 1..=READ_ATTEMPTS {
            match api.get_opt(name).await {
                Ok(Some(mut d)) => {
                    crate::cluster::caches::strip_deployment(&mut d);
                    return Some(Arc::new(d));
                }
                Ok(None) => return None,
                Err(e) if attempt == READ_ATTEMPTS => {
                    error!(error = %e, "cannot read the deployment after a panic; resuming from the watch's copy");
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the deployment after a panic; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
            }
        }
        Some(self.updates.borrow().clone())
    }
}

/// Where a session of `revision` that panicked runs again, given the Deployment `d` as it is now
/// and the state recorded on it: the recorded watch when there is one to resume (as a new
/// leader would), from the start when nothing was recorded for this revision yet, and nowhere
/// when the watch was settled (its page delivered) or a newer revision has replaced this one.
pub(crate) fn restart_from(
    d: &Deployment,
    revision: i64,
    state: Option<&RolloutState>,
) -> Option<Start> {
    if let Some(start) = crate::daemon::resumable(d, revision, state) {
        return Some(start);
    }
    let recorded = state.is_some_and(|s| s.revision >= revision || s.restored_on(d));
    let current = rollout::revision(d.annotations()) == Some(revision);
    (!recorded && current).then_some(Start::Fresh)
}

//! Rollout detection: what the daemon remembers of each Deployment, a revision's rise told
//! from a rollback of ours or a rollback undone, and the session each rollout gets.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::first_sight::{Began, resumable, unrecorded_may_be_judged};
use super::key;
use crate::cluster::record::RolloutState;
use crate::cluster::rollout;
use crate::session::{self, Context, EndCause, Handle, Start};
use crate::tasks::Task;

/// What the detector remembers of one Deployment.
pub(super) struct Known {
    /// The object's UID: a Deployment deleted and created again under the same name is another
    /// object, whose revisions start over at 1.
    pub(super) uid: Option<String>,
    pub(super) revision: i64,
    /// The last rollout the watchdog rolled back: its revision and the fingerprint of its
    /// template. A later revision that brings that template back is someone undoing the
    /// rollback (kubectl's undo goes to the second-highest revision), not a rollout to fight.
    pub(super) rolled_back: Option<(i64, String)>,
    pub(super) version: Option<String>,
    /// Every container's image, kept only for a pod with several containers: a rollout that
    /// changes a sidecar alone says which one changed.
    pub(super) images: Option<Box<[(String, String)]>>,
    /// The latest object, kept only while a new leader would start a session on it (a watch
    /// left open, a rollout nobody recorded): [`Detector::take_over`] reads nothing else, and
    /// a settled Deployment is most of a large cluster.
    pub(super) latest: Option<Arc<Deployment>>,
    pub(super) session: Option<Handle>,
    /// It names a GitOps owner: a new leader looks for a pause an earlier process recorded.
    pub(super) gitops: bool,
}

/// Rollout detection: which revision each Deployment is at, and the session watching it.
pub(super) struct Detector {
    pub(super) ctx: Arc<Context>,
    pub(super) known: HashMap<(String, String), Known>,
    /// Only the leader runs sessions; a standby keeps `known` current.
    pub(super) leader: bool,
    /// Parent of every session's token: cancelled when leadership is lost.
    pub(super) sessions: CancellationToken,
    pub(super) shutdown: CancellationToken,
    /// Where look-ups of when an unrecorded rollout began report ([`Detector::on_began`]).
    pub(super) began: mpsc::UnboundedSender<Began>,
}

impl Detector {
    pub(super) fn spawn(&self, d: Arc<Deployment>, from: Option<String>, start: Start) -> Handle {
        session::spawn(
            self.ctx.clone(),
            d,
            session::Before {
                version: from,
                images: Vec::new(),
            },
            start,
            self.sessions.child_token(),
        )
    }

    pub(super) fn on_delete(&mut self, k: &(String, String)) {
        if let Some(known) = self.known.remove(k)
            && let Some(s) = known.session
        {
            let _ = s.end.send(Some(EndCause::Deleted));
        }
    }

    /// Leadership gained: pick up every watch the previous leader left open.
    pub(super) fn take_over(&mut self) {
        info!(
            deployments = self.known.len(),
            "leading: resuming open watches"
        );
        self.leader = true;
        self.sessions = self.shutdown.child_token();
        let entries: Vec<Arc<Deployment>> = self
            .known
            .values()
            .filter_map(|k| k.latest.clone())
            .collect();
        let owned: Vec<(String, String)> = self
            .known
            .iter()
            .filter(|(_, k)| k.gitops)
            .map(|(key, _)| key.clone())
            .collect();
        for (ns, name) in owned {
            self.take_up_pause(ns, name);
        }
        for d in entries {
            let session = rollout::revision(d.annotations()).and_then(|revision| {
                let state = RolloutState::from_deployment(&d);
                self.first_sight(&d, revision, state.as_ref())
            });
            if let Some(k) = self.known.get_mut(&key(&d)) {
                k.session = session;
            }
        }
    }

    /// Leadership lost: stop every session at once; the next leader resumes them.
    pub(super) fn step_down(&mut self) {
        warn!("no longer leading: stopping every session");
        self.leader = false;
        self.sessions.cancel();
        for k in self.known.values_mut() {
            k.session = None;
        }
    }

    /// At start-up or takeover: a GitOps sync an earlier process paused (recorded on its owner)
    /// is kept again: reminders, the held check, the resume when Git moves on.
    pub(super) fn take_up_pause(&self, namespace: String, name: String) {
        tokio::spawn(crate::gitops::keep::take_up(
            self.ctx.clone(),
            namespace,
            name,
            self.sessions.child_token(),
        ));
    }
}

impl Detector {
    pub(super) fn on_apply(&mut self, d: Deployment, mut initial: bool) {
        let d = Arc::new(d);
        let k = key(&d);
        if let Some(known) = self.known.get(&k)
            && known.uid.is_some()
            && known.uid != d.metadata.uid
        {
            // Deleted and created again while the watch was down: the old object's watch ends,
            // and the new one is seen as at start-up, its revisions compared only with its own.
            info!(namespace = %k.0, deployment = %k.1, "deployment replaced by a new object of the same name");
            self.on_delete(&k);
            initial = true;
        }
        let Some(revision) = rollout::revision(d.annotations()) else {
            // The controller has not numbered it yet.
            return;
        };
        let version = rollout::deployed_version(&d, &self.ctx.config.version);
        let images = several_images(&d);
        let gitops = crate::gitops::owner::discover(
            &self.ctx.config.gitops,
            &k.0,
            &k.1,
            d.labels(),
            d.annotations(),
        )
        .is_some();
        let state = RolloutState::from_deployment(&d);
        let now = jiff::Timestamp::now();
        // What a new leader would need to start a session on `d`.
        let first_sight = resumable(&d, revision, state.as_ref()).is_some()
            || unrecorded_may_be_judged(&d, revision, state.as_ref(), now, || self.window(&d));
        let rolled_back = state
            .as_ref()
            .filter(|s| s.phase.rolled_back())
            .and_then(|s| Some((s.revision, s.judged_template.clone()?)));

        if !self.known.contains_key(&k) {
            // First sight: at start-up (resume what a previous process left open) or a
            // Deployment that was just created or opted in (not a rollout).
            let keep = first_sight;
            let session = if initial && self.leader {
                self.first_sight(&d, revision, state.as_ref())
            } else {
                None
            };
            if gitops && initial && self.leader {
                self.take_up_pause(k.0.clone(), k.1.clone());
            }
            self.known.insert(
                k,
                Known {
                    uid: d.metadata.uid.clone(),
                    revision,
                    rolled_back,
                    version,
                    images,
                    latest: keep.then_some(d),
                    session,
                    gitops,
                },
            );
            return;
        }
        let leader = self.leader;
        let Some(entry) = self.known.get_mut(&k) else {
            return;
        };
        entry.latest = first_sight.then(|| d.clone());
        entry.gitops = gitops;
        if rolled_back.is_some() {
            entry.rolled_back = rolled_back;
        }
        if revision > entry.revision {
            let ours = state.as_ref().is_some_and(|s| s.restored_on(&d));
            let undone = entry
                .rolled_back
                .as_ref()
                .filter(|(_, template)| rollout::runs_template(&d, Some(template)))
                .map(|(rolled_back, _)| *rolled_back);
            entry.revision = revision;
            let from = std::mem::replace(&mut entry.version, version);
            let images_before = std::mem::replace(&mut entry.images, images);
            if let Some(rolled_back) = undone.filter(|_| !ours) {
                if leader {
                    self.rollback_undone(&d, revision, rolled_back, from);
                }
                return;
            }
            if !ours {
                if let Some(old) = entry.session.take() {
                    let _ = old.end.send(Some(EndCause::Superseded));
                }
                if leader {
                    let handle = session::spawn(
                        self.ctx.clone(),
                        d.clone(),
                        session::Before {
                            version: from,
                            images: images_before.map(Vec::from).unwrap_or_default(),
                        },
                        Start::Fresh,
                        self.sessions.child_token(),
                    );
                    if let Some(entry) = self.known.get_mut(&k) {
                        entry.session = Some(handle);
                    }
                }
                return;
            }
        }
        if let Some(s) = &entry.session {
            let _ = s.updates.send(d);
        }
    }
}

/// Every container's image of `d`'s template when it has several containers.
fn several_images(d: &Deployment) -> Option<Box<[(String, String)]>> {
    let template = &d.spec.as_ref()?.template;
    let images = crate::cluster::version::images(template);
    (images.len() > 1).then(|| images.into_boxed_slice())
}

impl Detector {
    /// Someone brought back the template of a rollout the watchdog rolled back (a
    /// `kubectl rollout undo` after ours returns to the second-highest revision: the bad
    /// release). A person chose it: it is not judged or rolled back again, only reported.
    fn rollback_undone(
        &self,
        d: &Deployment,
        revision: i64,
        rolled_back: i64,
        from: Option<String>,
    ) {
        let (ns, name) = key(d);
        if self.ctx.kept.resumed(&ns, &name) {
            // The GitOps sync was just resumed and Git still gives the release rolled back: the
            // controller's doing, which the keeper of the pause answers (paused again, restored).
            info!(namespace = %ns, deployment = %name, revision, rolled_back, "the GitOps controller brought back the rolled-back release; its pause's keeper restores it");
            return;
        }
        let version = rollout::deployed_version(d, &self.ctx.config.version);
        let to = version.as_deref().unwrap_or("the rolled-back release");
        warn!(namespace = %ns, deployment = %name, revision, rolled_back, "the rolled-back release is back (someone undid the rollback); not judging it again");
        let note = format!(
            "Revision {revision} brings back {to}, rolled back as revision {rolled_back}: someone undid the rollback; not judging or rolling it back again"
        );
        self.ctx.notifier.post(format!("⚠️ {ns}/{name}: {note}."));
        let decision = crate::cluster::record::Decision {
            event_reason: crate::cluster::record::EventReason::RollbackUndone,
            action: crate::cluster::record::EventAction::Ignore,
            note,
            revision: rolled_back,
            phase: None,
            reason: None,
            from_version: from,
            to_version: version,
        };
        let recorder = self.ctx.recorder.clone();
        let reference = crate::cluster::record::reference(d);
        self.ctx.tasks.spawn(Task::Record, async move {
            if let Err(e) = recorder.event(&reference, &decision).await {
                warn!(error = %e, "event not recorded");
            }
        });
    }
}

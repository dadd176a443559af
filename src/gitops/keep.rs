//! After a rollback under a paused sync: check the rollback held through the controller's next
//! sync, remind Slack while the sync stays paused, and resume it exactly as it was once Git
//! moves on. One task per paused owner; the pause itself is recorded on the paused object, so a
//! person (or a later process: [`take_up`]) can always see and undo it.
//!
//! Git moving on does not say the release was fixed: the Kubernetes API shows the revision an
//! owner is at, not the template that revision renders (Argo CD's `status.resources` and Flux's
//! inventory list objects and their sync state, not their manifests). So after a resume the
//! keeper watches the Deployment through the controller's next sync: a commit that still gives
//! the release rolled back (a README change, another app in the repository) brings that
//! template back, and the keeper pauses the sync again at once, restores the good template
//! again and waits for the next commit — one more rollback per Git commit at most, one Slack
//! note, no page. A pause undone by someone else (a parent that puts the sync back, a person)
//! pages: the bad release runs again under an owner the watchdog could not stop.
//!
//! Which keeper holds each pause is in `claim`; what a keeper tells (Events, Slack, the page when
//! a pause is lost) in `report`.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, warn};

mod claim;
mod report;

use claim::Claim;
pub use claim::Kept;

use super::{GitopsConfig, Paused};
use crate::cluster::record::{self, EventReason, Recorder, RolloutState};
use crate::cluster::{rollback, rollout};
use crate::notify::Notifier;
use crate::telemetry::Metrics;

/// Everything the task needs.
pub struct Keeper {
    pub client: kube::Client,
    pub cfg: GitopsConfig,
    pub paused: Paused,
    /// The fingerprint of the template the rollback restored.
    pub restored: Option<String>,
    /// The fingerprint of the template rolled back (the bad release).
    pub bad: Option<String>,
    /// How often the owner is read.
    pub poll: Duration,
    pub notifier: Notifier,
    pub recorder: Recorder,
    pub reference: ObjectReference,
    /// The rollout rolled back (for the Events and pages).
    pub revision: i64,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    /// For the pages: `cluster_name`.
    pub cluster: String,
    pub kept: Kept,
}

/// Runs a keeper in its own task; it supersedes any keeper of an older pause of the same
/// Deployment in this process.
pub fn keep(k: Keeper) {
    if let Some(claim) = k.kept.claim(&k.paused.namespace, &k.paused.name, true) {
        spawn(k, claim);
    }
}

fn spawn(k: Keeper, claim: Claim) {
    let span = tracing::info_span!("gitops", owner = %k.paused.owner, deployment = %k.paused.record.deployment);
    tokio::spawn(k.run(claim).instrument(span));
}

/// On becoming the leader (or starting while leading): takes up the pause an earlier process
/// recorded on `namespace/name`'s GitOps owner, if any and if no keeper here holds it already.
pub async fn take_up(
    ctx: Arc<crate::session::Context>,
    namespace: String,
    name: String,
    shutdown: CancellationToken,
) {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut backoff =
        crate::backoff::Policy::new(Duration::from_millis(500), Duration::from_secs(10)).start();
    let mut attempts = 0;
    let (d, paused) = loop {
        attempts += 1;
        let found = match tokio::time::timeout(super::CALL_TIMEOUT, api.get(&name)).await {
            Ok(Ok(d)) => match super::recorded_pause(&ctx.client, &ctx.config.gitops, &d).await {
                Ok(p) => Ok(p.map(|p| (d, p))),
                Err(e) => Err(e.to_string()),
            },
            // Gone: nothing to keep.
            Ok(Err(kube::Error::Api(s))) if s.code == 404 => return,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", super::CALL_TIMEOUT)),
        };
        match found {
            Ok(Some(found)) => break found,
            Ok(None) => return,
            Err(e) if attempts >= 6 => {
                error!(
                    namespace,
                    deployment = name,
                    error = e,
                    "cannot read whether an earlier process paused this Deployment's GitOps sync; a pause it left is not taken up"
                );
                return;
            }
            Err(e) => {
                warn!(
                    namespace,
                    deployment = name,
                    error = e,
                    "cannot read the Deployment's GitOps owner yet; retrying"
                );
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next_wait()) => {}
        }
    };
    let state = RolloutState::from_deployment(&d);
    let keeper = Keeper {
        client: ctx.client.clone(),
        cfg: ctx.config.gitops.clone(),
        restored: state.as_ref().and_then(|s| s.rollback_fingerprint.clone()),
        bad: state.as_ref().and_then(|s| s.judged_template.clone()),
        poll: ctx.config.watch.interval.get(),
        notifier: ctx.notifier.clone(),
        recorder: ctx.recorder.clone(),
        reference: record::reference(&d),
        revision: state.as_ref().map_or(0, |s| s.revision),
        metrics: ctx.metrics.clone(),
        shutdown,
        cluster: ctx.config.cluster_name.clone(),
        kept: ctx.kept.clone(),
        paused,
    };
    if let Some(claim) = keeper.kept.claim(&namespace, &name, false) {
        info!(namespace, deployment = name, owner = %keeper.paused.owner, "taking up the GitOps pause an earlier process recorded");
        spawn(keeper, claim);
    }
}

/// How holding a pause ended.
enum Held {
    /// Git moved on to this revision and the sync was resumed; the Deployment's revision just
    /// before (what the controller applies after the resume is numbered above it).
    Resumed(String, Option<i64>),
    /// Nothing more to keep.
    Over,
}

impl Keeper {
    async fn deployment(&self) -> Option<Deployment> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &self.paused.namespace);
        match tokio::time::timeout(super::CALL_TIMEOUT, api.get(&self.paused.name)).await {
            Ok(Ok(d)) => Some(d),
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the Deployment");
                None
            }
            Err(_) => None,
        }
    }

    async fn run(mut self, claim: Claim) {
        loop {
            let (revision, before) = match self.hold(&claim).await {
                Held::Resumed(revision, before) => (revision, before),
                Held::Over => return,
            };
            let back = self.bad_back(&claim, before).await;
            claim.set_resumed(false);
            match back {
                Some(d) => {
                    if !self.restore_again(&d, &revision).await {
                        return;
                    }
                }
                None => return,
            }
        }
    }

    /// Holds the pause until Git moves on (resumed) or it is no longer ours to hold.
    async fn hold(&mut self, claim: &Claim) -> Held {
        let _paused = self.metrics.gitops_paused(self.paused.owner.kind.as_str());
        let what = self.paused.describe();
        let since = Instant::now();
        let period = super::sync_period(&self.client, &self.cfg, &self.paused).await;
        // The controller's next sync has surely happened by then.
        let check_at = since + period + period / 2 + self.poll;
        let mut reminded = since;
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                // The pause stays, recorded on the object, for the next process or a person.
                _ = self.shutdown.cancelled() => return Held::Over,
                _ = ticks.tick() => {}
            }
            if !claim.current() {
                info!("a newer pause of this Deployment is kept by another keeper");
                return Held::Over;
            }
            let p = &self.paused;
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
                return Held::Over;
            }
            if now.recorded && !now.holds {
                self.lost(None).await;
                return Held::Over;
            }
            if !self.paused.record.checked && Instant::now() >= check_at {
                self.check_held(period).await;
            }
            let p = &self.paused;
            let moved = now.revision.is_some() && now.revision != p.record.revision;
            if moved {
                let revision = now.revision.clone().unwrap_or_default();
                let before = self
                    .deployment()
                    .await
                    .and_then(|d| rollout::revision(&d.metadata.annotations.unwrap_or_default()));
                // Said before the controller can act on it: what it applies next is its doing.
                claim.set_resumed(true);
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
                        return Held::Resumed(revision, before);
                    }
                    Err(e) => {
                        claim.set_resumed(false);
                        warn!(error = %e, category = e.category(), "cannot resume the GitOps sync; retrying")
                    }
                }
            }
            if Instant::now().duration_since(reminded) >= self.cfg.reminder_interval.get() {
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

    /// After a resume, through the controller's next sync: the Deployment when the controller
    /// brought back the template rolled back (the commit did not fix the release), numbered by
    /// the deployment controller above `before`; `None` once it applied another template (a new
    /// rollout, judged as usual) or left the restored one.
    async fn bad_back(&self, claim: &Claim, before: Option<i64>) -> Option<Deployment> {
        let bad = self.bad.as_deref()?;
        let before = before.unwrap_or(i64::MAX);
        let period = super::sync_period(&self.client, &self.cfg, &self.paused).await;
        let until = Instant::now() + period + period / 2 + self.poll;
        let mut ticks = tokio::time::interval(self.poll);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while Instant::now() < until {
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                _ = ticks.tick() => {}
            }
            if !claim.current() {
                return None;
            }
            let Some(d) = self.deployment().await else {
                continue;
            };
            // Not numbered yet: the deployment controller has not seen the latest template.
            let observed =
                d.status.as_ref().and_then(|s| s.observed_generation) >= d.metadata.generation;
            let numbered = rollout::revision(&d.metadata.annotations.clone().unwrap_or_default());
            if !observed {
                continue;
            }
            if rollout::runs_template(&d, Some(bad)) {
                if numbered.is_some_and(|n| n > before) {
                    return Some(d);
                }
                // Still running since before the resume (its rollback failed): what the
                // controller applies next is judged as usual.
                continue;
            }
            if !rollout::runs_template(&d, self.restored.as_deref()) {
                return None;
            }
        }
        None
    }

    /// The controller brought back the release rolled back after Git moved on to `revision`:
    /// pause again, restore the good template again, and hold until the next commit. `false`
    /// when the pause could not be put back (paged).
    async fn restore_again(&mut self, d: &Deployment, revision: &str) -> bool {
        let p = self.paused.clone();
        let bad_version = d
            .spec
            .as_ref()
            .and_then(|s| rollout::template_version(&s.template))
            .unwrap_or_else(|| "the release rolled back".into());
        let again = match super::pause_again(&self.client, &p).await {
            Ok(Some(again)) => again,
            Ok(None) => {
                self.lost(Some(format!(
                    "Git moved on to {revision}, which still gives {bad_version}, and the pause could not be put back: something turned the sync on again at once"
                )))
                .await;
                return false;
            }
            Err(e) => {
                self.lost(Some(format!(
                    "Git moved on to {revision}, which still gives {bad_version}, and the sync could not be paused again: {e}"
                )))
                .await;
                return false;
            }
        };
        self.paused = again.clone();
        let mut d = d.clone();
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let current = rollout::revision(&d.metadata.annotations.clone().unwrap_or_default())
                .unwrap_or_default();
            let keep_on_deployment = again.deployment_annotations();
            let result = rollback::execute_judged(
                &self.client,
                &p.namespace,
                &p.name,
                current,
                self.bad.as_deref(),
                |_| keep_on_deployment,
            )
            .await;
            // Numbered meanwhile (the read was older): read again and send again, a few times.
            let stale = matches!(&result, Err(rollback::RollbackError::Superseded { .. }));
            if !stale || attempts >= 3 {
                break result;
            }
            tokio::time::sleep(self.poll).await;
            match self.deployment().await {
                Some(fresh) if rollout::runs_template(&fresh, self.bad.as_deref()) => d = fresh,
                _ => break result,
            }
        };
        match result {
            Ok(plan) => {
                let to = plan
                    .target_version
                    .clone()
                    .unwrap_or_else(|| format!("revision {}", plan.target_revision));
                let restored = rollout::template_fingerprint(&plan.template);
                if self.restored.as_deref() != Some(restored.as_str()) {
                    warn!(%to, "the template restored again is not the one the first rollback restored");
                }
                warn!(%revision, %to, "Git moved on without fixing the release: paused again and restored");
                let note = format!(
                    "Git moved on to {revision} but still gives {bad_version}, the release rolled back: paused {} again and restored {to} again; it resumes when Git moves past {revision}; to resume by hand: {}",
                    again.describe(),
                    again.manual_resume()
                );
                self.event(EventReason::GitOpsPaused, note.clone());
                self.notifier
                    .post(format!("🔁 {}: {note}.", p.record.deployment));
            }
            Err(e) => {
                warn!(error = %e, category = e.category(), "the release rolled back is back and could not be rolled back again");
                let note = format!(
                    "Git moved on to {revision} but still gives {bad_version}, the release rolled back; {} is paused again but the rollback failed ({e}): roll back by hand: kubectl -n {} rollout undo deployment/{}",
                    again.owner, p.namespace, p.name
                );
                self.event(EventReason::GitOpsPauseLost, note.clone());
                self.notifier
                    .post(format!("🔥 {}: {note}.", p.record.deployment));
                self.page(&note);
            }
        }
        true
    }

    /// After the controller's next sync: is the rollback still in place? (The pause is checked
    /// on every tick.) Noted on the record, so a later process does not check again.
    async fn check_held(&mut self, period: Duration) {
        let p = &self.paused;
        let Some(d) = self.deployment().await else {
            return;
        };
        let restored = rollout::runs_template(&d, self.restored.as_deref());
        let period = crate::judge::human(period);
        if restored {
            info!("the rollback held through the GitOps controller's sync");
            self.event(
                EventReason::GitOpsPauseHeld,
                format!(
                    "The rollback held past {}'s sync period ({period})",
                    p.owner
                ),
            );
        } else {
            let what = "the Deployment no longer runs the restored template";
            warn!(what, "the rollback did not hold under GitOps");
            let note = format!(
                "The rollback did not hold past {}'s sync period ({period}): {what}",
                p.owner
            );
            self.event(EventReason::GitOpsPauseLost, note.clone());
            self.notifier
                .post(format!("🔥 {}: {note}.", p.record.deployment));
        }
        match super::mark_checked(&self.client, p).await {
            Ok(()) => self.paused.record.checked = true,
            Err(e) => {
                warn!(error = %e, category = e.category(), "cannot note the held check on the pause record");
                // Not checked again in this process.
                self.paused.record.checked = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_pause_supersedes_the_keeper_of_an_older_one_and_a_take_up_does_not() {
        let kept = Kept::default();
        let first = kept.claim("payments", "api", true);
        assert!(first.as_ref().is_some_and(Claim::current));
        // A process taking up a recorded pause leaves a keeper that runs alone.
        assert!(kept.claim("payments", "api", false).is_none());
        let second = kept.claim("payments", "api", true);
        assert!(first.as_ref().is_some_and(|c| !c.current()));
        assert!(second.as_ref().is_some_and(Claim::current));
        // The superseded keeper ending does not let go of the newer one's hold.
        drop(first);
        assert!(kept.kept("payments", "api"));
        drop(second);
        assert!(!kept.kept("payments", "api"));
    }

    #[test]
    fn only_a_keeper_that_resumed_the_sync_answers_for_the_release_coming_back() {
        let kept = Kept::default();
        let claim = kept.claim("payments", "api", true);
        assert!(!kept.resumed("payments", "api"));
        if let Some(c) = &claim {
            c.set_resumed(true);
        }
        assert!(kept.resumed("payments", "api"));
        assert!(!kept.resumed("payments", "worker"));
        drop(claim);
        assert!(!kept.resumed("payments", "api"));
    }
}

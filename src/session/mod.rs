//! One rollout's watch: phases and ticks. Probes and cluster changes become observations, the
//! judge turns them into verdicts, and the verdicts become actions (rollback, page, notify,
//! record).

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::pods::PodRecord;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info};

use crate::cluster::caches::{Caches, Subscription};
use crate::cluster::record::{Outcome, Recorder, RolloutState};
use crate::cluster::{pods, rollout};
use crate::config::Config;
use crate::judge::{
    self, Finish, Judge, Observation, Policy, ProviderSample, RolloutFacts, Verdict,
};
use crate::notify::Notifier;
use crate::probes::Probes;
use crate::probes::sampler::{Member, Sampler};

mod actions;
mod live;
mod records;

/// What every session shares.
pub struct Context {
    pub client: kube::Client,
    pub config: Config,
    pub policy: Policy,
    pub probes: Probes,
    pub notifier: Notifier,
    pub recorder: Recorder,
    pub metrics: Arc<crate::telemetry::Metrics>,
    /// ReplicaSets and Pods of the namespaces with rollouts watched.
    pub caches: Caches,
    /// The providers' shared round, when any provider is configured.
    pub sampler: Option<Sampler>,
    /// Where the session publishes its rollout for the status page.
    pub board: crate::status::Board,
}

/// Why the detector ended a session early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCause {
    Superseded,
    Deleted,
}

/// Where a session starts.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// A rollout just detected.
    Fresh,
    /// A new process picks up a watch recorded on the Deployment.
    Resume(RolloutState),
}

/// The handle the detector keeps.
pub struct Handle {
    pub revision: i64,
    pub updates: watch::Sender<Arc<Deployment>>,
    pub end: watch::Sender<Option<EndCause>>,
}

/// The identity of one rollout.
#[derive(Debug, Clone)]
struct Rollout {
    namespace: String,
    name: String,
    state: RolloutState,
}

impl Rollout {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    fn to(&self) -> &str {
        self.state
            .to_version
            .as_deref()
            .unwrap_or("the new revision")
    }
    fn from(&self) -> &str {
        self.state
            .from_version
            .as_deref()
            .unwrap_or("the previous revision")
    }
}

/// What the detector knew of the Deployment before this revision.
#[derive(Debug, Clone, Default)]
pub struct Before {
    /// The version the previous revision deployed.
    pub version: Option<String>,
    /// Every container's `(name, image)` of the previous template, when known (kept for pods
    /// with several containers); empty when not.
    pub images: Vec<(String, String)>,
}

/// Spawns a session for `deployment`'s current revision.
pub fn spawn(
    ctx: Arc<Context>,
    deployment: Arc<Deployment>,
    before: Before,
    start: Start,
    shutdown: CancellationToken,
) -> Handle {
    let revision = rollout::revision(deployment.annotations()).unwrap_or(0);
    let (updates, updates_rx) = watch::channel(deployment.clone());
    let (end, end_rx) = watch::channel(None);
    let namespace = deployment.namespace().unwrap_or_default();
    let name = deployment.name_any();
    let (cfg, bad) =
        match crate::overrides::effective(&ctx.config, &namespace, &name, deployment.annotations())
        {
            Ok(c) => (c, Vec::new()),
            // One bad annotation: this Deployment falls back to the daemon's config as a whole.
            Err(bad) => (ctx.config.clone(), bad),
        };
    let state = match start {
        Start::Resume(ref s) => s.clone(),
        Start::Fresh => RolloutState {
            revision,
            from_version: before.version.clone(),
            to_version: rollout::deployed_version(&deployment, &cfg.version),
            detected_at: jiff::Timestamp::now(),
            outcome: None,
            reason: None,
            rollback_fingerprint: None,
            settled: false,
            detail: None,
            window_started_at: None,
            judged_template: deployment
                .spec
                .as_ref()
                .map(|s| rollout::template_fingerprint(&s.template)),
        },
    };
    let r = Rollout {
        namespace: namespace.clone(),
        name: name.clone(),
        state,
    };
    let span = tracing::info_span!("rollout", %namespace, deployment = %name, revision);
    let detected_at = r.state.detected_at;
    let peak = crate::peak::PeakHours::from_config(&cfg.peak_hours)
        .ok()
        .and_then(|p| p.window_at(detected_at).map(str::to_string));
    let mut policy = Policy::from_config(&cfg);
    if peak.is_some()
        && let Some(n) = cfg.peak_hours.failures_before_rollback
    {
        policy.failures_before_rollback = n.get();
    }
    let change = change_note(&deployment, &cfg, &before);
    let live = {
        let mut v = crate::status::view_of_state(&namespace, &name, &r.state);
        v.threshold = Some(policy.error_rate_threshold);
        v.window_seconds = Some(policy.window.as_secs());
        v.gitops_owner = crate::status::gitops_owner(&deployment.metadata);
        live::Live::start(
            &ctx.board,
            v,
            ctx.recorder.clone(),
            namespace.clone(),
            name.clone(),
            shutdown.clone(),
        )
    };
    let session = Session {
        live,
        change,
        probes: ctx.probes.reconfigured(&cfg),
        policy,
        cfg,
        peak,
        bad_annotations: bad,
        baseline: None,
        ctx,
        r,
        updates: updates_rx,
        end: end_rx,
        shutdown,
        resumed: start != Start::Fresh,
    };
    tokio::spawn(session.run().instrument(span));
    Handle {
        revision,
        updates,
        end,
    }
}

struct Session {
    ctx: Arc<Context>,
    /// What this revision changed beyond the version, when a message should say it: a stale
    /// version label, sidecars that changed image.
    change: Option<Change>,
    /// The daemon's config with this Deployment's overrides.
    cfg: Config,
    policy: Policy,
    probes: Probes,
    /// The peak window the rollout started in.
    peak: Option<String>,
    bad_annotations: Vec<crate::overrides::BadAnnotation>,
    /// The error ratio before the rollout, when the baseline rule is on.
    baseline: Option<f64>,
    r: Rollout,
    updates: watch::Receiver<Arc<Deployment>>,
    end: watch::Receiver<Option<EndCause>>,
    shutdown: CancellationToken,
    resumed: bool,
    /// Its view on the status board and its live record.
    live: live::Live,
}

/// What a rollout changed that its versions alone do not say.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    /// `v1.2.2 → v1.2.3 (image), label still says v1.2.2`, when the label is stale.
    stale: Option<String>,
    /// Containers other than the main one whose image changed, e.g. `istio-proxy
    /// docker.io/istio/proxyv2:1.22.0 → 1.22.1`.
    others: Vec<String>,
    /// The main container.
    main: Option<String>,
}

impl Change {
    /// One clause for messages: `v1.2.2 → v1.2.3 (image), label still says v1.2.2; sidecar
    /// istio-proxy … → 1.22.1 (app unchanged)`.
    fn describe(&self, same_version: bool) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.stale {
            parts.push(s.clone());
        }
        if !self.others.is_empty() {
            let main = self.main.as_deref().unwrap_or("main container");
            let mut s = format!("changed: {}", self.others.join(", "));
            if same_version {
                s.push_str(&format!(" ({main} unchanged)"));
            }
            parts.push(s);
        }
        parts.join("; ")
    }
}

fn change_note(d: &Deployment, cfg: &Config, before: &Before) -> Option<Change> {
    let reading = crate::cluster::version::read(d, &cfg.version);
    let stale = reading.stale.as_ref().map(|s| {
        crate::cluster::version::describe(
            before.version.as_deref(),
            reading.version.as_deref(),
            Some(s),
        )
    });
    let others = match (d.spec.as_ref(), before.images.is_empty()) {
        (Some(spec), false) => crate::cluster::version::other_changes(
            &before.images,
            &spec.template,
            reading.container.as_deref(),
        ),
        _ => Vec::new(),
    };
    (stale.is_some() || !others.is_empty()).then_some(Change {
        stale,
        others,
        main: reading.container,
    })
}

impl Session {
    async fn run(mut self) {
        let _watching = self.ctx.metrics.watching();
        if self.resumed {
            self.page_again_if_owed();
            if self.r.state.settled {
                return;
            }
        }
        if self.r.state.outcome == Some(Outcome::RolledBack) {
            // Resumed after the rollback was sent: only the verification is left.
            let _rolling_back = self.ctx.metrics.rolling_back();
            self.verify(self.r.state.rollback_fingerprint.clone()).await;
            return;
        }
        if !self.resumed {
            self.report_bad_annotations();
            self.detected().await;
        }
        let caches = self.ctx.caches.subscribe(&self.r.namespace, &self.r.name);
        let mut shared: Option<Member> = match &self.ctx.sampler {
            Some(s) if self.shares_round() => Some(s.join(&self.r.namespace, &self.r.name)),
            _ => None,
        };
        let facts = RolloutFacts {
            expected_version: self.r.state.to_version.clone(),
            baseline: self.baseline().await,
        };
        self.baseline = facts.baseline;
        let mut judge = Judge::new(self.policy.clone(), facts);
        if let Some(started) = self.r.state.window_started_at {
            judge.resume_window(self.since_detection(started));
        }
        if self.r.state.outcome == Some(Outcome::Degraded) {
            judge.already_paged(self.r.state.reason);
        }

        let mut ticks = tokio::time::interval(self.cfg.watch.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut round: Option<futures::future::BoxFuture<'static, judge::ProbeRound>> = None;
        loop {
            let probes = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return,
                _ = self.end.changed() => {
                    let cause = *self.end.borrow();
                    if let Some(cause) = cause {
                        self.ended(cause).await;
                        return;
                    }
                    continue;
                }
                r = async { match round.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    round = None;
                    self.ctx.metrics.probe_round(&r);
                    Some(r)
                }
                // The providers' shared round: its own observation, so a slow health endpoint
                // never holds back an error-rate sample, nor the other way round.
                changed = async { match shared.as_mut() { Some(m) => m.rounds.changed().await, None => std::future::pending().await } } => {
                    match (changed, shared.as_ref().and_then(Member::latest)) {
                        (Ok(()), Some(providers)) => {
                            let r = judge::ProbeRound { providers, ..Default::default() };
                            self.ctx.metrics.probe_round(&r);
                            Some(r)
                        }
                        (Ok(()), None) => None,
                        (Err(_), _) => {
                            // The sampler stopped: shutting down.
                            shared = None;
                            None
                        }
                    }
                }
                _ = ticks.tick(), if round.is_none() => {
                    let probes = self.probes.clone();
                    let (ns, name) = (self.r.namespace.clone(), self.r.name.clone());
                    let providers = shared.is_none();
                    round = Some(Box::pin(async move { probes.round(&ns, &name, providers).await }));
                    None
                }
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    None
                }
                _ = caches.changed.notified() => None,
            };
            let obs = self.observe(&caches, probes);
            let was_complete = judge.complete_at().is_some();
            let verdict = judge.observe(&obs);
            if !was_complete && let Some(at) = judge.complete_at() {
                self.window_started(at).await;
            }
            let rolling_back = matches!(verdict, Verdict::RollBack { .. });
            self.live_observed(
                &caches,
                obs.probes.as_ref(),
                judge.complete_at().is_some() && !rolling_back,
            );
            match verdict {
                Verdict::Continue => {}
                Verdict::Page { reason, message } => self.degraded(reason, &message).await,
                Verdict::RollBack { reason, message } => {
                    self.quiesce_live().await;
                    self.roll_back(reason, &message).await;
                    self.write_final_live();
                    return;
                }
                Verdict::Finish(Finish::Passed) => {
                    self.passed().await;
                    return;
                }
                Verdict::Finish(Finish::Degraded { reason, message }) => {
                    self.finish_degraded(reason, &message).await;
                    return;
                }
            }
        }
    }

    fn since_detection(&self, t: jiff::Timestamp) -> Duration {
        let d = t.duration_since(self.r.state.detected_at);
        Duration::try_from(d).unwrap_or_default()
    }

    /// Whether this rollout's error rates come from the shared round: its provider settings,
    /// interval and sample window are the daemon's (no annotation changed them).
    fn shares_round(&self) -> bool {
        let daemon = &self.ctx.config;
        self.probes.has_providers()
            && self.cfg.providers == daemon.providers
            && self.cfg.watch.interval == daemon.watch.interval
            && self.cfg.judge.sample_window == daemon.judge.sample_window
    }

    fn observe(&self, caches: &Subscription, probes: Option<judge::ProbeRound>) -> Observation {
        let deployment = self.updates.borrow().clone();
        let now = jiff::Timestamp::now();
        let sets: Vec<Arc<ReplicaSet>> = deployment
            .metadata
            .uid
            .as_deref()
            .map(|uid| caches.replica_sets_of(uid))
            .unwrap_or_default();
        // The index answers by controller UID: these are the ones `rollout::owned` would keep.
        let owned: Vec<&ReplicaSet> = sets.iter().map(|s| s.as_ref()).collect();
        let new_set = rollout::new_replica_set(&deployment, &owned);
        let pods: Vec<Arc<PodRecord>> = new_set.map(|rs| caches.pods_of(rs)).unwrap_or_default();
        let new_pods: Vec<&PodRecord> = pods.iter().map(|p| p.as_ref()).collect();
        Observation {
            at: self.since_detection(now),
            progress: rollout::rollout_progress(
                &deployment,
                new_set.and_then(|rs| rs.metadata.name.as_deref()),
                self.r.state.detected_at,
            ),
            pod_failure: pods::failure(new_pods.iter().copied()),
            pending: pods::pending(new_pods.iter().copied(), now),
            probes,
        }
    }

    async fn baseline(&self) -> Option<f64> {
        let b = &self.cfg.judge.baseline;
        if !b.enabled {
            return None;
        }
        let samples = self
            .ctx
            .probes
            .error_rates(&self.r.namespace, &self.r.name, b.lookback)
            .await;
        let min = self.cfg.judge.min_requests as f64;
        let ratio = samples.iter().find_map(|(_, s)| match s {
            ProviderSample::Counts { requests, errors }
                if *requests >= min && requests.is_finite() && errors.is_finite() =>
            {
                Some(errors / requests)
            }
            _ => None,
        });
        info!(baseline = ?ratio, "baseline taken");
        ratio
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn deployment(label: &str, containers: &[(&str, &str)]) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app", "namespace": "production"},
            "spec": {
                "selector": {},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/version": label}},
                    "spec": {"containers": containers.iter()
                        .map(|(n, i)| serde_json::json!({"name": n, "image": i}))
                        .collect::<Vec<_>>()},
                },
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_set_image_deploy_names_the_image_and_the_stale_label() {
        let d = deployment("v1.2.2", &[("app", "r/production/app:v1.2.3")]);
        let before = Before {
            version: Some("v1.2.2".into()),
            images: Vec::new(),
        };
        let change = change_note(&d, &Config::default(), &before).unwrap();
        assert_eq!(
            change.describe(false),
            "v1.2.2 → v1.2.3 (image), label still says v1.2.2"
        );
    }

    #[test]
    fn a_sidecar_only_change_names_the_sidecar() {
        let d = deployment(
            "v1.2.2",
            &[
                ("istio-proxy", "docker.io/istio/proxyv2:1.22.1"),
                ("app", "r/production/app:v1.2.2"),
            ],
        );
        let before = Before {
            version: Some("v1.2.2".into()),
            images: vec![
                (
                    "istio-proxy".into(),
                    "docker.io/istio/proxyv2:1.22.0".into(),
                ),
                ("app".into(), "r/production/app:v1.2.2".into()),
            ],
        };
        let change = change_note(&d, &Config::default(), &before).unwrap();
        assert_eq!(
            change.describe(true),
            "changed: istio-proxy docker.io/istio/proxyv2:1.22.0 → 1.22.1 (app unchanged)"
        );
    }

    #[test]
    fn a_plain_deploy_has_nothing_more_to_say() {
        let d = deployment("v1.2.3", &[("app", "r/production/app:v1.2.3")]);
        let before = Before {
            version: Some("v1.2.2".into()),
            images: Vec::new(),
        };
        assert_eq!(change_note(&d, &Config::default(), &before), None);
    }
}

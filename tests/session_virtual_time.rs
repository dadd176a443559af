//! The whole session loop on tokio's paused clock: a rollout watched for its full window takes
//! milliseconds of real time.
//!
//! The session is the real one, with everything it owns (its loop, the judge, the caches, the
//! rollback and its verification, the records). What it meets outside the process is served in
//! it: the simulated API server answers the kube client in process ([`SimCluster::
//! start_in_process`]), the probes answer from a script ([`Script`]) and pages and Slack
//! messages wait in queues ([`Notifier::queued`]). No socket: tokio's paused clock jumps ahead
//! whenever every task waits, which a read on a socket would be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_watchdog::check::Provider;
use deploy_watchdog::cluster::caches::Caches;
use deploy_watchdog::cluster::record::Recorder;
use deploy_watchdog::config::Config;
use deploy_watchdog::judge::{HealthSample, Policy, ProbeRound, ProviderSample};
use deploy_watchdog::notify::{Action, Notifier, Severity};
use deploy_watchdog::probes::{Probes, Script};
use deploy_watchdog::session::{self, Before, Context, Start};
use deploy_watchdog::sim::behaviour::{AppKey, Behaviour, Behaviours, PodMode};
use deploy_watchdog::sim::cluster::SimCluster;
use deploy_watchdog::tasks::{Restart, Tasks};
use deploy_watchdog::telemetry::Metrics;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::Value;
use support::spec;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const NS: &str = "production";
const NAME: &str = "app";

/// The probes' answers: `/health` reports the version the Deployment runs, and the error-rate
/// provider counts 1,000 requests a sample, 0.1 % or 0.2 % errors (alternately), or 50 % on
/// `v2` from round `spike_after + 1` on.
struct Probed {
    sim: SimCluster,
    spike_after: Option<u32>,
    /// The session's rounds (the baseline's, with `providers` false, are not counted).
    rounds: AtomicU32,
    /// When each round was answered.
    at: Mutex<Vec<Instant>>,
}

impl Script for Probed {
    fn round(&self, namespace: &str, name: &str, providers: bool) -> ProbeRound {
        let version = self.sim.current_version(namespace, name);
        let providers = if providers {
            let n = self.rounds.fetch_add(1, Ordering::SeqCst) + 1;
            self.at.lock().unwrap().push(Instant::now());
            let spiking =
                self.spike_after.is_some_and(|after| n > after) && version.as_deref() == Some("v2");
            // A healthy version's ratio moves from round to round (0.1 % or 0.2 %).
            let errors = if spiking { 500.0 } else { f64::from(1 + n % 2) };
            vec![(
                Provider::Prometheus,
                ProviderSample::Counts {
                    requests: 1000.0,
                    errors,
                },
            )]
        } else {
            Vec::new()
        };
        ProbeRound {
            health: Some(HealthSample::Answered {
                version,
                failing_checks: Vec::new(),
            }),
            smoke: Vec::new(),
            providers,
        }
    }

    fn error_rates(
        &self,
        _namespace: &str,
        _name: &str,
        _window: Duration,
    ) -> Vec<(Provider, ProviderSample)> {
        Vec::new()
    }

    fn reported_version(&self, namespace: &str, name: &str) -> Option<Result<String, String>> {
        self.sim.current_version(namespace, name).map(Ok)
    }
}

/// A page as PagerDuty took it: its action and severity.
type Page = (Action, Option<Severity>);

/// A session watching the rollout of `v2` (behaving as `v2` says) over `v1`, started at
/// `started`.
struct Watched {
    sim: SimCluster,
    probed: Arc<Probed>,
    /// Every page: its action and severity.
    pages: Arc<Mutex<Vec<Page>>>,
    /// The template changes written before the session started.
    changes_before: usize,
    started: Instant,
    session: JoinHandle<()>,
    shutdown: CancellationToken,
}

async fn watch_rollout(v2: Behaviour, spike_after: Option<u32>) -> Watched {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shutdown = CancellationToken::new();
    let behaviours = Behaviours::default();
    behaviours.set(AppKey::new(NS, NAME, "v2"), v2);
    let sim = SimCluster::new(behaviours);
    let client = sim.start_in_process(shutdown.clone());
    sim.add_deployment(&spec("production/app", "v1", 3));
    while sim.ready_pods_by_version(NS, NAME) != [("v1".to_string(), 3)] {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    let mut config = Config::default();
    config.watch.namespaces = vec![NS.into()];
    let probed = Arc::new(Probed {
        sim: sim.clone(),
        spike_after,
        rounds: AtomicU32::new(0),
        at: Mutex::new(Vec::new()),
    });
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::register(&registry).unwrap());
    let (notifier, mut queued) = Notifier::queued(&metrics);
    let pages = Arc::new(Mutex::new(Vec::new()));
    let seen = pages.clone();
    // PagerDuty accepts every page; Slack takes every message.
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some((page, done)) = queued.pages.recv() => {
                    seen.lock().unwrap().push((page.action, page.payload.map(|p| p.severity)));
                    let _ = done.send(Ok(()));
                }
                Some(_) = queued.posts.recv() => {}
                else => return,
            }
        }
    });
    let ctx = Arc::new(Context {
        client: client.clone(),
        policy: Policy::from_config(&config),
        probes: Probes::scripted(&config, probed.clone()),
        notifier,
        recorder: Recorder::new(client.clone(), "watchdog-test".into()),
        config,
        caches: Caches::new(client.clone(), metrics.clone()),
        sampler: None,
        metrics: metrics.clone(),
        tasks: Tasks::new(metrics),
        rollbacks: Default::default(),
        board: Default::default(),
        kept: Default::default(),
    });

    sim.deploy(NS, NAME, "v2").unwrap();
    let changes_before = sim.template_changes().len();
    let api: Api<Deployment> = Api::namespaced(client, NS);
    let deployment = loop {
        let d = api.get(NAME).await.unwrap();
        if revision(&d) == Some(2) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (handle, mut supervised) = session::supervised(
        ctx,
        Arc::new(deployment),
        Before {
            version: Some("v1".into()),
            images: Vec::new(),
        },
        Start::Fresh,
        shutdown.child_token(),
    );
    // What the detector does: hand the session every change of its Deployment (and keep the
    // handle, whose end channel the session listens to).
    let feeding = shutdown.clone();
    tokio::spawn(async move {
        let handle = handle;
        let mut last = None;
        while !feeding.is_cancelled() {
            if let Ok(d) = api.get(NAME).await
                && d.metadata.resource_version != last
            {
                last = d.metadata.resource_version.clone();
                let _ = handle.updates.send(Arc::new(d));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let started = Instant::now();
    let session = tokio::spawn(supervised.run());
    Watched {
        sim,
        probed,
        pages,
        changes_before,
        started,
        session,
        shutdown,
    }
}

fn revision(d: &Deployment) -> Option<i64> {
    d.metadata
        .annotations
        .as_ref()?
        .get("deployment.kubernetes.io/revision")?
        .parse()
        .ok()
}

impl Watched {
    /// Waits, in virtual time, for the session to end; `limit` at most.
    async fn ended_within(&mut self, limit: Duration) {
        tokio::time::timeout(limit, &mut self.session)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the session did not end within {limit:?}; state {:?}",
                    self.state()
                )
            })
            .unwrap();
        // Events and pages go out in the background: they have long arrived a minute later.
        tokio::time::sleep(Duration::from_secs(60)).await;
    }

    /// The state recorded on the Deployment.
    fn state(&self) -> Value {
        let raw = self
            .sim
            .deployment_json(NS, NAME)
            .and_then(|d| {
                d.pointer("/metadata/annotations/deploy-watchdog.io~1state")?
                    .as_str()
                    .map(String::from)
            })
            .unwrap_or_default();
        serde_json::from_str(&raw).unwrap_or(Value::Null)
    }

    /// Rollbacks: the template changes since the deploy of `v2`, with when each was written.
    fn rollbacks(&self) -> Vec<Instant> {
        self.sim.template_changes()[self.changes_before..]
            .iter()
            .map(|c| c.at)
            .collect()
    }

    fn events(&self, reason: &str) -> usize {
        self.sim
            .events()
            .iter()
            .filter(|e| e["reason"] == reason)
            .count()
    }

    fn pages(&self) -> Vec<Page> {
        self.pages.lock().unwrap().clone()
    }

    fn rounds(&self) -> u32 {
        self.probed.rounds.load(Ordering::SeqCst)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test(start_paused = true)]
async fn a_healthy_rollout_is_watched_for_its_whole_window_and_passes() {
    let real = std::time::Instant::now();
    let mut w = watch_rollout(Behaviour::default(), None).await;
    w.ended_within(Duration::from_secs(40 * 60)).await;
    let watched = w.started.elapsed();
    eprintln!(
        "watched {watched:?} of virtual time in {:?} of real time, {} rounds",
        real.elapsed(),
        w.rounds()
    );

    let s = w.state();
    assert_eq!(s["phase"]["name"], "settled", "{s}");
    assert_eq!(s["phase"]["outcome"], "passed", "{s}");
    // The window (15 min by default) runs from the rollout's completion.
    let window = Duration::from_secs(15 * 60);
    assert!(watched >= window, "ended after {watched:?}");
    assert!(
        watched < window + Duration::from_secs(10 * 60),
        "{watched:?}"
    );
    // A round every interval (10 s) for the whole window: 90, some of them maybe merged.
    assert!(w.rounds() >= 80, "{} rounds", w.rounds());
    assert_eq!(w.rollbacks(), [] as [Instant; 0]);
    assert_eq!(w.pages(), []);
    assert_eq!(w.events("RolloutPassed"), 1);
    // The Deployment is written when the rollout is recorded, its checks' states and its
    // phases change: a handful of times, not on every moving value over 90 rounds.
    let patches: Vec<Duration> = w
        .sim
        .deployment_patches()
        .iter()
        .filter(|p| p.at >= w.started)
        .map(|p| p.at - w.started)
        .collect();
    eprintln!("Deployment PATCHes at {patches:?}");
    assert!(patches.len() <= 6, "{} PATCHes: {patches:?}", patches.len());
    assert_eq!(w.sim.current_version(NS, NAME).as_deref(), Some("v2"));
}

#[tokio::test(start_paused = true)]
async fn an_error_spike_rolls_back_once_verifies_and_pages_once() {
    const HEALTHY: u32 = 12;
    let mut w = watch_rollout(Behaviour::default(), Some(HEALTHY)).await;
    w.ended_within(Duration::from_secs(40 * 60)).await;

    let s = w.state();
    assert_eq!(s["phase"]["name"], "settled", "{s}");
    assert_eq!(s["phase"]["outcome"], "rolled_back", "{s}");
    assert_eq!(s["phase"]["reason"], "error_rate", "{s}");
    let rollbacks = w.rollbacks();
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    // Three bad samples in a row (failures_before_rollback), not fewer: the rollback follows
    // the third bad round and comes before a fourth.
    let at = w.probed.at.lock().unwrap().clone();
    let third_bad = at[(HEALTHY + 2) as usize];
    assert!(
        rollbacks[0] >= third_bad,
        "rolled back before the third bad sample"
    );
    assert!(
        at.get((HEALTHY + 3) as usize)
            .is_none_or(|t| *t >= rollbacks[0]),
        "a fourth bad sample before the rollback"
    );
    assert_eq!(w.events("RolledBack"), 1);
    assert_eq!(w.events("RollbackVerified"), 1);
    assert_eq!(w.pages(), [(Action::Trigger, Some(Severity::Error))]);
    assert_eq!(w.sim.current_version(NS, NAME).as_deref(), Some("v1"));
}

/// `v2`'s pods are never scheduled.
fn unschedulable() -> Behaviour {
    Behaviour {
        pods: PodMode::Pending,
        ..Behaviour::default()
    }
}

#[tokio::test(start_paused = true)]
async fn pods_pending_at_the_rollout_deadline_roll_back() {
    let mut w = watch_rollout(unschedulable(), None).await;
    w.ended_within(Duration::from_secs(40 * 60)).await;

    let s = w.state();
    assert_eq!(s["phase"]["outcome"], "rolled_back", "{s}");
    assert_eq!(s["phase"]["reason"], "pending", "{s}");
    let rollbacks = w.rollbacks();
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    // At the rollout deadline (10 min by default), not before.
    let after = rollbacks[0] - w.started;
    assert!(
        after >= Duration::from_secs(10 * 60) && after < Duration::from_secs(11 * 60),
        "rolled back {after:?} after the deploy"
    );
    assert_eq!(w.events("RollbackVerified"), 1);
    // The page at `pending_timeout` (2 min), then the rollback's, to the same incident.
    assert_eq!(
        w.pages(),
        [
            (Action::Trigger, Some(Severity::Error)),
            (Action::Trigger, Some(Severity::Error))
        ]
    );
    assert_eq!(w.sim.current_version(NS, NAME).as_deref(), Some("v1"));
}

#[tokio::test(start_paused = true)]
async fn paused_time_does_not_count_toward_the_rollout_deadline() {
    let mut w = watch_rollout(unschedulable(), None).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    w.sim.set_paused(NS, NAME, true).unwrap();
    // Paused for three rollout deadlines: no rollback meanwhile.
    tokio::time::sleep(Duration::from_secs(30 * 60)).await;
    let s = w.state();
    assert_eq!(s["phase"]["name"], "progressing", "{s}");
    assert_eq!(w.rollbacks(), [] as [Instant; 0]);
    assert!(!w.session.is_finished());
    let resumed = Instant::now();
    w.sim.set_paused(NS, NAME, false).unwrap();
    w.ended_within(Duration::from_secs(40 * 60)).await;

    let s = w.state();
    assert_eq!(s["phase"]["outcome"], "rolled_back", "{s}");
    let rollbacks = w.rollbacks();
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    // The minute before the pause counted; the half hour paused did not.
    let after = rollbacks[0] - resumed;
    assert!(
        after >= Duration::from_secs(8 * 60) && after < Duration::from_secs(10 * 60),
        "rolled back {after:?} after the resume"
    );
    assert_eq!(w.events("RolloutPaused"), 1);
    assert_eq!(w.events("RolloutResumed"), 1);
}

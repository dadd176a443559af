//! A session that panics in the middle of a watch is restarted from the state recorded on its
//! Deployment: the panic is counted and said as a Warning Event, and the rollout still ends with
//! one rollback and one page.
//!
//! The real session runs under the real supervisor ([`Tasks::supervise`]); the test wraps it
//! in a task that, on its first run only, panics once the session has recorded its watch on the
//! Deployment — a crash at the worst moment, after detection and before any verdict.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use deploy_watchdog::cluster::caches::Caches;
use deploy_watchdog::cluster::record::Recorder;
use deploy_watchdog::config::{Config, Period, Secrets};
use deploy_watchdog::judge::Policy;
use deploy_watchdog::notify::Notifier;
use deploy_watchdog::probes::Probes;
use deploy_watchdog::session::{self, Before, Context, Start, Supervised};
use deploy_watchdog::sim::behaviour::{AppKey, Behaviour, Behaviours, PodMode};
use deploy_watchdog::sim::cluster::SimCluster;
use deploy_watchdog::tasks::{Restart, Task, Tasks};
use deploy_watchdog::telemetry::{Metrics, encode};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::Value;
use support::spec;
use tokio_util::sync::CancellationToken;

/// The Events API: every event's `event_action`, in order.
async fn pagerduty(shutdown: CancellationToken) -> (String, Arc<Mutex<Vec<String>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let router = Router::new().route(
        "/v2/enqueue",
        post(move |body: axum::Json<Value>| {
            let seen = seen.clone();
            async move {
                let action = body["event_action"].as_str().unwrap_or_default();
                seen.lock().unwrap().push(action.to_string());
                (axum::http::StatusCode::ACCEPTED, "{\"status\":\"success\"}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    (format!("http://{addr}"), events)
}

/// The real session, made to panic on its first run once its watch is recorded.
struct PanicsOnceRecorded {
    session: Supervised,
    sim: SimCluster,
    runs: Arc<Mutex<u32>>,
    /// The state recorded when the session was killed.
    killed_at: Arc<Mutex<Option<Value>>>,
}

impl Restart for PanicsOnceRecorded {
    fn run(&mut self) -> impl Future<Output = ()> + Send + 'static {
        let run = self.session.run();
        let first = {
            let mut runs = self.runs.lock().unwrap();
            *runs += 1;
            *runs == 1
        };
        let sim = self.sim.clone();
        let killed_at = self.killed_at.clone();
        async move {
            if !first {
                return run.await;
            }
            tokio::select! {
                _ = run => panic!("the session ended before its watch was recorded"),
                _ = recorded(&sim) => {
                    *killed_at.lock().unwrap() = state(&sim);
                    panic!("injected: the session task dies")
                }
            }
        }
    }

    fn panicked(&mut self, message: &str) -> impl Future<Output = bool> + Send + '_ {
        self.session.panicked(message)
    }
}

async fn recorded(sim: &SimCluster) {
    while state(sim).is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn state(sim: &SimCluster) -> Option<Value> {
    let raw = sim
        .deployment_json("production", "app")?
        .pointer("/metadata/annotations/deploy-watchdog.io~1state")?
        .as_str()?
        .to_string();
    serde_json::from_str(&raw).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_panics_is_restarted_from_its_record_and_rolls_back_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shutdown = CancellationToken::new();
    let behaviours = Behaviours::default();
    behaviours.set(
        AppKey::new("production", "app", "v2"),
        Behaviour {
            pods: PodMode::Crashloop,
            ..Behaviour::default()
        },
    );
    let sim = SimCluster::new(behaviours);
    let addr = sim.start(shutdown.clone()).await.unwrap();
    sim.add_deployment(&spec("production/app", "v1", 3));
    let (pd_url, pages) = pagerduty(shutdown.clone()).await;

    let mut config = Config::default();
    config.watch.namespaces = vec!["production".into()];
    config.watch.interval = Period::from_millis(100);
    // No app serves /health here: the crash loop is the evidence, and the rollback is verified
    // by the Deployment alone.
    config.health.enabled = false;
    config.notify.pagerduty.enabled = true;
    config.notify.pagerduty.url = pd_url;
    let secrets = Secrets {
        pagerduty_routing_key: Some("R0UTING0KEY0SIMULATED00000000000".into()),
        ..Secrets::default()
    };
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::register(&registry).unwrap());
    let tasks = Tasks::new(metrics.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        policy: Policy::from_config(&config),
        probes: Probes::new(&config, &secrets),
        notifier: Notifier::start(&config, &secrets, metrics.clone(), shutdown.clone()),
        recorder: Recorder::new(client.clone(), "watchdog-test".into()),
        config: config.clone(),
        caches: Caches::new(client.clone(), metrics.clone()),
        sampler: None,
        metrics,
        tasks: tasks.clone(),
        rollbacks: Default::default(),
        board: Default::default(),
        kept: Default::default(),
    });

    sim.deploy("production", "app", "v2").unwrap();
    let api: Api<Deployment> = Api::namespaced(client, "production");
    let deployment = loop {
        let d = api.get("app").await.unwrap();
        let revision = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned());
        if revision.as_deref() == Some("2") {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let changes_before = sim.template_changes().len();
    let (handle, session) = session::supervised(
        ctx,
        Arc::new(deployment),
        Before {
            version: Some("v1".into()),
            images: Vec::new(),
        },
        Start::Fresh,
        shutdown.child_token(),
    );
    let runs = Arc::new(Mutex::new(0));
    let killed_at = Arc::new(Mutex::new(None));
    tasks.supervise(
        Task::Session,
        PanicsOnceRecorded {
            session,
            sim: sim.clone(),
            runs: runs.clone(),
            killed_at: killed_at.clone(),
        },
        shutdown.clone(),
    );
    // What the detector does: hand the session every change of its Deployment.
    let feed = tokio::spawn(async move {
        let mut last = None;
        loop {
            if let Ok(d) = api.get("app").await
                && d.metadata.resource_version != last
            {
                last = d.metadata.resource_version.clone();
                let _ = handle.updates.send(Arc::new(d));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let settled = state(&sim).is_some_and(|s| s["phase"]["name"] == "settled");
        if settled && !pages.lock().unwrap().is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no settled rollback and page in time; state {:?}, pages {:?}, runs {}",
            state(&sim),
            pages.lock().unwrap(),
            runs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything more would come soon after.
    tokio::time::sleep(Duration::from_secs(2)).await;
    feed.abort();

    assert_eq!(*runs.lock().unwrap(), 2, "run once, restarted once");
    let s = state(&sim).unwrap();
    assert_eq!(s["phase"]["outcome"], "rolled_back", "{s}");
    // Resumed from the record, not started over: the watch is the one recorded before the
    // panic (a fresh start would have recorded a new detection time).
    let killed = killed_at.lock().unwrap().clone().unwrap();
    assert_ne!(killed["phase"]["name"], "settled", "{killed}");
    assert_eq!(s["detected_at"], killed["detected_at"], "{s} / {killed}");
    assert_eq!(
        sim.current_version("production", "app").as_deref(),
        Some("v1")
    );
    let rollbacks = sim.template_changes().len() - changes_before;
    assert_eq!(rollbacks, 1, "{:?}", sim.template_changes());
    assert_eq!(*pages.lock().unwrap(), ["trigger"]);

    let reasons: Vec<String> = sim
        .events()
        .iter()
        .filter_map(|e| e["reason"].as_str().map(String::from))
        .collect();
    let count = |r: &str| reasons.iter().filter(|x| *x == r).count();
    assert_eq!(count("SessionPanicked"), 1, "{reasons:?}");
    // Not detected again (the first detection's Event may have died with the session).
    assert!(count("RolloutDetected") <= 1, "{reasons:?}");
    assert_eq!(count("RolledBack"), 1, "{reasons:?}");
    let warning = sim
        .events()
        .into_iter()
        .find(|e| e["reason"] == "SessionPanicked")
        .unwrap();
    assert_eq!(warning["type"], "Warning");
    assert!(
        warning["note"]
            .as_str()
            .or(warning["message"].as_str())
            .unwrap_or_default()
            .contains("injected: the session task dies"),
        "{warning}"
    );
    let metrics = encode(&registry);
    assert!(
        metrics
            .lines()
            .any(|l| l == "deploy_watchdog_task_panics_total{task=\"session\"} 1"),
        "{metrics}"
    );
    shutdown.cancel();
}

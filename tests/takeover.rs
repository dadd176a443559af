//! A daemon that starts (or takes over) while a Deployment's current revision, recorded by no
//! watchdog, is not complete: judged when that revision is actually rolling out, never when a
//! rollout that completed longer than a window ago is merely scaling, draining or restarting
//! pods. (One that completed within its window is judged for the rest of it: the scenarios
//! `*-completed-while-no-watchdog-ran-*` show that.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use deploy_watchdog::config::{Config, Period, RolloutSpan, Secrets};
use deploy_watchdog::daemon::{self, Status};
use deploy_watchdog::sim::behaviour::{AppKey, Behaviour, Behaviours, PodMode};
use deploy_watchdog::sim::cluster::SimCluster;
use serde_json::Value;
use support::spec;
use tokio_util::sync::CancellationToken;

async fn cluster_at_revision_2(behaviours: &Behaviours) -> (SimCluster, String, CancellationToken) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = SimCluster::new(behaviours.clone());
    let shutdown = CancellationToken::new();
    let addr = sim.start(shutdown.clone()).await.unwrap();
    sim.add_deployment(&spec("production/app", "v1", 3));
    // v2 rolled out while no watchdog ran: nothing recorded on the Deployment.
    sim.deploy("production", "app", "v2").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !complete(&sim.deployment_json("production", "app").unwrap()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "v2 never rolled out"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (sim, format!("http://{addr}"), shutdown)
}

/// Revision 2 complete (not revision 1's status before the controller saw the change).
fn complete(d: &Value) -> bool {
    let s = &d["status"];
    d.pointer("/metadata/annotations/deployment.kubernetes.io~1revision") == Some(&"2".into())
        && s["observedGeneration"] == d["metadata"]["generation"]
        && s["updatedReplicas"] == 3
        && s["replicas"] == 3
        && s["availableReplicas"] == 3
        && s["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "NewReplicaSetAvailable"))
}

fn start_daemon(url: &str, shutdown: &CancellationToken) -> Status {
    let mut config = Config::default();
    config.watch.namespaces = vec!["production".into()];
    config.watch.interval = Period::from_millis(100);
    config.watch.rollout_timeout = RolloutSpan::from_secs(2);
    // A short window, so a rollout completed a few seconds before start-up is an old one.
    config.watch.window = RolloutSpan::from_secs(1);
    config.watch.pending_timeout = RolloutSpan::from_secs(1);
    let status = Status::default();
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    tokio::spawn(daemon::run(
        config,
        Secrets::default(),
        client,
        shutdown.clone(),
        status.clone(),
    ));
    status
}

fn slow(version: &str) -> (AppKey, Behaviour) {
    (
        AppKey::new("production", "app", version),
        Behaviour {
            pods: PodMode::SlowStart,
            ready_after: Duration::from_secs(60),
            ..Behaviour::default()
        },
    )
}

fn recorded_state(sim: &SimCluster) -> Option<Value> {
    sim.deployment_json("production", "app")?
        .pointer("/metadata/annotations/deploy-watchdog.io~1state")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_rollout_that_is_scaling_and_restarting_pods_is_not_judged_at_start_up() {
    let behaviours = Behaviours::default();
    let (sim, url, shutdown) = cluster_at_revision_2(&behaviours).await;
    // Revision 2 began longer than its window (1 s) ago; creation times have whole seconds.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Its nodes drain: every pod comes back slow to be ready; and an HPA scales it 3 → 5.
    let (key, b) = slow("v2");
    behaviours.set(key, b);
    sim.behaviours_changed();
    sim.scale("production", "app", 5).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = sim.deployment_json("production", "app").unwrap();
    assert_ne!(
        d["status"]["availableReplicas"], 5,
        "pods became available too soon to test anything: {}",
        d["status"]
    );

    let at_start = sim.deployment_json("production", "app").unwrap();
    let status = start_daemon(&url, &shutdown);
    // Longer than the rollout timeout (2 s): a rollout judged here would be rolled back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(status.ready());
    assert_eq!(
        recorded_state(&sim),
        None,
        "a scaling Deployment was judged as a rollout; at start-up: {}",
        at_start["status"]
    );
    assert!(
        sim.template_changes().is_empty(),
        "the Deployment's template was changed: {:?}",
        sim.template_changes()
    );
    assert_eq!(
        sim.current_version("production", "app").as_deref(),
        Some("v2")
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_still_rolling_out_at_start_up_is_judged() {
    let behaviours = Behaviours::default();
    let (sim, url, shutdown) = cluster_at_revision_2(&behaviours).await;
    // v3 is deployed while no watchdog runs, and its pods never become ready.
    let (key, b) = slow("v3");
    behaviours.set(key, b);
    sim.deploy("production", "app", "v3").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let _status = start_daemon(&url, &shutdown);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while recorded_state(&sim).is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a rollout in progress at start-up was not judged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
}

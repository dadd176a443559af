//! The rollback against the simulated cluster where the typed client would lose something: a
//! template with a field k8s-openapi does not know (a newer cluster's), and a state annotation
//! whose text the API server stores HTML-escaped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use deploy_watchdog::cluster::rollback;
use deploy_watchdog::sim::behaviour::Behaviours;
use deploy_watchdog::sim::cluster::SimCluster;
use kube::Client;
use serde_json::{Value, json};
use support::spec;
use tokio_util::sync::CancellationToken;

async fn start() -> (SimCluster, Client, String, CancellationToken) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = SimCluster::new(Behaviours::default());
    let shutdown = CancellationToken::new();
    let addr = sim.start(shutdown.clone()).await.unwrap();
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    sim.add_deployment(&spec("production/app", "v1", 2));
    (
        sim,
        Client::try_from(config).unwrap(),
        format!("http://{addr}"),
        shutdown,
    )
}

fn revision(d: &Value) -> Option<i64> {
    d.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")?
        .as_str()?
        .parse()
        .ok()
}

/// Merge-patches the Deployment over HTTP (no typed client in the way) and waits for the
/// controller to number the result `want`.
async fn merge_patch(sim: &SimCluster, url: &str, body: Value, want: i64) {
    let resp = reqwest::Client::new()
        .patch(format!(
            "{url}/apis/apps/v1/namespaces/production/deployments/app"
        ))
        .header("Content-Type", "application/merge-patch+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    wait_for_revision(sim, want).await;
}

async fn wait_for_revision(sim: &SimCluster, want: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sim
        .deployment_json("production", "app")
        .and_then(|d| revision(&d))
        != Some(want)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "revision {want} never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn replica_sets(url: &str) -> Vec<Value> {
    let list: Value = reqwest::Client::new()
        .get(format!(
            "{url}/apis/apps/v1/namespaces/production/replicasets"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["items"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_field_the_types_do_not_know_is_restored_and_the_target_reused() {
    let (sim, client, url, shutdown) = start().await;
    // Revision 2 runs v1 with `hostnameOverride` (a pod field of Kubernetes 1.34, unknown to
    // the k8s-openapi version this daemon is built with); revision 3 is v2 without it.
    merge_patch(
        &sim,
        &url,
        json!({"spec": {"template": {"spec": {"hostnameOverride": "app-host"}}}}),
        2,
    )
    .await;
    merge_patch(
        &sim,
        &url,
        json!({"spec": {"template": {
            "metadata": {"labels": {"app.kubernetes.io/version": "v2"}},
            "spec": {"hostnameOverride": null, "containers": [{"name": "app", "image": "registry.example.com/production/app:v2"}]}}}}),
        3,
    )
    .await;
    assert_eq!(replica_sets(&url).await.len(), 3);

    let plan = rollback::execute(&client, "production", "app", 3, |_| BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(plan.target_revision, 2);
    wait_for_revision(&sim, 4).await;

    let d = sim.deployment_json("production", "app").unwrap();
    assert_eq!(
        d.pointer("/spec/template/spec/hostnameOverride"),
        Some(&json!("app-host")),
        "the restored template lost the field: {}",
        d["spec"]["template"]
    );
    // The controller found the target's template again: no new ReplicaSet, and the one with
    // the field is the one renumbered to revision 4.
    let sets = replica_sets(&url).await;
    assert_eq!(sets.len(), 3, "a new ReplicaSet was made");
    let restored: Vec<&Value> = sets.iter().filter(|rs| revision(rs) == Some(4)).collect();
    assert_eq!(restored.len(), 1);
    assert_eq!(
        restored[0].pointer("/spec/template/spec/hostnameOverride"),
        Some(&json!("app-host"))
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_state_with_html_characters_does_not_fail_the_rollback() {
    let (sim, client, _url, shutdown) = start().await;
    sim.deploy("production", "app", "v2").unwrap();
    wait_for_revision(&sim, 2).await;
    // What a degraded rollout records: a message quoting '>' and '&'.
    let mut state = deploy_watchdog::cluster::record::RolloutState::detected(
        2,
        Some("v1".into()),
        Some("v2".into()),
        None,
    );
    state.paged = Some(deploy_watchdog::judge::Reason::ErrorRate);
    state.detail = Some("error rate 3.4 % > 1 % & rising".into());
    deploy_watchdog::cluster::record::Recorder::new(client.clone(), "test".into())
        .annotate("production", "app", &state.annotations())
        .await
        .unwrap();
    let plan = rollback::execute(&client, "production", "app", 2, |_| state.annotations())
        .await
        .expect("the rollback patch was refused");
    assert_eq!(plan.target_version.as_deref(), Some("v1"));
    shutdown.cancel();
}

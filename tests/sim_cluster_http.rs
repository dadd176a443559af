//! The simulated API server at the HTTP level: discovery, paging, watch bookmarks and timeouts,
//! 410 Gone, Tables, content types, revision history cleanup and scaling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use deploy_watchdog::sim::behaviour::Behaviours;
use deploy_watchdog::sim::cluster::SimCluster;
use deploy_watchdog::sim::scenario::{ApiState, DeploymentSpec};
use serde_json::{Value, json};
use support::spec;
use tokio_util::sync::CancellationToken;

async fn start() -> (SimCluster, String, CancellationToken) {
    let sim = SimCluster::new(Behaviours::default());
    let shutdown = CancellationToken::new();
    let addr = sim.start(shutdown.clone()).await.unwrap();
    (sim, format!("http://{addr}"), shutdown)
}

fn http() -> reqwest::Client {
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn get(url: &str) -> (u16, Value) {
    let resp = http().get(url).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Reads watch lines until the stream ends or `stop` says so.
async fn watch_lines(url: &str, stop: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut resp = http().get(url).send().await.unwrap();
    let (mut buf, mut lines) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, resp.chunk()).await {
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            lines.push(serde_json::from_slice(&line).unwrap());
        }
        if stop(&lines) {
            break;
        }
    }
    lines
}

#[tokio::test]
async fn discovery_documents_describe_the_served_resources() {
    let (_sim, url, shutdown) = start().await;
    let (_, version) = get(&format!("{url}/version")).await;
    assert!(version["gitVersion"].as_str().unwrap().starts_with("v1.33"));
    let (_, groups) = get(&format!("{url}/apis")).await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apps", "events.k8s.io", "coordination.k8s.io"]);
    let (_, apps) = get(&format!("{url}/apis/apps/v1")).await;
    let deploy = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments")
        .unwrap();
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert_eq!(deploy["categories"], json!(["all"]));
    assert_eq!(deploy["kind"], "Deployment");
    // Asked for aggregated discovery, the server answers with the plain form, as JSON.
    let resp = http()
        .get(format!("{url}/apis"))
        .header(
            "Accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    let (code, status) = get(&format!("{url}/openapi/v2")).await;
    assert_eq!((code, status["kind"].as_str()), (404, Some("Status")));
    shutdown.cancel();
}

#[tokio::test]
async fn lists_page_with_continue_tokens_and_filter_by_selectors() {
    let (sim, url, shutdown) = start().await;
    for name in ["a", "b", "c"] {
        sim.add_deployment(&spec(&format!("production/{name}"), "v1", 1));
    }
    sim.add_deployment(&DeploymentSpec {
        opted_in: false,
        ..spec("staging/d", "v1", 1)
    });
    let (_, page1) = get(&format!("{url}/apis/apps/v1/deployments?limit=2")).await;
    assert_eq!(page1["kind"], "DeploymentList");
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    let token = page1["metadata"]["continue"].as_str().unwrap();
    let (_, page2) = get(&format!(
        "{url}/apis/apps/v1/deployments?limit=2&continue={}",
        urlencode(token)
    ))
    .await;
    let names: Vec<&str> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c", "d"]);
    assert!(page2["metadata"].get("continue").is_none());
    let sel = urlencode("deploy-watchdog.io/enabled=true,app notin (b)");
    let (_, opted) = get(&format!(
        "{url}/apis/apps/v1/deployments?labelSelector={sel}"
    ))
    .await;
    let names: Vec<&str> = opted["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "c"]);
    let (_, by_name) = get(&format!(
        "{url}/apis/apps/v1/namespaces/production/deployments?fieldSelector=metadata.name%3Db"
    ))
    .await;
    assert_eq!(by_name["items"].as_array().unwrap().len(), 1);
    assert!(
        by_name["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    shutdown.cancel();
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn watches_replay_history_send_bookmarks_end_on_timeout_and_report_410() {
    let (sim, url, shutdown) = start().await;
    sim.add_deployment(&spec("production/app", "v1", 1));
    let (_, list) = get(&format!(
        "{url}/apis/apps/v1/namespaces/production/deployments"
    ))
    .await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    sim.deploy("production", "app", "v2").unwrap();
    let lines = watch_lines(
        &format!("{url}/apis/apps/v1/namespaces/production/deployments?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=3"),
        |_| false,
    )
    .await;
    assert!(lines.iter().any(|l| l["type"] == "MODIFIED"), "{lines:?}");
    let bookmark = lines
        .iter()
        .find(|l| l["type"] == "BOOKMARK")
        .expect("a bookmark before the timeout");
    assert_eq!(bookmark["object"]["kind"], "Deployment");
    assert!(
        bookmark["object"]["metadata"]["resourceVersion"]
            .as_str()
            .is_some()
    );

    sim.set_api_state(ApiState::Expire);
    let lines = watch_lines(
        &format!("{url}/apis/apps/v1/deployments?watch=true&resourceVersion={rv}"),
        |l| !l.is_empty(),
    )
    .await;
    assert_eq!(lines[0]["type"], "ERROR");
    assert_eq!(lines[0]["object"]["code"], 410);
    assert_eq!(lines[0]["object"]["reason"], "Expired");
    // After a relist, a watch from the new resourceVersion works.
    let (_, list) = get(&format!("{url}/apis/apps/v1/deployments")).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let lines = watch_lines(
        &format!("{url}/apis/apps/v1/deployments?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        |_| false,
    )
    .await;
    assert!(lines.iter().all(|l| l["type"] != "ERROR"), "{lines:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn tables_content_types_scaling_and_history_limits() {
    let (sim, url, shutdown) = start().await;
    sim.add_deployment(&spec("production/app", "v1", 2));
    let client = http();
    let dep_url = format!("{url}/apis/apps/v1/namespaces/production/deployments/app");
    let table: Value = client
        .get(format!(
            "{url}/apis/apps/v1/namespaces/production/deployments?includeObject=Object"
        ))
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(table["kind"], "Table");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        &cols[..5],
        ["Name", "Ready", "Up-to-date", "Available", "Age"]
    );
    assert_eq!(table["rows"][0]["cells"][1], "2/2");
    assert_eq!(table["rows"][0]["object"]["kind"], "Deployment");

    let resp = client
        .patch(&dep_url)
        .header("Content-Type", "application/apply-patch+yaml")
        .body("spec: {}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    assert_eq!(resp.json::<Value>().await.unwrap()["kind"], "Status");

    let merge = |body: Value| {
        client
            .patch(&dep_url)
            .header("Content-Type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
    };
    let scaled: Value = merge(json!({"spec": {"replicas": 4, "revisionHistoryLimit": 1}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scaled["metadata"]["generation"], 2);
    for v in ["v2", "v3", "v4"] {
        sim.deploy("production", "app", v).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while sim.ready_pods_by_version("production", "app") != [(v.to_string(), 4)] {
            assert!(
                tokio::time::Instant::now() < deadline,
                "rollout of {v} did not finish"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, rss) = get(&format!(
            "{url}/apis/apps/v1/namespaces/production/replicasets"
        ))
        .await;
        let rss = rss["items"].as_array().unwrap().clone();
        let ready = sim.ready_pods_by_version("production", "app");
        if ready == [("v4".to_string(), 4)] && rss.len() == 2 {
            let revs: Vec<&str> = rss
                .iter()
                .map(|r| {
                    r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                        .as_str()
                        .unwrap()
                })
                .collect();
            assert!(revs.contains(&"4") && revs.contains(&"3"), "{revs:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "history not cleaned up: {} RSs, {ready:?}",
            rss.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, dep) = get(&dep_url).await;
    assert_eq!(
        dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "4"
    );
    assert_eq!(
        dep["status"]["observedGeneration"],
        dep["metadata"]["generation"]
    );

    let paused: Value = merge(json!({"spec": {"paused": true}}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused["spec"]["paused"], true);
    sim.deploy("production", "app", "v5").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, dep) = get(&dep_url).await;
    assert_eq!(
        dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "4",
        "no rollout while paused"
    );
    let progressing = dep["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(progressing["reason"], "DeploymentPaused");
    shutdown.cancel();
}

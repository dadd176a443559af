//! The simulated apps and the Prometheus-compatible API over HTTP, as the daemon sees them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy_watchdog::sim::behaviour::{AppKey, Behaviour, Behaviours};
use deploy_watchdog::sim::scenario::ProviderState;
use deploy_watchdog::sim::services::{Apps, ClusterView, PrometheusSim};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

type ReadyPods = Vec<(String, u32)>;

#[derive(Default)]
struct FakeCluster {
    ready: Mutex<HashMap<(String, String), ReadyPods>>,
}

impl ClusterView for FakeCluster {
    fn ready_pods_by_version(&self, namespace: &str, name: &str) -> Vec<(String, u32)> {
        let ready = self.ready.lock().unwrap_or_else(|e| e.into_inner());
        ready
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default()
    }
    fn deployments(&self) -> Vec<(String, String)> {
        self.ready
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

struct Fixture {
    apps: Apps,
    prometheus: PrometheusSim,
    apps_url: String,
    prom_url: String,
    client: reqwest::Client,
    _shutdown: tokio_util::sync::DropGuard,
}

/// production/app: two ready pods of v1 (no errors), one of v2 (5 % errors); 100 rps each.
async fn fixture() -> Fixture {
    let cluster = Arc::new(FakeCluster::default());
    cluster.ready.lock().expect("lock").insert(
        ("production".into(), "app".into()),
        vec![("v1".into(), 2), ("v2".into(), 1)],
    );
    cluster
        .ready
        .lock()
        .expect("lock")
        .insert(("production".into(), "idle".into()), vec![]);
    let behaviours = Behaviours::default();
    behaviours.set(AppKey::new("production", "app", "v1"), Behaviour::default());
    let mut v2 = Behaviour {
        error_ratio: 0.05,
        ..Behaviour::default()
    };
    v2.routes.insert("/v1/status".into(), 503);
    v2.health.checks = Some([("database".to_string(), "timeout".to_string())].into());
    behaviours.set(AppKey::new("production", "app", "v2"), v2);
    let apps = Apps::new(behaviours, cluster);
    let shutdown = CancellationToken::new();
    let apps_addr = apps.start(shutdown.clone()).await.expect("apps start");
    let prometheus = PrometheusSim::new(&apps);
    let prom_addr = prometheus
        .start(shutdown.clone())
        .await
        .expect("prometheus starts");
    Fixture {
        apps,
        prometheus,
        apps_url: format!("http://{apps_addr}"),
        prom_url: format!("http://{prom_addr}"),
        client: client(),
        _shutdown: shutdown.drop_guard(),
    }
}

fn client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn wait_for_traffic(f: &Fixture) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while f
        .apps
        .counts("production", "app", Duration::from_secs(60))
        .0
        < 50.0
    {
        assert!(tokio::time::Instant::now() < deadline, "no traffic counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn prom(f: &Fixture, query: &str) -> (u16, Value) {
    let r = f
        .client
        .get(format!("{}/api/v1/query", f.prom_url))
        .query(&[("query", query)])
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.expect("json"))
}

fn scalar(body: &Value) -> f64 {
    body["data"]["result"][0]["value"][1]
        .as_str()
        .expect("a value")
        .parse()
        .expect("a number")
}

async fn at(f: &Fixture, q: &str, t: &str) -> f64 {
    let r = f
        .client
        .get(format!("{}/api/v1/query", f.prom_url))
        .query(&[("query", q), ("time", t)]);
    let body: Value = r.send().await.expect("sent").json().await.expect("json");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["data"]["resultType"], "vector");
    scalar(&body)
}

#[tokio::test]
async fn health_answers_round_robin_across_ready_pods() {
    let f = fixture().await;
    let mut seen = HashMap::new();
    for _ in 0..6 {
        let r = f
            .client
            .get(format!("{}/apps/production/app/health", f.apps_url))
            .send()
            .await
            .expect("sent");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("json");
        let version = body["version"].as_str().expect("version").to_string();
        if version == "v1" {
            assert_eq!(status, 200);
            assert_eq!(body["status"], "healthy");
            assert_eq!(body["checks"]["database"], "ok");
            assert_eq!(body["checks"]["cache"], "ok");
        } else {
            assert_eq!(body["status"], "degraded");
            assert_eq!(body["checks"]["database"], "timeout");
        }
        *seen.entry(version).or_insert(0) += 1;
    }
    assert_eq!(seen.get("v1"), Some(&4));
    assert_eq!(seen.get("v2"), Some(&2));
    let r = f
        .client
        .get(format!("{}/apps/production/idle/health", f.apps_url))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 503);
}

#[tokio::test]
async fn smoke_routes_answer_each_versions_status() {
    let f = fixture().await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = f
            .client
            .get(format!("{}/apps/production/app/v1/status", f.apps_url))
            .send()
            .await
            .expect("sent");
        statuses.push(r.status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 503]);
    let r = f
        .client
        .head(format!("{}/apps/production/app/", f.apps_url))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 200);
    let r = f
        .client
        .post(format!("{}/apps/production/app/anything/else", f.apps_url))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn metrics_are_in_the_prometheus_text_format() {
    let f = fixture().await;
    wait_for_traffic(&f).await;
    let r = f
        .client
        .get(format!("{}/metrics", f.apps_url))
        .send()
        .await
        .expect("sent");
    let content_type = r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = r.text().await.expect("text");
    assert!(
        text.contains("# TYPE http_requests_total counter\n"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(r#"http_requests_total{namespace="production",deployment="app",version="v2",code="500"}"#))
        .expect("the v2 error series");
    let value: f64 = line
        .rsplit(' ')
        .next()
        .expect("a value")
        .parse()
        .expect("a number");
    assert_eq!(value, value.floor(), "counters are whole numbers");
}

#[tokio::test]
async fn prometheus_error_ratio_is_the_weighted_ratio_of_the_versions() {
    let f = fixture().await;
    wait_for_traffic(&f).await;
    let total =
        r#"sum(increase(http_requests_total{namespace="production",deployment="app"}[1s]))"#;
    let errors = r#"sum(increase(http_requests_total{namespace="production",deployment="app",code=~"5.."}[1s]))"#;
    // Both at the same evaluation time, so the ratio is exact.
    let t = f.apps.clock().now().to_string();
    let (total, errors) = (at(&f, total, &t).await, at(&f, errors, &t).await);
    assert!(total > 0.0);
    // v1 gets 2/3 of the traffic without errors, v2 1/3 with 5 %.
    let expected = 0.05 / 3.0;
    assert!(
        (errors / total - expected).abs() < 1e-6,
        "{errors} / {total}"
    );
    let (_, by) = prom(
        &f,
        r#"sum by (version) (rate(http_requests_total{deployment="app"}[1s]))"#,
    )
    .await;
    assert_eq!(
        by["data"]["result"].as_array().map(Vec::len),
        Some(2),
        "{by}"
    );
    assert_eq!(by["data"]["result"][0]["metric"]["version"], "v1");
}

#[tokio::test]
async fn prometheus_accepts_form_posts_and_refuses_bad_queries() {
    let f = fixture().await;
    let r = f
        .client
        .post(format!("{}/api/v1/query", f.prom_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("query=sum%28http_requests_total%7Bdeployment%3D%22nope%22%7D%29")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["data"]["result"], Value::Array(vec![]));
    let (status, body) = prom(&f, "frobnicate(http_requests_total[1m])").await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "bad_data");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown function")),
        "{body}"
    );
}

#[tokio::test]
async fn prometheus_fault_states_answer_as_documented() {
    let f = fixture().await;
    wait_for_traffic(&f).await;
    let q = r#"sum(increase(http_requests_total{deployment="app"}[1s]))"#;

    f.prometheus.set_state(ProviderState::NoData);
    let (status, body) = prom(&f, q).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("success")));
    assert_eq!(body["data"]["result"], Value::Array(vec![]));

    f.prometheus.set_state(ProviderState::Error);
    let (status, body) = prom(&f, q).await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (500, Some("internal"))
    );

    f.prometheus.set_state(ProviderState::RateLimited);
    let r = f
        .client
        .get(format!("{}/api/v1/query", f.prom_url))
        .query(&[("query", q)])
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");

    f.prometheus.set_state(ProviderState::Slow);
    let slow = f
        .client
        .get(format!("{}/api/v1/query", f.prom_url))
        .query(&[("query", q)])
        .timeout(Duration::from_millis(300));
    assert!(slow.send().await.is_err_and(|e| e.is_timeout()));

    f.prometheus.set_state(ProviderState::Down);
    let down = f
        .client
        .get(format!("{}/api/v1/query", f.prom_url))
        .query(&[("query", q)])
        .send()
        .await;
    assert!(down.is_err(), "down answers nothing: {down:?}");

    f.prometheus.set_state(ProviderState::Up);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match f
            .client
            .get(format!("{}/api/v1/query", f.prom_url))
            .query(&[("query", q)])
            .send()
            .await
        {
            Ok(r) => {
                assert_eq!(r.status().as_u16(), 200);
                let body: Value = r.json().await.expect("json");
                assert!(scalar(&body) > 0.0);
                break;
            }
            Err(e) => assert!(tokio::time::Instant::now() < deadline, "not back up: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

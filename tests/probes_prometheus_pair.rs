//! The Prometheus provider's two queries of a sample are evaluated at one instant: each carries
//! the same `time`, so the errors are counted over the very scrapes the requests are (two
//! evaluations a scrape apart can count more errors than requests). A recording server stands
//! in for Prometheus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use deploy_watchdog::check::ObjectKey;
use deploy_watchdog::config::PrometheusConfig;
use deploy_watchdog::judge::ProviderSample;
use deploy_watchdog::probes::{http_client, prometheus::Prometheus};

type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn answer(
    State(seen): State<Seen>,
    Query(params): Query<Vec<(String, String)>>,
) -> axum::Json<serde_json::Value> {
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    seen.lock()
        .unwrap()
        .push((field("query").unwrap_or_default(), field("time")));
    axum::Json(
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"namespace": "production", "deployment": "app"}, "value": [1, "100"]}]}}),
    )
}

async fn recording_server() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let router = Router::new()
        .route("/api/v1/query", get(answer))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{addr}"), seen)
}

fn times(seen: &Seen) -> Vec<Option<String>> {
    seen.lock().unwrap().drain(..).map(|(_, t)| t).collect()
}

#[tokio::test]
async fn both_queries_of_a_sample_carry_the_same_time() {
    let (url, seen) = recording_server().await;
    let p = Prometheus::new(
        http_client(),
        PrometheusConfig {
            url: url.parse().expect("a URL"),
            ..PrometheusConfig::default()
        },
    );
    for _ in 0..3 {
        let sample = p
            .sample("production", "app", Duration::from_secs(240))
            .await;
        assert!(
            matches!(sample, ProviderSample::Counts { .. }),
            "{sample:?}"
        );
        let t = times(&seen);
        assert_eq!(t.len(), 2);
        assert!(t[0].is_some(), "no time= on the requests query");
        assert_eq!(t[0], t[1], "the pair was evaluated at two instants");
        // Unix seconds with milliseconds, as Prometheus keeps them.
        let text = t[0].clone().unwrap();
        let (secs, ms) = text.split_once('.').expect("seconds.milliseconds");
        assert!(
            secs.parse::<u64>().unwrap() > 1_600_000_000 && ms.len() == 3,
            "{text}"
        );

        let members = [ObjectKey::new("production", "app")];
        let grouped = p
            .sample_grouped(
                &PrometheusConfig::default().grouped,
                &members,
                Duration::from_secs(240),
            )
            .await
            .unwrap();
        assert!(matches!(
            grouped[&members[0]],
            ProviderSample::Counts { .. }
        ));
        let t = times(&seen);
        assert_eq!(t.len(), 2);
        assert!(t[0].is_some() && t[0] == t[1], "grouped pair: {t:?}");
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
}

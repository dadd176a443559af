//! The PagerDuty client and its queue against a local Events API: which answers end a page,
//! which are retried, and that a page refused for good never holds up the pages behind it.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use deploy_watchdog::config::{Config, Secrets};
use deploy_watchdog::notify::{Action, Notifier, PageEvent, Payload, Severity};
use deploy_watchdog::telemetry::Metrics;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The dedup keys accepted, in order.
type Accepted = Arc<Mutex<Vec<String>>>;

/// PagerDuty's Events API at `/v2/enqueue`, answering by dedup key: `unauthorized` 401,
/// `not-found` 404, `too-large` 413, `throttled` 429 once; anything else 202.
async fn events_api(shutdown: CancellationToken) -> (String, Accepted) {
    let accepted = Accepted::default();
    let throttled = Arc::new(Mutex::new(false));
    let router = Router::new()
        .route(
            "/v2/enqueue",
            post(
                |State((accepted, throttled)): State<(Accepted, Arc<Mutex<bool>>)>,
                 body: axum::Json<Value>| async move {
                    let key = body["dedup_key"].as_str().unwrap_or_default().to_string();
                    let refuse = |status: StatusCode, message: &str| {
                        (status, json!({"status": "error", "message": message}).to_string())
                    };
                    match key.as_str() {
                        "unauthorized" => refuse(StatusCode::UNAUTHORIZED, "Unauthorized"),
                        "not-found" => refuse(StatusCode::NOT_FOUND, "Not Found"),
                        "too-large" => refuse(StatusCode::PAYLOAD_TOO_LARGE, "Request too large"),
                        "throttled" if !std::mem::replace(&mut *throttled.lock().unwrap(), true) => {
                            refuse(StatusCode::TOO_MANY_REQUESTS, "throttle event")
                        }
                        _ => {
                            accepted.lock().unwrap().push(key.clone());
                            (
                                StatusCode::ACCEPTED,
                                json!({"status": "success", "message": "Event processed", "dedup_key": key})
                                    .to_string(),
                            )
                        }
                    }
                },
            ),
        )
        .with_state((accepted.clone(), throttled));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    (format!("http://{addr}"), accepted)
}

fn page(dedup_key: &str) -> PageEvent {
    PageEvent {
        action: Action::Trigger,
        dedup_key: dedup_key.into(),
        payload: Some(Payload {
            summary: format!("page {dedup_key}"),
            source: "test".into(),
            severity: Severity::Error,
            component: None,
            group: None,
            class: None,
            custom_details: json!({}),
        }),
    }
}

fn notifier(url: &str, shutdown: &CancellationToken) -> (Notifier, prometheus::Registry) {
    let mut config = Config::default();
    config.notify.pagerduty.url = url.to_string();
    let secrets = Secrets {
        pagerduty_routing_key: Some("0123456789abcdef0123456789abcdef".into()),
        ..Secrets::default()
    };
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::register(&registry).expect("metrics"));
    (
        Notifier::start(&config, &secrets, metrics, shutdown.clone()),
        registry,
    )
}

fn pages_counted(registry: &prometheus::Registry, result: &str) -> u64 {
    let wanted = format!("result=\"{result}\"");
    deploy_watchdog::telemetry::encode(registry)
        .lines()
        .filter(|l| l.starts_with("deploy_watchdog_pages_total{") && l.contains(&wanted))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn a_page_refused_for_good_does_not_hold_up_the_pages_behind_it() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (url, accepted) = events_api(shutdown.clone()).await;
    let (notifier, registry) = notifier(&url, &shutdown);
    let refused: Vec<_> = ["unauthorized", "not-found", "too-large"]
        .into_iter()
        .map(|k| notifier.page(page(k)).expect("queued"))
        .collect();
    let throttled = notifier.page(page("throttled")).expect("queued");
    let good = notifier
        .page(page("deploy-watchdog/prod/production/app/2"))
        .expect("queued");
    let delivered = tokio::time::timeout(Duration::from_secs(10), good).await;
    assert!(
        matches!(delivered, Ok(Ok(Ok(())))),
        "the page behind three refused ones was not delivered: {delivered:?}"
    );
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(1), throttled).await,
        Ok(Ok(Ok(())))
    ));
    // Pages of different rollouts are delivered each on its own: the good one does not wait
    // for the throttled one's retry.
    let mut got = accepted.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        vec!["deploy-watchdog/prod/production/app/2", "throttled"],
        "a 429 is retried"
    );
    for (receipt, status) in refused.into_iter().zip(["401", "404", "413"]) {
        match receipt.await {
            Ok(Err(why)) => assert!(why.contains(status), "{why}"),
            other => panic!("HTTP {status} did not end the page: {other:?}"),
        }
    }
    assert_eq!(pages_counted(&registry, "rejected"), 3);
    assert_eq!(notifier.in_flight(), 0);
}

#[tokio::test]
async fn the_documented_full_url_and_the_base_both_reach_enqueue() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (base, accepted) = events_api(shutdown.clone()).await;
    for (i, url) in [
        base.clone(),
        format!("{base}/"),
        format!("{base}/v2/enqueue"),
        format!("{base}/v2/enqueue/"),
    ]
    .iter()
    .enumerate()
    {
        let (notifier, _) = notifier(url, &shutdown);
        let receipt = notifier.page(page(&format!("key-{i}"))).expect("queued");
        let delivered = tokio::time::timeout(Duration::from_secs(5), receipt).await;
        assert!(matches!(delivered, Ok(Ok(Ok(())))), "{url}: {delivered:?}");
    }
    assert_eq!(accepted.lock().unwrap().len(), 4);
}

/// A crash loop rolled back while every page is answered 404 (a relay path PagerDuty does not
/// serve): the rollback goes on, the refusal is a Warning Event, and the run is not held up by
/// a page retried for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_refused_for_good_is_a_warning_event_and_holds_nothing_up() {
    use deploy_watchdog::sim::runner::{self, Simulation};
    use deploy_watchdog::sim::scenario::Scenario;
    const SCENARIO: &str = r#"
name: page-refused-for-good
duration: 20s
config:
  mode: enforce
  watch: {window: 2s, interval: 100ms, rollout_timeout: 3s, pending_timeout: 1s}
  judge: {error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s, failures_before_rollback: 3}
deployments:
  - {ref: production/app, replicas: 2, version: v1.2.2}
apps:
  production/app@v1.2.2: {rps: 200, error_ratio: 0.001}
  production/app@v1.2.3: {pods: crashloop}
script:
  - {at: 300ms, deploy: {deployment: production/app, version: v1.2.3}}
expect:
  production/app: {outcome: rolled_back, reason: crashloop, final_version: v1.2.2, pages: 0}
"#;
    let scenario = Scenario::parse(SCENARIO, "refused.yaml").expect("valid scenario");
    let config = runner::daemon_config(&scenario, "refused.yaml").expect("valid config");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let mut sim = Simulation::start(&scenario, config, "refused.yaml", &shutdown)
        .await
        .expect("simulation");
    sim.config.notify.pagerduty.url = format!("{}/relay", sim.config.notify.pagerduty.url);
    let report = runner::run_in(&sim, &scenario, "refused.yaml", None)
        .await
        .expect("run");
    assert!(report.ok, "{:?}", report.failures);
    // The run ends once nothing is in flight: a page retried for ever would hold it to `duration`.
    assert!(
        report.duration_ms < 15_000,
        "the run lasted {} ms: a refused page was still in flight",
        report.duration_ms
    );
    let events = sim.cluster.events();
    let refused: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "PageRejected")
        .collect();
    assert!(!refused.is_empty(), "no PageRejected Event: {events:#?}");
    for e in refused {
        assert_eq!(e["type"], "Warning");
        let note = e["note"].as_str().unwrap_or_default();
        assert!(
            note.contains("HTTP 404") && note.contains("production/app v1.2.3"),
            "{note}"
        );
        assert!(!note.contains("R0UTING0KEY"), "{note}");
    }
}

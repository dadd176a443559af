//! The simulated Datadog, PagerDuty and Slack services over HTTP.

use std::sync::Arc;
use std::time::Duration;

use deploy_watchdog::sim::behaviour::{AppKey, Behaviour, Behaviours};
use deploy_watchdog::sim::scenario::{ProviderState, SinkState};
use deploy_watchdog::sim::services::{Apps, ClusterView, DatadogSim, PagerDutySim, SlackSim};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct OneApp;

impl ClusterView for OneApp {
    fn ready_pods_by_version(&self, namespace: &str, name: &str) -> Vec<(String, u32)> {
        if (namespace, name) == ("production", "app") {
            vec![("v1".into(), 1), ("v2".into(), 1)]
        } else {
            vec![]
        }
    }
    fn deployments(&self) -> Vec<(String, String)> {
        vec![("production".into(), "app".into())]
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn datadog_answers_both_query_apis_with_keys_only() {
    let behaviours = Behaviours::default();
    behaviours.set(
        AppKey::new("production", "app", "v2"),
        Behaviour {
            error_ratio: 0.1,
            ..Behaviour::default()
        },
    );
    let apps = Apps::new(behaviours, Arc::new(OneApp));
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    apps.start(shutdown.clone()).await.expect("apps");
    let datadog = DatadogSim::new(&apps);
    let url = format!(
        "http://{}",
        datadog.start(shutdown.clone()).await.expect("datadog")
    );
    // The apps' traces are tagged env:prod, as the queries below ask.
    datadog.set_env("prod");
    let c = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while apps.counts("production", "app", Duration::from_secs(60)).0 < 100.0 {
        assert!(tokio::time::Instant::now() < deadline, "no traffic");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = apps.clock().now();
    let (from, to) = ((now - 30.0) as i64, now.ceil() as i64);
    let v1 = |q: &str| {
        c.get(format!("{url}/api/v1/query")).query(&[
            ("from", from.to_string()),
            ("to", to.to_string()),
            ("query", q.to_string()),
        ])
    };
    let hits = "sum:trace.http.request.hits{service:app,env:prod} by {version}.as_count()";

    let r = v1(hits).send().await.expect("sent");
    assert_eq!(r.status().as_u16(), 403);
    assert!(r.headers().contains_key("x-ratelimit-limit"));
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"errors": ["Forbidden"]})
    );

    let r = v1(hits)
        .header("DD-API-KEY", "k")
        .header("DD-APPLICATION-KEY", "a")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 200);
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-period",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-name",
    ] {
        assert!(r.headers().contains_key(h), "{h}");
    }
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["res_type"], "time_series");
    let series = body["series"].as_array().expect("series");
    assert_eq!(series.len(), 2, "{body}");
    assert_eq!(series[0]["tag_set"], json!(["version:v1"]));
    let total: f64 = series[0]["pointlist"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| p[1].as_f64().unwrap_or(0.0))
        .sum();
    assert!(total > 0.0);

    let errors = "sum:trace.http.request.errors{service:app,version:v2}.as_count()";
    let body = json!({"data": {"type": "timeseries_request", "attributes": {
        "from": from * 1000, "to": to * 1000,
        "queries": [{"data_source": "metrics", "query": errors, "name": "a"}],
        "formulas": [{"formula": "a"}]}}});
    let v2 = || c.post(format!("{url}/api/v2/query/timeseries")).json(&body);
    assert_eq!(v2().send().await.expect("sent").status().as_u16(), 403);
    let r = v2()
        .header("DD-API-KEY", "k")
        .header("DD-APPLICATION-KEY", "a")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 200);
    let answer: Value = r.json().await.expect("json");
    let attributes = &answer["data"]["attributes"];
    assert_eq!(answer["data"]["type"], "timeseries_response");
    assert_eq!(attributes["series"][0]["query_index"], 0);
    assert_eq!(
        attributes["times"].as_array().map(Vec::len),
        attributes["values"][0].as_array().map(Vec::len)
    );
    let errors: f64 = attributes["values"][0]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(Value::as_f64)
        .sum();
    assert!(errors > 0.0, "{answer}");

    datadog.set_state(ProviderState::RateLimited);
    let r = v1(hits)
        .header("DD-API-KEY", "k")
        .header("DD-APPLICATION-KEY", "a")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    datadog.set_state(ProviderState::NoData);
    let r = v1(hits)
        .header("DD-API-KEY", "k")
        .header("DD-APPLICATION-KEY", "a")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.json::<Value>().await.expect("json")["series"], json!([]));
    datadog.set_state(ProviderState::Down);
    assert!(
        v1(hits)
            .header("DD-API-KEY", "k")
            .header("DD-APPLICATION-KEY", "a")
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn pagerduty_accepts_valid_events_and_explains_invalid_ones() {
    let pd = PagerDutySim::new();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let url = format!(
        "http://{}/v2/enqueue",
        pd.start(shutdown.clone()).await.expect("pagerduty")
    );
    let c = client();
    let trigger = json!({
        "routing_key": "0123456789abcdef0123456789abcdef",
        "event_action": "trigger",
        "dedup_key": "deploy-watchdog/prod/production/app/4",
        "payload": {"summary": "Rolled back app v1.2.3", "source": "deploy-watchdog", "severity": "critical",
                    "custom_details": {"error_rate": 0.034}},
    });
    let r = c.post(&url).json(&trigger).send().await.expect("sent");
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"status": "success", "message": "Event processed", "dedup_key": "deploy-watchdog/prod/production/app/4"})
    );
    let r = c
        .post(&url)
        .json(&json!({"routing_key": "k", "event_action": "trigger", "payload": {"summary": "s"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "invalid event");
    assert_eq!(body["message"], "Event object is invalid");
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(3), "{body}");
    let r = c
        .post(&url)
        .json(&json!({"routing_key": "k", "event_action": "resolve"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 400);

    pd.set_state(SinkState::RateLimited);
    assert_eq!(
        c.post(&url)
            .json(&trigger)
            .send()
            .await
            .expect("sent")
            .status()
            .as_u16(),
        429
    );
    pd.set_state(SinkState::Error);
    assert_eq!(
        c.post(&url)
            .json(&trigger)
            .send()
            .await
            .expect("sent")
            .status()
            .as_u16(),
        500
    );
    pd.set_state(SinkState::Down);
    assert!(c.post(&url).json(&trigger).send().await.is_err());

    let statuses: Vec<u16> = pd.received().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![202, 400, 400, 429, 500]);
    assert_eq!(
        pd.triggered_dedup_keys(),
        vec!["deploy-watchdog/prod/production/app/4".to_string()]
    );
}

#[tokio::test]
async fn slack_answers_like_an_incoming_webhook() {
    let slack = SlackSim::new();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let url = format!(
        "http://{}/services/T000/B000/XXXX",
        slack.start(shutdown.clone()).await.expect("slack")
    );
    let c = client();
    let r = c
        .post(&url)
        .json(&json!({"text": "Rolled back v1.2.3 to v1.2.2"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.expect("text"), "ok");
    let r = c.post(&url).body("not json").send().await.expect("sent");
    assert_eq!(
        (r.status().as_u16(), r.text().await.expect("text")),
        (400, "invalid_payload".to_string())
    );
    let r = c
        .post(&url)
        .json(&json!({"text": ""}))
        .send()
        .await
        .expect("sent");
    assert_eq!(
        (r.status().as_u16(), r.text().await.expect("text")),
        (400, "no_text".to_string())
    );
    slack.set_state(SinkState::RateLimited);
    let r = c
        .post(&url)
        .json(&json!({"text": "x"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    slack.set_state(SinkState::Down);
    assert!(
        c.post(&url)
            .json(&json!({"text": "x"}))
            .send()
            .await
            .is_err()
    );
    assert_eq!(slack.received().len(), 4);
    assert_eq!(
        slack.texts(),
        vec!["Rolled back v1.2.3 to v1.2.2".to_string()]
    );
}

/// A trigger event for `dedup_key`, with a routing key of PagerDuty's form.
fn trigger(dedup_key: &str) -> Value {
    json!({
        "routing_key": "0123456789abcdef0123456789abcdef",
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {"summary": "Rolled back app v1.2.3", "source": "prod", "severity": "error"},
    })
}

#[tokio::test]
async fn pagerduty_notifies_only_when_an_incident_opens() {
    let pd = PagerDutySim::new();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let url = format!(
        "http://{}/v2/enqueue",
        pd.start(shutdown.clone()).await.expect("pagerduty")
    );
    let c = client();
    let send = |event: Value| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            c.post(&url)
                .json(&event)
                .send()
                .await
                .expect("sent")
                .status()
                .as_u16()
        }
    };
    let key = "deploy-watchdog/prod/production/app/4";
    let event = |action: &str| json!({"routing_key": "0123456789abcdef0123456789abcdef", "event_action": action, "dedup_key": key});
    use deploy_watchdog::sim::services::pagerduty::IncidentState;
    // Opens an incident: on-call is notified.
    assert_eq!(send(trigger(key)).await, 202);
    assert_eq!(pd.incident(key), Some(IncidentState::Triggered));
    // A trigger on the open incident goes to its log only.
    assert_eq!(send(trigger(key)).await, 202);
    assert_eq!(pd.notifications().len(), 1);
    // Acknowledged (through the API here; on-call in the web app below): still nobody notified.
    assert_eq!(send(event("acknowledge")).await, 202);
    assert_eq!(pd.incident(key), Some(IncidentState::Acknowledged));
    assert_eq!(send(trigger(key)).await, 202);
    assert_eq!(pd.notifications().len(), 1);
    // Resolved, a new trigger opens a new incident and notifies.
    assert_eq!(send(event("resolve")).await, 202);
    assert_eq!(pd.incident(key), Some(IncidentState::Resolved));
    assert_eq!(send(trigger(key)).await, 202);
    assert_eq!(pd.incident(key), Some(IncidentState::Triggered));
    assert_eq!(pd.notifications().len(), 2);
    // On-call acknowledges in the web app; another key is an incident of its own.
    assert_eq!(pd.acknowledge_open(|_| true), 1);
    assert_eq!(pd.acknowledge_open(|_| true), 0, "nothing open is left");
    assert_eq!(send(trigger(key)).await, 202);
    assert_eq!(send(trigger(&format!("{key}/critical"))).await, 202);
    let notified: Vec<String> = pd
        .notifications()
        .into_iter()
        .map(|n| n.dedup_key)
        .collect();
    assert_eq!(notified, vec![key, key, &format!("{key}/critical")]);
    // A refused event changes nothing.
    let mut bad = event("resolve");
    bad["routing_key"] = json!("short");
    assert_eq!(send(bad).await, 400);
    assert_eq!(pd.incident(key), Some(IncidentState::Acknowledged));
}

#[tokio::test]
async fn pagerduty_refuses_what_the_real_one_refuses() {
    let pd = PagerDutySim::new();
    let shutdown = CancellationToken::new();
    let _guard = shutdown.clone().drop_guard();
    let url = format!(
        "http://{}/v2/enqueue",
        pd.start(shutdown.clone()).await.expect("pagerduty")
    );
    let c = client();
    let errors_of = |event: Value| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = c.post(&url).json(&event).send().await.expect("sent");
            let status = r.status().as_u16();
            let body: Value = r.json().await.expect("json");
            (status, body)
        }
    };
    let mut short_key = trigger("k");
    short_key["routing_key"] = json!("R0UTING0KEY");
    let (status, body) = errors_of(short_key).await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "invalid event");
    assert_eq!(
        body["errors"],
        json!(["Length of 'routing_key' is incorrect (should be 32 characters)"])
    );
    let mut odd_key = trigger("k");
    odd_key["routing_key"] = json!("0123456789abcdef0123456789abcde+");
    let (status, body) = errors_of(odd_key).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"],
        json!(["'routing_key' cannot contain non-alphanumeric characters."])
    );
    let (status, body) = errors_of(trigger(&"k".repeat(256))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], "Event object is invalid");
    assert_eq!(errors_of(trigger(&"k".repeat(255))).await.0, 202);
    assert_eq!(pd.notifications().len(), 1);
}

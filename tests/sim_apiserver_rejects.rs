//! Every kind of request the daemon makes (Events, Deployment patches, Leases), sent wrong on
//! purpose: the simulated API server answers as kube-apiserver does, with the same status code,
//! reason and `Status` body shape, so a daemon bug the real server would refuse shows up here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use deploy_watchdog::sim::behaviour::Behaviours;
use deploy_watchdog::sim::cluster::SimCluster;
use serde_json::{Value, json};
use support::spec;
use tokio_util::sync::CancellationToken;

async fn start() -> (SimCluster, String, CancellationToken) {
    let sim = SimCluster::new(Behaviours::default());
    let shutdown = CancellationToken::new();
    let addr = sim.start(shutdown.clone()).await.unwrap();
    sim.add_deployment(&spec("production/app", "v1", 2));
    (sim, format!("http://{addr}"), shutdown)
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn post(url: &str, body: &Value) -> (u16, Value) {
    send(http().post(url).json(body)).await
}

/// A failure `Status` with this code and reason.
fn assert_status(got: &(u16, Value), code: u16, reason: &str) {
    let (status, body) = got;
    assert_eq!(*status, code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], code, "{body}");
}

/// The `details.causes` of a 422 as (field, reason).
fn causes(body: &Value) -> Vec<(String, String)> {
    body.pointer("/details/causes")
        .and_then(Value::as_array)
        .unwrap_or(&Vec::new())
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap_or_default().to_string(),
                c["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// An events.k8s.io/v1 Event as the daemon writes it.
fn event() -> Value {
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"generateName": "app.", "namespace": "production"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "action": "RollBack", "reason": "RolledBack", "type": "Warning",
        "note": "rolled back",
        "regarding": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "app", "namespace": "production"},
        "reportingController": "deploy-watchdog.io/deploy-watchdog",
        "reportingInstance": "deploy-watchdog-0",
    })
}

fn with(mut base: Value, path: &str, value: Value) -> Value {
    *base.pointer_mut(path).unwrap() = value;
    base
}

fn without(mut base: Value, key: &str) -> Value {
    base.as_object_mut().unwrap().remove(key);
    base
}

#[tokio::test]
async fn events_are_validated_as_the_api_server_validates_them() {
    let (_sim, url, shutdown) = start().await;
    let events = format!("{url}/apis/events.k8s.io/v1/namespaces/production/events");

    let ok = post(&events, &event()).await;
    assert_eq!(ok.0, 201, "{}", ok.1);
    assert!(
        ok.1["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("app.")
    );

    // A note of 1,024 bytes is the most there may be, counted in bytes.
    let at_limit = with(event(), "/note", json!("é".repeat(512)));
    assert_eq!(post(&events, &at_limit).await.0, 201);
    let over = with(event(), "/note", json!(format!("{}…", "x".repeat(1023))));
    let got = post(&events, &over).await;
    assert_status(&got, 422, "Invalid");
    let message = got.1["message"].as_str().unwrap();
    assert!(
        message.starts_with("Event.events.k8s.io \"app.")
            && message.ends_with(
                "is invalid: message: Invalid value: \"\": can have at most 1024 characters"
            ),
        "{message}"
    );
    assert_eq!(got.1["details"]["kind"], "Event");
    assert_eq!(got.1["details"]["group"], "events.k8s.io");
    assert_eq!(
        causes(&got.1),
        [("message".to_string(), "FieldValueInvalid".to_string())]
    );

    // Required fields, each alone.
    for (field, body) in [
        (
            "reportingController",
            without(event(), "reportingController"),
        ),
        ("reportingInstance", without(event(), "reportingInstance")),
        ("action", without(event(), "action")),
        ("reason", without(event(), "reason")),
    ] {
        let got = post(&events, &body).await;
        assert_status(&got, 422, "Invalid");
        assert!(
            causes(&got.1).contains(&(field.to_string(), "FieldValueRequired".to_string())),
            "{field}: {}",
            got.1
        );
    }
    // Without an eventTime the legacy checks do not ask for the reporting fields, but the
    // events.k8s.io API does ask for the time itself.
    let got = post(&events, &without(event(), "eventTime")).await;
    assert_status(&got, 422, "Invalid");
    assert_eq!(
        causes(&got.1),
        [("eventTime".to_string(), "FieldValueRequired".to_string())]
    );

    // Limits and formats.
    for (field, body) in [
        (
            "reportingInstance",
            with(event(), "/reportingInstance", json!("i".repeat(129))),
        ),
        ("action", with(event(), "/action", json!("a".repeat(129)))),
        ("reason", with(event(), "/reason", json!("R".repeat(129)))),
        (
            "reportingController",
            with(event(), "/reportingController", json!("Deploy Watchdog")),
        ),
        ("type", with(event(), "/type", json!("Error"))),
        (
            "involvedObject.namespace",
            with(event(), "/regarding/namespace", json!("")),
        ),
        (
            "count",
            with(event(), "/note", json!("x")).tap_insert("deprecatedCount", json!(3)),
        ),
        (
            "source",
            event().tap_insert("deprecatedSource", json!({"component": "deploy-watchdog"})),
        ),
        (
            "series.count",
            event().tap_insert(
                "series",
                json!({"count": 1, "lastObservedTime": "2026-01-01T00:00:00.000000Z"}),
            ),
        ),
    ] {
        let got = post(&events, &body).await;
        assert_status(&got, 422, "Invalid");
        assert!(
            causes(&got.1).contains(&(field.to_string(), "FieldValueInvalid".to_string())),
            "{field}: {}",
            got.1
        );
    }

    // A MicroTime has exactly six fractional digits: anything else does not decode (400).
    for bad in [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.123Z",
        "2026-01-01T00:00:00.123456789Z",
        "2026-13-01T00:00:00.000000Z",
        "yesterday",
    ] {
        let got = post(&events, &with(event(), "/eventTime", json!(bad))).await;
        assert_status(&got, 400, "BadRequest");
        assert!(
            got.1["message"]
                .as_str()
                .unwrap()
                .starts_with("Event in version \"v1\" cannot be handled as a Event"),
            "{}",
            got.1
        );
    }
    let offset = with(
        event(),
        "/eventTime",
        json!("2026-01-01T02:00:00.000000+02:00"),
    );
    assert_eq!(post(&events, &offset).await.0, 201);

    // The core v1 API keeps only the legacy checks: no eventTime, no reporting fields needed,
    // but the namespace must match the involved object's.
    let core = format!("{url}/api/v1/namespaces/production/events");
    let legacy = json!({"metadata": {"generateName": "app."}, "message": "m", "reason": "R",
        "involvedObject": {"kind": "Deployment", "name": "app", "namespace": "production"}});
    assert_eq!(post(&core, &legacy).await.0, 201);
    let elsewhere = with(legacy.clone(), "/involvedObject/namespace", json!("other"));
    let got = post(&core, &elsewhere).await;
    assert_status(&got, 422, "Invalid");
    assert!(
        got.1["message"]
            .as_str()
            .unwrap()
            .starts_with("Event \"app.")
    );
    assert_eq!(
        causes(&got.1),
        [(
            "involvedObject.namespace".to_string(),
            "FieldValueInvalid".to_string()
        )]
    );
    shutdown.cancel();
}

trait TapInsert {
    fn tap_insert(self, key: &str, value: Value) -> Value;
}

impl TapInsert for Value {
    fn tap_insert(mut self, key: &str, value: Value) -> Value {
        self.as_object_mut().unwrap().insert(key.into(), value);
        self
    }
}

async fn patch(url: &str, content_type: &str, body: &str) -> (u16, Value) {
    send(
        http()
            .patch(url)
            .header("Content-Type", content_type)
            .body(body.to_string()),
    )
    .await
}

#[tokio::test]
async fn json_patch_test_compares_strings_as_the_api_servers_go_encoding() {
    let (_sim, url, shutdown) = start().await;
    let app = format!("{url}/apis/apps/v1/namespaces/production/deployments/app");
    let state = "error rate 3.4 % > 1 % & <rising>";
    let set = json!({"metadata": {"annotations": {"deploy-watchdog.io/state": state}}});
    let got = patch(&app, "application/merge-patch+json", &set.to_string()).await;
    assert_eq!(got.0, 200, "{}", got.1);
    let path = "/metadata/annotations/deploy-watchdog.io~1state";

    // The value as a JSON encoder that does not escape HTML writes it: refused, as the
    // apiserver compares it with its own encoding, `\u003e`.
    let plain = json!([{"op": "test", "path": path, "value": state}]).to_string();
    assert!(plain.contains('>'));
    let got = patch(&app, "application/json-patch+json", &plain).await;
    assert_status(&got, 422, "Invalid");
    assert_eq!(
        got.1["message"],
        "the server rejected our request due to an error in our request"
    );
    assert_eq!(got.1["details"], json!({}));

    // The same string escaped as Go escapes it matches.
    let escaped = plain
        .replace('>', "\\u003e")
        .replace('<', "\\u003c")
        .replace('&', "\\u0026");
    let got = patch(&app, "application/json-patch+json", &escaped).await;
    assert_eq!(got.0, 200, "{}", got.1);

    // An ASCII token is the same bytes either way; a missing key tests equal to null only.
    let token = json!([
        {"op": "test", "path": "/metadata/annotations/deployment.kubernetes.io~1revision", "value": "1"},
        {"op": "test", "path": "/metadata/annotations/absent", "value": null},
        {"op": "replace", "path": "/spec/replicas", "value": 3},
    ]);
    let got = patch(&app, "application/json-patch+json", &token.to_string()).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["spec"]["replicas"], 3);
    for failing in [
        json!([{"op": "test", "path": "/metadata/annotations/absent", "value": "x"}]),
        json!([{"op": "test", "path": "/metadata/nowhere/at-all", "value": "x"}]),
        json!([{"op": "test", "path": "/spec/replicas", "value": "3"}]),
        json!([{"op": "replace", "path": "/metadata/nowhere/x", "value": 1}]),
    ] {
        let got = patch(&app, "application/json-patch+json", &failing.to_string()).await;
        assert_status(&got, 422, "Invalid");
    }
    // Not a patch at all: 400.
    let got = patch(&app, "application/json-patch+json", "{\"op\": \"test\"}").await;
    assert_status(&got, 400, "BadRequest");

    // An update with a stale resourceVersion: 409 Conflict.
    let (_, current) = send(http().get(&app)).await;
    let mut stale = current.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["metadata"]["labels"]["x"] = json!("y");
    let got = send(http().put(&app).json(&stale)).await;
    assert_status(&got, 409, "Conflict");
    assert_eq!(got.1["details"]["kind"], "deployments");
    assert_eq!(got.1["details"]["group"], "apps");
    shutdown.cancel();
}

#[tokio::test]
async fn leases_are_validated_and_rbac_refusals_are_403() {
    let (sim, url, shutdown) = start().await;
    let leases = format!("{url}/apis/coordination.k8s.io/v1/namespaces/production/leases");
    let lease = json!({"metadata": {"name": "deploy-watchdog"}, "spec": {
        "holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0,
        "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:00.000000Z"}});
    let created = post(&leases, &lease).await;
    assert_eq!(created.0, 201, "{}", created.1);
    assert_status(&post(&leases, &lease).await, 409, "AlreadyExists");

    let one = format!("{leases}/deploy-watchdog");
    let mut stale = created.1.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    assert_status(&send(http().put(&one).json(&stale)).await, 409, "Conflict");

    for (field, path, value) in [
        (
            "spec.leaseDurationSeconds",
            "/spec/leaseDurationSeconds",
            json!(0),
        ),
        ("spec.leaseTransitions", "/spec/leaseTransitions", json!(-1)),
    ] {
        let got = send(http().put(&one).json(&with(created.1.clone(), path, value))).await;
        assert_status(&got, 422, "Invalid");
        assert_eq!(
            causes(&got.1),
            [(field.to_string(), "FieldValueInvalid".to_string())]
        );
        assert!(
            got.1["message"]
                .as_str()
                .unwrap()
                .starts_with("Lease.coordination.k8s.io \"deploy-watchdog\" is invalid: "),
            "{}",
            got.1
        );
    }
    let bad_time = with(
        created.1.clone(),
        "/spec/renewTime",
        json!("2026-01-01T00:00:00Z"),
    );
    assert_status(
        &send(http().put(&one).json(&bad_time)).await,
        400,
        "BadRequest",
    );

    // A namespace the ServiceAccount has no Role in.
    sim.forbid("leases", "kube-system");
    let elsewhere = format!("{url}/apis/coordination.k8s.io/v1/namespaces/kube-system/leases");
    let got = send(http().get(format!("{elsewhere}/deploy-watchdog"))).await;
    assert_status(&got, 403, "Forbidden");
    assert_eq!(
        got.1["message"],
        "leases.coordination.k8s.io \"deploy-watchdog\" is forbidden: User \"system:serviceaccount:deploy-watchdog:deploy-watchdog\" cannot get resource \"leases\" in API group \"coordination.k8s.io\" in the namespace \"kube-system\""
    );
    assert_eq!(got.1["details"]["kind"], "leases");
    assert_status(&post(&elsewhere, &lease).await, 403, "Forbidden");
    shutdown.cancel();
}

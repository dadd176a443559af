//! Secrets (the PagerDuty routing key, the Slack webhook URL) never appear in logs, Kubernetes
//! Events, Slack messages or error messages — including while the sinks are down, erroring or
//! rate-limited, and when the config is refused. The routing key may appear in one place only:
//! the `routing_key` field of the bodies sent to PagerDuty.
//!
//! The simulated runner uses a fixed routing key and webhook path (`sim/runner.rs`); these tests
//! search everything captured for them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use deploy_watchdog::daemon;
use deploy_watchdog::sim::runner::{self, Simulation};
use deploy_watchdog::sim::scenario::{Action, Scenario};
use tokio_util::sync::CancellationToken;

/// The runner's routing key and the secret part of its webhook URL.
const ROUTING_KEY: &str = "R0UTING0KEY0SIMULATED00000000000";
const WEBHOOK_PATH: &str = "T0SIM/B0SIM/simulated";

/// Sinks failing every way while a bad release is rolled back.
const SINKS_FAILING: &str = r#"
name: secrets-with-sinks-failing
description: PagerDuty and Slack down, erroring and rate-limited around a rollback.
duration: 7s
config:
  mode: enforce
  watch: {window: 3s, interval: 100ms, rollout_timeout: 3s, pending_timeout: 1s}
  judge: {error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s, failures_before_rollback: 3, inconclusive_limit: 5}
deployments:
  - {ref: production/app, replicas: 3, version: v1.2.2}
apps:
  production/app@v1.2.2: {rps: 200, error_ratio: 0.001}
  production/app@v1.2.3: {pods: crashloop}
script:
  - {at: 50ms, sink: {name: slack, state: down}}
  - {at: 60ms, sink: {name: pagerduty, state: error}}
  - {at: 300ms, deploy: {deployment: production/app, version: v1.2.3}}
  - {at: 2s, sink: {name: pagerduty, state: down}}
  - {at: 2500ms, sink: {name: slack, state: error}}
  - {at: 3s, sink: {name: pagerduty, state: rate_limited}}
  - {at: 3500ms, sink: {name: slack, state: rate_limited}}
  - {at: 4500ms, sink: {name: pagerduty, state: up}}
  - {at: 5s, sink: {name: slack, state: up}}
expect:
  production/app: {outcome: rolled_back, reason: crashloop}
"#;

/// Scenarios of the corpus that page, post and fail sinks.
const CORPUS: &[&str] = &[
    "tests/scenarios/error-spike-rolls-back.yaml",
    "tests/scenarios/pagerduty-down-page-delivered-later.yaml",
    "tests/scenarios/slack-rate-limited-does-not-block.yaml",
    "tests/scenarios/prometheus-down-is-blind-not-a-rollback.yaml",
    "tests/scenarios/bad-annotation-falls-back-to-defaults.yaml",
];

fn assert_no_secret(what: &str, text: &str) {
    for secret in [ROUTING_KEY, WEBHOOK_PATH, "B0SIM"] {
        assert!(
            !text.contains(secret),
            "{what} holds the secret {secret:?}:\n{}",
            excerpt(text, secret)
        );
    }
}

fn excerpt(text: &str, needle: &str) -> String {
    text.lines()
        .filter(|l| l.contains(needle))
        .take(5)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn simulate_logs_at_debug_never_hold_a_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let failing = dir.path().join("sinks-failing.yaml");
    std::fs::write(&failing, SINKS_FAILING).expect("write");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = CORPUS.iter().map(|f| root.join(f)).collect();
    files.push(failing);
    let out = Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
        .args(["--log-format", "json", "simulate", "--json"])
        .args(&files)
        .env("RUST_LOG", "debug")
        .output()
        .expect("run the binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the scenarios failed:\n{stdout}\n{}",
        stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    // The sinks really failed, so the error paths were taken and logged.
    assert!(
        stderr.contains("page not delivered") && stderr.contains("Slack message not delivered"),
        "no sink error was logged"
    );
    assert_no_secret("stdout", &stdout);
    assert_no_secret("the debug log", &stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_messages_and_pages_never_hold_a_secret() {
    let scenario = Scenario::parse(SINKS_FAILING, "sinks-failing.yaml").expect("valid scenario");
    let config = runner::daemon_config(&scenario, "sinks-failing.yaml").expect("valid config");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let sim = Simulation::start(&scenario, config, "sinks-failing.yaml", &shutdown)
        .await
        .expect("simulation");
    assert_eq!(
        sim.secrets.pagerduty_routing_key.as_deref(),
        Some(ROUTING_KEY)
    );
    assert!(
        sim.secrets
            .slack_webhook_url
            .as_deref()
            .is_some_and(|u| u.contains(WEBHOOK_PATH))
    );
    let client = kube::Client::try_from(kube::Config::new(sim.api_url.parse().expect("API URL")))
        .expect("client");
    let status = daemon::Status::default();
    let daemon = tokio::spawn(daemon::run(
        sim.config.clone(),
        sim.secrets.clone(),
        client,
        shutdown.child_token(),
        status.clone(),
    ));
    for _ in 0..1500 {
        if status.ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = tokio::time::Instant::now();
    let mut script: Vec<_> = scenario.script.iter().collect();
    script.sort_by_key(|e| e.at);
    for event in script {
        tokio::time::sleep_until(started + event.at).await;
        if !matches!(event.action, Action::RestartWatchdog { .. }) {
            sim.play(&event.action);
        }
    }
    tokio::time::sleep_until(started + Duration::from_secs(7)).await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), daemon).await;

    let events = serde_json::to_string(&sim.cluster.events()).expect("events");
    assert!(
        events.contains("RolledBack") || events.contains("roll"),
        "no Event recorded: {events}"
    );
    assert_no_secret("the Kubernetes Events", &events);
    let deployment = sim
        .cluster
        .deployment_json("production", "app")
        .expect("the Deployment");
    assert_no_secret("the Deployment (annotations)", &deployment.to_string());

    let slack = sim.slack.received();
    assert!(!slack.is_empty(), "no Slack message arrived");
    for r in &slack {
        assert_no_secret("a Slack message", &r.body.to_string());
    }
    let pages = sim.pagerduty.received();
    assert!(!pages.is_empty(), "no page arrived");
    for r in &pages {
        let mut body = r.body.clone();
        // The one legitimate place of the routing key.
        assert_eq!(body["routing_key"], ROUTING_KEY);
        if let Some(o) = body.as_object_mut() {
            o.remove("routing_key");
        }
        assert_no_secret("a PagerDuty event (besides routing_key)", &body.to_string());
    }
}

#[test]
fn refused_secrets_and_configs_never_echo_a_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "mode: enforce\n").expect("write");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "watch: {window: soon}\n").expect("write");
    let webhook_file = dir.path().join("webhook");
    std::fs::write(&webhook_file, format!("not a url {WEBHOOK_PATH}")).expect("write");
    let with_file = dir.path().join("with-file.yaml");
    std::fs::write(
        &with_file,
        format!(
            "secrets: {{slack_webhook_url_file: {:?}}}\n",
            webhook_file.display().to_string()
        ),
    )
    .expect("write");
    let cases: [(&Path, Option<&str>); 3] = [
        // A webhook URL that is not a URL, from the environment and from a file.
        (&good, Some("::not a url T0SIM/B0SIM/simulated")),
        (&with_file, None),
        // A config error while the secrets are set.
        (
            &bad,
            Some("https://hooks.slack.com/services/T0SIM/B0SIM/simulated"),
        ),
    ];
    for (config, webhook) in cases {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"));
        cmd.args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .env("RUST_LOG", "debug")
            .env("KUBECONFIG", dir.path().join("none"))
            .env("DEPLOY_WATCHDOG_PAGERDUTY_ROUTING_KEY", ROUTING_KEY);
        match webhook {
            Some(w) => cmd.env("DEPLOY_WATCHDOG_SLACK_WEBHOOK_URL", w),
            None => cmd.env_remove("DEPLOY_WATCHDOG_SLACK_WEBHOOK_URL"),
        };
        let out = cmd.output().expect("run the binary");
        assert_eq!(out.status.code(), Some(2), "{}", config.display());
        assert_no_secret("stdout", &String::from_utf8_lossy(&out.stdout));
        assert_no_secret("stderr", &String::from_utf8_lossy(&out.stderr));
    }
}

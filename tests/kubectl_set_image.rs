//! A deploy by real `kubectl set image` against `deploy-watchdog simulate --serve`, guarded by
//! the daemon run as its own process: the image changes, the version label stays behind, the
//! pods run the bad image's errors, and the watchdog judges the image's version, says the label
//! is stale, and rolls back. Skipped, with a notice, only when kubectl is absent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{kubectls, serve, wait_for};

const SCENARIO: &str = r#"
name: kubectl-set-image
description: v1.2.3 serves 5% errors; kubectl deploys it with set image.
duration: 1h
config:
  mode: enforce
  watch: {window: 20s, interval: 200ms, rollout_timeout: 20s, pending_timeout: 10s}
  judge: {error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s, failures_before_rollback: 3}
deployments:
  - {ref: production/app, replicas: 3, version: v1.2.2, sidecars: [istio-proxy]}
apps:
  production/app@v1.2.2: {pods: running, rps: 200, error_ratio: 0.001}
  production/app@v1.2.3: {pods: running, rps: 200, error_ratio: 0.05}
script: []
"#;

fn kubectl(bin: &PathBuf, kubeconfig: &PathBuf, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", "production"])
        .args(args)
        .env("HOME", "/nonexistent-home")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn kubectl_set_image_of_a_bad_release_is_judged_by_its_image_and_rolled_back() {
    let Some(bin) = kubectls().into_iter().next() else {
        println!("SKIPPED: kubectl is not on PATH");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("kubectl-set-image.yaml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let (_served, kubeconfig, config) = serve(&scenario, dir.path());

    let (_daemon, lines) = support::run_daemon(&config, &kubeconfig, &[]);
    let mut log = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log
        .iter()
        .any(|l: &String| l.contains("initial sync complete"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => log.push(l),
            Err(_) => panic!("the daemon never synced:\n{}", log.join("\n")),
        }
    }

    let (ok, out) = kubectl(
        &bin,
        &kubeconfig,
        &[
            "set",
            "image",
            "deployment/app",
            "app=registry.example.com/production/app:v1.2.3",
        ],
    );
    assert!(ok, "kubectl set image failed: {out}");
    assert!(out.contains("image updated"), "{out}");

    let get = || {
        let (ok, out) = kubectl(
            &bin,
            &kubeconfig,
            &["get", "deployment", "app", "-o", "json"],
        );
        assert!(ok, "{out}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let image = |d: &Value| {
        d.pointer("/spec/template/spec/containers")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["name"] == "app"))
            .and_then(|c| c["image"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    // kubectl changed the image only: the label still says v1.2.2.
    let d = get();
    assert_eq!(image(&d), "registry.example.com/production/app:v1.2.3");
    assert_eq!(
        d.pointer("/spec/template/metadata/labels/app.kubernetes.io~1version"),
        Some(&Value::from("v1.2.2"))
    );

    let mut state = Value::Null;
    wait_for(
        "the watchdog to roll the set-image deploy back",
        Duration::from_secs(90),
        || {
            let d = get();
            let annotation = |key: &str| {
                d.pointer(&format!("/metadata/annotations/{}", key.replace('/', "~1")))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            state = annotation("deploy-watchdog.io/state")
                .and_then(|v| serde_json::from_str(&v).ok())
                .unwrap_or(Value::Null);
            image(&d) == "registry.example.com/production/app:v1.2.2"
                && annotation("deploy-watchdog.io/verdict").as_deref() == Some("rolled_back")
        },
    );
    assert_eq!(
        (
            &state["phase"]["reason"],
            &state["to_version"],
            &state["from_version"]
        ),
        (
            &Value::from("error_rate"),
            &Value::from("v1.2.3"),
            &Value::from("v1.2.2")
        ),
        "judged as the image's v1.2.3 and rolled back for its errors: {state}"
    );
    let (ok, status) = kubectl(
        &bin,
        &kubeconfig,
        &["rollout", "status", "deployment/app", "--timeout=60s"],
    );
    assert!(ok && status.contains("successfully rolled out"), "{status}");

    // The Events name the versions that ran: the image's v1.2.3, the label's stale v1.2.2.
    let (ok, events) = kubectl(&bin, &kubeconfig, &["get", "events", "-o", "json"]);
    assert!(ok, "{events}");
    let events: Value = serde_json::from_str(&events).unwrap();
    let items = events["items"].as_array().cloned().unwrap_or_default();
    let text = |reason: &str| -> Vec<String> {
        items
            .iter()
            .filter(|e| e["reason"] == reason)
            .map(|e| {
                e["message"]
                    .as_str()
                    .or(e["note"].as_str())
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    let stale = text("VersionLabelStale");
    assert_eq!(
        stale.len(),
        1,
        "one Warning Event names both versions: {items:?}"
    );
    assert!(
        stale[0].contains("v1.2.2 → v1.2.3 (image), label still says v1.2.2"),
        "{stale:?}"
    );
    let rolled_back = text("RolledBack");
    assert!(
        rolled_back
            .iter()
            .any(|m| m.contains("Rolled back v1.2.3 to v1.2.2")),
        "{rolled_back:?}"
    );
}

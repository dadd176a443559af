//! The benchmark keeps working: a tiny run (N = 10, K = 2) produces every figure. No timing is
//! asserted; BENCHMARKS.md holds the measured figures.
#![cfg(feature = "sim")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

fn kubectl_on_path() -> bool {
    Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_tiny_benchmark_run_produces_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--sizes", "10", "--ks", "2", "--measure", "1s"])
        .args(["--samples", "3", "--reference", "2", "--window", "15s"])
        .arg("--exe")
        .arg(env!("CARGO_BIN_EXE_deploy-watchdog"))
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| crash-loop → rollback PATCH p50 / p99 (ms) |"));

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let s = &v["sizes"][0];
    assert_eq!(s["deployments"], 10);
    assert_eq!(s["pods"], 100);
    for figure in [
        "/start_to_ready_s",
        "/peak_rss_mib",
        "/idle/rss_mib",
        "/idle/millicores",
        "/watched/0/rss_mib",
        "/watched/0/millicores",
        "/watched/0/prometheus_queries_per_interval",
        "/watched/0/quiet_after_s",
        "/crashloop_to_rollback/p50_ms",
        "/crashloop_to_rollback/p99_ms",
        "/breach_to_action/p99_ms",
        "/breach_to_action_overhead/p50_ms",
        "/breach_to_action_overhead/p99_ms",
        "/daemon_requests_per_rollout",
    ] {
        assert!(
            s.pointer(figure).is_some_and(Value::is_number),
            "{figure} missing: {s:#}"
        );
    }
    // Figures are measurements, not placeholders: every one above is positive (a queue that
    // drained at once may take 0 s to go quiet), and a p50 is never above its p99.
    for figure in [
        "/start_to_ready_s",
        "/peak_rss_mib",
        "/idle/rss_mib",
        "/watched/0/rss_mib",
        "/watched/0/millicores",
        "/watched/0/prometheus_queries_per_interval",
        "/crashloop_to_rollback/p50_ms",
        "/crashloop_to_rollback/p99_ms",
        "/breach_to_action/p99_ms",
        "/daemon_requests_per_rollout",
    ] {
        let v = s.pointer(figure).and_then(Value::as_f64).unwrap_or(0.0);
        assert!(v > 0.0, "{figure} is {v}: {s:#}");
    }
    for figure in [
        "/crashloop_to_rollback",
        "/breach_to_action",
        "/breach_to_action_overhead",
    ] {
        let at = |p: &str| s.pointer(&format!("{figure}/{p}")).and_then(Value::as_f64);
        if let (Some(p50), Some(p99)) = (at("p50_ms"), at("p99_ms")) {
            assert!(p50 <= p99, "{figure}: p50 {p50} ms > p99 {p99} ms");
        } else {
            assert!(at("p99_ms").is_some(), "{figure} has no p99: {s:#}");
        }
    }
    assert_eq!(s["watched"][0]["k"], 2);
    assert!(s["idle"]["requests_per_minute"].is_object());
    assert_eq!(s["crashloop_to_rollback"]["samples"], 3);
    assert_eq!(s["breach_to_action_overhead"]["samples"], 3);
    if kubectl_on_path() {
        assert!(
            s.pointer("/reference/detection/p50_ms")
                .is_some_and(Value::is_number)
        );
        assert!(
            s.pointer("/reference/detection_ratio_p50")
                .is_some_and(Value::is_number)
        );
        assert!(
            s.pointer("/reference/requests_ratio")
                .is_some_and(Value::is_number)
        );
    }
}

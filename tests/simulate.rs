//! The scenario corpus and the `simulate` contract, through the real binary.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
}

fn corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_scenario_in_the_corpus_meets_its_expectations() {
    let files = corpus();
    assert!(
        files.len() >= 20,
        "the corpus has {} scenarios",
        files.len()
    );
    let out = bin()
        .arg("simulate")
        .arg("--json")
        .args(&files)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut failed = Vec::new();
    let mut ran = 0;
    for line in stdout.lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        ran += 1;
        if r["ok"] != true {
            failed.push(format!("{}: {}", r["scenario"], r["failures"]));
        }
        // The documented shape.
        for key in ["scenario", "ok", "failures", "rollouts", "duration_ms"] {
            assert!(r.get(key).is_some(), "{key} missing in {line}");
        }
    }
    assert_eq!(
        ran,
        files.len(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        failed.is_empty(),
        "failed scenarios:\n{}",
        failed.join("\n")
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn an_unmet_expectation_exits_1_and_says_which() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("wrong.yaml");
    std::fs::write(
        &file,
        "name: wrong-expectation\nduration: 3s\nconfig:\n  watch: {window: 1s, interval: 100ms, rollout_timeout: 2s}\n\
         deployments:\n  - {ref: production/app, replicas: 2, version: v1}\n\
         apps:\n  production/app@v2: {pods: crashloop}\n\
         script:\n  - {at: 200ms, deploy: {deployment: production/app, version: v2}}\n\
         expect:\n  production/app: {outcome: passed, final_version: v2}\n",
    )
    .expect("write");
    let out = bin()
        .arg("simulate")
        .arg("--json")
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["ok"], false);
    let failures = r["failures"].to_string();
    assert!(
        failures.contains("outcome was rolled_back, expected passed"),
        "{failures}"
    );
    assert!(
        failures.contains("final version was v1, expected v2"),
        "{failures}"
    );
}

#[test]
fn an_invalid_scenario_exits_2_naming_file_and_field_and_runs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/good-release-passes.yaml");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: bad\nconfig:\n  watch: {window: forever}\n").expect("write");
    let out = bin()
        .arg("simulate")
        .arg(&good)
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("watch.window"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn check_config_accepts_the_documented_example_and_rejects_bad_fields_with_exit_2() {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/deploy-watchdog.yaml");
    let out = bin()
        .arg("check-config")
        .arg(&example)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "judge:\n  error_rate_threshold: 5\n").expect("write");
    let out = bin().arg("check-config").arg(&bad).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("judge.error_rate_threshold"));
    // The same file through `run` stops start-up with exit 2 before touching any cluster.
    let out = bin()
        .arg("run")
        .arg("--config")
        .arg(&bad)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
}

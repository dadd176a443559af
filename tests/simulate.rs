//! The scenario corpus and the `simulate` contract, through the real binary.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
}

/// Every file in `tests/scenarios/`: each must be a scenario (`NAME.yaml`), none is left out.
fn corpus() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/scenarios exists")
        .map(|e| e.expect("a readable entry").path())
        .collect();
    files.sort();
    for f in &files {
        assert!(
            f.is_file() && f.extension().is_some_and(|x| x == "yaml"),
            "{} is in the corpus but is not a .yaml scenario file",
            f.display()
        );
    }
    assert!(!files.is_empty(), "the corpus is empty");
    files
}

#[test]
fn every_scenario_in_the_corpus_meets_its_expectations() {
    let files = corpus();
    let out = bin()
        .arg("simulate")
        .arg("--json")
        .args(&files)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut failed = Vec::new();
    let mut ran = std::collections::BTreeSet::new();
    for line in stdout.lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        ran.insert(r["scenario"].as_str().unwrap_or_default().to_string());
        if r["ok"] != true {
            failed.push(format!("{}: {}", r["scenario"], r["failures"]));
        }
        // The documented shape.
        for key in ["scenario", "ok", "failures", "rollouts", "duration_ms"] {
            assert!(r.get(key).is_some(), "{key} missing in {line}");
        }
    }
    // Every file ran, under its own name (a scenario is named after its file).
    let names: std::collections::BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        ran,
        names,
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

/// Writes `text` as a scenario file and runs `simulate --json` on it.
fn simulate_text(name: &str, text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, text).expect("write");
    let out = bin()
        .arg("simulate")
        .arg("--json")
        .arg(&file)
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CRASHLOOP: &str = "duration: 4s\n\
    config:\n  watch: {window: 1s, interval: 100ms, rollout_timeout: 2s}\n\
    deployments:\n  - {ref: production/app, replicas: 2, version: v1}\n\
    apps:\n  production/app@v2: {pods: crashloop}\n\
    script:\n  - {at: 200ms, deploy: {deployment: production/app, version: v2}}\n";

#[test]
fn a_typo_in_expect_exits_2_naming_the_file_and_the_key_and_runs_nothing() {
    let cases = [
        (
            "expect:\n  production/ap: {pages: 0}\n",
            "expect.production/ap: production/ap is not one of the scenario's deployments",
        ),
        (
            "expect:\n  production/app: {outcome: rolled_back, tiggers: 1}\n",
            "expect.production/app: unknown field `tiggers`",
        ),
        (
            "expect:\n  production/app: {}\n",
            "expect.production/app: an empty expectation checks nothing",
        ),
        ("expect: {}\n", "expect: missing or empty"),
        ("", "expect: missing or empty"),
    ];
    for (expect, needle) in cases {
        let (code, stdout, stderr) =
            simulate_text("typo", &format!("name: typo\n{CRASHLOOP}{expect}"));
        assert_eq!(code, Some(2), "{expect}: {stdout}{stderr}");
        assert!(
            stderr.contains("typo.yaml") && stderr.contains(needle),
            "{needle:?} not in {stderr:?}"
        );
        assert!(stdout.is_empty(), "nothing ran: {stdout}");
    }
}

#[test]
fn a_rollback_not_verified_when_the_run_ends_is_undecided() {
    // The restored version reports another version on /health, so the rollback cannot be
    // verified within rollout_timeout (5 s); the run ends at 3 s.
    let text = "name: unverified\nduration: 3s\n\
        config:\n  watch: {window: 2s, interval: 100ms, rollout_timeout: 5s}\n\
        deployments:\n  - {ref: production/app, replicas: 2, version: v1}\n\
        apps:\n  production/app@v1: {health: {version: v0}}\n  production/app@v2: {pods: crashloop}\n\
        script:\n  - {at: 200ms, deploy: {deployment: production/app, version: v2}}\n\
        expect:\n  production/app: {outcome: rolled_back, verified: true}\n";
    let (code, stdout, stderr) = simulate_text("unverified", text);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    let rollout = &r["rollouts"][0];
    assert_eq!(rollout["outcome"], "undecided", "{r}");
    assert_eq!(rollout["verified"], false, "{r}");
    assert_eq!(rollout["rollbacks"], 1, "{r}");
    let failures = r["failures"].to_string();
    assert!(
        failures.contains("outcome was undecided, expected rolled_back")
            && failures.contains("rollback verified: false, expected true"),
        "{failures}"
    );
}

/// The page is sent a second time with the same dedup key while the scenario runs: `pages`
/// (distinct keys) still says 1, `triggers` sees both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_sent_twice_fails_triggers_1() {
    use deploy_watchdog::sim::runner::{self, Simulation};
    use deploy_watchdog::sim::scenario::Scenario;

    let text = format!(
        "name: double-page\n{CRASHLOOP}expect:\n  production/app: {{outcome: rolled_back, pages: 1, triggers: 1}}\n"
    );
    let s = Scenario::parse(&text, "double-page.yaml").expect("valid");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let config = runner::daemon_config(&s, "double-page.yaml").expect("config");
    let sim = Simulation::start(&s, config, "double-page.yaml", &shutdown)
        .await
        .expect("simulation");
    let url = format!("{}/v2/enqueue", sim.config.notify.pagerduty.url);
    let pagerduty = sim.pagerduty.clone();
    let resend = tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(4);
        while tokio::time::Instant::now() < deadline {
            if let Some(page) = pagerduty
                .accepted()
                .into_iter()
                .find(|p| p.body["event_action"] == "trigger")
            {
                let status = deploy_watchdog::probes::http_client()
                    .post(&url)
                    .json(&page.body)
                    .send()
                    .await
                    .expect("PagerDuty answers")
                    .status();
                assert_eq!(status.as_u16(), 202);
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the watchdog never paged");
    });
    let report = runner::run_in(&sim, &s, "double-page.yaml", None)
        .await
        .expect("runs");
    resend.await.expect("sent again");
    let rollout = &report.rollouts[0];
    assert_eq!((rollout.pages, rollout.triggers), (1, 2), "{report:?}");
    assert!(!report.ok);
    assert_eq!(
        report.failures,
        vec!["production/app: PagerDuty triggers accepted: 2, expected 1".to_string()]
    );
}

#[test]
fn a_run_ends_only_once_a_replacement_for_a_killed_leader_leads() {
    // The bad release is rolled back and verified within ~1 s; the leader is killed at 2 s, after
    // everything is over. The Lease (2 s) must expire before the standby leads: the run goes on
    // until it does, and what the new leader does then (nothing) is checked.
    let text = "name: late-kill\nduration: 12s\nwatchdogs: 2\n\
        config:\n  watch: {window: 4s, interval: 100ms, rollout_timeout: 3s}\n\
        deployments:\n  - {ref: production/app, replicas: 2, version: v1}\n\
        apps:\n  production/app@v2: {pods: crashloop}\n\
        script:\n  - {at: 200ms, deploy: {deployment: production/app, version: v2}}\n\
        \x20 - {at: 2s, kill_leader: {}}\n\
        expect:\n  production/app: {outcome: rolled_back, triggers: 1, rollbacks: 1, verified: true}\n";
    let (code, stdout, stderr) = simulate_text("late-kill", text);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("json");
    let kills = r["kills"].as_array().expect("kills");
    assert_eq!(kills.len(), 1, "{r}");
    assert_eq!(kills[0]["event"], "kill_leader");
    assert_eq!(kills[0]["killed"].as_array().map(Vec::len), Some(1), "{r}");
    let killed_at = kills[0]["at_ms"].as_u64().expect("at_ms");
    let ended = r["duration_ms"].as_u64().expect("duration_ms");
    assert!(
        ended >= killed_at + 1000,
        "the run ended {} ms after the kill, before the Lease could pass to the standby: {r}",
        ended - killed_at
    );
}

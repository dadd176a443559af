//! The simulated GitOps controllers bite: with the watchdog's GitOps handling off, a rollback of
//! a release that Argo CD or Flux applies is undone by the controller, and the watchdog fights
//! it (the bad version judged and rolled back again, or back in place when the run ends).

use std::path::PathBuf;
use std::process::Command;

/// Runs a corpus scenario with `gitops: off` merged into its config; the rollouts reported.
fn run_without_gitops(file: &str) -> Vec<serde_json::Value> {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let text = std::fs::read_to_string(corpus.join(file)).expect("the scenario exists");
    let text = text.replacen("config:\n", "config:\n  gitops: off\n", 1);
    assert!(text.contains("gitops: off"), "{file} has a config: map");
    let dir = std::env::temp_dir().join(format!("gitops-fight-{}-{file}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let path = dir.join(file);
    std::fs::write(&path, text).expect("written");
    let out = Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
        .arg("simulate")
        .arg("--json")
        .arg(&path)
        .output()
        .expect("runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().next().unwrap_or_else(|| {
        panic!(
            "no report; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report: serde_json::Value = serde_json::from_str(line).expect("a JSON report");
    report["rollouts"].as_array().cloned().unwrap_or_default()
}

fn assert_fight(file: &str, bad: &str) {
    let rollouts = run_without_gitops(file);
    let rolled_back = rollouts
        .iter()
        .filter(|r| r["outcome"] == "rolled_back" || r["rollbacks"].as_u64() > Some(0))
        .count();
    let bad_back = rollouts.iter().any(|r| r["final_version"] == bad);
    assert!(
        rolled_back > 1 || bad_back,
        "{file} with gitops off: expected the controller to undo the rollback (more than one rollback, or {bad} back at the end); rollouts: {rollouts:#?}"
    );
}

#[test]
fn without_the_pause_argo_cd_self_heal_undoes_the_rollback() {
    assert_fight("gitops-argocd-rollback-sticks.yaml", "v3.2.0");
}

#[test]
fn without_the_pause_flux_reapplies_the_bad_release() {
    assert_fight("gitops-flux-kustomization-rollback-sticks.yaml", "v2.1.0");
}

//! Helpers shared by the integration tests. Each test binary uses a part of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use deploy_watchdog::sim::scenario::DeploymentSpec;

/// An opted-in Deployment spec for the simulated cluster.
pub fn spec(reference: &str, version: &str, replicas: i32) -> DeploymentSpec {
    DeploymentSpec {
        reference: reference.into(),
        replicas,
        version: version.into(),
        opted_in: true,
        paused: false,
        annotations: BTreeMap::new(),
    }
}

/// `kubectl` from PATH plus an older release installed beside it, when present; empty when
/// kubectl is not installed.
pub fn kubectls() -> Vec<PathBuf> {
    let Ok(out) = Command::new("sh")
        .arg("-c")
        .arg("command -v kubectl")
        .output()
    else {
        return Vec::new();
    };
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if path.is_empty() {
        return Vec::new();
    }
    let mut found = vec![PathBuf::from(&path)];
    if let Ok(real) = std::fs::canonicalize(&path)
        && let Some(dir) = real.parent()
    {
        for old in ["kubectl.1.28", "kubectl.1.27"] {
            let p = dir.join(old);
            if p.exists() {
                found.push(p);
                break;
            }
        }
    }
    found
}

/// `deploy-watchdog simulate --json FILES`: the exit code, one JSON object per scenario, and
/// the failures of those that did not meet their expectations.
pub fn simulate_json(
    files: &[PathBuf],
) -> (Option<i32>, Vec<serde_json::Value>, Vec<String>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
        .arg("simulate")
        .arg("--json")
        .args(files)
        .output()
        .expect("runs");
    let reports: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let failed = reports
        .iter()
        .filter(|r| r["ok"] != true)
        .map(|r| format!("{}: {} {}", r["scenario"], r["failures"], r["rollouts"]))
        .collect();
    (
        out.status.code(),
        reports,
        failed,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

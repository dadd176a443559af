//! What the watchdog says about the versions that run, through `deploy-watchdog simulate`: a
//! `kubectl set image` deploy names the image's version and the stale label, and a sidecar-only
//! rollout names the container that changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn simulate(scenario: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scenarios")
        .join(scenario);
    let out = Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
        .arg("simulate")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{scenario} failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn a_set_image_deploy_is_reported_as_the_image_with_the_label_stale() {
    let out = simulate("set-image-good-release-passes.yaml");
    let stale: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("VersionLabelStale"))
        .collect();
    assert_eq!(stale.len(), 1, "one Warning Event:\n{out}");
    assert!(
        stale[0].contains("v1.2.2 → v1.2.3 (image), label still says v1.2.2"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("Slack")
            && l.contains("Starting production deploy of v1.2.3")
            && l.contains("label still says v1.2.2")),
        "{out}"
    );
    assert!(!out.contains("RolledBack"), "{out}");
}

#[test]
fn a_sidecar_only_rollout_names_the_container_that_changed() {
    let out = simulate("sidecar-only-change-is-a-rollout.yaml");
    assert!(
        out.lines().any(|l| l.contains("RolloutDetected")
            && l.contains(
                "changed: istio-proxy docker.io/istio/proxyv2:1.22.0 → 1.22.1 (app unchanged)"
            )),
        "{out}"
    );
    assert!(!out.contains("VersionLabelStale"), "{out}");
}

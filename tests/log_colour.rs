//! Text logs are coloured on a terminal only: a file, a pipe or `kubectl logs` (the container's
//! stderr is a pipe) gets no escape codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

/// `run` with a config that has no notification sink (it warns) and a kubeconfig that does not
/// exist (it stops): a few log lines, then exit.
fn run_args(dir: &std::path::Path) -> Vec<String> {
    let config = dir.join("watchdog.yaml");
    std::fs::write(&config, "mode: dry_run\nserver: {listen: '127.0.0.1:0'}\n").unwrap();
    vec![
        "run".into(),
        "--config".into(),
        config.display().to_string(),
        "--kubeconfig".into(),
        dir.join("missing-kubeconfig").display().to_string(),
    ]
}

#[test]
fn text_logs_to_a_pipe_have_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
        .args(run_args(dir.path()))
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WARN"), "some log lines: {stderr}");
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in a pipe: {stderr:?}"
    );
}

#[test]
fn text_logs_on_a_terminal_are_coloured() {
    // `script` gives the process a pseudo-terminal, as an operator's shell would.
    if Command::new("script").arg("--version").output().is_err() {
        println!("SKIPPED: script(1) is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let command = std::iter::once(env!("CARGO_BIN_EXE_deploy-watchdog").to_string())
        .chain(run_args(dir.path()))
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("WARN"), "some log lines: {tty}");
    assert!(tty.contains("\x1b["), "no colour on a terminal: {tty:?}");
}

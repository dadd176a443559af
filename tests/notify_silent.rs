//! A watchdog that would roll back telling nobody does not start: `run` in `enforce` mode with
//! no notification sink exits 2 before it looks for a cluster, naming PagerDuty, Slack and
//! `notify.allow_silent`; `check-config` warns instead (it checks a file, not the environment).

use std::path::Path;
use std::process::{Command, Output};

const SECRET_ENV: [&str; 2] = [
    "DEPLOY_WATCHDOG_PAGERDUTY_ROUTING_KEY",
    "DEPLOY_WATCHDOG_SLACK_WEBHOOK_URL",
];

fn deploy_watchdog(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"));
    cmd.args(args)
        .arg(config)
        // No cluster is reachable: a config accepted goes on to fail there with exit 1.
        .args(if args[0] == "run" {
            &["--kubeconfig", "/nonexistent/kubeconfig"][..]
        } else {
            &[][..]
        })
        .env("RUST_LOG", "info")
        .env_remove("DEPLOY_WATCHDOG_CONFIG");
    for key in SECRET_ENV {
        cmd.env_remove(key);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run the binary")
}

fn write(dir: &Path, name: &str, yaml: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write");
    path
}

#[test]
fn run_refuses_enforce_without_a_sink_with_exit_2_and_says_what_to_configure() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The documented example: enforce, both sinks enabled, no secret.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/deploy-watchdog.yaml");
    let disabled = write(
        dir.path(),
        "disabled.yaml",
        "notify: {pagerduty: {enabled: false}, slack: {enabled: false}}\n",
    );
    let absent = write(
        dir.path(),
        "absent.yaml",
        "secrets: {pagerduty_routing_key_file: /nonexistent/pd, slack_webhook_url_file: /nonexistent/slack}\n",
    );
    for (config, env) in [
        (example.as_path(), &[][..]),
        (absent.as_path(), &[][..]),
        // Keys for sinks the config turns off.
        (
            disabled.as_path(),
            &[
                (SECRET_ENV[0], "R0UTING0KEY0OF0THIRTY0TWO0CHARS0"),
                (SECRET_ENV[1], "https://hooks.example/x"),
            ][..],
        ),
    ] {
        let out = deploy_watchdog(&["run", "--config"], config, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", config.display());
        for needle in [
            "config field `notify`",
            "mode is enforce but no notification sink",
            "PagerDuty",
            "DEPLOY_WATCHDOG_PAGERDUTY_ROUTING_KEY",
            "Slack",
            "DEPLOY_WATCHDOG_SLACK_WEBHOOK_URL",
            "notify.allow_silent: true",
        ] {
            assert!(
                stderr.contains(needle),
                "{}: {stderr} lacks {needle}",
                config.display()
            );
        }
        assert!(
            !stderr.contains("R0UTING0KEY0OF0THIRTY0TWO0CHARS0")
                && !stderr.contains("hooks.example"),
            "{stderr}"
        );
    }
}

#[test]
fn one_sink_or_allow_silent_or_dry_run_starts_and_each_sinks_state_is_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/deploy-watchdog.yaml");
    let silent = write(dir.path(), "silent.yaml", "notify: {allow_silent: true}\n");
    let dry_run = write(dir.path(), "dry.yaml", "mode: dry_run\n");
    let slack_file = write(dir.path(), "slack", "https://hooks.example/x\n");
    let slack_only = write(
        dir.path(),
        "slack.yaml",
        &format!(
            "secrets: {{slack_webhook_url_file: {}, pagerduty_routing_key_file: /nonexistent/pd}}\n",
            slack_file.display()
        ),
    );
    for (config, env, slack_on) in [
        (
            example.as_path(),
            &[(SECRET_ENV[0], "R0UTING0KEY0OF0THIRTY0TWO0CHARS0")][..],
            false,
        ),
        (slack_only.as_path(), &[][..], true),
        (silent.as_path(), &[][..], false),
        (dry_run.as_path(), &[][..], false),
    ] {
        let out = deploy_watchdog(&["--log-format", "json", "run", "--config"], config, env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Past the config: the (absent) cluster stops it.
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", config.display());
        let sinks: Vec<serde_json::Value> = stderr
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["message"] == "notification sink")
            .collect();
        assert_eq!(sinks.len(), 2, "one line per sink, once: {stderr}");
        let slack = sinks.iter().find(|l| l["sink"] == "slack").expect("slack");
        assert_eq!(slack["state"] == "on", slack_on, "{slack}");
        assert_eq!(
            slack["level"],
            if slack_on { "INFO" } else { "WARN" },
            "{slack}"
        );
        assert!(
            !stderr.contains("R0UTING0KEY0OF0THIRTY0TWO0CHARS0")
                && !stderr.contains("hooks.example")
        );
    }
}

#[test]
fn check_config_warns_about_a_silent_enforce_config_and_passes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/deploy-watchdog.yaml");
    let out = deploy_watchdog(&["check-config"], &example, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("warning:") && stderr.contains("notify.allow_silent"),
        "{stderr}"
    );
    let named = write(
        dir.path(),
        "named.yaml",
        "secrets: {pagerduty_routing_key_file: /run/secrets/pd}\n",
    );
    let out = deploy_watchdog(&["check-config"], &named, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

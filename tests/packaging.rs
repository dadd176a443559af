//! Packaging against the real binary: the container image's ENTRYPOINT/CMD parse, the configs
//! the chart and the systemd unit ship pass `check-config`, and `/metrics`, `/healthz` and
//! `/readyz` are served while `run` guards a simulated cluster.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

#[cfg(feature = "sim")]
mod support;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The JSON array of a Dockerfile instruction (`ENTRYPOINT ["…"]`).
fn exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .find(|l| l.starts_with(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    serde_json::from_str(&line[instruction.len()..]).expect("exec form (a JSON array)")
}

#[test]
fn the_images_entrypoint_and_cmd_parse_with_the_binary_and_its_config_is_valid() {
    let dockerfile = read("Dockerfile");
    let entrypoint = exec_form(&dockerfile, "ENTRYPOINT");
    let cmd = exec_form(&dockerfile, "CMD");
    assert_eq!(entrypoint, ["/usr/local/bin/deploy-watchdog"]);
    // The image's config is the documented example, copied to the path CMD names.
    let copy = dockerfile
        .lines()
        .find(|l| l.starts_with("COPY config/"))
        .expect("the Dockerfile copies the example config");
    let mut parts = copy.split_whitespace().skip(1);
    let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
    let at = cmd
        .iter()
        .position(|a| a == "--config")
        .expect("CMD names --config");
    assert_eq!(cmd[at + 1], target);

    // Every flag in CMD parses: clap would reject an unknown one before printing help.
    let out = bin().args(&cmd).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} does not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bin()
        .arg("check-config")
        .arg(repo(source))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_chart_ships_the_documented_example_as_its_default_config() {
    assert_eq!(
        read("helm/deploy-watchdog/files/deploy-watchdog.yaml"),
        read("config/deploy-watchdog.yaml"),
        "helm/deploy-watchdog/files/deploy-watchdog.yaml must be a copy of config/deploy-watchdog.yaml"
    );
    let values: serde_json::Value =
        serde_norway::from_str(&read("helm/deploy-watchdog/values.yaml")).unwrap();
    assert_eq!(
        values["config"],
        serde_json::json!({}),
        "the chart's default config is the example itself"
    );
    let out = bin()
        .arg("check-config")
        .arg(repo("helm/deploy-watchdog/files/deploy-watchdog.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_systemd_units_command_and_config_pass_check_config() {
    let unit = read("systemd/deploy-watchdog.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let at = args.iter().position(|a| *a == "--config").unwrap();
    assert_eq!(args[at + 1], "/etc/deploy-watchdog/config.yaml");
    // The VM's example config, whose URLs a host outside the cluster can reach.
    assert!(unit.contains(
        "install -D -m 0644 config/deploy-watchdog-vm.yaml /etc/deploy-watchdog/config.yaml"
    ));
    let vm = read("config/deploy-watchdog-vm.yaml");
    assert!(
        !vm.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .any(|l| l.contains(".svc")),
        "the VM config must not name cluster DNS names"
    );
    // The credentials directory is loaded whole: each file is `deploy-watchdog_<file>`.
    let (id, dir) = unit
        .lines()
        .find_map(|l| l.strip_prefix("LoadCredential="))
        .and_then(|c| c.split_once(':'))
        .expect("LoadCredential=ID:DIRECTORY");
    assert_eq!(dir, "/etc/deploy-watchdog/credentials");
    // The port SocketBindAllow= allows is the config's.
    let allowed = unit
        .lines()
        .find_map(|l| l.strip_prefix("SocketBindAllow=tcp:"))
        .expect("SocketBindAllow=tcp:PORT");
    let listen: serde_json::Value = serde_norway::from_str(&vm).unwrap();
    assert!(
        listen["server"]["listen"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{allowed}")),
        "server.listen {} vs SocketBindAllow=tcp:{allowed}",
        listen["server"]["listen"]
    );

    let creds = tempfile::tempdir().unwrap();
    let hostname = "vm-1.example";
    let unit_env = |cmd: &mut Command| {
        for env in unit.lines().filter_map(|l| l.strip_prefix("Environment=")) {
            let (k, v) = env.split_once('=').unwrap();
            cmd.env(
                k,
                v.replace("%d", &creds.path().display().to_string())
                    .replace("%H", hostname),
            );
        }
    };
    // The flags parse as ExecStart gives them.
    let flags: Vec<String> = args
        .iter()
        .map(|a| a.replace("%d", &creds.path().display().to_string()))
        .collect();
    let out = bin().args(&flags).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Slack only (no PagerDuty key): valid; each host names itself.
    std::fs::write(
        creds.path().join(format!("{id}_slack-webhook-url")),
        "https://hooks.example/x",
    )
    .unwrap();
    let mut cmd = bin();
    unit_env(&mut cmd);
    let out = cmd
        .arg("check-config")
        .arg(repo("config/deploy-watchdog-vm.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(unit.contains("Environment=DEPLOY_WATCHDOG__LEADER_ELECTION__IDENTITY=%H"));
    // As `run` sees it: past the config and the secrets (Slack on, PagerDuty off), the absent
    // cluster stops it; with neither credential it refuses with exit 2.
    let mut cmd = bin();
    unit_env(&mut cmd);
    let out = cmd
        .env("RUST_LOG", "info")
        .args(["run", "--config"])
        .arg(repo("config/deploy-watchdog-vm.yaml"))
        .args(["--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("pagerduty") && stderr.contains("is absent"),
        "{stderr}"
    );
    std::fs::remove_file(creds.path().join(format!("{id}_slack-webhook-url"))).unwrap();
    let mut cmd = bin();
    unit_env(&mut cmd);
    let out = cmd
        .args(["run", "--config"])
        .arg(repo("config/deploy-watchdog-vm.yaml"))
        .args(["--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(unit.contains("RestartPreventExitStatus=2"));
}

/// `run` against the simulated cluster `simulate --serve` stands up: built with the simulation only.
#[cfg(feature = "sim")]
mod served {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::support::{Killed, serve, wait_for_value};

    fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((status, body))
    }

    const SCENARIO: &str = r#"
name: metrics-while-serving
description: "A release with 5% errors, deployed once the daemon has synced."
duration: 60s
config:
  watch: {window: 4s, interval: 100ms, rollout_timeout: 3s, pending_timeout: 1s}
  judge: {error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s, failures_before_rollback: 3}
deployments:
  - {ref: production/app, replicas: 3, version: v1.2.2}
apps:
  production/app@v1.2.2: {pods: running, rps: 200, error_ratio: 0.001}
  production/app@v1.2.3: {pods: running, rps: 200, error_ratio: 0.05}
script:
  - {at: 6s, deploy: {deployment: production/app, version: v1.2.3}}
expect:
  production/app: {outcome: rolled_back, reason: error_rate}
"#;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn set_listen(config: &Path, port: u16) {
        let mut c: serde_json::Value =
            serde_norway::from_str(&std::fs::read_to_string(config).unwrap()).unwrap();
        c["server"] = serde_json::json!({"listen": format!("127.0.0.1:{port}")});
        std::fs::write(config, serde_norway::to_string(&c).unwrap()).unwrap();
    }

    #[test]
    fn metrics_health_and_readiness_are_served_while_run_guards_a_simulated_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let scenario = dir.path().join("scenario.yaml");
        std::fs::write(&scenario, SCENARIO).unwrap();
        let (_sim, kubeconfig, config) = serve(&scenario, dir.path());
        let port = free_port();
        set_listen(&config, port);
        let log = dir.path().join("run.log");
        let run = Killed(
            bin()
                .args(["run", "--log-format", "json", "--config"])
                .arg(&config)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );

        wait_for_value("/healthz", Duration::from_secs(20), || {
            http_get(port, "/healthz").filter(|(s, _)| *s == 200)
        });
        wait_for_value("/readyz 200", Duration::from_secs(5), || {
            http_get(port, "/readyz").filter(|(s, _)| *s == 200)
        });
        let metrics = wait_for_value("the rollback in /metrics", Duration::from_secs(30), || {
            http_get(port, "/metrics").map(|(_, b)| b).filter(|b| {
            b.contains(r#"deploy_watchdog_rollout_outcomes_total{outcome="rolled_back",reason="error_rate"} 1"#)
        })
        });
        for expected in [
            "# HELP deploy_watchdog_rollouts_detected_total ",
            "deploy_watchdog_rollouts_detected_total 1",
            r#"deploy_watchdog_check_results_total{check="error_rate",result="answered"}"#,
            r#"deploy_watchdog_check_results_total{check="health",result="pass"}"#,
            r#"deploy_watchdog_provider_request_duration_seconds_count{provider="prometheus",result="answered"}"#,
            "deploy_watchdog_rollback_duration_seconds_count 1",
            r#"deploy_watchdog_pages_total{action="trigger",result="delivered"}"#,
            r#"deploy_watchdog_notifications_total{result="delivered"}"#,
            "deploy_watchdog_watches_active ",
            "deploy_watchdog_rollbacks_in_progress ",
            r#"deploy_watchdog_build_info{version=""#,
        ] {
            assert!(
                metrics.contains(expected),
                "{expected} missing in:\n{metrics}"
            );
        }
        assert!(!metrics.contains("production/app") && !metrics.contains(r#""app""#));

        // SIGTERM drains and exits 0.
        let mut run = run;
        let killed = Command::new("kill")
            .args(["-TERM", &run.0.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = wait_for_value("run to exit", Duration::from_secs(30), || {
            run.0.try_wait().unwrap()
        });
        assert_eq!(status.code(), Some(0));

        // One JSON line per decision, with the rollout's identity, the reason and the figures.
        let log = std::fs::read_to_string(&log).unwrap();
        let decision: serde_json::Value = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == "decision" && l["event"] == "RolledBack")
            .unwrap_or_else(|| panic!("no rolled_back decision line in:\n{log}"));
        assert_eq!(decision["span"]["namespace"], "production", "{decision}");
        assert_eq!(decision["span"]["deployment"], "app", "{decision}");
        assert!(decision["span"]["revision"].is_number(), "{decision}");
        assert_eq!(decision["reason"], "error_rate", "{decision}");
        assert!(
            decision["note"].as_str().unwrap().contains(" > 1 %"),
            "{decision}"
        );
    }
}

//! `deploy-watchdog status` (and `history`, `status -w`, `kubectl watchdog status`) against
//! `simulate --serve` guarded by the daemon run as its own process, and the daemon's status
//! page loaded by headless Chromium: one bad release rolled back, one good one being watched.
//! kubectl, tmux and Chromium are peers: missing, their part is skipped with a notice (or fails
//! with `DEPLOY_WATCHDOG_REQUIRE_PEERS` set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Killed, serve, wait_for};

const SCENARIO: &str = r#"
name: status-cli
description: app v2 serves 5% errors and is rolled back; good v2 is healthy and watched.
duration: 1h
config:
  mode: enforce
  watch: {window: 90s, interval: 200ms, rollout_timeout: 20s, pending_timeout: 10s}
  judge: {error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s, failures_before_rollback: 3}
deployments:
  - {ref: production/app, replicas: 2, version: v1}
  - {ref: production/good, replicas: 2, version: v1}
apps:
  production/app@v1: {pods: running, rps: 200, error_ratio: 0.001}
  production/app@v2: {pods: running, rps: 200, error_ratio: 0.05}
  production/good@v1: {pods: running, rps: 200, error_ratio: 0.001}
  production/good@v2: {pods: running, rps: 200, error_ratio: 0.001}
script: []
"#;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deploy-watchdog"))
}

/// `deploy-watchdog ARGS` with only a kubeconfig (through `$KUBECONFIG`), its stdout.
fn run(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new(exe())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", "/nonexistent-home")
        .env_remove("COLUMNS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Deploys `version` of `production/NAME` as a CI job would: a new template with the version
/// label and image.
fn deploy(kubeconfig: &Path, name: &str, version: &str) {
    let api = |path: &str| -> String {
        let text = std::fs::read_to_string(kubeconfig).unwrap();
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .unwrap()
            .to_string();
        format!("{server}{path}")
    };
    let url = api(&format!(
        "/apis/apps/v1/namespaces/production/deployments/{name}"
    ));
    let d: Value = serde_json::from_str(
        &String::from_utf8(
            Command::new("curl")
                .args(["-sf", &url])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap(),
    )
    .unwrap();
    let image = d
        .pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .0
        .to_string();
    let container = d
        .pointer("/spec/template/spec/containers/0/name")
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    let patch = serde_json::json!({"spec": {"template": {
        "metadata": {"labels": {"app.kubernetes.io/version": version}},
        "spec": {"containers": [{"name": container, "image": format!("{image}:{version}")}]},
    }}});
    let out = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/strategic-merge-patch+json",
            "--data",
            &patch.to_string(),
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploying {name} {version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Setup {
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    /// The daemon's HTTP address.
    listen: String,
    _served: Killed,
    _daemon: Killed,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("status-cli.yaml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let (served, kubeconfig, config) = serve(&scenario, dir.path());
    let (daemon, lines) = support::run_daemon(&config, &kubeconfig, &["--log-format", "json"]);
    let mut log = Vec::new();
    let mut listen = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log
        .iter()
        .any(|l: &String| l.contains("initial sync complete"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => {
                if let Ok(v) = serde_json::from_str::<Value>(&l)
                    && v["message"] == "starting"
                {
                    listen = v["listen"].as_str().map(str::to_string);
                }
                log.push(l);
            }
            Err(_) => panic!("the daemon never synced:\n{}", log.join("\n")),
        }
    }
    Setup {
        _dir: dir,
        kubeconfig,
        listen: listen.expect("the daemon logs its listen address"),
        _served: served,
        _daemon: daemon,
    }
}

fn tmux(socket: &str, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(["-L", socket, "-f", "/dev/null"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_shows_the_rollouts_the_daemon_recorded_and_the_page_draws_them() {
    let s = start();
    let kc = s.kubeconfig.as_path();
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();

    // Nothing recorded yet.
    assert!(
        run(kc, &["status", "-n", "production"]).contains("No rollouts recorded"),
        "before any rollout"
    );

    // `status -w` in a real terminal (tmux), started before the rollouts: it redraws.
    let socket = format!("deploy-watchdog-status-{}", std::process::id());
    let tmux_ok = support::peer("tmux", "apt-get install tmux").is_some();
    if tmux_ok {
        let command = format!(
            "env KUBECONFIG={} HOME=/nonexistent-home {} status -w -n production --interval 300ms; sleep 60",
            kc.display(),
            exe().display()
        );
        tmux(
            &socket,
            &[
                "new-session",
                "-d",
                "-s",
                "w",
                "-x",
                "200",
                "-y",
                "60",
                &command,
            ],
        );
        wait_for(
            "the first frame of status -w",
            Duration::from_secs(20),
            || tmux(&socket, &["capture-pane", "-p", "-t", "w"]).contains("No rollouts recorded"),
        );
    }

    deploy(kc, "good", "v2");
    deploy(kc, "app", "v2");

    // app: rolled back for its error rate; good: watched, with its checks' values.
    let mut text = String::new();
    wait_for(
        "status to show app rolled back and good watched with its checks",
        Duration::from_secs(90),
        || {
            text = run(kc, &["status", "-n", "production"]);
            text.contains("rolled_back (error_rate)")
                && text.contains("production/good  v1 → v2  revision 2  watching")
                && text.contains("✓ error rate (prometheus)")
        },
    );
    println!("{text}");
    assert!(!text.contains('\x1b'), "piped output is plain: {text:?}");
    let good = text
        .split("\n\n")
        .find(|b| b.starts_with("production/good"))
        .unwrap();
    assert!(good.contains(" left of 1m 30s"), "{good}");
    assert!(
        good.contains("pods     new 2/2 ready, old 0 ready"),
        "{good}"
    );
    assert!(good.contains("(want ≤ 1 % over ≥ 20 requests)"), "{good}");
    assert!(good.contains("last     WindowStarted"), "{good}");
    let app = text
        .split("\n\n")
        .find(|b| b.starts_with("production/app"))
        .unwrap();
    assert!(app.contains("production/app  v1 → v2  revision 2"), "{app}");
    assert!(
        app.contains("last     RollbackVerified") && app.contains("✗ error rate (prometheus)"),
        "{app}"
    );
    assert!(
        text.contains("RECENT VERDICTS")
            && text.contains("production/app  revision 2  v1 → v2  rolled_back  error_rate"),
        "{text}"
    );

    // One Deployment, as JSON: the shape of /api/v1/rollouts.
    let json: Value = serde_json::from_str(&run(
        kc,
        &["status", "-n", "production", "app", "-o", "json"],
    ))
    .unwrap();
    assert_eq!(json["rollouts"].as_array().unwrap().len(), 1, "{json}");
    let r = &json["rollouts"][0];
    assert_eq!(
        (&r["name"], &r["phase"], &r["reason"], &r["to_version"]),
        (
            &Value::from("app"),
            &Value::from("rolled_back"),
            &Value::from("error_rate"),
            &Value::from("v2")
        ),
        "{r}"
    );
    let failing = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "error rate (prometheus)")
        .unwrap_or_else(|| panic!("no error-rate check recorded: {r}"));
    assert_eq!(failing["state"], "failing", "{r}");

    // history: the final verdict of each rollout (the Event that settled it).
    let history = run(kc, &["history", "-n", "production"]);
    assert!(
        history.contains("production/app\n")
            && history.contains(
                "revision 2  v1 → v2  rolled_back  error_rate: Rollback verified: production/app runs v1 again"
            ),
        "{history}"
    );

    // The daemon's API answers in the same shape.
    let api: Value = serde_json::from_slice(
        &Command::new("curl")
            .args(["-sf", &format!("http://{}/api/v1/rollouts", s.listen)])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&api), keys(&json));
    let api_app = api["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "app")
        .unwrap();
    assert_eq!(keys(api_app), keys(r));
    assert_eq!(api_app["phase"], "rolled_back", "{api_app}");
    assert!(
        !api_app["error_rate"].as_array().unwrap().is_empty(),
        "the chart has points: {api_app}"
    );

    // `kubectl watchdog status`: kubectl finds the plugin on PATH.
    if let Some(kubectl) = support::peer("kubectl", "https://kubernetes.io/docs/tasks/tools/") {
        let bin = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(exe(), bin.path().join("kubectl-watchdog")).unwrap();
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let plugins = Command::new(&kubectl)
            .args(["plugin", "list"])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&plugins.stdout).contains("kubectl-watchdog"),
            "{plugins:?}"
        );
        let out = Command::new(&kubectl)
            .args(["watchdog", "status", "-n", "production", "app"])
            .env("PATH", &path)
            .env("KUBECONFIG", kc)
            .env("HOME", "/nonexistent-home")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout.contains("production/app  v1 → v2  revision 2  rolled_back (error_rate)"),
            "{stdout}"
        );
        let help = Command::new(&kubectl)
            .args(["watchdog", "--help"])
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Usage: kubectl watchdog"),
            "{help:?}"
        );
    }

    // `status -w` piped: plain frames, one per change.
    let mut piped = Command::new(exe())
        .args(["status", "-w", "-n", "production", "--interval", "200ms"])
        .env("KUBECONFIG", kc)
        .env("HOME", "/nonexistent-home")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let _ = piped.kill();
    let mut frames = String::new();
    piped
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut frames)
        .unwrap();
    let _ = piped.wait();
    assert!(!frames.contains('\x1b'), "{frames:?}");
    // The time left counts down: more than one frame.
    assert!(
        frames.matches("production/good  v1 → v2").count() >= 2,
        "{frames}"
    );

    if tmux_ok {
        let mut screen = String::new();
        wait_for("status -w to redraw", Duration::from_secs(20), || {
            screen = tmux(&socket, &["capture-pane", "-p", "-t", "w"]);
            screen.contains("rolled_back (error_rate)")
        });
        let coloured = tmux(&socket, &["capture-pane", "-p", "-e", "-t", "w"]);
        tmux(&socket, &["kill-server"]);
        std::fs::write(artifacts.join("status-watch.txt"), &screen).unwrap();
        assert!(
            !screen.contains("No rollouts recorded"),
            "redrawn, not appended: {screen}"
        );
        assert!(
            screen.contains("production/good  v1 → v2  revision 2  watching"),
            "{screen}"
        );
        assert!(
            coloured.contains("\x1b["),
            "colour on a terminal: {coloured:?}"
        );
    }

    // The status page in a real browser.
    let Some(chromium) = support::peer("chromium", "apt-get install chromium") else {
        return;
    };
    let url = format!("http://{}/", s.listen);
    let profile = tempfile::tempdir().unwrap();
    let browser = |extra: &[&str]| {
        let out = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--window-size=1400,1000",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success(), "chromium: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = browser(&["--dump-dom"]);
    std::fs::write(artifacts.join("status-page.html"), &dom).unwrap();
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the page's script ran: {dom}"
    );
    let card = dom
        .split("<section")
        .find(|c| c.contains(r#"data-key="production/app""#))
        .unwrap_or_else(|| panic!("no card for production/app: {dom}"));
    assert!(card.contains(r#"data-phase="rolled_back""#), "{card}");
    assert!(card.contains("rolled_back (error_rate)"), "{card}");
    assert!(card.contains("error rate"), "its reason: {card}");
    assert!(card.contains(r#"<svg class="chart""#), "its chart: {card}");
    assert!(
        card.contains(r#"class="series""#) && card.contains(r#"class="threshold""#),
        "{card}"
    );
    assert!(!card.contains(r#"data-points="0""#), "{card}");
    assert!(
        dom.contains(r#"data-outcome="rolled_back""#),
        "recent verdicts: {dom}"
    );
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browser(&[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
}

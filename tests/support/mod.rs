//! Helpers shared by the integration tests. Each test binary uses a part of them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploy_watchdog::check::ObjectKey;
use deploy_watchdog::sim::behaviour::{AppKey, Behaviour, Behaviours};
use deploy_watchdog::sim::scenario::DeploymentSpec;
use deploy_watchdog::sim::services::{Apps, ClusterView};
use tokio_util::sync::CancellationToken;

/// An opted-in Deployment spec for the simulated cluster.
pub fn spec(reference: &str, version: &str, replicas: i32) -> DeploymentSpec {
    DeploymentSpec {
        reference: reference.into(),
        replicas,
        version: version.into(),
        opted_in: true,
        paused: false,
        annotations: BTreeMap::new(),
        sidecars: Vec::new(),
        strategy: Default::default(),
        progress_deadline: None,
        gitops: None,
    }
}

/// The environment variable that turns a missing peer program into a failure.
pub const REQUIRE_PEERS: &str = "DEPLOY_WATCHDOG_REQUIRE_PEERS";

/// Whether peers are required (`DEPLOY_WATCHDOG_REQUIRE_PEERS` set to anything but `0`), as
/// `./scripts/check` does after installing them.
pub fn peers_required() -> bool {
    std::env::var(REQUIRE_PEERS).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// An executable named `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A peer program the test runs against (kubectl, prometheus): its path, or `None` after
/// printing `SKIPPED` — unless peers are required, where a missing one fails the test.
pub fn peer(name: &str, install: &str) -> Option<PathBuf> {
    if let Some(found) = on_path(name) {
        return Some(found);
    }
    assert!(
        !peers_required(),
        "{name} is not on PATH ({install}), and {REQUIRE_PEERS} is set"
    );
    println!("SKIPPED: {name} is not on PATH ({install})");
    None
}

/// `kubectl` from PATH plus an older release installed beside it, when present (an optional
/// extra); empty, after printing `SKIPPED`, when kubectl is not installed and peers are not
/// required.
pub fn kubectls() -> Vec<PathBuf> {
    let Some(path) = peer("kubectl", "apt-get install kubectl") else {
        return Vec::new();
    };
    let mut found = vec![path.clone()];
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

/// `apps` Deployments `app-<i>` over the namespaces `ns-0` and `ns-1` in turn, then
/// `ns-0/web.v2` (a dot in a name) and `ns-1/quiet`.
pub fn fleet(apps: usize) -> Vec<ObjectKey> {
    let mut out: Vec<ObjectKey> = (0..apps)
        .map(|i| ObjectKey::new(format!("ns-{}", i % 2), format!("app-{i}")))
        .collect();
    out.push(ObjectKey::new("ns-0", "web.v2"));
    out.push(ObjectKey::new("ns-1", "quiet"));
    out
}

/// The cluster of [`fleet`]`(apps)`: one ready pod each, except `quiet`, which has none and so
/// no series.
pub struct Fleet(pub usize);

impl ClusterView for Fleet {
    fn ready_pods_by_version(&self, _namespace: &str, name: &str) -> Vec<(String, u32)> {
        if name == "quiet" {
            vec![]
        } else {
            vec![("v1".into(), 1)]
        }
    }
    fn deployments(&self) -> Vec<(String, String)> {
        fleet(self.0)
            .into_iter()
            .map(|k| (k.namespace, k.name))
            .collect()
    }
}

/// The apps of [`Fleet`]`(apps)` serving until `shutdown`, `ns-1/app-3` failing 20 % of its
/// requests and the others none; returned once app-3 has served 100 requests over `window`.
pub async fn fleet_traffic(
    apps: usize,
    window: std::time::Duration,
    shutdown: &CancellationToken,
) -> Apps {
    let behaviours = Behaviours::default();
    behaviours.set(
        AppKey::new("ns-1", "app-3", "v1"),
        Behaviour {
            error_ratio: 0.2,
            ..Behaviour::default()
        },
    );
    let served = Apps::new(behaviours, std::sync::Arc::new(Fleet(apps)));
    served.start(shutdown.clone()).await.expect("apps");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while served.counts("ns-1", "app-3", window).0 < 100.0 {
        assert!(tokio::time::Instant::now() < deadline, "no traffic");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    served
}

/// errors / requests of a sample that must have counts.
pub fn ratio(s: &deploy_watchdog::judge::ProviderSample) -> f64 {
    match s {
        deploy_watchdog::judge::ProviderSample::Counts { requests, errors } => errors / requests,
        other => panic!("expected counts, got {other:?}"),
    }
}

/// A child process killed on drop.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 200 ms until it holds; fails the test after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    wait_for_value(what, limit, || check().then_some(()))
}

/// Polls `f` every 200 ms until it gives a value, and returns it; fails the test after `limit`.
pub fn wait_for_value<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `deploy-watchdog simulate --serve SCENARIO`, writing its kubeconfig and the daemon's config
/// into `dir`: returns the serving process and the two paths once both files are written.
pub fn serve(scenario: &Path, dir: &Path) -> (Killed, PathBuf, PathBuf) {
    let kubeconfig = dir.join("kubeconfig.yaml");
    let config = dir.join("watchdog.yaml");
    let served = Killed(
        Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
            .arg("simulate")
            .arg("--serve")
            .arg(scenario)
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .arg("--write-config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulate --serve starts"),
    );
    wait_for(
        "simulate --serve to write its files",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&kubeconfig).is_ok_and(|t| t.contains("server: "))
                && config.exists()
        },
    );
    (served, kubeconfig, config)
}

/// `deploy-watchdog run` with `config` and `kubeconfig`, its HTTP server on a free port, logging
/// at info (with `args`, e.g. `--log-format json`): the process, and its log lines as they come.
/// The reader keeps draining after the receiver is gone, so the daemon never blocks on a full pipe.
pub fn run_daemon(
    config: &Path,
    kubeconfig: &Path,
    args: &[&str],
) -> (Killed, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env("RUST_LOG", "info")
        .env("DEPLOY_WATCHDOG__SERVER__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("deploy-watchdog run starts");
    let stderr = daemon.stderr.take().expect("stderr is piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(l);
        }
    });
    (Killed(daemon), lines)
}

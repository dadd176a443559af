//! The simulated cluster against real kubectl binaries: get (tables and JSON), rollout status
//! (success and progress deadline), history, undo, pause and resume.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use deploy_watchdog::sim::behaviour::{AppKey, Behaviour, Behaviours, PodMode};
use deploy_watchdog::sim::cluster::SimCluster;
use serde_json::Value;
use support::{kubectls, spec};
use tokio_util::sync::CancellationToken;

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> Output {
        let bin = self.bin.clone();
        let kubeconfig = self.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(bin)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(&args)
                .env("HOME", "/nonexistent-home")
                .output()
        })
        .await
        .unwrap()
        .unwrap();
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(
            out.ok,
            "{} {args:?} failed: {}{}",
            self.bin.display(),
            out.stdout,
            out.stderr
        );
        out.stdout
    }
}

fn write_kubeconfig(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {url}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\ncurrent-context: sim\nusers:\n- name: sim\n  user: {{}}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn revision(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/annotations/deployment.kubernetes.io~1revision")?
        .as_str()
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_gets_rolls_out_undoes_pauses_and_resumes() {
    let bins = kubectls();
    if bins.is_empty() {
        println!("SKIPPED: kubectl is not on PATH");
        return;
    }
    for (i, bin) in bins.into_iter().enumerate() {
        println!("checking {}", bin.display());
        // Only the current kubectl validates `apply` through OpenAPI v3; older ones need v2.
        run_with(bin, i == 0).await;
    }
}

async fn run_with(bin: PathBuf, check_apply: bool) {
    let behaviours = Behaviours::default();
    behaviours.set(
        AppKey::new("production", "crash", "v2"),
        Behaviour {
            pods: PodMode::Crashloop,
            ..Default::default()
        },
    );
    let sim = SimCluster::new(behaviours);
    let shutdown = CancellationToken::new();
    let addr = sim.start(shutdown.clone()).await.unwrap();
    sim.add_deployment(&spec("production/app", "v1", 3));
    sim.add_deployment(&spec("production/crash", "v1", 2));
    sim.add_deployment(&spec("staging/web", "v1", 1));
    let dir = tempfile::tempdir().unwrap();
    let k = Kubectl {
        bin,
        kubeconfig: write_kubeconfig(dir.path(), &format!("http://{addr}")),
    };

    let all = k.ok(&["get", "deploy", "-A"]).await;
    let header: Vec<&str> = all.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAMESPACE",
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE"
        ]
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with("staging") && l.contains("web")),
        "{all}"
    );

    let table = k.ok(&["get", "deploy", "-n", "production"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("app "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["app", "3/3", "3", "3"]);

    let json: Value = serde_json::from_str(
        &k.ok(&["get", "rs,pods", "-n", "production", "-o", "json"])
            .await,
    )
    .unwrap();
    let items = json["items"].as_array().unwrap();
    assert_eq!(
        items.iter().filter(|i| i["kind"] == "ReplicaSet").count(),
        2
    );
    assert_eq!(items.iter().filter(|i| i["kind"] == "Pod").count(), 5);

    // A healthy deploy: rollout status waits for it and reports success.
    sim.deploy("production", "app", "v2").unwrap();
    let status = k
        .ok(&[
            "rollout",
            "status",
            "deployment/app",
            "-n",
            "production",
            "--timeout=20s",
        ])
        .await;
    assert!(
        status.contains("deployment \"app\" successfully rolled out"),
        "{status}"
    );

    // A crash-looping deploy with a short progress deadline: rollout status fails like kubectl does.
    sim.set_progress_deadline("production", "crash", 1).unwrap();
    sim.deploy("production", "crash", "v2").unwrap();
    let out = k
        .run(&[
            "rollout",
            "status",
            "deployment/crash",
            "-n",
            "production",
            "--timeout=30s",
        ])
        .await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("deployment \"crash\" exceeded its progress deadline"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // Between back-offs the container runs for a moment: poll for the back-off state.
    eventually("kubectl to show CrashLoopBackOff", || async {
        let pods = k
            .ok(&["get", "pods", "-n", "production", "-l", "app=crash"])
            .await;
        pods.contains("CrashLoopBackOff")
    })
    .await;

    let history = k
        .ok(&["rollout", "history", "deployment/app", "-n", "production"])
        .await;
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let rev1 = k
        .ok(&[
            "rollout",
            "history",
            "deployment/app",
            "-n",
            "production",
            "--revision=1",
        ])
        .await;
    assert!(
        rev1.contains("registry.example.com/production/app:v1"),
        "{rev1}"
    );

    let undo = k
        .ok(&["rollout", "undo", "deployment/app", "-n", "production"])
        .await;
    assert!(undo.contains("rolled back"), "{undo}");
    eventually("the undo to roll out", || async {
        sim.current_version("production", "app").as_deref() == Some("v1")
            && sim.ready_pods_by_version("production", "app") == [("v1".to_string(), 3)]
    })
    .await;
    let rss: Value = serde_json::from_str(
        &k.ok(&[
            "get",
            "rs",
            "-n",
            "production",
            "-l",
            "app=app",
            "-o",
            "json",
        ])
        .await,
    )
    .unwrap();
    let rss = rss["items"].as_array().unwrap();
    assert_eq!(
        rss.len(),
        2,
        "the rollback re-uses the revision 1 ReplicaSet"
    );
    let v1 = rss
        .iter()
        .find(|rs| {
            rs.pointer("/spec/template/spec/containers/0/image")
                .and_then(Value::as_str)
                == Some("registry.example.com/production/app:v1")
        })
        .unwrap();
    assert_eq!(revision(v1), Some("3"));
    assert_eq!(
        v1.pointer("/metadata/annotations/deployment.kubernetes.io~1revision-history")
            .and_then(Value::as_str),
        Some("1")
    );
    let status = k
        .ok(&[
            "rollout",
            "status",
            "deployment/app",
            "-n",
            "production",
            "--timeout=20s",
        ])
        .await;
    assert!(status.contains("successfully rolled out"), "{status}");
    assert_eq!(sim.template_changes().len(), 1);
    assert!(
        sim.template_changes()[0].user_agent.starts_with("kubectl"),
        "{:?}",
        sim.template_changes()
    );

    assert!(
        k.ok(&["rollout", "pause", "deployment/app", "-n", "production"])
            .await
            .contains("paused")
    );
    let out = k
        .run(&["rollout", "undo", "deployment/app", "-n", "production"])
        .await;
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("you cannot rollback a paused deployment"),
        "{}",
        out.stderr
    );
    let paused = sim.deployment_json("production", "app").unwrap();
    assert!(
        paused
            .pointer("/status/conditions")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["reason"] == "DeploymentPaused")
    );
    assert!(
        k.ok(&["rollout", "resume", "deployment/app", "-n", "production"])
            .await
            .contains("resumed")
    );
    assert_eq!(
        sim.template_changes().len(),
        1,
        "pause/resume do not touch the template"
    );

    // Scaling through the scale subresource is not a new revision.
    let scaled = k
        .ok(&[
            "scale",
            "deployment/app",
            "-n",
            "production",
            "--replicas=5",
        ])
        .await;
    assert!(scaled.contains("scaled"), "{scaled}");
    eventually("the scale-up", || async {
        sim.ready_pods_by_version("production", "app") == [("v1".to_string(), 5)]
    })
    .await;
    let dep = sim.deployment_json("production", "app").unwrap();
    assert_eq!(revision(&dep), Some("3"));

    if check_apply {
        let manifest = dir.path().join("deploy.yaml");
        let write = |image: &str| {
            let text = format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: applied\n  namespace: staging\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: applied}}\n  template:\n    metadata:\n      labels: {{app: applied}}\n    spec:\n      containers:\n      - name: c\n        image: {image}\n"
            );
            std::fs::write(&manifest, text).unwrap();
        };
        let path = manifest.to_str().unwrap().to_string();
        write("nginx:1.27");
        assert!(k.ok(&["apply", "-f", &path]).await.contains("created"));
        write("nginx:1.28");
        assert!(k.ok(&["apply", "-f", &path]).await.contains("configured"));
        let status = k
            .ok(&[
                "rollout",
                "status",
                "deployment/applied",
                "-n",
                "staging",
                "--timeout=20s",
            ])
            .await;
        assert!(status.contains("successfully rolled out"), "{status}");
        let dep = sim.deployment_json("staging", "applied").unwrap();
        assert_eq!(revision(&dep), Some("2"));
        assert!(
            k.ok(&["delete", "deployment", "applied", "-n", "staging"])
                .await
                .contains("deleted")
        );
        let left = k
            .ok(&[
                "get",
                "rs,pods",
                "-n",
                "staging",
                "-l",
                "app=applied",
                "-o",
                "name",
            ])
            .await;
        assert!(left.trim().is_empty(), "garbage-collected: {left}");
    }
    shutdown.cancel();
}

/// The kubectl test above, run again by this binary with no kubectl on PATH: it skips when
/// peers are optional and fails when they are required (as `./scripts/check` requires them).
#[test]
fn a_missing_kubectl_fails_when_peers_are_required_and_skips_otherwise() {
    let empty = tempfile::tempdir().unwrap();
    let run = |required: &str| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kubectl_gets_rolls_out_undoes_pauses_and_resumes",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PATH", empty.path())
            .env(support::REQUIRE_PEERS, required)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (passed, text) = run("1");
    assert!(!passed, "passed without kubectl although required:\n{text}");
    assert!(
        text.contains("kubectl is not on PATH") && text.contains(support::REQUIRE_PEERS),
        "{text}"
    );
    let (passed, text) = run("0");
    assert!(passed, "{text}");
    assert!(text.contains("SKIPPED: kubectl is not on PATH"), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

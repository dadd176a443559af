//! kubectl parity through `deploy-watchdog simulate --serve`: real kubectl binaries (the one on
//! PATH and an older release beside it) get, watch, roll out, pause, resume and undo against the
//! served cluster, and `kubectl rollout undo` leaves exactly the Deployment the watchdog's own
//! rollback leaves from the same state. Skipped, with a notice, only when kubectl is absent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deploy_watchdog::cluster::rollback::{self, Refusal, RollbackError};
use deploy_watchdog::sim::behaviour::Behaviours;
use deploy_watchdog::sim::cluster::SimCluster;
use deploy_watchdog::sim::scenario::DeploymentSpec;
use serde_json::Value;
use support::kubectls;
use tokio_util::sync::CancellationToken;

/// The revision the Deployment is at: a rollback is sent for the rollout being judged, which
/// here is whatever kubectl would undo. No watchdog state is recorded on these Deployments, so
/// the at-most-once guard never applies.
async fn current_revision(client: &kube::Client) -> i64 {
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), "production");
    let d = api.get("app").await.unwrap();
    deploy_watchdog::cluster::rollout::revision(kube::ResourceExt::annotations(&d)).unwrap()
}

const SCENARIO: &str = r#"
name: kubectl-parity
description: Two Deployments for kubectl to look at and change; the script is empty.
duration: 1h
deployments:
  - {ref: production/app, replicas: 3, version: v1}
  - {ref: production/crash, replicas: 2, version: v1}
apps:
  production/crash@bad: {pods: crashloop}
script: []
"#;

fn version_of(bin: &Path) -> String {
    let out = Command::new(bin)
        .args(["version", "--client", "-o", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v.pointer("/clientVersion/gitVersion")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string()
}

/// `deploy-watchdog simulate --serve` of [`SCENARIO`], killed on drop.
struct Served {
    child: Child,
    kubeconfig: PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start() -> Served {
        let dir = tempfile::tempdir().unwrap();
        let scenario = dir.path().join("kubectl-parity.yaml");
        std::fs::write(&scenario, SCENARIO).unwrap();
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let child = Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
            .arg("simulate")
            .arg("--serve")
            .arg(&scenario)
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .arg("--write-config")
            .arg(dir.path().join("watchdog.yaml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut served = Served {
            child,
            kubeconfig,
            url: String::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                served.child.try_wait().unwrap().is_none(),
                "simulate --serve exited"
            );
            if let Ok(text) = std::fs::read_to_string(&served.kubeconfig)
                && let Some(url) = text.lines().find_map(|l| l.trim().strip_prefix("server: "))
            {
                served.url = url.to_string();
                break;
            }
            assert!(
                Instant::now() < deadline,
                "simulate --serve never wrote its kubeconfig"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        served
    }

    fn client(&self) -> kube::Client {
        kube::Client::try_from(kube::Config::new(self.url.parse().unwrap())).unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["-n", "production"])
            .args(args)
            .env("HOME", "/nonexistent-home");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().unwrap();
        Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.ok,
            "{} {args:?} failed: {}{}",
            self.bin.display(),
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    fn rolled_out(&self, name: &str) {
        let out = self.ok(&[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=60s",
        ]);
        assert!(
            out.contains(&format!("deployment \"{name}\" successfully rolled out")),
            "{out}"
        );
    }

    /// A new revision of `name`: image tag and version label, as a strategic-merge patch.
    fn deploy(&self, name: &str, version: &str) {
        let patch = format!(
            r#"{{"spec":{{"template":{{"metadata":{{"labels":{{"app.kubernetes.io/version":"{version}"}}}},"spec":{{"containers":[{{"name":"{name}","image":"registry.example.com/production/{name}:{version}"}}]}}}}}}}}"#
        );
        self.ok(&["patch", &format!("deployment/{name}"), "-p", &patch]);
    }
}

fn columns(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[test]
fn kubectl_reads_watches_and_rolls_out_the_served_cluster() {
    let bins = kubectls();
    if bins.is_empty() {
        println!("SKIPPED: kubectl is not on PATH");
        return;
    }
    for bin in bins {
        println!("checking {} ({})", bin.display(), version_of(&bin));
        let served = Served::start();
        let k = Kubectl {
            bin,
            kubeconfig: served.kubeconfig.clone(),
        };
        gets(&k);
        watch_receives_changes(&k);
        rollout_status_history_pause_resume(&k);
    }
}

fn gets(k: &Kubectl) {
    let deploys = k.ok(&["get", "deployments"]);
    let mut lines = deploys.lines();
    assert_eq!(
        columns(lines.next().unwrap()),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    let rows: Vec<Vec<&str>> = lines.map(columns).collect();
    assert_eq!(rows.len(), 2, "{deploys}");
    assert_eq!(rows[0][..4], ["app", "3/3", "3", "3"]);
    assert_eq!(rows[1][..4], ["crash", "2/2", "2", "2"]);

    let sets = k.ok(&["get", "replicasets", "-l", "app=app"]);
    let mut lines = sets.lines();
    assert_eq!(
        columns(lines.next().unwrap()),
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    );
    let row = columns(lines.next().unwrap());
    assert!(row[0].starts_with("app-"), "{sets}");
    assert_eq!(row[1..4], ["3", "3", "3"]);

    let pods = k.ok(&["get", "pods", "-l", "app=app"]);
    let mut lines = pods.lines();
    assert_eq!(
        columns(lines.next().unwrap()),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let rows: Vec<Vec<&str>> = lines.map(columns).collect();
    assert_eq!(rows.len(), 3, "{pods}");
    for row in &rows {
        assert!(row[0].starts_with(&format!("{}-", columns(sets.lines().nth(1).unwrap())[0])));
        assert_eq!(row[1..4], ["1/1", "Running", "0"], "{pods}");
    }

    let all = k.json(&["get", "deployments,replicasets,pods"]);
    assert_eq!(all["kind"], "List");
    let items = all["items"].as_array().unwrap();
    let count = |kind: &str| items.iter().filter(|i| i["kind"] == kind).count();
    assert_eq!(
        (count("Deployment"), count("ReplicaSet"), count("Pod")),
        (2, 2, 5)
    );
    let app = items
        .iter()
        .find(|i| i["kind"] == "Deployment" && i["metadata"]["name"] == "app")
        .unwrap();
    assert_eq!(app["apiVersion"], "apps/v1");
    assert_eq!(
        app.pointer("/metadata/annotations/deployment.kubernetes.io~1revision"),
        Some(&Value::from("1"))
    );
    assert_eq!(app["status"]["readyReplicas"], 3);
    let rs = items.iter().find(|i| i["kind"] == "ReplicaSet").unwrap();
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    let pod = items.iter().find(|i| i["kind"] == "Pod").unwrap();
    assert_eq!(pod["apiVersion"], "v1");
    assert_eq!(pod["status"]["phase"], "Running");
}

/// `kubectl get -w` prints the table, then a row per change.
fn watch_receives_changes(k: &Kubectl) {
    let mut child = k
        .command(&["get", "deployment", "app", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |what: &str, pred: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("kubectl get -w: no line showing {what}; saw {seen:#?}"),
            }
        }
    };
    wait_for("the header", &|l| l.starts_with("NAME"));
    wait_for("the current row", &|l| columns(l).get(1) == Some(&"3/3"));
    k.ok(&["scale", "deployment/app", "--replicas=4"]);
    wait_for("the scale-up", &|l| {
        let c = columns(l);
        c.first() == Some(&"app") && c.get(1).is_some_and(|r| r.ends_with("/4"))
    });
    wait_for("the fourth pod ready", &|l| {
        columns(l).get(1) == Some(&"4/4")
    });
    let _ = child.kill();
    let _ = child.wait();
    k.ok(&["scale", "deployment/app", "--replicas=3"]);
}

fn rollout_status_history_pause_resume(k: &Kubectl) {
    // A good deploy: rollout status waits (with kubectl's messages) and succeeds.
    k.deploy("app", "v2");
    let status = k.ok(&["rollout", "status", "deployment/app", "--timeout=60s"]);
    assert!(
        status.contains("deployment \"app\" successfully rolled out"),
        "{status}"
    );
    for line in status.lines().filter(|l| l.starts_with("Waiting")) {
        let known = [
            "new replicas have been updated...",
            "old replicas are pending termination...",
            "updated replicas are available...",
        ];
        assert!(
            line.starts_with("Waiting for deployment \"app\" rollout to finish: ")
                && known.iter().any(|k| line.ends_with(k)),
            "not one of kubectl's waiting messages: {line}"
        );
    }

    // A crash-looping deploy with a 1 s progress deadline: kubectl's progress-deadline error.
    k.ok(&[
        "patch",
        "deployment/crash",
        "-p",
        r#"{"spec":{"progressDeadlineSeconds":1}}"#,
    ]);
    k.deploy("crash", "bad");
    let out = k.run(&["rollout", "status", "deployment/crash", "--timeout=60s"]);
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("error: deployment \"crash\" exceeded its progress deadline"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let crash = k.json(&["get", "deployment", "crash"]);
    let progressing = crash["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap();
    assert_eq!(progressing["status"], "False");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    // A crash-looping pod's STATUS goes Running, Error, CrashLoopBackOff and round again: the
    // deadline passing says nothing of which one `get pods` shows at that moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = k.ok(&["get", "pods", "-l", "app=crash"]);
        if pods.contains("CrashLoopBackOff") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no pod shown in CrashLoopBackOff:\n{pods}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // History: one line per revision, and a revision's template.
    let history = k.ok(&["rollout", "history", "deployment/app"]);
    let mut lines = history.lines();
    assert_eq!(lines.next(), Some("deployment.apps/app "));
    assert_eq!(columns(lines.next().unwrap()), ["REVISION", "CHANGE-CAUSE"]);
    let revisions: Vec<Vec<&str>> = lines.filter(|l| !l.is_empty()).map(columns).collect();
    assert_eq!(revisions, [["1", "<none>"], ["2", "<none>"]], "{history}");
    let rev1 = k.ok(&["rollout", "history", "deployment/app", "--revision=1"]);
    assert!(
        rev1.contains("deployment.apps/app with revision #1")
            && rev1.contains("Image:\tregistry.example.com/production/app:v1"),
        "{rev1}"
    );

    // Pause and resume: kubectl's messages, spec.paused, and the DeploymentPaused condition.
    assert_eq!(
        k.ok(&["rollout", "pause", "deployment/app"]).trim(),
        "deployment.apps/app paused"
    );
    let paused = k.json(&["get", "deployment", "app"]);
    assert_eq!(paused["spec"]["paused"], true);
    let out = k.run(&["rollout", "pause", "deployment/app"]);
    assert!(
        !out.ok && out.stderr.contains("already paused"),
        "{}",
        out.stderr
    );
    // A change while paused makes no new ReplicaSet.
    k.deploy("app", "v3");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = k.json(&["get", "deployment", "app"]);
        let reason = d["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Progressing")
            .map(|c| c["reason"].clone());
        if reason == Some(Value::from("DeploymentPaused")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no DeploymentPaused condition: {d}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let sets = k.json(&["get", "replicasets", "-l", "app=app"]);
    assert_eq!(sets["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        k.ok(&["rollout", "resume", "deployment/app"]).trim(),
        "deployment.apps/app resumed"
    );
    k.rolled_out("app");
    let sets = k.json(&["get", "replicasets", "-l", "app=app"]);
    assert_eq!(sets["items"].as_array().unwrap().len(), 3);
}

/// The parts of a Deployment the undo writes, for comparison between two clusters.
fn undo_result(d: &Value) -> (Value, Value) {
    let mut annotations = d["metadata"]["annotations"].clone();
    if let Some(map) = annotations.as_object_mut() {
        map.retain(|k, _| !k.starts_with("deploy-watchdog.io/"));
    }
    (d["spec"]["template"].clone(), annotations)
}

/// Each ReplicaSet's version and revision annotations.
fn revisions(k: &Kubectl) -> BTreeMap<String, (Value, Value)> {
    let sets = k.json(&["get", "replicasets", "-l", "app=app"]);
    sets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| {
            let a = &rs["metadata"]["annotations"];
            (
                rs.pointer("/spec/template/metadata/labels/app.kubernetes.io~1version")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                (
                    a["deployment.kubernetes.io/revision"].clone(),
                    a["deployment.kubernetes.io/revision-history"].clone(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_undo_and_the_watchdog_rollback_leave_the_same_deployment() {
    let bins = kubectls();
    if bins.is_empty() {
        println!("SKIPPED: kubectl is not on PATH");
        return;
    }
    for bin in bins {
        println!("checking {} ({})", bin.display(), version_of(&bin));
        let (by_kubectl, by_watchdog) = (Served::start(), Served::start());
        let k = Kubectl {
            bin: bin.clone(),
            kubeconfig: by_kubectl.kubeconfig.clone(),
        };
        let w = Kubectl {
            bin,
            kubeconfig: by_watchdog.kubeconfig.clone(),
        };
        // The same history on both: v1, v2, v3 (with a user annotation on the template's way).
        for c in [&k, &w] {
            c.ok(&["annotate", "deployment/app", "team=payments"]);
            c.deploy("app", "v2");
            c.rolled_out("app");
            c.ok(&[
                "annotate",
                "deployment/app",
                "kubernetes.io/change-cause=ship v3",
            ]);
            c.deploy("app", "v3");
            c.rolled_out("app");
        }
        assert_eq!(revisions(&k), revisions(&w));
        let client = by_watchdog.client();

        // Undo twice: 3 → 2 (v2 renumbered to 4), then 4 → 3 (v3 renumbered to 5).
        for (round, want) in [(1, "v2"), (2, "v3")] {
            let out = k.ok(&["rollout", "undo", "deployment/app"]);
            assert_eq!(out.trim(), "deployment.apps/app rolled back", "{out}");
            let plan = rollback::execute(
                &client,
                "production",
                "app",
                current_revision(&client).await,
                |_| BTreeMap::new(),
            )
            .await
            .unwrap();
            assert_eq!(plan.target_version.as_deref(), Some(want));
            k.rolled_out("app");
            w.rolled_out("app");
            let (a, b) = (
                k.json(&["get", "deployment", "app"]),
                w.json(&["get", "deployment", "app"]),
            );
            assert_eq!(
                undo_result(&a),
                undo_result(&b),
                "undo {round}: kubectl (left) and the watchdog (right) differ"
            );
            assert_eq!(
                a.pointer("/spec/template/metadata/labels/app.kubernetes.io~1version"),
                Some(&Value::from(want))
            );
            assert_eq!(revisions(&k), revisions(&w), "undo {round}");
        }
        let history = k.ok(&["rollout", "history", "deployment/app"]);
        let numbers: Vec<&str> = history
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(numbers, ["1", "4", "5"], "{history}");
        assert_eq!(history, w.ok(&["rollout", "history", "deployment/app"]));

        // A paused Deployment: both refuse, with the same words.
        for c in [&k, &w] {
            c.ok(&["rollout", "pause", "deployment/app"]);
        }
        let out = k.run(&["rollout", "undo", "deployment/app"]);
        assert!(!out.ok);
        let refusal = rollback::execute(
            &client,
            "production",
            "app",
            current_revision(&client).await,
            |_| BTreeMap::new(),
        )
        .await
        .unwrap_err();
        let RollbackError::Refused {
            refusal: refusal @ Refusal::Paused(_),
            ..
        } = refusal
        else {
            panic!("expected the paused refusal, got {refusal}");
        };
        assert_eq!(out.stderr.trim(), format!("error: {refusal}"));
        assert_eq!(
            undo_result(&k.json(&["get", "deployment", "app"])),
            undo_result(&w.json(&["get", "deployment", "app"]))
        );
    }
}

/// The "skipped rollback" case needs a template that equals the previous revision's while the
/// controller has not yet made it the newest revision: kube-controller-manager stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_to_the_current_template_is_skipped_by_both() {
    let bins = kubectls();
    if bins.is_empty() {
        println!("SKIPPED: kubectl is not on PATH");
        return;
    }
    for bin in bins {
        println!("checking {} ({})", bin.display(), version_of(&bin));
        let sim = SimCluster::new(Behaviours::default());
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        let addr = sim.start(shutdown.clone()).await.unwrap();
        sim.add_deployment(&DeploymentSpec {
            reference: "production/app".into(),
            replicas: 2,
            version: "v1".into(),
            opted_in: true,
            paused: false,
            annotations: BTreeMap::new(),
            sidecars: Vec::new(),
            strategy: Default::default(),
            progress_deadline: None,
            gitops: None,
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        std::fs::write(
            &kubeconfig,
            deploy_watchdog::sim::cli::kubeconfig_yaml(&format!("http://{addr}")),
        )
        .unwrap();
        let k = std::sync::Arc::new(Kubectl { bin, kubeconfig });
        let blocking = |args: &'static [&'static str]| {
            let k = k.clone();
            tokio::task::spawn_blocking(move || k.run(args))
        };
        sim.deploy("production", "app", "v2").unwrap();
        let status = blocking(&["rollout", "status", "deployment/app", "--timeout=60s"])
            .await
            .unwrap();
        assert!(status.ok, "{}", status.stderr);

        sim.set_controller_running(false);
        sim.deploy("production", "app", "v1").unwrap();
        let out = blocking(&["rollout", "undo", "deployment/app"])
            .await
            .unwrap();
        assert!(
            out.ok,
            "kubectl exits 0 on a skipped rollback: {}",
            out.stderr
        );
        let client =
            kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
                .unwrap();
        let err = rollback::execute(
            &client,
            "production",
            "app",
            current_revision(&client).await,
            |_| BTreeMap::new(),
        )
        .await
        .unwrap_err();
        let RollbackError::Refused {
            refusal: refusal @ Refusal::AlreadyMatches(1),
            ..
        } = err
        else {
            panic!("expected the already-matches skip, got {err}");
        };
        assert_eq!(
            out.stdout.trim(),
            format!("deployment.apps/app {refusal}"),
            "{}",
            out.stderr
        );
        assert!(
            sim.template_changes().is_empty(),
            "neither sent a rollback patch: {:?}",
            sim.template_changes()
        );
        // The scenario's `undo` event skips too.
        assert_eq!(
            sim.undo("production", "app").unwrap(),
            deploy_watchdog::sim::cluster::Undone::Skipped(1)
        );
        sim.set_controller_running(true);
    }
}

/// The scenario event `undo` (someone runs `kubectl rollout undo`) leaves the Deployment kubectl
/// leaves, from the same history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_undo_leaves_what_kubectl_undo_leaves() {
    let bins = kubectls();
    if bins.is_empty() {
        println!("SKIPPED: kubectl is not on PATH");
        return;
    }
    for bin in bins {
        println!("checking {} ({})", bin.display(), version_of(&bin));
        let shutdown = CancellationToken::new();
        let _stop = shutdown.clone().drop_guard();
        let mut clusters = Vec::new();
        for _ in 0..2 {
            let sim = SimCluster::new(Behaviours::default());
            let addr = sim.start(shutdown.clone()).await.unwrap();
            sim.add_deployment(&DeploymentSpec {
                reference: "production/app".into(),
                replicas: 2,
                version: "v1".into(),
                opted_in: true,
                paused: false,
                annotations: BTreeMap::from([("team".to_string(), "payments".to_string())]),
                strategy: Default::default(),
                progress_deadline: None,
                gitops: None,
                sidecars: Vec::new(),
            });
            let dir = tempfile::tempdir().unwrap();
            let kubeconfig = dir.path().join("kubeconfig.yaml");
            std::fs::write(
                &kubeconfig,
                deploy_watchdog::sim::cli::kubeconfig_yaml(&format!("http://{addr}")),
            )
            .unwrap();
            let k = std::sync::Arc::new(Kubectl {
                bin: bin.clone(),
                kubeconfig,
            });
            clusters.push((sim, k, dir));
        }
        for (sim, k, _) in &clusters {
            for version in ["v2", "v3"] {
                sim.deploy("production", "app", version).unwrap();
                let k = k.clone();
                tokio::task::spawn_blocking(move || k.rolled_out("app"))
                    .await
                    .unwrap();
            }
        }
        let (by_kubectl, by_event) = (&clusters[0], &clusters[1]);
        let k = by_kubectl.1.clone();
        let out = tokio::task::spawn_blocking(move || k.ok(&["rollout", "undo", "deployment/app"]))
            .await
            .unwrap();
        assert_eq!(out.trim(), "deployment.apps/app rolled back", "{out}");
        assert_eq!(
            by_event.0.undo("production", "app").unwrap(),
            deploy_watchdog::sim::cluster::Undone::RolledBack(2)
        );
        let (a, b) = (by_kubectl.1.clone(), by_event.1.clone());
        let (a, b) = tokio::task::spawn_blocking(move || {
            a.rolled_out("app");
            b.rolled_out("app");
            (
                a.json(&["get", "deployment", "app"]),
                b.json(&["get", "deployment", "app"]),
            )
        })
        .await
        .unwrap();
        assert_eq!(
            (undo_result(&a), &a["metadata"]["generation"]),
            (undo_result(&b), &b["metadata"]["generation"]),
            "kubectl (left) and the undo event (right) differ"
        );
        assert_eq!(
            a.pointer("/spec/template/metadata/labels/app.kubernetes.io~1version"),
            Some(&Value::from("v2"))
        );
    }
}

//! `deploy-watchdog doctor` against `simulate --serve`: one test per finding (a sink missing,
//! a provider unreachable or without data, a verb RBAC denies, a health endpoint that does not
//! answer, a GitOps CRD absent), the exit codes, and the same checks logged once at the
//! daemon's start-up and served on `/api/v1/findings`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Killed, serve, wait_for};

/// Everything works: one app with traffic, one Deployment under Argo CD (its CRD installed).
const CLEAN: &str = r#"
name: doctor-clean
duration: 1h
config:
  mode: enforce
  watch: {window: 90s, interval: 200ms}
  judge: {error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s}
deployments:
  - {ref: production/app, replicas: 2, version: v1}
  - {ref: payments/api, replicas: 1, version: v3, gitops: {argocd: {application: argocd/payments}}}
apps:
  production/app@v1: {pods: running, rps: 200, error_ratio: 0.001}
  payments/api@v3: {pods: running, rps: 100, error_ratio: 0.001}
script: []
"#;

/// RBAC refuses `patch deployments`; `legacy` serves no health JSON (404); `shop` carries Argo
/// CD's tracking annotation but no Argo CD runs here (its CRD is absent).
const TROUBLED: &str = r#"
name: doctor-troubled
duration: 1h
config:
  mode: enforce
  watch: {window: 90s, interval: 200ms}
  judge: {error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s}
simulation: {rbac_denied: [patch deployments]}
deployments:
  - {ref: production/app, replicas: 2, version: v1}
  - {ref: production/legacy, replicas: 1, version: v1}
  - {ref: production/shop, replicas: 1, version: v1, annotations: {argocd.argoproj.io/tracking-id: "shop:apps/Deployment:production/shop"}}
apps:
  production/app@v1: {pods: running, rps: 200, error_ratio: 0.001}
  production/legacy@v1: {pods: running, rps: 50, health: {status: 404, body: "404 page not found"}}
  production/shop@v1: {pods: running, rps: 50}
script: []
"#;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deploy-watchdog"))
}

struct Served {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    config: PathBuf,
    _served: Killed,
}

fn start(scenario: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scenario.yaml");
    std::fs::write(&file, scenario).unwrap();
    let (served, kubeconfig, config) = serve(&file, dir.path());
    Served {
        dir,
        kubeconfig,
        config,
        _served: served,
    }
}

/// One `doctor -o json` run: its exit code and findings.
struct Run {
    code: i32,
    findings: Vec<Value>,
}

impl Run {
    fn find(&self, check: &str, subject: &str) -> &Value {
        self.findings
            .iter()
            .find(|f| f["check"] == check && f["subject"] == subject)
            .unwrap_or_else(|| panic!("no {check} finding about {subject}: {:#?}", self.findings))
    }

    fn problems(&self) -> Vec<&Value> {
        self.findings
            .iter()
            .filter(|f| f["severity"] != "ok")
            .collect()
    }
}

fn doctor(s: &Served, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(exe());
    cmd.args(["doctor", "-o", "json", "--config"])
        .arg(&s.config)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .env_remove("DEPLOY_WATCHDOG_PAGERDUTY_ROUTING_KEY")
        .env_remove("DEPLOY_WATCHDOG_SLACK_WEBHOOK_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let findings: Vec<Value> = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "doctor -o json printed no JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Run {
        code: out.status.code().unwrap(),
        findings,
    }
}

/// The simulated Prometheus has data once it has scraped twice inside the sample window: the
/// first runs may find none. Runs `doctor` until its provider finding is `ok`.
fn doctor_with_data(s: &Served, env: &[(&str, &str)]) -> Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let run = doctor(s, env);
        if run.find("providers", "providers.prometheus")["severity"] == "ok" {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had data: {:#?}",
            run.findings
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_cluster_where_everything_works_has_no_finding_and_exits_0() {
    let s = start(CLEAN);
    let run = doctor_with_data(&s, &[]);
    assert_eq!(run.code, 0, "{:#?}", run.findings);
    assert!(run.problems().is_empty(), "{:#?}", run.problems());
    assert_eq!(run.find("sinks", "notify.pagerduty")["message"], "on");
    assert!(
        run.find("providers", "providers.prometheus")["message"]
            .as_str()
            .unwrap()
            .contains("with data")
    );
    let rbac = run.find("rbac", "rbac")["message"].as_str().unwrap();
    // The watch rules (13 verbs) and Argo CD's (applications get/patch, applicationsets get).
    assert!(rbac.starts_with("15 of 15 verbs"), "{rbac}");
    assert!(
        run.find("health", "health.url")["message"]
            .as_str()
            .unwrap()
            .starts_with("2 of 2")
    );
    assert!(
        run.find("gitops", "applications.argoproj.io")["message"]
            .as_str()
            .unwrap()
            .contains("payments/api")
    );

    // The text output says the same, for people.
    let out = Command::new(exe())
        .args(["doctor", "--config"])
        .arg(&s.config)
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains('\x1b'), "piped output is plain: {text}");
    assert!(text.contains("everything checked works"), "{text}");
}

/// The opted-in Deployments are listed in pages: every page is read, and a bad annotation on a
/// Deployment of the last page is found.
#[test]
fn every_page_of_the_opted_in_deployments_is_checked() {
    let mut scenario = String::from(
        "name: doctor-many\nduration: 1h\nconfig:\n  mode: enforce\n  watch: {window: 90s, interval: 1s}\ndeployments:\n",
    );
    for i in 0..249 {
        scenario.push_str(&format!(
            "  - {{ref: many/app-{i:03}, replicas: 1, version: v1}}\n"
        ));
    }
    scenario.push_str(
        "  - {ref: many/app-249, replicas: 1, version: v1, annotations: {deploy-watchdog.io/rollout-timeout: soon}}\nscript: []\n",
    );
    let s = start(&scenario);
    let run = doctor(&s, &[]);
    assert_eq!(
        run.find("deployments", "watch.selector")["message"],
        "250 opted-in Deployments in every namespace"
    );
    let bad = run.find("deployments", "many/app-249");
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .contains("deploy-watchdog.io/rollout-timeout"),
        "{bad:#?}"
    );
    let health = run.find("health", "health.url")["message"]
        .as_str()
        .unwrap();
    assert!(health.starts_with("249 of 249"), "{health}");
}

#[test]
fn no_pagerduty_routing_key_blocks_and_no_slack_url_warns() {
    let s = start(CLEAN);
    let empty = s.dir.path().join("empty.secret");
    std::fs::write(&empty, "").unwrap();
    let empty = empty.to_str().unwrap();

    let run = doctor(
        &s,
        &[(
            "DEPLOY_WATCHDOG__SECRETS__PAGERDUTY_ROUTING_KEY_FILE",
            empty,
        )],
    );
    let f = run.find("sinks", "notify.pagerduty");
    assert_eq!(f["severity"], "blocking", "{f}");
    assert!(
        f["message"].as_str().unwrap().contains("pages go nowhere"),
        "{f}"
    );
    assert!(f["fix"].as_str().unwrap().contains("routing key"), "{f}");
    assert_eq!(run.code, 1);

    let run = doctor(
        &s,
        &[("DEPLOY_WATCHDOG__SECRETS__SLACK_WEBHOOK_URL_FILE", empty)],
    );
    let f = run.find("sinks", "notify.slack");
    assert_eq!(f["severity"], "warning", "{f}");
    assert_eq!(run.find("sinks", "notify.pagerduty")["severity"], "ok");

    // PagerDuty turned off on purpose is a choice, not a finding.
    let run = doctor(
        &s,
        &[
            (
                "DEPLOY_WATCHDOG__SECRETS__PAGERDUTY_ROUTING_KEY_FILE",
                empty,
            ),
            ("DEPLOY_WATCHDOG__NOTIFY__PAGERDUTY__ENABLED", "false"),
        ],
    );
    assert_eq!(run.find("sinks", "notify.pagerduty")["severity"], "ok");
}

#[test]
fn an_unreachable_prometheus_blocks_whether_refused_or_unresolvable() {
    let s = start(CLEAN);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    for url in [
        format!("http://{closed}"),
        "http://prometheus.doctor-test.invalid".to_string(),
    ] {
        let run = doctor(&s, &[("DEPLOY_WATCHDOG__PROVIDERS__PROMETHEUS__URL", &url)]);
        let f = run.find("providers", "providers.prometheus");
        assert_eq!(f["severity"], "blocking", "{url}: {f}");
        assert!(
            f["message"].as_str().unwrap().starts_with("unreachable"),
            "{url}: {f}"
        );
        assert!(
            f["fix"]
                .as_str()
                .unwrap()
                .contains("providers.prometheus.url"),
            "{f}"
        );
        assert_eq!(run.code, 1, "{url}");
    }
}

#[test]
fn datadog_refusing_the_keys_is_told_apart_from_unreachable_and_blocks() {
    let s = start(&CLEAN.replace(
        "judge: {error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s}",
        "judge: {error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s}\n  providers: {datadog: {}}",
    ));
    let wrong = s.dir.path().join("wrong-api-key.secret");
    std::fs::write(&wrong, "0WRONG0DATADOG0API0KEY0000000000").unwrap();
    let run = doctor(
        &s,
        &[(
            "DEPLOY_WATCHDOG__SECRETS__DATADOG_API_KEY_FILE",
            wrong.to_str().unwrap(),
        )],
    );
    let f = run.find("providers", "providers.datadog");
    assert_eq!(f["severity"], "blocking", "{f}");
    let message = f["message"].as_str().unwrap();
    assert!(
        message.starts_with("refuses the watchdog's credentials"),
        "{f}"
    );
    assert!(message.contains("HTTP 403"), "{f}");
    assert!(!message.contains("0WRONG0"), "never the key itself: {f}");
    assert!(
        f["fix"].as_str().unwrap().contains("datadog_api_key_file"),
        "{f}"
    );
    assert_eq!(run.code, 1);
}

#[test]
fn queries_that_match_no_series_are_a_no_data_warning() {
    let s = start(CLEAN);
    // A label the apps' series do not carry: Prometheus answers, with an empty vector.
    let run = doctor(
        &s,
        &[(
            "DEPLOY_WATCHDOG__PROVIDERS__PROMETHEUS__REQUESTS_QUERY",
            r#"sum(increase(http_requests_total{namespace="{namespace}",app_name="{name}"}[{window}]))"#,
        )],
    );
    let f = run.find("providers", "providers.prometheus");
    assert_eq!(f["severity"], "warning", "{f}");
    let message = f["message"].as_str().unwrap();
    assert!(message.contains("no data"), "{f}");
    assert!(message.contains("production/app"), "{f}");
    assert_eq!(
        run.code,
        0,
        "no data is not blocking: {:#?}",
        run.problems()
    );
}

#[test]
fn a_denied_verb_a_missing_health_endpoint_and_an_absent_crd_are_each_found() {
    let s = start(TROUBLED);
    let run = doctor_with_data(&s, &[]);

    let f = run.find("rbac", "patch deployments.apps (all namespaces)");
    assert_eq!(f["severity"], "blocking", "{f}");
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("no rollback can be sent")
    );
    assert!(
        f["fix"]
            .as_str()
            .unwrap()
            .contains("kubectl auth can-i patch deployments.apps -A")
    );

    let f = run.find("health", "production/legacy");
    assert_eq!(f["severity"], "warning", "{f}");
    assert!(f["message"].as_str().unwrap().contains("HTTP 404"), "{f}");

    let f = run.find("gitops", "applications.argoproj.io");
    assert_eq!(f["severity"], "warning", "{f}");
    let message = f["message"].as_str().unwrap();
    assert!(message.contains("CRD is not installed"), "{f}");
    assert!(message.contains("production/shop"), "{f}");

    // Nothing else: the other verbs are allowed, the other apps answer.
    assert_eq!(run.problems().len(), 3, "{:#?}", run.problems());
    assert_eq!(run.code, 1);

    // The simulated API server refuses the verb itself, with kube-apiserver's 403 Status.
    let text = std::fs::read_to_string(&s.kubeconfig).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            r#"{"metadata":{"labels":{"x":"y"}}}"#,
            &format!("{server}/apis/apps/v1/namespaces/production/deployments/app"),
        ])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 403);
    assert_eq!(status["reason"], "Forbidden");

    // kubectl asks the same question (in protobuf) and gets the same answers.
    let Some(kubectl) = support::peer("kubectl", "apt-get install kubectl") else {
        return;
    };
    let can_i = |args: &[&str]| {
        let out = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .args(["auth", "can-i"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, answer, stderr) = can_i(&["patch", "deployments", "-A"]);
    assert_eq!((code, answer.as_str()), (Some(1), "no"), "{stderr}");
    let (code, answer, stderr) = can_i(&["get", "deployments", "-n", "production"]);
    assert_eq!((code, answer.as_str()), (Some(0), "yes"), "{stderr}");
}

#[test]
fn the_daemon_logs_the_findings_once_at_start_up_and_serves_them() {
    let s = start(TROUBLED);
    let (_daemon, lines) = support::run_daemon(&s.config, &s.kubeconfig, &["--log-format", "json"]);
    let mut log: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("start-up checks done"))
    }) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => log.extend(serde_json::from_str::<Value>(&l).ok()),
            Err(_) => panic!("the start-up checks never finished: {log:#?}"),
        }
    }
    let denied: Vec<&Value> = log
        .iter()
        .filter(|l| {
            l["level"] == "WARN" && l["subject"] == "patch deployments.apps (all namespaces)"
        })
        .collect();
    assert_eq!(denied.len(), 1, "logged once, as a warning: {log:#?}");
    assert_eq!(denied[0]["severity"], "blocking");
    assert!(
        denied[0]["message"]
            .as_str()
            .unwrap()
            .contains("RBAC does not allow it")
    );
    assert!(
        log.iter()
            .any(|l| l["level"] == "WARN" && l["subject"] == "production/legacy")
    );

    let listen = log
        .iter()
        .find(|l| l["message"] == "starting")
        .and_then(|l| l["listen"].as_str())
        .unwrap()
        .to_string();
    let get = |path: &str| -> Value {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://{listen}{path}")])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let findings = get("/api/v1/findings");
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["severity"] == "blocking" && f["check"] == "rbac"),
        "{findings:#}"
    );
    let report = get("/api/v1/rollouts");
    assert_eq!(
        report["findings"], findings,
        "the page's report carries them too"
    );
    wait_for(
        "the page to name its findings table",
        Duration::from_secs(5),
        || {
            Command::new("curl")
                .args(["-sf", &format!("http://{listen}/")])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("id=\"findings\""))
        },
    );

    // In a real browser, the page's script draws them.
    let Some(chromium) = support::peer("chromium", "apt-get install chromium") else {
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("http://{listen}/"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the page's script ran: {dom}"
    );
    let row = dom
        .split("<tr")
        .find(|r| r.contains(r#"data-severity="blocking""#))
        .unwrap_or_else(|| panic!("no blocking finding on the page: {dom}"));
    assert!(row.contains("patch deployments.apps"), "{row}");
    assert!(
        row.contains("kubectl auth can-i"),
        "the fix is shown: {row}"
    );
}

#[test]
fn a_config_that_run_would_refuse_exits_2_and_an_unreachable_cluster_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "judge: {error_rate_threshold: lots}\n").unwrap();
    let out = Command::new(exe())
        .args(["doctor", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("judge.error_rate_threshold"));

    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "notify: {allow_silent: true, pagerduty: {enabled: false}, slack: {enabled: false}}\n",
    )
    .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    std::fs::write(
        &kubeconfig,
        deploy_watchdog::sim::cli::kubeconfig_yaml(&format!("http://{closed}")),
    )
    .unwrap();
    let out = Command::new(exe())
        .args(["doctor", "-o", "json", "--config"])
        .arg(&good)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .unwrap();
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["check"] == "cluster" && f["severity"] == "blocking"),
        "{findings:#?}"
    );
    assert_eq!(out.status.code(), Some(1));
}

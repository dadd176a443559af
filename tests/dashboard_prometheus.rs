//! Every query of the chart's Grafana dashboards, run against a real Prometheus (Debian package
//! `prometheus`) scraping the daemon's own `/metrics` every second: the daemon runs as its own
//! process (`deploy-watchdog run`) against `simulate --serve`, through an API server outage,
//! failing sinks and a failing provider, a bad release that it rolls back and a good one it is
//! still watching. Each query, with Grafana's variables substituted, must return data; the key
//! panels must show what happened (the rollback, its reason, the retries, the outage).
//!
//! `./scripts/check` installs Prometheus and sets `DEPLOY_WATCHDOG_REQUIRE_PEERS=1`, so there a
//! missing binary fails instead of skipping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Killed, wait_for};

const SCENARIO: &str = r#"
name: dashboard
description: app v2 serves 5% errors and is rolled back; good v2 is healthy and watched.
duration: 1h
config:
  mode: enforce
  watch: {window: 10m, interval: 250ms, rollout_timeout: 30s, pending_timeout: 10s}
  judge: {error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s, failures_before_rollback: 3, inconclusive_limit: 100}
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

/// Grafana's variables, as the test substitutes them: ranges long enough to hold the whole run.
const VARIABLES: [(&str, &str); 4] = [
    ("$__rate_interval", "5m"),
    ("$__range", "5m"),
    ("$deployment_namespace", ".+"),
    ("$deployment", ".+"),
];

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deploy-watchdog"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process's stderr (or stdout) lines, read on a thread of their own so it never blocks.
fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    rx
}

/// Waits for a line for which `pick` gives a value; fails with what was read after `limit`.
fn wait_line<T>(
    lines: &mpsc::Receiver<String>,
    what: &str,
    limit: Duration,
    mut pick: impl FnMut(&str) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => {
                if let Some(v) = pick(&l) {
                    return v;
                }
                seen.push(l);
            }
            Err(_) => panic!("no {what}:\n{}", seen.join("\n")),
        }
    }
}

/// HTTP through curl (as the other process tests do): GET with URL-encoded parameters, POST
/// of JSON.
struct Http;

impl Http {
    fn get(&self, url: &str, query: &[(&str, String)]) -> Option<Value> {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "10", "-G", url]);
        for (k, v) in query {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = cmd.output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn post(&self, url: &str, body: &Value) -> bool {
        Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "10",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
            ])
            .arg("--data")
            .arg(body.to_string())
            .arg(url)
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

/// `simulate --serve` with its debug API, which plays script events at once.
struct Served {
    _process: Killed,
    debug: String,
    kubeconfig: PathBuf,
    config: PathBuf,
}

impl Served {
    fn start(dir: &Path) -> Served {
        let scenario = dir.join("dashboard.yaml");
        std::fs::write(&scenario, SCENARIO).unwrap();
        let kubeconfig = dir.join("kubeconfig.yaml");
        let config = dir.join("watchdog.yaml");
        let mut child = Command::new(exe())
            .arg("simulate")
            .arg("--serve")
            .arg(&scenario)
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .arg("--write-config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulate --serve starts");
        let out = lines_of(child.stdout.take().unwrap());
        let process = Killed(child);
        let debug = wait_line(&out, "debug API", Duration::from_secs(60), |l| {
            l.split("debug API (benchmark): ")
                .nth(1)
                .map(|u| u.trim().trim_end_matches("/debug/state").to_string())
        });
        // Keep draining its output.
        std::thread::spawn(move || for _ in out {});
        Served {
            _process: process,
            debug,
            kubeconfig,
            config,
        }
    }

    fn play(&self, http: &Http, events: &[Value]) {
        let events: Vec<Value> = events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["at"] = json!("0s");
                e
            })
            .collect();
        assert!(
            http.post(&format!("{}/debug/script", self.debug), &json!(events)),
            "playing {events:?}"
        );
    }
}

/// The daemon, its HTTP address once it has synced.
fn start_daemon(served: &Served) -> (Killed, String) {
    let (daemon, lines) = support::run_daemon(
        &served.config,
        &served.kubeconfig,
        &["--log-format", "json"],
    );
    let listen = wait_line(&lines, "listen address", Duration::from_secs(60), |l| {
        let v: Value = serde_json::from_str(l).ok()?;
        (v["message"] == "starting")
            .then(|| v["listen"].as_str().map(str::to_string))
            .flatten()
    });
    wait_line(&lines, "initial sync", Duration::from_secs(60), |l| {
        l.contains("initial sync complete").then_some(())
    });
    std::thread::spawn(move || for _ in lines {});
    (daemon, listen)
}

/// A Prometheus of our own scraping `target`'s `/metrics` every second.
fn start_prometheus(bin: &Path, dir: &Path, target: &str) -> (Killed, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: deploy-watchdog\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus-data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Killed(child), format!("http://{addr}"))
}

/// An instant query's result vector (empty when Prometheus does not answer yet).
fn instant(http: &Http, prometheus: &str, query: &str) -> Vec<Value> {
    http.get(
        &format!("{prometheus}/api/v1/query"),
        &[("query", query.to_string())],
    )
    .and_then(|v| v["data"]["result"].as_array().cloned())
    .unwrap_or_default()
}

/// Waits until `query` returns a sample of at least `at_least` (for a counter that may have
/// counted before the first scrape: its `increase`, not its value).
fn wait_for_value(http: &Http, prometheus: &str, query: &str, at_least: f64) {
    wait_for(query, Duration::from_secs(90), || {
        instant(http, prometheus, query)
            .iter()
            .any(|s| value(s) >= at_least)
    });
}

fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn substitute(expr: &str) -> String {
    let mut out = expr.to_string();
    for (var, value) in VARIABLES {
        out = out.replace(var, value);
    }
    assert!(!out.contains('$'), "a variable left in {out}");
    out
}

/// Every target of every panel: (panel title, refId, expr, instant).
fn queries() -> Vec<(String, String, String, bool)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("helm/deploy-watchdog/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut panels: Vec<Value> = d["panels"].as_array().unwrap().clone();
        let nested: Vec<Value> = panels
            .iter()
            .flat_map(|p| p["panels"].as_array().cloned().unwrap_or_default())
            .collect();
        panels.extend(nested);
        for p in panels {
            for t in p["targets"].as_array().cloned().unwrap_or_default() {
                out.push((
                    p["title"].as_str().unwrap().to_string(),
                    t["refId"].as_str().unwrap().to_string(),
                    t["expr"].as_str().unwrap().to_string(),
                    t["instant"] == true,
                ));
            }
        }
    }
    out
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus_scraping_the_daemon() {
    let Some(bin) = support::peer("prometheus", "apt-get install prometheus") else {
        return;
    };
    let http = Http;
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(dir.path());
    let (_daemon, listen) = start_daemon(&served);
    let (_prometheus, prometheus) = start_prometheus(&bin, dir.path(), &listen);
    wait_for_value(&http, &prometheus, "deploy_watchdog_build_info", 1.0);

    // The API server goes away for a moment: requests fail to connect, watches restart.
    served.play(&http, &[json!({"api": {"state": "down"}})]);
    std::thread::sleep(Duration::from_secs(2));
    served.play(&http, &[json!({"api": {"state": "up"}})]);
    wait_for_value(
        &http,
        &prometheus,
        r#"sum(deploy_watchdog_kube_api_errors_total{category="connection"})"#,
        1.0,
    );

    // Both sinks and the provider fail while two releases go out. The provider's errors last
    // until Prometheus has seen them increase: a series first scraped with its errors already
    // counted shows no increase.
    served.play(
        &http,
        &[
            json!({"sink": {"name": "pagerduty", "state": "error"}}),
            json!({"sink": {"name": "slack", "state": "error"}}),
            json!({"provider": {"name": "prometheus", "state": "error"}}),
            json!({"deploy": {"deployment": "production/app", "version": "v2"}}),
            json!({"deploy": {"deployment": "production/good", "version": "v2"}}),
        ],
    );
    wait_for_value(
        &http,
        &prometheus,
        r#"sum(increase(deploy_watchdog_provider_request_duration_seconds_count{result="http_status"}[5m]))"#,
        1.0,
    );
    served.play(
        &http,
        &[json!({"provider": {"name": "prometheus", "state": "up"}})],
    );
    // The bad release is rolled back; its page and message are retried while the sinks fail.
    wait_for_value(
        &http,
        &prometheus,
        r#"sum(deploy_watchdog_pages_total{result="retried"})"#,
        1.0,
    );
    wait_for_value(
        &http,
        &prometheus,
        r#"sum(deploy_watchdog_notifications_total{result="retried"})"#,
        1.0,
    );
    served.play(
        &http,
        &[
            json!({"sink": {"name": "pagerduty", "state": "up"}}),
            json!({"sink": {"name": "slack", "state": "up"}}),
        ],
    );
    wait_for_value(
        &http,
        &prometheus,
        r#"sum(deploy_watchdog_rollout_outcomes_total{outcome="rolled_back",reason="error_rate"})"#,
        1.0,
    );
    wait_for_value(
        &http,
        &prometheus,
        r#"sum(increase(deploy_watchdog_pages_total{action="trigger",result="delivered"}[5m]))"#,
        1.0,
    );
    wait_for_value(
        &http,
        &prometheus,
        r#"sum(increase(deploy_watchdog_notifications_total{result="delivered"}[5m]))"#,
        1.0,
    );
    // The good release is still watched, its error rate on the gauges.
    wait_for_value(
        &http,
        &prometheus,
        r#"count(deploy_watchdog_check_value{deployment="good",check="error_rate_prometheus"})"#,
        1.0,
    );

    // Every query, as Grafana would send it over the last 5 minutes (the whole run): the last
    // step is `end` itself, after every sample waited for above.
    let end = jiff::Timestamp::now();
    let start = end - jiff::SignedDuration::from_secs(300);
    let mut answers = Vec::new();
    let queries = queries();
    assert!(queries.len() > 15, "{} queries", queries.len());
    for (title, ref_id, expr, is_instant) in &queries {
        let q = substitute(expr);
        let (url, params) = if *is_instant {
            (
                format!("{prometheus}/api/v1/query"),
                vec![("query", q.clone())],
            )
        } else {
            (
                format!("{prometheus}/api/v1/query_range"),
                vec![
                    ("query", q.clone()),
                    ("start", start.to_string()),
                    ("end", end.to_string()),
                    ("step", "1".to_string()),
                ],
            )
        };
        let answer = http.get(&url, &params).expect("Prometheus answers");
        assert_eq!(
            answer["status"], "success",
            "{title} {ref_id}: {q}: {answer}"
        );
        let result = answer["data"]["result"].as_array().unwrap();
        assert!(!result.is_empty(), "{title} {ref_id}: no data for {q}");
        answers.push((title.clone(), ref_id.clone(), result.clone()));
    }

    // What the key panels show. Range results: the last value of each series.
    let series = |title: &str, ref_id: &str| -> Vec<(serde_json::Map<String, Value>, f64)> {
        let (_, _, result) = answers
            .iter()
            .find(|(t, r, _)| t == title && r == ref_id)
            .unwrap_or_else(|| panic!("no panel {title} {ref_id}"));
        result
            .iter()
            .map(|s| {
                let last = s["values"]
                    .as_array()
                    .and_then(|v| v.last())
                    .map(|v| json!({"value": v}))
                    .unwrap_or_else(|| s.clone());
                (
                    s["metric"].as_object().cloned().unwrap_or_default(),
                    value(&last),
                )
            })
            .collect()
    };
    let has = |title: &str, ref_id: &str, labels: &[(&str, &str)], ok: &dyn Fn(f64) -> bool| {
        let found = series(title, ref_id);
        assert!(
            found.iter().any(|(m, v)| labels
                .iter()
                .all(|(k, want)| m.get(*k).and_then(Value::as_str) == Some(want))
                && ok(*v)),
            "{title} {ref_id}: no series {labels:?} with the expected value in {found:?}"
        );
    };
    has("Rollouts watched now", "A", &[], &|v| v >= 1.0);
    has(
        "Verdicts in the time range",
        "A",
        &[("outcome", "rolled_back"), ("reason", "error_rate")],
        &|v| v >= 1.0,
    );
    has(
        "Verdicts by outcome and reason",
        "A",
        &[("outcome", "rolled_back"), ("reason", "error_rate")],
        &|v| v > 0.0,
    );
    has("Time to action", "A", &[("action", "rollback")], &|v| {
        v.is_finite() && v > 0.0
    });
    has("Time to action", "C", &[], &|v| v.is_finite() && v > 0.0);
    has(
        "Check values against their thresholds",
        "A",
        &[
            ("deployment_namespace", "production"),
            ("deployment", "good"),
            ("check", "error_rate_prometheus"),
        ],
        &|v| (0.0..0.01).contains(&v),
    );
    has(
        "Check values against their thresholds",
        "B",
        &[("deployment", "good"), ("check", "error_rate_prometheus")],
        &|v| (v - 0.01).abs() < 1e-9,
    );
    has(
        "Checks now",
        "C",
        &[("deployment", "good"), ("check", "error_rate_prometheus")],
        &|v| v == 0.0,
    );
    has(
        "Provider errors by category",
        "A",
        &[("provider", "prometheus"), ("result", "http_status")],
        &|v| v > 0.0,
    );
    has(
        "Provider queries by result",
        "A",
        &[("provider", "prometheus"), ("result", "answered")],
        &|v| v > 0.0,
    );
    has(
        "PagerDuty events",
        "A",
        &[("action", "trigger"), ("result", "retried")],
        &|v| v > 0.0,
    );
    has(
        "PagerDuty events",
        "A",
        &[("action", "trigger"), ("result", "delivered")],
        &|v| v > 0.0,
    );
    has("Slack messages", "A", &[("result", "retried")], &|v| {
        v > 0.0
    });
    has("Slack messages", "A", &[("result", "delivered")], &|v| {
        v > 0.0
    });
    has(
        "Kubernetes API errors",
        "A",
        &[("category", "connection")],
        &|v| v > 0.0,
    );
    has(
        "Paused GitOps owners",
        "A",
        &[("kind", "application")],
        &|v| v == 0.0,
    );
}

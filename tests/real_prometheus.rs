//! The Prometheus provider against a real Prometheus server (Debian package `prometheus`)
//! scraping the simulated apps' `/metrics` every second: its default queries return the counts
//! the apps served, and every scenario ends with the same verdict as with the simulated query
//! API. Then at realistic scrape intervals (15 s and Prometheus' default 1 m), from history
//! backfilled with `promtool` and queried at chosen times: the shipped queries and sample window
//! see data in every sample and the judge's verdicts are right. `./scripts/check` installs Prometheus when it is missing and sets
//! `DEPLOY_WATCHDOG_REQUIRE_PEERS=1`, so there a missing binary fails instead of skipping.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deploy_watchdog::check::{ObjectKey, Provider};
use deploy_watchdog::config::PrometheusConfig;
use deploy_watchdog::judge::ProviderSample;
use deploy_watchdog::probes::prometheus::Prometheus;
use deploy_watchdog::sim::runner::{self, ScenarioReport, Simulation};
use deploy_watchdog::sim::scenario::Scenario;
use tokio_util::sync::CancellationToken;

fn prometheus_binary() -> Option<PathBuf> {
    support::peer("prometheus", "apt-get install prometheus")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus server of our own on a loopback port, scraping `target` every second; killed
/// on drop. The distribution's own service (if any, on :9090) is not used.
struct RealPrometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl RealPrometheus {
    fn start(bin: &Path, target: SocketAddr) -> RealPrometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: simulated-apps\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        RealPrometheus {
            child,
            url: format!("http://{addr}"),
            _dir: dir,
        }
    }

    /// Waits until the server answers and has scraped the apps at least `samples` times.
    async fn wait_for_samples(&mut self, samples: usize) {
        let client = deploy_watchdog::probes::http_client();
        let query = "count_over_time(up{job=\"simulated-apps\"}[1m])";
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "prometheus exited early"
            );
            let answer = client
                .get(format!("{}/api/v1/query", self.url))
                .query(&[("query", query)])
                .send()
                .await;
            if let Ok(r) = answer
                && let Ok(v) = r.json::<serde_json::Value>().await
                && let Some(n) = v
                    .pointer("/data/result/0/value/1")
                    .and_then(|n| n.as_str())
                    .and_then(|n| n.parse::<f64>().ok())
                && n as usize >= samples
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "prometheus at {} never scraped the simulated apps",
                self.url
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RealPrometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A scenario with windows long enough for 1 s scrapes: a 5 s sample holds ~5 scrapes, the
/// two `increase()` needs and more.
/// `expect` is the Deployment's expectation; empty for a simulation that is only served.
fn scenario(name: &str, new_error_ratio: f64, script_extra: &str, expect: &str) -> Scenario {
    let expect = if expect.is_empty() {
        String::new()
    } else {
        format!("expect:\n  production/app: {expect}")
    };
    let yaml = format!(
        r#"
name: {name}
duration: 60s
config:
  mode: enforce
  watch: {{window: 20s, interval: 250ms, rollout_timeout: 10s, pending_timeout: 5s}}
  judge: {{error_rate_threshold: 0.01, min_requests: 20, sample_window: 5s, failures_before_rollback: 3, inconclusive_limit: 8}}
deployments:
  - {{ref: production/app, replicas: 3, version: v1.2.2}}
apps:
  production/app@v1.2.2: {{pods: running, rps: 200, error_ratio: 0.001}}
  production/app@v1.2.3: {{pods: running, rps: 200, error_ratio: {new_error_ratio}}}
script:
  - {{at: 1s, deploy: {{deployment: production/app, version: v1.2.3}}}}
{script_extra}
{expect}
"#
    );
    Scenario::parse(&yaml, &format!("{name}.yaml")).unwrap()
}

/// The outcome of each rollout, as compared between the two runs.
fn verdicts(r: &ScenarioReport) -> Vec<(String, String, Option<String>, Option<String>)> {
    r.rollouts
        .iter()
        .map(|ro| {
            (
                ro.deployment.clone(),
                ro.outcome.clone(),
                ro.reason.clone(),
                ro.final_version.clone(),
            )
        })
        .collect()
}

async fn with_simulated_api(s: &Scenario) -> ScenarioReport {
    runner::run(s, &format!("{}.yaml", s.name), None)
        .await
        .unwrap()
}

/// Runs `s` with the daemon's Prometheus URL at a real server scraping the simulation;
/// `stop_after` kills that server that long into the run.
async fn with_real_prometheus(
    bin: &Path,
    s: &Scenario,
    stop_after: Option<Duration>,
) -> ScenarioReport {
    let file = format!("{}.yaml", s.name);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let config = runner::daemon_config(s, &file).unwrap();
    let mut sim = Simulation::start(s, config, &file, &shutdown)
        .await
        .unwrap();
    let mut prometheus = RealPrometheus::start(bin, sim.apps_addr);
    // Enough history before the deploy that every sample window is full.
    prometheus.wait_for_samples(6).await;
    sim.config.providers.prometheus.as_mut().unwrap().url = prometheus.url.parse().expect("a URL");
    let report = match stop_after {
        None => runner::run_in(&sim, s, &file, None).await.unwrap(),
        Some(after) => {
            let run = runner::run_in(&sim, s, &file, None);
            tokio::pin!(run);
            tokio::select! {
                r = &mut run => panic!("the run ended before Prometheus was stopped: {r:?}"),
                _ = tokio::time::sleep(after) => {}
            }
            prometheus.stop();
            run.await.unwrap()
        }
    };
    prometheus.stop();
    report
}

fn compare(s: &Scenario, simulated: &ScenarioReport, real: &ScenarioReport) {
    println!("{}: simulated API: {:?}", s.name, verdicts(simulated));
    println!("{}: real Prometheus: {:?}", s.name, verdicts(real));
    assert!(
        simulated.ok,
        "{}: with the simulated query API: {:?}",
        s.name, simulated.failures
    );
    assert!(
        real.ok,
        "{}: with a real Prometheus: {:?}",
        s.name, real.failures
    );
    assert_eq!(verdicts(simulated), verdicts(real), "{}", s.name);
}

/// The two tests run one after the other, so no more than three real Prometheus servers share
/// the machine's cores with the simulations at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_queries_return_the_counts_the_apps_served() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let Some(bin) = prometheus_binary() else {
        return;
    };
    let s = scenario("counts", 0.05, "", "");
    let file = "counts.yaml";
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let config = runner::daemon_config(&s, file).unwrap();
    let sim = Simulation::start(&s, config, file, &shutdown)
        .await
        .unwrap();
    let mut prometheus = RealPrometheus::start(&bin, sim.apps_addr);
    prometheus.wait_for_samples(8).await;

    let provider = Prometheus::new(
        deploy_watchdog::probes::http_client(),
        PrometheusConfig {
            url: prometheus.url.parse().expect("a URL"),
            ..PrometheusConfig::default()
        },
    );
    let window = Duration::from_secs(5);
    let ProviderSample::Counts { requests, errors } =
        provider.sample("production", "app", window).await
    else {
        panic!("no counts from the real Prometheus");
    };
    // The apps served 200 requests/s, 0.1 % errors: Prometheus extrapolates the increase over
    // the whole range from the scrapes inside it, so allow for scrape jitter, not for a
    // different order of magnitude.
    let (served, served_errors) = sim.apps.counts("production", "app", window);
    println!(
        "requests: prometheus {requests:.1}, apps {served:.1}; errors: prometheus {errors:.2}, apps {served_errors:.2}"
    );
    assert!(
        (requests - served).abs() <= served * 0.25,
        "requests {requests} vs served {served}"
    );
    assert!(
        (requests - 1000.0).abs() <= 250.0,
        "requests {requests} over 5 s at 200 rps"
    );
    assert!(errors <= requests * 0.01, "errors {errors} of {requests}");

    // The grouped pair the shared round sends answers for this Deployment as its own pair does
    // (the real Prometheus evaluates the same data twice: equal up to the scrapes in between),
    // and says nothing of a Deployment it has no series for.
    let grouping = PrometheusConfig::default().grouped;
    let members = [
        ObjectKey::new("production", "app"),
        ObjectKey::new("production", "absent"),
    ];
    let grouped = provider
        .sample_grouped(&grouping, &members, window)
        .await
        .expect("the real Prometheus answers the grouped queries");
    let ProviderSample::Counts {
        requests: grouped_requests,
        errors: grouped_errors,
    } = grouped[&members[0]]
    else {
        panic!("no grouped counts: {grouped:?}");
    };
    println!("grouped: {grouped_requests:.1} requests, {grouped_errors:.2} errors");
    assert!(
        (grouped_requests - requests).abs() <= requests * 0.25,
        "grouped {grouped_requests} vs own {requests}"
    );
    assert!(grouped_errors <= grouped_requests * 0.01);
    assert_eq!(grouped[&members[1]], ProviderSample::NoData);

    // The bad version's errors show up in the error query once it serves.
    sim.cluster.deploy("production", "app", "v1.2.3").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let ProviderSample::Counts {
            requests: r,
            errors: e,
        } = provider.sample("production", "app", window).await
            && r > 0.0
            && e / r > 0.03
        {
            println!("after the deploy: {e:.1} errors of {r:.1} requests");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the 5 % errors of v1.2.3 never reached the error query"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verdicts_match_the_simulated_query_api() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let Some(bin) = prometheus_binary() else {
        return;
    };
    let bad = scenario(
        "real-prometheus-bad-release-rolls-back",
        0.05,
        "",
        "{outcome: rolled_back, reason: error_rate, final_version: v1.2.2, pages: 1}",
    );
    let good = scenario(
        "real-prometheus-good-release-passes",
        0.002,
        "",
        "{outcome: passed, reason: none, final_version: v1.2.3, pages: 0}",
    );
    // Stopped 5 s after the deploy (at 1 s): the rollout is complete and the 20 s window has
    // far more than `inconclusive_limit` samples left, even on a loaded machine.
    let stopped = scenario(
        "real-prometheus-stopped-mid-window-is-inconclusive",
        0.002,
        "  - {at: 6s, provider: {name: prometheus, state: down}}",
        "{outcome: degraded, reason: provider_blind, final_version: v1.2.3, pages: 1}",
    );
    // The simulated runs first, then the real ones: each set runs concurrently.
    let simulated = tokio::join!(
        with_simulated_api(&bad),
        with_simulated_api(&good),
        with_simulated_api(&stopped),
    );
    let real = tokio::join!(
        with_real_prometheus(&bin, &bad, None),
        with_real_prometheus(&bin, &good, None),
        with_real_prometheus(&bin, &stopped, Some(Duration::from_secs(6))),
    );
    compare(&bad, &simulated.0, &real.0);
    compare(&good, &simulated.1, &real.1);
    compare(&stopped, &simulated.2, &real.2);
}

/// A real Prometheus holding `history` (OpenMetrics text) as backfilled blocks, on a loopback
/// port: the shipped queries are asked of it at chosen times, as if a scrape at a realistic
/// interval had stored those samples. `None` without `promtool`.
async fn backfilled(bin: &Path, history: &str) -> Option<RealPrometheus> {
    let promtool = bin.with_file_name("promtool");
    if !promtool.exists() {
        assert!(
            !std::env::var("DEPLOY_WATCHDOG_REQUIRE_PEERS").is_ok_and(|v| v != "0"),
            "promtool is not beside {} and DEPLOY_WATCHDOG_REQUIRE_PEERS is set",
            bin.display()
        );
        println!("SKIPPED: promtool is not beside {}", bin.display());
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("history.om");
    std::fs::write(&input, history).unwrap();
    let data = dir.path().join("data");
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--storage.tsdb.retention.time=30d")
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = RealPrometheus {
        child,
        url: format!("http://{addr}"),
        _dir: dir,
    };
    let client = deploy_watchdog::probes::http_client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "prometheus exited early"
        );
        let ready = client.get(format!("{}/-/ready", server.url)).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Some(server);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "prometheus on the backfilled data never got ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One Deployment's history: 200 requests/s, v1 failing `before` of them until `deploy`, then
/// v2 failing `after`; scraped every `scrape` seconds from `start` to `end` (Unix seconds).
struct History {
    name: &'static str,
    before: f64,
    after: f64,
}

fn openmetrics(deployments: &[History], start: i64, deploy: i64, end: i64, scrape: i64) -> String {
    let rps = 200.0;
    let mut out = String::from("# TYPE http_requests counter\n");
    for d in deployments {
        for (version, ratio, from, to) in [
            ("v1", d.before, start, deploy),
            ("v2", d.after, deploy, end),
        ] {
            // A counter starts at zero when its first pod starts: the scrape after `from`.
            for (code, share) in [("200", 1.0 - ratio), ("500", ratio)] {
                let first = from.div_euclid(scrape) * scrape + scrape;
                for t in (first..=to).step_by(scrape as usize) {
                    let value = rps * share * (t - from) as f64;
                    out.push_str(&format!(
                        "http_requests_total{{namespace=\"production\",deployment=\"{}\",version=\"{version}\",code=\"{code}\"}} {value:.3} {t}\n",
                        d.name
                    ));
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// Judges one rollout as the daemon would, with the shipped defaults, from samples asked of
/// the real Prometheus every `interval` after `deploy` (the rollout complete at once); every
/// sample must have data.
async fn judge_with_defaults(
    provider: &Prometheus,
    name: &str,
    deploy: std::time::SystemTime,
) -> deploy_watchdog::judge::Verdict {
    use deploy_watchdog::judge::{Judge, Observation, Policy, ProbeRound, Progress, Verdict};
    let config = deploy_watchdog::config::Config::default();
    let mut judge = Judge::new(Policy::from_config(&config), Default::default());
    let mut at = Duration::ZERO;
    while at <= config.watch.window.get() + config.watch.interval.get() * 2 {
        let sample = provider
            .sample_at(
                "production",
                name,
                config.judge.sample_window.get(),
                deploy + at,
            )
            .await;
        assert!(
            matches!(sample, ProviderSample::Counts { requests, .. } if requests >= config.judge.min_requests as f64),
            "{name}, {}s after the deploy: {sample:?}",
            at.as_secs()
        );
        let observation = Observation {
            at,
            progress: Progress::Complete,
            pod_failure: None,
            pending: None,
            probes: Some(ProbeRound {
                providers: vec![(Provider::Prometheus, sample)],
                ..ProbeRound::default()
            }),
        };
        match judge.observe(&observation) {
            Verdict::Continue => {}
            verdict => {
                println!("{name}: {verdict:?} {}s after the deploy", at.as_secs());
                return verdict;
            }
        }
        at += config.watch.interval.get();
    }
    Verdict::Continue
}

/// Prometheus' own default scrape interval (1 m) and kube-prometheus-stack's common 15 s: the
/// shipped queries and sample window see data in every sample, and the judge rolls a release
/// failing 5 % of requests back and passes one failing 0.2 %. The samples are backfilled a
/// scrape interval apart rather than scraped in real time (an hour of 1 m scrapes), and asked
/// at times that fall between scrapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_defaults_judge_right_at_15s_and_60s_scrapes() {
    use deploy_watchdog::judge::{Finish, Reason, Verdict};
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let Some(bin) = prometheus_binary() else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Twenty minutes of v1, then the deploy 7 s past a whole minute (off every scrape), then
    // enough v2 for the whole watch window and more; all ending well before now.
    let start = (now - 3 * 3600).div_euclid(3600) * 3600;
    let deploy = start + 20 * 60 + 7;
    let end = deploy + 25 * 60;
    let deployments = [
        History {
            name: "bad",
            before: 0.001,
            after: 0.05,
        },
        History {
            name: "good",
            before: 0.001,
            after: 0.002,
        },
    ];
    for scrape in [15, 60] {
        let history = openmetrics(&deployments, start, deploy, end, scrape);
        let Some(server) = backfilled(&bin, &history).await else {
            return;
        };
        let provider = Prometheus::new(
            deploy_watchdog::probes::http_client(),
            PrometheusConfig {
                url: server.url.parse().expect("a URL"),
                ..PrometheusConfig::default()
            },
        );
        let deployed = std::time::UNIX_EPOCH + Duration::from_secs(deploy as u64);
        println!("scrape {scrape}s:");
        let bad = judge_with_defaults(&provider, "bad", deployed).await;
        assert!(
            matches!(
                bad,
                Verdict::RollBack {
                    reason: Reason::ErrorRate,
                    ..
                }
            ),
            "{scrape}s scrape, 5 % errors: {bad:?}"
        );
        let good = judge_with_defaults(&provider, "good", deployed).await;
        assert_eq!(
            good,
            Verdict::Finish(Finish::Passed),
            "{scrape}s scrape, 0.2 % errors"
        );
        // The shared round's grouped pair sees both alike.
        let members = [
            ObjectKey::new("production", "bad"),
            ObjectKey::new("production", "good"),
        ];
        let grouped = provider
            .sample_grouped_at(
                &PrometheusConfig::default().grouped,
                &members,
                deploy_watchdog::config::JudgeConfig::default()
                    .sample_window
                    .get(),
                deployed + Duration::from_secs(10 * 60),
            )
            .await
            .unwrap();
        for (key, ratio) in [(&members[0], 0.05), (&members[1], 0.002)] {
            let ProviderSample::Counts { requests, errors } = grouped[key] else {
                panic!("{scrape}s scrape, grouped {key:?}: {:?}", grouped[key]);
            };
            assert!((errors / requests - ratio).abs() < 1e-6, "{key:?}");
            assert!(
                (requests - 200.0 * 240.0).abs() < 200.0 * 240.0 * 0.05,
                "{requests}"
            );
        }
        drop(server);
    }
}

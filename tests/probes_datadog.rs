//! The Datadog provider's client against the simulated Datadog API over HTTP: counts, no data,
//! keys, fault states, and the rate limit it waits out; then both providers through `Probes`.

use std::sync::Arc;
use std::time::Duration;

use deploy_watchdog::check::ObjectKey;
use deploy_watchdog::config::{Config, DatadogConfig, Delay, PrometheusConfig, Secrets};
use deploy_watchdog::judge::ProviderSample;
use deploy_watchdog::probes::{self, Probes, datadog};
use deploy_watchdog::sim::behaviour::{AppKey, Behaviour, Behaviours};
use deploy_watchdog::sim::scenario::ProviderState;
use deploy_watchdog::sim::services::{Apps, ClusterView, DatadogSim, PrometheusSim};
use tokio_util::sync::CancellationToken;

struct OneApp;

impl ClusterView for OneApp {
    fn ready_pods_by_version(&self, namespace: &str, name: &str) -> Vec<(String, u32)> {
        if (namespace, name) == ("production", "app") {
            vec![("v1".into(), 1), ("v2".into(), 1)]
        } else {
            vec![]
        }
    }
    fn deployments(&self) -> Vec<(String, String)> {
        vec![("production".into(), "app".into())]
    }
}

const API_KEY: &str = "0TEST0API0KEY";
const APP_KEY: &str = "0TEST0APPLICATION0KEY";

struct Fixture {
    apps: Apps,
    datadog: DatadogSim,
    prometheus: PrometheusSim,
    dd_url: String,
    prom_url: String,
    _shutdown: tokio_util::sync::DropGuard,
}

/// production/app: v1 without errors and v2 with 10 %, one ready pod each; traffic flowing.
async fn fixture() -> Fixture {
    let behaviours = Behaviours::default();
    behaviours.set(
        AppKey::new("production", "app", "v2"),
        Behaviour {
            error_ratio: 0.1,
            ..Behaviour::default()
        },
    );
    let apps = Apps::new(behaviours, Arc::new(OneApp));
    let shutdown = CancellationToken::new();
    apps.start(shutdown.clone()).await.expect("apps");
    let datadog = DatadogSim::new(&apps);
    let dd_addr = datadog.start(shutdown.clone()).await.expect("datadog");
    datadog.set_api_keys(API_KEY, APP_KEY);
    let prometheus = PrometheusSim::new(&apps);
    let prom_addr = prometheus
        .start(shutdown.clone())
        .await
        .expect("prometheus");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while apps.counts("production", "app", Duration::from_secs(60)).0 < 100.0 {
        assert!(tokio::time::Instant::now() < deadline, "no traffic");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Fixture {
        apps,
        datadog,
        prometheus,
        dd_url: format!("http://{dd_addr}"),
        prom_url: format!("http://{prom_addr}"),
        _shutdown: shutdown.drop_guard(),
    }
}

fn client(f: &Fixture, keys: (&str, &str), timeout: Duration) -> datadog::Datadog {
    let cfg = DatadogConfig {
        url: Some(f.dd_url.parse().expect("a URL")),
        timeout: timeout.try_into().expect("a timeout within bounds"),
        ingestion_delay: Delay::ZERO,
        ..DatadogConfig::default()
    };
    datadog::Datadog::new(
        probes::http_client(),
        cfg,
        datadog::Keys {
            api: keys.0.into(),
            app: keys.1.into(),
        },
    )
}

const WINDOW: Duration = Duration::from_secs(5);

#[tokio::test]
async fn counts_no_data_and_bad_keys() {
    let f = fixture().await;
    let dd = client(&f, (API_KEY, APP_KEY), Duration::from_secs(5));
    let ProviderSample::Counts { requests, errors } = dd.sample("production", "app", WINDOW).await
    else {
        panic!("expected counts");
    };
    let ratio = errors / requests;
    assert!(
        requests > 0.0 && (0.01..0.1).contains(&ratio),
        "{errors} of {requests}"
    );

    assert_eq!(
        dd.sample("production", "nothing-here", WINDOW).await,
        ProviderSample::NoData
    );
    f.datadog.set_state(ProviderState::NoData);
    assert_eq!(
        dd.sample("production", "app", WINDOW).await,
        ProviderSample::NoData
    );
    f.datadog.set_state(ProviderState::Up);

    let wrong = client(&f, (API_KEY, "wrong"), Duration::from_secs(5));
    assert!(matches!(wrong.sample("production", "app", WINDOW).await,
            ProviderSample::Unavailable(m) if m.to_string() == "HTTP 403: Forbidden"),);
}

#[tokio::test]
async fn faults_are_unavailable_never_counts() {
    let f = fixture().await;
    let dd = client(&f, (API_KEY, APP_KEY), Duration::from_millis(500));
    f.datadog.set_state(ProviderState::Error);
    assert!(matches!(dd.sample("production", "app", WINDOW).await,
        ProviderSample::Unavailable(m) if m.to_string().starts_with("HTTP 500") && m.category() == "http_status"));
    f.datadog.set_state(ProviderState::Slow);
    assert!(matches!(dd.sample("production", "app", WINDOW).await,
        ProviderSample::Unavailable(m) if m.to_string().contains("timed out") && m.category() == "timeout"));
    f.datadog.set_state(ProviderState::Down);
    assert!(matches!(
        dd.sample("production", "app", WINDOW).await,
        ProviderSample::Unavailable(m) if m.category() == "connect"
    ));
    // Back up: the port listens again shortly.
    f.datadog.set_state(ProviderState::Up);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match dd.sample("production", "app", WINDOW).await {
            ProviderSample::Counts { .. } => break,
            other => assert!(tokio::time::Instant::now() < deadline, "{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_rate_limited_client_waits_for_the_reset_before_asking_again() {
    let f = fixture().await;
    let dd = client(&f, (API_KEY, APP_KEY), Duration::from_secs(5));
    f.datadog.set_state(ProviderState::RateLimited);
    assert!(matches!(dd.sample("production", "app", WINDOW).await,
        ProviderSample::Unavailable(m) if m.to_string().contains("HTTP 429") && m.category() == "rate_limited"));
    // The limit lifts at once on the server, but the client keeps to the announced reset
    // (1 s), and so does every clone of it (the sessions share one client).
    f.datadog.set_state(ProviderState::Up);
    let clone = dd.clone();
    assert!(matches!(clone.sample("production", "app", WINDOW).await,
        ProviderSample::Unavailable(m) if m.to_string().contains("rate limited") && m.to_string().contains("next query in") && m.category() == "rate_limited"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(
        dd.sample("production", "app", WINDOW).await,
        ProviderSample::Counts { .. }
    ));
}

#[tokio::test]
async fn probes_ask_both_providers_and_report_each_in_a_fixed_order() {
    let f = fixture().await;
    let mut config = Config::default();
    config.providers.prometheus = Some(PrometheusConfig {
        url: f.prom_url.parse().expect("a URL"),
        ..PrometheusConfig::default()
    });
    config.providers.datadog = Some(DatadogConfig {
        url: Some(f.dd_url.parse().expect("a URL")),
        ingestion_delay: Delay::ZERO,
        ..DatadogConfig::default()
    });
    let secrets = Secrets {
        datadog_api_key: Some(API_KEY.into()),
        datadog_app_key: Some(APP_KEY.into()),
        ..Secrets::default()
    };
    let p = Probes::new(&config, &secrets);
    let both = p.error_rates("production", "app", WINDOW).await;
    let names: Vec<&str> = both.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["prometheus", "datadog"]);
    assert!(
        both.iter()
            .all(|(_, s)| matches!(s, ProviderSample::Counts { .. })),
        "{both:?}"
    );

    f.prometheus.set_state(ProviderState::Down);
    let one_down = p.error_rates("production", "app", WINDOW).await;
    assert!(matches!(one_down[0].1, ProviderSample::Unavailable(_)));
    assert!(matches!(one_down[1].1, ProviderSample::Counts { .. }));
    let _ = &f.apps;
}

#[test]
fn run_refuses_a_datadog_provider_without_keys_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("dd.yaml");
    std::fs::write(&file, "providers: {datadog: {site: datadoghq.eu}}\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_deploy-watchdog"))
        .arg("run")
        .arg("--config")
        .arg(&file)
        .env_remove("DD_API_KEY")
        .env_remove("DD_APP_KEY")
        .env_remove("DD_APPLICATION_KEY")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secrets.datadog_api_key_file") && stderr.contains("DD_API_KEY"),
        "{stderr}"
    );
}

#[tokio::test]
async fn partial_answers_are_unavailable_never_counts() {
    let f = fixture().await;
    let dd = client(&f, (API_KEY, APP_KEY), Duration::from_secs(5));
    let prom = deploy_watchdog::probes::prometheus::Prometheus::new(
        probes::http_client(),
        PrometheusConfig {
            url: f.prom_url.parse().expect("a URL"),
            ..PrometheusConfig::default()
        },
    );
    // Up: v2's 10 % errors are there.
    for sample in [
        dd.sample("production", "app", WINDOW).await,
        prom.sample("production", "app", WINDOW).await,
    ] {
        assert!(
            matches!(sample, ProviderSample::Counts { errors, .. } if errors > 0.0),
            "{sample:?}"
        );
    }
    // Partial: the answers lack the failed requests' series and say so; read as complete they
    // would be a clean pass.
    f.datadog.set_state(ProviderState::Partial);
    f.prometheus.set_state(ProviderState::Partial);
    let sample = dd.sample("production", "app", WINDOW).await;
    assert!(
        matches!(&sample, ProviderSample::Unavailable(m) if m.to_string().starts_with("partial answer")),
        "datadog: {sample:?}"
    );
    let sample = prom.sample("production", "app", WINDOW).await;
    assert!(
        matches!(&sample, ProviderSample::Unavailable(m) if m.to_string().starts_with("partial answer")),
        "prometheus: {sample:?}"
    );
    let members = [ObjectKey::new("production", "app")];
    let grouped = prom
        .sample_grouped(&PrometheusConfig::default().grouped, &members, WINDOW)
        .await;
    assert!(
        matches!(&grouped, Err(m) if m.to_string().starts_with("partial answer")),
        "{grouped:?}"
    );
    let grouped = dd
        .sample_grouped(&DatadogConfig::default().grouped, &members, WINDOW)
        .await;
    assert!(
        matches!(&grouped, Err(m) if m.to_string().starts_with("partial answer")),
        "{grouped:?}"
    );
}

#[tokio::test]
async fn trace_metrics_are_found_by_service_and_env_never_by_pod_tags() {
    let f = fixture().await;
    let with = |requests_query: &str, env: Option<&str>| {
        let cfg = DatadogConfig {
            url: Some(f.dd_url.parse().expect("a URL")),
            ingestion_delay: Delay::ZERO,
            requests_query: requests_query.into(),
            env: env.map(str::to_string),
            ..DatadogConfig::default()
        };
        datadog::Datadog::new(
            probes::http_client(),
            cfg,
            datadog::Keys {
                api: API_KEY.into(),
                app: APP_KEY.into(),
            },
        )
    };
    let defaults = DatadogConfig::default().requests_query;
    let sample = with(&defaults, None)
        .sample("production", "app", WINDOW)
        .await;
    assert!(
        matches!(sample, ProviderSample::Counts { .. }),
        "{sample:?}"
    );
    // Trace metrics carry no kube_namespace: a filter on it finds nothing.
    let pod_tags =
        "sum:trace.{operation}.hits{service:{name},kube_namespace:{namespace}}.as_count()";
    let sample = with(pod_tags, None)
        .sample("production", "app", WINDOW)
        .await;
    assert_eq!(sample, ProviderSample::NoData);
    // The env the apps report, and no other.
    f.datadog.set_env("prod");
    let sample = with(&defaults, Some("prod"))
        .sample("production", "app", WINDOW)
        .await;
    assert!(
        matches!(sample, ProviderSample::Counts { .. }),
        "{sample:?}"
    );
    let sample = with(&defaults, Some("staging"))
        .sample("production", "app", WINDOW)
        .await;
    assert_eq!(sample, ProviderSample::NoData);
}

#[tokio::test]
async fn the_window_ends_before_datadogs_ingestion_delay() {
    let f = fixture().await;
    f.datadog.set_ingestion_delay(Duration::from_secs(3));
    let window = Duration::from_secs(2);
    // Traffic for longer than the delay and the window together.
    while f
        .apps
        .counts("production", "app", Duration::from_secs(60))
        .0
        < 100.0 * 6.0
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let with = |delay: Duration| {
        datadog::Datadog::new(
            probes::http_client(),
            DatadogConfig {
                url: Some(f.dd_url.parse().expect("a URL")),
                ingestion_delay: delay.try_into().expect("a delay within bounds"),
                ..DatadogConfig::default()
            },
            datadog::Keys {
                api: API_KEY.into(),
                app: APP_KEY.into(),
            },
        )
    };
    // Ending now, the whole window is younger than what Datadog has ingested: nothing.
    let sample = with(Duration::ZERO)
        .sample("production", "app", window)
        .await;
    assert_eq!(sample, ProviderSample::NoData);
    // Ending the delay before now: the window's traffic, v2's errors included.
    let sample = with(Duration::from_secs(3))
        .sample("production", "app", window)
        .await;
    assert!(
        matches!(sample, ProviderSample::Counts { requests, errors } if requests >= 150.0 && errors > 0.0),
        "{sample:?}"
    );
}

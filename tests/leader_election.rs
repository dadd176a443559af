//! Leader election against the simulated API server: client-go's timing (a slow API server is
//! no reason to lose or never win the Lease) and failures that are seen (logged, counted, and
//! reported as not ready when the Lease can never be had).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use deploy_watchdog::config::{Config, LeaseSpan, Secrets};
use deploy_watchdog::daemon::{self, Status};
use deploy_watchdog::sim::behaviour::Behaviours;
use deploy_watchdog::sim::cluster::SimCluster;
use deploy_watchdog::telemetry::{Metrics, encode};
use support::spec;
use tokio_util::sync::CancellationToken;

struct Running {
    sim: SimCluster,
    status: Status,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
}

async fn run(lease_namespace: &str, prepare: impl FnOnce(&SimCluster)) -> Running {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = SimCluster::new(Behaviours::default());
    let shutdown = CancellationToken::new();
    let addr = sim.start(shutdown.clone()).await.unwrap();
    sim.add_deployment(&spec("production/app", "v1", 2));
    prepare(&sim);
    let mut config = Config::default();
    config.watch.namespaces = vec!["production".into()];
    let le = &mut config.leader_election;
    le.enabled = true;
    le.namespace = lease_namespace.into();
    le.identity = "watchdog-0".into();
    le.lease_duration = LeaseSpan::from_secs(3);
    le.renew_deadline = LeaseSpan::from_secs(2);
    le.retry_period = LeaseSpan::from_millis(100);
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::register(&registry).unwrap());
    let status = Status::default().with_metrics(metrics);
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();
    tokio::spawn(daemon::run(
        config,
        Secrets::default(),
        client,
        shutdown.clone(),
        status.clone(),
    ));
    Running {
        sim,
        status,
        registry,
        shutdown,
    }
}

fn holder(sim: &SimCluster, namespace: &str) -> Option<String> {
    sim.lease_json(namespace, "deploy-watchdog")?
        .pointer("/spec/holderIdentity")?
        .as_str()
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_refused_by_rbac_is_logged_counted_and_not_ready() {
    let r = run("kube-system", |sim| sim.forbid("leases", "kube-system")).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = encode(&r.registry);
    let failures = metrics
        .lines()
        .find(|l| {
            l.starts_with("deploy_watchdog_leader_election_failures_total{")
                && l.contains("category=\"forbidden\"")
                && l.contains("operation=\"acquire\"")
        })
        .unwrap_or_else(|| panic!("no forbidden acquire failures counted:\n{metrics}"));
    let count: f64 = failures.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 2.0, "{failures}");
    assert!(
        !r.status.ready(),
        "a replica that can never lead reported ready"
    );
    r.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_lease_is_led_and_ready() {
    let r = run("production", |_| {}).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(r.status.ready() && holder(&r.sim, "production").as_deref() == Some("watchdog-0")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready and leading"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_api_server_within_the_renew_deadline_keeps_the_leader() {
    // Each Lease request takes 250 ms: longer than the retry period (100 ms), well within the
    // renew deadline (2 s). client-go bounds an attempt by the renew deadline, so it leads.
    let r = run("production", |sim| {
        sim.set_latency("leases", Duration::from_millis(250))
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while holder(&r.sim, "production").as_deref() != Some("watchdog-0") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never won the Lease against a slow API server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And keeps it: renewals keep landing for a while (several lease durations' worth).
    let renew_time = |sim: &SimCluster| {
        sim.lease_json("production", "deploy-watchdog")
            .and_then(|l| l.pointer("/spec/renewTime").cloned())
    };
    let mut last = renew_time(&r.sim);
    let mut renewals = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = renew_time(&r.sim);
        if now != last {
            renewals += 1;
            last = now;
        }
        assert_eq!(holder(&r.sim, "production").as_deref(), Some("watchdog-0"));
    }
    assert!(renewals >= 3, "only {renewals} renewals in 4 s");
    assert!(r.status.ready());
    r.shutdown.cancel();
}

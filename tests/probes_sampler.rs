//! The providers' shared round against the simulated Prometheus over HTTP: one grouped query
//! pair per round whatever the number of rollouts, split per rollout with the same counts as
//! each rollout's own queries; nothing asked while no rollout is watched.

mod support;

use std::time::Duration;

use deploy_watchdog::check::{ObjectKey, Provider};
use deploy_watchdog::config::{Config, PrometheusConfig, Secrets};
use deploy_watchdog::judge::ProviderSample;
use deploy_watchdog::probes::Probes;
use deploy_watchdog::probes::sampler::Sampler;
use deploy_watchdog::sim::services::PrometheusSim;
use support::ratio;
use tokio_util::sync::CancellationToken;

/// Twelve Deployments in two namespaces.
fn fleet() -> Vec<ObjectKey> {
    support::fleet(10)
}

const WINDOW: Duration = Duration::from_secs(5);
const INTERVAL: Duration = Duration::from_millis(200);

struct Fixture {
    prometheus: PrometheusSim,
    probes: Probes,
    shutdown: CancellationToken,
}

/// app-3 fails 20 % of its requests; the others none.
async fn fixture() -> Fixture {
    let shutdown = CancellationToken::new();
    let apps = support::fleet_traffic(10, WINDOW, &shutdown).await;
    let prometheus = PrometheusSim::new(&apps);
    let addr = prometheus
        .start(shutdown.clone())
        .await
        .expect("prometheus");
    let mut config = Config::default();
    config.providers.prometheus = Some(PrometheusConfig {
        url: format!("http://{addr}").parse().expect("a URL"),
        ..PrometheusConfig::default()
    });
    let probes = Probes::new(&config, &Secrets::default());
    Fixture {
        prometheus,
        probes,
        shutdown,
    }
}

#[tokio::test]
async fn one_grouped_pair_per_round_answers_for_every_rollout() {
    let f = fixture().await;
    // Four hundred more rollouts that serve nothing: a query long enough to go as a form POST.
    let mut members: Vec<ObjectKey> = fleet();
    members.extend((0..400).map(|i| ObjectKey::new("ns-2", format!("absent-{i}"))));
    let grouped = f.probes.error_rates_of(&members, WINDOW).await;
    assert_eq!(grouped.len(), members.len());
    assert_eq!(f.prometheus.queries(), 2, "two queries for 412 rollouts");

    for key in &members {
        if key.name.starts_with("absent-") {
            assert_eq!(
                grouped[key],
                vec![(Provider::Prometheus, ProviderSample::NoData)]
            );
            continue;
        }
        let samples = &grouped[key];
        assert_eq!(samples.len(), 1);
        let (provider, sample) = &samples[0];
        assert_eq!(*provider, Provider::Prometheus);
        if key.name == "quiet" {
            assert_eq!(*sample, ProviderSample::NoData, "no series is no data");
            continue;
        }
        // The rollout's own queries, asked the same moment, agree.
        let own = f
            .probes
            .error_rates(&key.namespace, &key.name, WINDOW)
            .await;
        let expected = if key.name == "app-3" { 0.2 } else { 0.0 };
        assert!(
            (ratio(sample) - expected).abs() < 1e-9,
            "{key:?}: {sample:?}"
        );
        assert!(
            (ratio(&own[0].1) - expected).abs() < 1e-9,
            "{key:?}: {own:?}"
        );
    }
}

#[tokio::test]
async fn the_round_asks_nothing_without_members_and_counts_only_its_members() {
    let f = fixture().await;
    let sampler = Sampler::start(f.probes.clone(), INTERVAL, WINDOW, f.shutdown.clone());
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(f.prometheus.queries(), 0, "no rollout watched, no query");

    let mut members: Vec<_> = fleet()
        .iter()
        .map(|k| sampler.join(&k.namespace, &k.name))
        .collect();
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), members[0].rounds.changed())
            .await
            .expect("a round")
            .expect("sampler running");
    }
    let asked = f.prometheus.queries();
    // Each round is one pair, whatever the twelve members; a fourth may be out already.
    assert!((6..=8).contains(&asked), "{asked} queries in three rounds");
    let app3 = fleet()
        .iter()
        .position(|k| k.name == "app-3")
        .expect("app-3");
    let samples = members[app3].latest().expect("app-3 was asked for");
    assert!((ratio(&samples[0].1) - 0.2).abs() < 1e-9);

    // Everyone leaves: the queries stop.
    members.clear();
    tokio::time::sleep(INTERVAL * 2).await;
    let after_leaving = f.prometheus.queries();
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(f.prometheus.queries(), after_leaving);
    f.shutdown.cancel();
}

#[tokio::test]
async fn a_rollout_that_joins_mid_round_is_not_taken_for_no_data() {
    let f = fixture().await;
    let sampler = Sampler::start(f.probes.clone(), INTERVAL, WINDOW, f.shutdown.clone());
    let first = sampler.join("ns-0", "app-0");
    let late = sampler.join("ns-1", "app-3");
    // Whatever round `late` sees first either names it or says nothing about it.
    let mut rounds = late.rounds.clone();
    for _ in 0..3 {
        rounds.changed().await.expect("sampler running");
        if let Some(samples) = late.latest() {
            assert!((ratio(&samples[0].1) - 0.2).abs() < 1e-9);
        }
    }
    assert!(first.latest().is_some() && late.latest().is_some());
    f.shutdown.cancel();
}

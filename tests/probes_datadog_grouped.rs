//! The shared provider round against the simulated Datadog over HTTP: one grouped request per
//! round whatever the number of rollouts, split per rollout with the same counts as each
//! rollout's own request; an absent rollout has no data; a rate limit suspends the grouped
//! request as it does the others.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use deploy_watchdog::check::{ObjectKey, Provider};
use deploy_watchdog::config::{Config, DatadogConfig, DatadogGrouped, Delay, Secrets};
use deploy_watchdog::judge::ProviderSample;
use deploy_watchdog::probes::{self, Probes, datadog};
use deploy_watchdog::sim::scenario::ProviderState;
use deploy_watchdog::sim::services::DatadogSim;
use support::ratio;
use tokio_util::sync::CancellationToken;

/// Eight Deployments in two namespaces.
fn fleet() -> Vec<ObjectKey> {
    support::fleet(6)
}

const API_KEY: &str = "0TEST0API0KEY";
const APP_KEY: &str = "0TEST0APPLICATION0KEY";
const WINDOW: Duration = Duration::from_secs(5);

struct Fixture {
    datadog: DatadogSim,
    url: String,
    _shutdown: tokio_util::sync::DropGuard,
}

/// app-3 (in ns-1) fails 20 % of its requests; the others none. Traffic flowing.
async fn fixture() -> Fixture {
    let shutdown = CancellationToken::new();
    let apps = support::fleet_traffic(6, WINDOW, &shutdown).await;
    let datadog = DatadogSim::new(&apps);
    let addr = datadog.start(shutdown.clone()).await.expect("datadog");
    datadog.set_api_keys(API_KEY, APP_KEY);
    Fixture {
        datadog,
        url: format!("http://{addr}"),
        _shutdown: shutdown.drop_guard(),
    }
}

fn cfg(f: &Fixture) -> DatadogConfig {
    DatadogConfig {
        url: Some(f.url.parse().expect("a URL")),
        ingestion_delay: Delay::ZERO,
        ..DatadogConfig::default()
    }
}

fn probes_with(datadog: DatadogConfig) -> Probes {
    let mut config = Config::default();
    config.providers.datadog = Some(datadog);
    let secrets = Secrets {
        datadog_api_key: Some(API_KEY.into()),
        datadog_app_key: Some(APP_KEY.into()),
        ..Secrets::default()
    };
    Probes::new(&config, &secrets)
}

fn client(f: &Fixture) -> datadog::Datadog {
    datadog::Datadog::new(
        probes::http_client(),
        cfg(f),
        datadog::Keys {
            api: API_KEY.into(),
            app: APP_KEY.into(),
        },
    )
}

/// The one Datadog sample of each member.
fn datadog_of(
    round: &HashMap<ObjectKey, Vec<(Provider, ProviderSample)>>,
) -> HashMap<ObjectKey, ProviderSample> {
    round
        .iter()
        .map(|(key, samples)| {
            assert_eq!(samples.len(), 1, "{key:?}: {samples:?}");
            assert_eq!(samples[0].0, Provider::Datadog);
            (key.clone(), samples[0].1.clone())
        })
        .collect()
}

#[tokio::test]
async fn one_grouped_request_per_round_answers_for_every_rollout() {
    let f = fixture().await;
    let probes = probes_with(cfg(&f));
    // Two hundred more rollouts that serve nothing, still within one query.
    let mut members = fleet();
    members.extend((0..200).map(|i| ObjectKey::new("ns-2", format!("absent-{i}"))));
    let round = datadog_of(&probes.error_rates_of(&members, WINDOW).await);
    assert_eq!(round.len(), members.len());
    assert_eq!(f.datadog.requests(), 1, "one request for 208 rollouts");
    for key in &members {
        let sample = &round[key];
        if key.name.starts_with("absent-") || key.name == "quiet" {
            assert_eq!(
                *sample,
                ProviderSample::NoData,
                "{key:?}: absent is no data"
            );
            continue;
        }
        let expected = if key.name == "app-3" { 0.2 } else { 0.0 };
        assert!(
            (ratio(sample) - expected).abs() < 1e-9,
            "{key:?}: {sample:?}"
        );
    }
    // A second round is a second request, not one per rollout.
    probes.error_rates_of(&members, WINDOW).await;
    assert_eq!(f.datadog.requests(), 2);
}

#[tokio::test]
async fn grouped_counts_equal_each_rollouts_own_request() {
    let f = fixture().await;
    let probes = probes_with(cfg(&f));
    let own = client(&f);
    let members = fleet();
    // The traffic moves every 50 ms: asked at once, both usually see the same counters; a
    // tick between them differs, so a few tries are allowed.
    let mut last = String::new();
    for _ in 0..20 {
        let (grouped, alone) = tokio::join!(
            probes.error_rates_of(&members, WINDOW),
            futures::future::join_all(members.iter().map(|k| own.sample(
                &k.namespace,
                &k.name,
                WINDOW
            )))
        );
        let grouped = datadog_of(&grouped);
        let differing: Vec<_> = members
            .iter()
            .zip(&alone)
            .filter(|(key, sample)| grouped[*key] != **sample)
            .collect();
        if differing.is_empty() {
            assert!(
                alone
                    .iter()
                    .any(|s| matches!(s, ProviderSample::Counts { errors, .. } if *errors > 0.0))
            );
            return;
        }
        last = format!("{differing:?} vs {grouped:?}");
    }
    panic!("grouped and per-rollout counts never agreed: {last}");
}

#[tokio::test]
async fn a_member_list_too_long_for_one_query_goes_in_a_few_requests() {
    let f = fixture().await;
    let probes = probes_with(cfg(&f));
    let mut members = fleet();
    members.extend(
        (0..3000).map(|i| ObjectKey::new(format!("ns-{}", 2 + i % 3), format!("absent-{i}"))),
    );
    let round = datadog_of(&probes.error_rates_of(&members, WINDOW).await);
    let requests = f.datadog.requests();
    assert!(
        (2..=10).contains(&requests),
        "{requests} requests for 3008 rollouts"
    );
    assert_eq!(round.len(), members.len());
    assert!((ratio(&round[&ObjectKey::new("ns-1", "app-3")]) - 0.2).abs() < 1e-9);
    assert!(
        members
            .iter()
            .filter(|k| k.name.starts_with("absent-"))
            .all(|k| round[k] == ProviderSample::NoData)
    );
}

#[tokio::test]
async fn a_rate_limit_suspends_the_grouped_request_too() {
    let f = fixture().await;
    let probes = probes_with(cfg(&f));
    let members = fleet();
    f.datadog.set_state(ProviderState::RateLimited);
    let limited = datadog_of(&probes.error_rates_of(&members, WINDOW).await);
    assert!(
        limited.values().all(
            |s| matches!(s, ProviderSample::Unavailable(m) if m.to_string().contains("HTTP 429"))
        ),
        "{limited:?}"
    );
    assert_eq!(f.datadog.requests(), 1);
    // Lifted at once on the server, but the client keeps to the announced reset (1 s) and
    // asks nothing: every rollout stays inconclusive, none passes.
    f.datadog.set_state(ProviderState::Up);
    let waiting = datadog_of(&probes.error_rates_of(&members, WINDOW).await);
    assert!(
        waiting.values().all(|s| matches!(s,
            ProviderSample::Unavailable(m) if m.to_string().contains("rate limited") && m.to_string().contains("next query in"))),
        "{waiting:?}"
    );
    assert_eq!(f.datadog.requests(), 1, "nothing sent during the wait");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = datadog_of(&probes.error_rates_of(&members, WINDOW).await);
    assert!((ratio(&after[&ObjectKey::new("ns-1", "app-3")]) - 0.2).abs() < 1e-9);
}

#[tokio::test]
async fn without_grouping_each_rollout_gets_its_own_request() {
    let f = fixture().await;
    let probes = probes_with(DatadogConfig {
        grouped: DatadogGrouped {
            enabled: false,
            ..DatadogGrouped::default()
        },
        ..cfg(&f)
    });
    let members = fleet();
    let round = datadog_of(&probes.error_rates_of(&members, WINDOW).await);
    assert_eq!(f.datadog.requests(), members.len() as u64);
    assert!((ratio(&round[&ObjectKey::new("ns-1", "app-3")]) - 0.2).abs() < 1e-9);
}

#[tokio::test]
async fn the_simulated_datadog_refuses_a_query_mixing_both_syntaxes() {
    let f = fixture().await;
    let probes = probes_with(DatadogConfig {
        grouped: DatadogGrouped {
            requests_query:
                "sum:trace.http.request.hits{kube_namespace IN ({namespaces}),service IN ({names})} by {kube_namespace,service}.as_count()"
                    .into(),
            ..DatadogGrouped::default()
        },
        ..cfg(&f)
    });
    let round = datadog_of(&probes.error_rates_of(&fleet(), WINDOW).await);
    assert!(
        round.values().all(|s| matches!(s,
            ProviderSample::Unavailable(m) if m.to_string().starts_with("HTTP 400: Error parsing query: symbolic boolean syntax"))),
        "{round:?}"
    );
}

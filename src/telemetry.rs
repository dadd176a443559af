//! Tracing set-up (text or JSON lines, filtered by `RUST_LOG`, default `info`) and the daemon's
//! own Prometheus metrics.
//!
//! Metric labels are bounded: an outcome, a reason, a check kind, a provider, a result. Never an
//! error string or a user's check name. The one exception is the per-check gauges of the rollouts
//! under watch now ([`CheckGauges`]): they carry the Deployment's namespace and name, and their
//! series are removed when the watch ends, so their number is bounded by the rollouts watched at
//! once, not by history.
//!
//! The metrics and their registry are in `metrics`, the methods recording each event in
//! `record`, the per-check gauges in `checks`, failed Kubernetes API requests in `api`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

mod api;
mod checks;
mod metrics;
mod record;

pub use api::{ApiErrorLayer, ApiErrors, api_error_category, kube_client};
pub use checks::{CheckGauges, CheckReading};
pub use metrics::{ACTIONS, Metrics, MetricsError, encode};
pub use record::{GaugeGuard, Timer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber once; later calls are no-ops. Text lines are coloured only
/// when stderr is a terminal: a file, a pipe or `kubectl logs` gets plain text.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_logs(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").is_some(),
        ))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}

/// Whether text logs are coloured: on a terminal, unless `NO_COLOR` is set.
pub fn colour_logs(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Instant;

    use prometheus::Registry;

    use super::*;
    use crate::check::Provider;
    use crate::cluster::record::Outcome;
    use crate::judge::{HealthSample, ProbeRound, ProviderSample, Reason, SmokeSample};

    fn metrics() -> (Registry, Metrics) {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        (registry, metrics)
    }

    #[test]
    fn every_metric_has_help_text_and_the_prefix() {
        let (registry, m) = metrics();
        m.detected();
        m.outcome(Outcome::RolledBack, Reason::ErrorRate);
        m.page("trigger", "delivered");
        m.notification("delivered");
        m.watch_restart("deployments");
        m.provider_sample("prometheus", Instant::now(), &ProviderSample::NoData);
        drop(m.rollback_timer());
        m.probe_round(&ProbeRound {
            health: Some(HealthSample::Failed("timed out".into())),
            smoke: vec![("home".into(), SmokeSample::Passed)],
            providers: vec![(Provider::Prometheus, ProviderSample::NoData)],
        });
        let mut gauges = m.check_gauges("shop", "web");
        gauges.update(&[reading("error_rate_prometheus", Some(0.0), Some(0.01))]);
        let families = registry.gather();
        assert_eq!(families.len(), 18);
        for f in &families {
            assert!(f.name().starts_with("deploy_watchdog_"), "{}", f.name());
            assert!(!f.help().is_empty(), "{} has no help", f.name());
        }
        let text = encode(&registry);
        assert!(text.contains(
            r#"deploy_watchdog_rollout_outcomes_total{outcome="rolled_back",reason="error_rate"} 1"#
        ));
        assert!(
            text.contains(r#"deploy_watchdog_check_results_total{check="health",result="fail"} 1"#)
        );
        assert!(
            text.contains(r#"deploy_watchdog_check_results_total{check="smoke",result="pass"} 1"#)
        );
        assert!(text.contains("deploy_watchdog_rollback_duration_seconds_count 1"));
    }

    #[test]
    fn smoke_check_names_never_become_labels() {
        let (registry, m) = metrics();
        m.probe_round(&ProbeRound {
            health: None,
            smoke: vec![(
                "customer-checkout-42".into(),
                SmokeSample::Failed("500".into()),
            )],
            providers: vec![],
        });
        assert!(!encode(&registry).contains("customer-checkout-42"));
    }

    #[test]
    fn guards_count_while_alive() {
        let (_registry, m) = metrics();
        let a = m.rolling_back();
        let b = m.rolling_back();
        assert_eq!(m.rollbacks_in_progress(), 2);
        drop(a);
        drop(b);
        assert_eq!(m.rollbacks_in_progress(), 0);
    }

    fn reading(check: &'static str, value: Option<f64>, threshold: Option<f64>) -> CheckReading {
        CheckReading {
            check,
            value,
            threshold,
            failing: false,
        }
    }

    #[test]
    fn check_gauges_follow_the_readings_and_go_when_the_watch_ends() {
        let (registry, m) = metrics();
        let mut a = m.check_gauges("shop", "web");
        let b = {
            let mut b = m.check_gauges("shop", "cart");
            b.update(&[reading("health", Some(1.0), None)]);
            b
        };
        a.update(&[
            CheckReading {
                failing: true,
                ..reading("error_rate_prometheus", Some(0.05), Some(0.01))
            },
            reading("health", Some(1.0), None),
        ]);
        let text = encode(&registry);
        let web = r#"deployment="web",deployment_namespace="shop""#;
        assert!(
            text.contains(&format!(
                r#"deploy_watchdog_check_value{{check="error_rate_prometheus",{web}}} 0.05"#
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            r#"deploy_watchdog_check_threshold{{check="error_rate_prometheus",{web}}} 0.01"#
        )));
        assert!(text.contains(&format!(
            r#"deploy_watchdog_check_failing{{check="error_rate_prometheus",{web}}} 1"#
        )));
        // The provider stops answering: no value, so no series (not a stale one).
        a.update(&[
            reading("error_rate_prometheus", None, Some(0.01)),
            reading("health", Some(0.0), None),
        ]);
        let text = encode(&registry);
        assert!(!text.contains("error_rate_prometheus"), "{text}");
        assert!(text.contains(&format!(
            r#"deploy_watchdog_check_value{{check="health",{web}}} 0"#
        )));
        drop(a);
        let text = encode(&registry);
        assert!(!text.contains(r#"deployment="web""#), "{text}");
        assert!(text.contains(r#"deployment="cart""#), "{text}");
        drop(b);
        assert!(!encode(&registry).contains("deploy_watchdog_check_value{"));
    }

    #[test]
    fn known_label_sets_are_exported_at_zero_before_anything_happens() {
        let (registry, _m) = metrics();
        let text = encode(&registry);
        for line in [
            r#"deploy_watchdog_rollout_outcomes_total{outcome="rolled_back",reason="error_rate"} 0"#,
            r#"deploy_watchdog_pages_total{action="trigger",result="retried"} 0"#,
            r#"deploy_watchdog_notifications_total{result="dropped"} 0"#,
            r#"deploy_watchdog_gitops_paused_owners{kind="application"} 0"#,
            r#"deploy_watchdog_time_to_action_seconds_count{action="rollback"} 0"#,
            r#"deploy_watchdog_kube_api_errors_total{category="connection",method="PATCH"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }

    #[tokio::test]
    async fn the_client_layer_counts_failed_api_requests_by_method_and_category() {
        use tower::{Layer, Service, ServiceExt};
        let (registry, m) = metrics();
        let m = std::sync::Arc::new(m);
        let answer = tower::service_fn(|req: http::Request<()>| async move {
            match req.uri().path() {
                "/conflict" => Ok(http::Response::builder().status(409).body(()).unwrap()),
                "/ok" => Ok(http::Response::new(())),
                _ => Err(std::io::Error::other("connection refused")),
            }
        });
        let mut svc = m.api_error_layer().layer(answer);
        for (method, path) in [("PATCH", "/conflict"), ("GET", "/ok"), ("GET", "/down")] {
            let req = http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap();
            let _ = svc.ready().await.unwrap().call(req).await;
        }
        let text = encode(&registry);
        assert!(text.contains(
            r#"deploy_watchdog_kube_api_errors_total{category="conflict",method="PATCH"} 1"#
        ));
        assert!(text.contains(
            r#"deploy_watchdog_kube_api_errors_total{category="connection",method="GET"} 1"#
        ));
        let counted: usize = text
            .lines()
            .filter(|l| {
                l.starts_with("deploy_watchdog_kube_api_errors_total{") && l.ends_with(" 1")
            })
            .count();
        assert_eq!(counted, 2, "{text}");
    }

    #[test]
    fn registering_twice_into_one_registry_is_an_error_not_a_panic() {
        let (registry, _m) = metrics();
        assert!(Metrics::register(&registry).is_err());
    }
}

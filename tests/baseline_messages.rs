//! What the previous version already did is not the new version's fault, and every message says
//! what a check was compared with: the scenarios of the corpus, run here with their pages, Slack
//! messages and Events read.

use deploy_watchdog::sim::runner::{self, Simulation};
use deploy_watchdog::sim::scenario::Scenario;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Runs one corpus scenario to its expectations; the simulation, to read what it received.
async fn run(file: &str, shutdown: &CancellationToken) -> Simulation {
    let path = format!("{}/tests/scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("scenario file");
    let scenario = Scenario::parse(&text, file).expect("valid scenario");
    let config = runner::daemon_config(&scenario, file).expect("valid config");
    let sim = Simulation::start(&scenario, config, file, shutdown)
        .await
        .expect("simulation");
    let report = runner::run_in(&sim, &scenario, file, None)
        .await
        .expect("run");
    assert!(report.ok, "{file}: {:?}", report.failures);
    sim
}

/// The summaries of the trigger events PagerDuty accepted.
fn page_summaries(sim: &Simulation) -> Vec<String> {
    sim.pagerduty
        .accepted()
        .iter()
        .filter(|r| r.body["event_action"] == "trigger")
        .map(|r| {
            r.body["payload"]["summary"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_down_before_the_deploy_is_paged_naming_both_versions() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let sim = run(
        "dependency-down-before-the-deploy-is-degraded-not-rolled-back.yaml",
        &shutdown,
    )
    .await;
    let pages = page_summaries(&sim);
    assert_eq!(pages.len(), 1, "{pages:#?}");
    assert!(
        pages[0].contains("database: timeout on v1.2.")
            && pages[0].contains("and timeout on v1.2.2 before the deploy → not rolled back"),
        "{}",
        pages[0]
    );
    let texts = sim.slack.texts();
    let paged = texts
        .iter()
        .find(|t| t.contains("Paged on-call"))
        .unwrap_or_else(|| panic!("no page in Slack: {texts:#?}"));
    assert!(paged.contains("on v1.2.2 before the deploy"), "{paged}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_endpoint_that_never_worked_is_left_out_with_a_warning_and_a_slack_note() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let sim = run(
        "app-without-health-json-bad-release-rolls-back-and-verifies.yaml",
        &shutdown,
    )
    .await;
    let events = sim.cluster.events();
    let unusable: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "CheckUnusable")
        .collect();
    assert_eq!(unusable.len(), 1, "{events:#?}");
    assert_eq!(unusable[0]["type"], "Warning");
    let note = unusable[0]["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("health left out of the verdict for v1.2.3: HTTP 404, expected 200 on v1.2.2 before the deploy too")
            && note.contains("health.url"),
        "{note}"
    );
    let texts = sim.slack.texts();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("health left out of the verdict")
                && t.contains("health.enabled: false")),
        "{texts:#?}"
    );
    // Rolled back for the error rate, verified without the health endpoint: one page, not critical.
    let pages = sim.pagerduty.accepted();
    assert!(
        pages
            .iter()
            .all(|p| p.body["payload"]["severity"] != "critical"),
        "{pages:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_for_a_dependency_names_the_baseline_it_was_compared_with() {
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let sim = run(
        "dependency-breaking-only-with-the-new-version-rolls-back.yaml",
        &shutdown,
    )
    .await;
    let pages = page_summaries(&sim);
    assert_eq!(pages.len(), 1, "{pages:#?}");
    assert!(
        pages[0].contains(
            "dependency check database is \"timeout\", not ok (ok on v1.2.2 before the deploy)"
        ),
        "{}",
        pages[0]
    );
    let texts = sim.slack.texts();
    assert!(
        texts
            .iter()
            .any(|t| t.contains("Rolled back") && t.contains("(ok on v1.2.2 before the deploy)")),
        "{texts:#?}"
    );
}

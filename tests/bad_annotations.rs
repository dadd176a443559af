//! A bad annotation is refused on its own Deployment: a Warning Event names it, that Deployment
//! is guarded with the daemon's config, and no other Deployment hears of it.

use deploy_watchdog::sim::runner::{self, Simulation};
use deploy_watchdog::sim::scenario::Scenario;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const FILE: &str = "tests/scenarios/annotation-rollout-timeout-past-the-clock-is-refused.yaml";

/// `now + 500000000000y` overflows the clock: before the bound it panicked inside the session
/// when the rollback computed its deadline, so nothing was rolled back and nothing said why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_timeout_past_the_clock_is_a_warning_event_and_the_defaults_roll_back() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FILE);
    let text = std::fs::read_to_string(&path).expect("scenario file");
    let scenario = Scenario::parse(&text, FILE).expect("valid scenario");
    let config = runner::daemon_config(&scenario, FILE).expect("valid config");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let sim = Simulation::start(&scenario, config, FILE, &shutdown)
        .await
        .expect("simulation");
    let report = runner::run_in(&sim, &scenario, FILE, None)
        .await
        .expect("run");
    assert!(report.ok, "{:?}", report.failures);

    let events = sim.cluster.events();
    let bad: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "BadAnnotation")
        .collect();
    assert!(!bad.is_empty(), "no BadAnnotation Event: {events:#?}");
    for e in bad {
        assert_eq!(e["type"], "Warning", "{e}");
        assert_eq!(
            e["regarding"]["name"], "app",
            "only the annotated Deployment: {e}"
        );
        let note = e["note"].as_str().unwrap_or_default();
        assert!(
            note.contains("deploy-watchdog.io/rollout-timeout")
                && note.contains("longer than the maximum"),
            "{note}"
        );
    }
}

//! What reaches Slack: text taken from outside (a version an app's `/health` reports, an error,
//! a scheduler message) is escaped as Slack asks, so it shows as written and can neither
//! mention anyone nor become a link; the watchdog's own message reads as composed.

use deploy_watchdog::sim::runner::{self, Simulation};
use deploy_watchdog::sim::scenario::Scenario;
use deploy_watchdog::sim::services::slack::control_sequences;
use tokio_util::sync::CancellationToken;

const HOSTILE: &str = "<!channel> <https://evil.example/|click here> & <@U0ADMIN>";

fn scenario() -> String {
    format!(
        r#"
name: hostile-version-arrives-inert
duration: 6s
config:
  mode: enforce
  watch: {{window: 3s, interval: 100ms, rollout_timeout: 3s, pending_timeout: 1s}}
  judge: {{error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s, failures_before_rollback: 3}}
deployments:
  - {{ref: production/app, replicas: 2, version: v1.2.2}}
apps:
  production/app@v1.2.2: {{rps: 200, error_ratio: 0.001}}
  production/app@v1.2.3: {{health: {{version: "{HOSTILE}"}}}}
script:
  - {{at: 300ms, deploy: {{deployment: production/app, version: v1.2.3}}}}
expect:
  production/app: {{outcome: rolled_back, reason: version_mismatch, final_version: v1.2.2}}
"#
    )
}

#[test]
fn slack_reads_every_angle_bracket_span_as_a_mention_or_link() {
    assert_eq!(
        control_sequences(HOSTILE),
        vec!["!channel", "https://evil.example/|click here", "@U0ADMIN"]
    );
    assert!(control_sequences("3.4% &gt; 1% &lt;!channel&gt; &amp;").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_version_from_health_arrives_at_slack_inert() {
    let text = scenario();
    let scenario = Scenario::parse(&text, "hostile.yaml").expect("valid scenario");
    let config = runner::daemon_config(&scenario, "hostile.yaml").expect("valid config");
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let sim = Simulation::start(&scenario, config, "hostile.yaml", &shutdown)
        .await
        .expect("simulation");
    let report = runner::run_in(&sim, &scenario, "hostile.yaml", None)
        .await
        .expect("run");
    assert!(report.ok, "{:?}", report.failures);

    let texts = sim.slack.texts();
    let lines: Vec<&str> = texts.iter().flat_map(|t| t.lines()).collect();
    let rolled_back = lines
        .iter()
        .find(|l| l.contains("Rolled back"))
        .unwrap_or_else(|| panic!("no rollback message in {lines:#?}"));
    // Nothing Slack would render as a mention or a link, in any message.
    assert_eq!(
        sim.slack.control_sequences(),
        Vec::<String>::new(),
        "{lines:#?}"
    );
    // The version shows as written once Slack unescapes it…
    assert!(
        rolled_back.contains(
            "version &lt;!channel&gt; &lt;https://evil.example/|click here&gt; &amp; &lt;@U0ADMIN&gt; reported"
        ),
        "{rolled_back}"
    );
    // …and the watchdog's own message reads as it composed it.
    assert!(
        rolled_back.starts_with("⚠️ Rolled back production/app v1.2.3 to v1.2.2 due to health: "),
        "{rolled_back}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Starting production deploy of v1.2.3 to production/app")),
        "{lines:#?}"
    );
}

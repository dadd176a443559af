//! Two replicas against one simulated cluster; the leader is killed at a different moment of a
//! bad release's watch in each trial. Every trial: exactly one kill, one rollback request, one
//! incident that notified on-call once, and a verified rollback.
//!
//! A leader killed after PagerDuty accepted its trigger and before the acceptance was recorded
//! on the Deployment cannot be told from one killed before sending: its successor sends the
//! trigger again, with the same `dedup_key`, which PagerDuty folds into the open incident (a
//! page is never lost for it). So a trial may count two triggers, never two incidents nor two
//! notifications.

mod support;

/// The bad release is found late enough for the kills to land on every moment of its watch:
/// a crash loop that begins 1.1 s after the deploy, in pods that were running fine, or an
/// error spike that takes ten consecutive failing samples.
fn scenario(trial: usize, kill_at_ms: u64, crashloop: bool) -> String {
    let (bad, later, failures, reason) = if crashloop {
        (
            "{rps: 200, error_ratio: 0.001}",
            "  - {at: 1400ms, app: {target: production/app@v1.2.3, pods: crashloop}}\n",
            // The kubelet backs off from a container's second crash: health must not beat the
            // crash loop to the verdict (10 failed samples take a second).
            10,
            "crashloop",
        )
    } else {
        ("{rps: 200, error_ratio: 0.05}", "", 10, "error_rate")
    };
    format!(
        "name: ha-trial-{trial}\n\
         duration: 14s\n\
         watchdogs: 2\n\
         config:\n  watch: {{window: 5s, interval: 100ms, rollout_timeout: 5s, pending_timeout: 1s}}\n\
         \x20 judge: {{error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s, failures_before_rollback: {failures}}}\n\
         deployments:\n  - {{ref: production/app, replicas: 3, version: v1.2.2}}\n\
         apps:\n  production/app@v1.2.2: {{rps: 200, error_ratio: 0.001}}\n  production/app@v1.2.3: {bad}\n\
         script:\n  - {{at: 300ms, deploy: {{deployment: production/app, version: v1.2.3}}}}\n\
         {later}\
         \x20 - {{at: {kill_at_ms}ms, kill_leader: {{}}}}\n\
         expect:\n  production/app:\n    - {{outcome: rolled_back, reason: {reason}, final_version: v1.2.2, pages: 1, notified: 1, rollbacks: 1, verified: true}}\n"
    )
}

#[test]
fn killing_the_leader_anywhere_in_the_watch_rolls_back_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    // Kills from 20 ms to 2.1 s after the deploy; the first action comes ~1.3 s after it.
    for trial in 0..24 {
        let crashloop = trial % 2 == 0;
        // The first kills land before the leader recorded the rollout, which is complete when
        // the next one leads: it is judged from when it began.
        let kill_at = 320 + (trial as u64) * 90;
        let path = dir.path().join(format!("ha-{trial}.yaml"));
        std::fs::write(&path, scenario(trial, kill_at, crashloop)).expect("write");
        files.push(path);
    }
    let (_, reports, failed, stderr) = support::simulate_json(&files);
    assert_eq!(reports.len(), 24, "stderr: {stderr}");
    assert!(
        failed.is_empty(),
        "trials without exactly one rollback and one page:\n{}",
        failed.join("\n")
    );
    // Each trial killed exactly one replica, the leader; kills land before the watchdog's first
    // action in some trials and after it in others.
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for r in &reports {
        let kills = r["kills"].as_array().expect("kills reported");
        assert_eq!(kills.len(), 1, "{}: {kills:?}", r["scenario"]);
        assert_eq!(
            kills[0]["killed"].as_array().map(Vec::len),
            Some(1),
            "{}: no leader was killed: {kills:?}",
            r["scenario"]
        );
        let kill_at = kills[0]["at_ms"].as_u64().expect("at_ms");
        let rollout = &r["rollouts"][0];
        let triggers = rollout["triggers"].as_u64().expect("triggers");
        assert!(
            (1..=2).contains(&triggers),
            "{}: {triggers} triggers: one, or its repeat by the replacement",
            r["scenario"]
        );
        let first_action = rollout["deployed_at_ms"].as_u64().expect("deployed_at_ms")
            + rollout["first_action_ms"]
                .as_u64()
                .expect("first_action_ms");
        let trial = (
            r["scenario"].as_str().unwrap_or_default().to_string(),
            kill_at,
            first_action,
        );
        if kill_at < first_action {
            before.push(trial);
        } else {
            after.push(trial);
        }
    }
    println!(
        "kills before the first action: {} of 24; after it: {}\nbefore: {before:?}\nafter: {after:?}",
        before.len(),
        after.len()
    );
    assert!(
        before.len() >= 4 && after.len() >= 4,
        "kills must land on both sides of the first action: before {before:?}, after {after:?}"
    );
}

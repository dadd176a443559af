//! Two replicas against one simulated cluster; the leader is killed at a different moment of a
//! bad release's watch in each trial. Every trial: exactly one rollback and one page.

mod support;

fn scenario(trial: usize, kill_at_ms: u64, crashloop: bool) -> String {
    let (bad, failures, reason) = if crashloop {
        ("{pods: crashloop}", 3, "crashloop")
    } else {
        ("{rps: 200, error_ratio: 0.05}", 10, "error_rate")
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
         \x20 - {{at: {kill_at_ms}ms, kill_leader: {{}}}}\n\
         expect:\n  production/app:\n    - {{outcome: rolled_back, reason: {reason}, final_version: v1.2.2, pages: 1, rollbacks: 1}}\n"
    )
}

#[test]
fn killing_the_leader_anywhere_in_the_watch_rolls_back_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    // Crash loops are rolled back ~0.2 s after the deploy, error spikes ~1.3 s after: the kills
    // land before, during and after the rollback and its verification.
    for trial in 0..24 {
        let crashloop = trial % 2 == 0;
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
}

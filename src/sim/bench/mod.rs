//! The benchmark (`cargo run --release --bin bench`): the daemon as its own process
//! (`deploy-watchdog run`) against `simulate --serve` with N opted-in Deployments (three
//! ReplicaSets, ten Pods each), measured from outside: memory and CPU from `/proc`, API requests
//! and Prometheus queries counted by the simulation, latencies from the simulation's records.
//! A `kubectl`/`curl` loop on the same cluster is the reference. See BENCHMARKS.md.

mod phases;
pub mod proc;
mod reference;
pub mod report;
mod serve;

use std::path::PathBuf;
use std::time::Duration;

pub use report::{Figures, SizeReport};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Deployments per run (N).
    pub sizes: Vec<usize>,
    /// Rollouts watched at once (K); sizes above N are skipped.
    pub ks: Vec<usize>,
    /// How long each steady-state figure is measured.
    pub measure: Duration,
    /// Rollouts per latency measurement.
    pub samples: usize,
    /// Rollouts the kubectl/curl reference loop runs.
    pub reference: usize,
    /// The `deploy-watchdog` binary.
    pub exe: PathBuf,
    /// Scratch files: scenarios, kubeconfigs, daemon logs.
    pub dir: PathBuf,
    /// The daemon's probe interval.
    pub interval: Duration,
    /// The daemon's watch window, waited out after seeding: a rollout that completed within its
    /// window before the daemon led is judged (as after a failover), so the seeded ones must be
    /// older than that.
    pub window: Duration,
    /// The simulated Prometheus' scrape interval; `None`: the simulation's default, a quarter
    /// of the sample window.
    pub scrape_interval: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot start `deploy-watchdog {0}`: {1}")]
    Spawn(&'static str, std::io::Error),
    #[error("{0}")]
    Protocol(String),
    #[error("writing {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// The namespace/name of Deployment `i`: 100 per namespace.
pub fn deployment(i: usize) -> String {
    format!("bench-{}/app-{i}", i / 100)
}

/// The scenario served for `n` Deployments: ten replicas each at v1, the policy of the run.
pub fn scenario(
    n: usize,
    interval: Duration,
    window: Duration,
    scrape_interval: Option<Duration>,
) -> String {
    let interval = humantime::format_duration(interval);
    let window = humantime::format_duration(window);
    let simulation = scrape_interval
        .map(|d| {
            format!(
                "simulation: {{scrape_interval: {}}}\n",
                humantime::format_duration(d)
            )
        })
        .unwrap_or_default();
    let mut s = format!(
        "name: bench-{n}\nduration: 24h\nconfig:\n  mode: enforce\n  \
         watch: {{window: {window}, interval: {interval}, rollout_timeout: 10m, pending_timeout: 2m}}\n  \
         judge: {{error_rate_threshold: 0.01, min_requests: 20, sample_window: 1s, \
         failures_before_rollback: 3, inconclusive_limit: 5, \
         baseline: {{enabled: false, lookback: 1s, factor: 2.0}}}}\n{simulation}deployments:\n"
    );
    for i in 0..n {
        s.push_str(&format!(
            "  - {{ref: {}, replicas: 10, version: v1}}\n",
            deployment(i)
        ));
    }
    s
}

/// Runs every size in turn.
pub async fn run(opts: &Options) -> Result<Vec<SizeReport>, BenchError> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| BenchError::Write(opts.dir.clone(), e))?;
    let mut out = Vec::new();
    for &n in &opts.sizes {
        eprintln!("bench: N = {n}");
        out.push(phases::size(opts, n).await?);
    }
    Ok(out)
}

//! The apps' request and error counters: a deterministic integration of each version's rps and
//! error ratio over time, shared among ready pods the way a Service spreads traffic, with a
//! bounded history so `increase()` over any window up to [`HISTORY`] can be answered.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::ClusterView;
use crate::sim::behaviour::Behaviours;

/// How far back samples are kept, at tick resolution.
pub const HISTORY: Duration = Duration::from_secs(600);
/// How often the counters advance.
pub const TICK: Duration = Duration::from_millis(50);
/// The one metric the apps expose.
pub const METRIC: &str = "http_requests_total";

/// Maps the tokio clock to Unix time once, so every timestamp the simulation gives out (query
/// answers, Datadog buckets) follows the same clock as the ticker, paused test time included.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    base: Instant,
    base_unix: f64,
}

impl SimClock {
    pub fn new() -> Self {
        let base_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        SimClock {
            base: Instant::now(),
            base_unix,
        }
    }

    /// Now, in Unix seconds.
    pub fn now(&self) -> f64 {
        self.at(Instant::now())
    }

    pub fn at(&self, instant: Instant) -> f64 {
        self.base_unix + instant.saturating_duration_since(self.base).as_secs_f64()
    }
}

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

/// One version of one Deployment: the series `{namespace, deployment, version}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VersionKey {
    pub namespace: String,
    pub deployment: String,
    pub version: String,
}

/// A counter's samples `(unix seconds, value)`, oldest first, with its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Default)]
struct Counters {
    successes: f64,
    errors: f64,
    /// `(t, successes, errors)`.
    history: VecDeque<(f64, f64, f64)>,
}

#[derive(Default)]
struct State {
    series: BTreeMap<VersionKey, Counters>,
    last_tick: Option<f64>,
}

/// The counters of every app, advanced by [`Traffic::tick`].
#[derive(Clone)]
pub struct Traffic {
    state: Arc<Mutex<State>>,
    behaviours: Behaviours,
    cluster: Arc<dyn ClusterView>,
    clock: SimClock,
}

impl Traffic {
    pub fn new(behaviours: Behaviours, cluster: Arc<dyn ClusterView>, clock: SimClock) -> Self {
        Traffic {
            state: Arc::default(),
            behaviours,
            cluster,
            clock,
        }
    }

    pub fn clock(&self) -> SimClock {
        self.clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Advances every counter to now: each ready version gets `rps × dt × ready_v / ready`
    /// requests, of which `error_ratio` fail. Exact expected values, no randomness.
    pub fn tick(&self) {
        let now = self.clock.now();
        let mut shares = Vec::new();
        for (namespace, deployment) in self.cluster.deployments() {
            let ready = self.cluster.ready_pods_by_version(&namespace, &deployment);
            let total: u32 = ready.iter().map(|(_, n)| n).sum();
            for (version, pods) in ready {
                if pods == 0 || total == 0 {
                    continue;
                }
                let b = self.behaviours.lookup(&namespace, &deployment, &version);
                let share = f64::from(pods) / f64::from(total);
                let key = VersionKey {
                    namespace: namespace.clone(),
                    deployment: deployment.clone(),
                    version,
                };
                shares.push((key, b.rps * share, b.error_ratio));
            }
        }
        let mut state = self.lock();
        let since = state.last_tick.unwrap_or(now);
        let dt = (now - since).max(0.0);
        for (key, rps, error_ratio) in shares {
            let counters = state.series.entry(key).or_default();
            if counters.history.is_empty() {
                // A new series starts from an explicit zero, so increase() sees its first requests.
                counters.history.push_back((since, 0.0, 0.0));
            }
            let requests = rps * dt;
            let errors = requests * error_ratio;
            counters.successes += requests - errors;
            counters.errors += errors;
        }
        let horizon = now - HISTORY.as_secs_f64();
        for counters in state.series.values_mut() {
            counters
                .history
                .push_back((now, counters.successes, counters.errors));
            // Keep one sample at or before the horizon as the base of the longest window.
            while counters.history.len() > 2 && counters.history[1].0 <= horizon {
                counters.history.pop_front();
            }
        }
        state.last_tick = Some(now);
    }

    /// Sets a Deployment's counters back to zero, as when all its pods restart.
    pub fn reset(&self, namespace: &str, deployment: &str) {
        let now = self.clock.now();
        let mut state = self.lock();
        for (key, counters) in state.series.iter_mut() {
            if key.namespace == namespace && key.deployment == deployment {
                counters.successes = 0.0;
                counters.errors = 0.0;
                counters.history.push_back((now, 0.0, 0.0));
            }
        }
    }

    /// The current counters `(key, successes, errors)`.
    pub fn current(&self) -> Vec<(VersionKey, f64, f64)> {
        self.lock()
            .series
            .iter()
            .map(|(k, c)| (k.clone(), c.successes, c.errors))
            .collect()
    }

    /// Every `http_requests_total` series (code "200" and "500") with its samples in
    /// `[from, to]` plus the last sample before `from`.
    pub fn series(&self, from: f64, to: f64) -> Vec<Series> {
        let state = self.lock();
        let mut out = Vec::new();
        for (key, counters) in &state.series {
            let start = counters
                .history
                .partition_point(|s| s.0 < from)
                .saturating_sub(1);
            let end = counters.history.partition_point(|s| s.0 <= to);
            let window = counters.history.range(start..end.max(start));
            let (mut ok, mut err) = (Vec::new(), Vec::new());
            for &(t, s, e) in window {
                ok.push((t, s));
                err.push((t, e));
            }
            for (code, points) in [("200", ok), ("500", err)] {
                out.push(Series {
                    labels: labels(key, code),
                    points,
                });
            }
        }
        out
    }

    /// Requests and errors of a Deployment (all versions) over the last `window`.
    pub fn counts(&self, namespace: &str, deployment: &str, window: Duration) -> (f64, f64) {
        let to = self.clock.now();
        let from = to - window.as_secs_f64();
        let (mut requests, mut errors) = (0.0, 0.0);
        for s in self.series(from, to) {
            if s.labels.get("namespace").map(String::as_str) != Some(namespace)
                || s.labels.get("deployment").map(String::as_str) != Some(deployment)
            {
                continue;
            }
            let inc = increase(&s.points, from, to).unwrap_or(0.0);
            requests += inc;
            if s.labels.get("code").map(String::as_str) == Some("500") {
                errors += inc;
            }
        }
        (requests, errors)
    }
}

fn labels(key: &VersionKey, code: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("__name__".to_string(), METRIC.to_string()),
        ("namespace".to_string(), key.namespace.clone()),
        ("deployment".to_string(), key.deployment.clone()),
        ("version".to_string(), key.version.clone()),
        ("code".to_string(), code.to_string()),
    ])
}

/// The value of a counter at `t`: its last sample at or before `t`.
pub fn value_at(points: &[(f64, f64)], t: f64) -> Option<f64> {
    let i = points.partition_point(|p| p.0 <= t);
    i.checked_sub(1).map(|i| points[i].1)
}

/// How much a counter grew over `(from, to]`: the plain delta between the last sample at or
/// before `from` (or the series' first sample, if it began later) and the last sample at or
/// before `to`, summing across resets the way Prometheus does (a drop counts as a restart from
/// zero). `None` when the series has no sample by `to`.
pub fn increase(points: &[(f64, f64)], from: f64, to: f64) -> Option<f64> {
    let end = points.partition_point(|p| p.0 <= to);
    if end == 0 {
        return None;
    }
    let start = points
        .partition_point(|p| p.0 <= from)
        .saturating_sub(1)
        .min(end - 1);
    let mut total = 0.0;
    let mut previous = points[start].1;
    for &(_, v) in &points[start + 1..end] {
        total += if v >= previous { v - previous } else { v };
        previous = v;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increase_is_the_delta_over_the_window() {
        let points = [(0.0, 0.0), (1.0, 10.0), (2.0, 20.0), (3.0, 30.0)];
        assert_eq!(increase(&points, 1.0, 3.0), Some(20.0));
        assert_eq!(increase(&points, -5.0, 3.0), Some(30.0));
        assert_eq!(increase(&points, 1.5, 2.5), Some(10.0));
        assert_eq!(increase(&points, -2.0, -1.0), None);
    }

    #[test]
    fn increase_counts_through_a_counter_reset() {
        let points = [(0.0, 50.0), (1.0, 60.0), (2.0, 5.0), (3.0, 15.0)];
        assert_eq!(increase(&points, 0.0, 3.0), Some(10.0 + 5.0 + 10.0));
    }
}

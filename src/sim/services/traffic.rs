//! The apps' request and error counters: a deterministic integration of each version's rps and
//! error ratio over time, shared among ready pods the way a Service spreads traffic, with a
//! bounded history so `increase()` over any window up to [`HISTORY`] can be answered.
//!
//! Every series is sampled at every tick, as a scraped counter is, but nothing is stored per
//! sample: a counter is piecewise linear between rate changes and resets, so each series keeps
//! one piece per change within the history and the ticks' times are kept once for all. A tick
//! reads rates again only for the Deployments whose ready pods or behaviours changed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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

/// The labels of one series, read without building a map (most series match no query).
#[derive(Debug, Clone, Copy)]
pub struct LabelView<'a> {
    key: &'a VersionKey,
    code: &'static str,
}

impl LabelView<'_> {
    /// The value of a label, `""` when the series has no such label (as PromQL reads it).
    pub fn get(&self, name: &str) -> &str {
        match name {
            "__name__" => METRIC,
            "namespace" => &self.key.namespace,
            "deployment" => &self.key.deployment,
            "version" => &self.key.version,
            "code" => self.code,
            _ => "",
        }
    }
}

/// Which series to sample: an exact namespace and deployment narrow the search to those series
/// (the common query); `keep` decides for each remaining one.
pub struct Selection<'a> {
    pub namespace: Option<&'a str>,
    pub deployment: Option<&'a str>,
    pub keep: &'a dyn Fn(&LabelView<'_>) -> bool,
}

impl Selection<'_> {
    /// Every series.
    pub fn all() -> Selection<'static> {
        Selection {
            namespace: None,
            deployment: None,
            keep: &|_| true,
        }
    }
}

/// One piece of a counter pair: from the tick `anchor` on, both counters grow linearly.
///
/// It values the samples taken at ticks after `anchor` (until the next piece's anchor), the way
/// the counters used to be advanced at every tick by `rate × (tick − previous tick)`: a rate
/// read at a tick applies since the tick before.
#[derive(Debug, Clone, Copy)]
struct Piece {
    anchor: f64,
    /// Successes and errors at `anchor` as this piece counts them (zero after a reset).
    base: (f64, f64),
    /// Successes and errors per second.
    rate: (f64, f64),
    /// A reset (or the series' start): the time of its zero sample.
    reset: Option<f64>,
}

impl Piece {
    fn at(&self, t: f64) -> (f64, f64) {
        let dt = (t - self.anchor).max(0.0);
        (
            self.base.0 + self.rate.0 * dt,
            self.base.1 + self.rate.1 * dt,
        )
    }

    /// Where its reset sample sits among the ticks: after the ticks up to `anchor` (they were
    /// taken before it), before any tick at the same time that came after it.
    fn reset_key(&self, index: usize) -> Option<SampleKey> {
        let t = self.reset?;
        let class = if t > self.anchor { 0 } else { 2 };
        Some(SampleKey(t, class, index))
    }
}

/// Orders a series' samples: time, then (ties) resets before later ticks, then reset order.
/// Ticks are class 1; resets class 0 or 2 (see [`Piece::reset_key`]).
#[derive(Debug, Clone, Copy, PartialEq)]
struct SampleKey(f64, u8, usize);

impl SampleKey {
    fn tick(t: f64) -> Self {
        SampleKey(t, 1, 0)
    }
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        self.0
            .total_cmp(&other.0)
            .then(self.1.cmp(&other.1))
            .then(self.2.cmp(&other.2))
    }
}

/// The counters of one version: piecewise linear in time, one piece per rate change or reset
/// within the history, instead of a sample per tick.
#[derive(Debug)]
struct Counters {
    /// The tick of the series' first (zero) sample; ticks after it are its samples.
    start: f64,
    pieces: VecDeque<Piece>,
}

impl Counters {
    fn last(&self) -> Option<&Piece> {
        self.pieces.back()
    }

    /// The counters at tick `t` (after `start`): the last piece anchored before it.
    fn at_tick(&self, t: f64) -> (f64, f64) {
        let i = self.pieces.partition_point(|p| p.anchor < t);
        i.checked_sub(1)
            .and_then(|i| self.pieces.get(i))
            .map_or((0.0, 0.0), |p| p.at(t))
    }

    /// The last reset sample at or before `t`.
    fn last_reset(&self, t: f64) -> Option<(SampleKey, f64)> {
        let end = self.pieces.partition_point(|p| p.anchor <= t);
        (0..end).rev().find_map(|i| {
            let key = self.pieces[i].reset_key(i)?;
            (key.0 <= t).then_some((key, 0.0))
        })
    }
}

#[derive(Default)]
struct State {
    series: BTreeMap<VersionKey, Counters>,
    /// Every tick within the history, oldest first: the sample times all series share.
    ticks: VecDeque<f64>,
    last_tick: Option<f64>,
    horizon: f64,
    cluster_generation: u64,
    behaviour_generation: u64,
}

impl State {
    /// The tick sample at or before `t` of a series that began at `start`.
    fn tick_at(&self, start: f64, t: f64) -> Option<f64> {
        let i = self.ticks.partition_point(|&x| x <= t);
        let tick = *self.ticks.get(i.checked_sub(1)?)?;
        (tick > start).then_some(tick)
    }

    /// A series' samples `(key, successes, errors)`: the last at or before `t`.
    fn sample(&self, c: &Counters, t: f64) -> Option<(SampleKey, (f64, f64))> {
        let tick = self
            .tick_at(c.start, t)
            .map(|x| (SampleKey::tick(x), c.at_tick(x)));
        let reset = c.last_reset(t).map(|(k, _)| (k, (0.0, 0.0)));
        let latest = match (tick, reset) {
            (Some(a), Some(b)) => Some(if a.0.order(&b.0).is_ge() { a } else { b }),
            (a, b) => a.or(b),
        };
        let first = self.first(c);
        match latest {
            // Samples older than the history's first one are gone, as if pruned.
            Some(s) if s.0.order(&first.0).is_lt() => (first.0.0 <= t).then_some(first),
            other => other,
        }
    }

    /// A series' oldest sample still kept: the last one at or before the horizon, or its first.
    fn first(&self, c: &Counters) -> (SampleKey, (f64, f64)) {
        let start = (SampleKey(c.start, 2, 0), (0.0, 0.0));
        let tick = self
            .tick_at(c.start, self.horizon)
            .map(|x| (SampleKey::tick(x), c.at_tick(x)));
        let reset = c.last_reset(self.horizon).map(|(k, _)| (k, (0.0, 0.0)));
        [tick, reset]
            .into_iter()
            .flatten()
            .fold(start, |a, b| if b.0.order(&a.0).is_gt() { b } else { a })
    }

    /// The samples of a series that `increase()` and `value_at` need at each of `times`
    /// (ascending): the last sample at or before each, the oldest kept one when a time precedes
    /// it, and the samples either side of every reset between them. Over these points, both
    /// give what they give over every sample, since a counter's growth between two samples
    /// with no reset between is their difference.
    fn points(&self, c: &Counters, times: &[f64]) -> Vec<(SampleKey, (f64, f64))> {
        let mut out: Vec<(SampleKey, (f64, f64))> = Vec::with_capacity(times.len() + 2);
        let (Some(&lo), Some(&hi)) = (times.first(), times.last()) else {
            return out;
        };
        let first = self.first(c);
        if self.sample(c, lo).is_none() && first.0.0 <= hi {
            out.push(first);
        }
        out.extend(times.iter().filter_map(|&t| self.sample(c, t)));
        let (Some(from), Some(to)) = (out.first().map(|p| p.0), out.last().map(|p| p.0)) else {
            return out;
        };
        for (i, piece) in c.pieces.iter().enumerate() {
            let Some(key) = piece.reset_key(i) else {
                continue;
            };
            if key.order(&from).is_le() || key.order(&to).is_gt() {
                continue;
            }
            // The tick before the reset, with the value the reset dropped.
            let before = SampleKey::tick(piece.anchor);
            if piece.anchor > c.start
                && before.order(&from).is_gt()
                && self.ticks.front().is_some_and(|&f| f <= piece.anchor)
            {
                out.push((before, c.at_tick(piece.anchor)));
            }
            out.push((key, (0.0, 0.0)));
        }
        out.sort_by(|a, b| a.0.order(&b.0));
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    /// Points the rate of one series from the tick `since` on (or starts it there).
    fn set_rate(&mut self, key: &VersionKey, since: f64, rate: (f64, f64), create: bool) {
        let front = self.ticks.front().copied().unwrap_or(since);
        let Some(c) = self.series.get_mut(key) else {
            if create {
                let piece = Piece {
                    anchor: since,
                    base: (0.0, 0.0),
                    rate,
                    reset: Some(since),
                };
                let c = Counters {
                    start: since,
                    pieces: VecDeque::from([piece]),
                };
                self.series.insert(key.clone(), c);
            }
            return;
        };
        let Some(last) = c.pieces.back_mut() else {
            return;
        };
        if last.rate == rate {
            return;
        }
        if last.anchor >= since {
            // No tick has been valued with this piece yet (it began at the last tick).
            last.rate = rate;
            return;
        }
        let base = last.at(since);
        c.pieces.push_back(Piece {
            anchor: since,
            base,
            rate,
            reset: None,
        });
        // Pieces that value no kept sample any more: their successor began before the oldest tick.
        while c.pieces.len() > 1 && c.pieces[1].anchor < front {
            c.pieces.pop_front();
        }
    }
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

    /// Takes a sample of every counter now: each ready version gets `rps × dt × ready_v /
    /// ready` requests since the last tick, of which `error_ratio` fail. Exact expected values,
    /// no randomness. Rates are read again only for Deployments whose ready pods or behaviours
    /// changed; otherwise a tick only records its time.
    pub fn tick(&self) {
        self.tick_at(self.clock.now());
    }

    pub(crate) fn tick_at(&self, now: f64) {
        let (cluster_seen, behaviour_seen) = {
            let state = self.lock();
            (state.cluster_generation, state.behaviour_generation)
        };
        let (cluster_generation, changed) = self.cluster.ready_changes_since(cluster_seen);
        let (behaviour_generation, behaviours_changed) =
            self.behaviours.changed_since(behaviour_seen);
        let everything = changed.is_none();
        let mut deployments: BTreeSet<(String, String)> = match changed {
            Some(changed) => changed.into_iter().collect(),
            None => self.cluster.deployments().into_iter().collect(),
        };
        deployments.extend(behaviours_changed);
        if everything {
            // Deployments gone from the cluster serve nothing any more.
            let state = self.lock();
            let known = state.series.keys();
            deployments.extend(known.map(|k| (k.namespace.clone(), k.deployment.clone())));
        }
        let mut rates = Vec::new();
        for (namespace, deployment) in deployments {
            let ready = self.cluster.ready_pods_by_version(&namespace, &deployment);
            let total: u32 = ready.iter().map(|(_, n)| n).sum();
            let mut versions = Vec::new();
            for (version, pods) in ready {
                if pods == 0 || total == 0 {
                    continue;
                }
                let b = self.behaviours.lookup(&namespace, &deployment, &version);
                let rps = b.rps * f64::from(pods) / f64::from(total);
                let errors = rps * b.error_ratio;
                versions.push((version, (rps - errors, errors)));
            }
            rates.push((namespace, deployment, versions));
        }
        let mut state = self.lock();
        let since = state.last_tick.unwrap_or(now);
        for (namespace, deployment, versions) in rates {
            let mut key = VersionKey {
                namespace,
                deployment,
                version: String::new(),
            };
            // Versions with no ready pod left get no more requests.
            let idle: Vec<VersionKey> = state
                .series
                .range(key.clone()..)
                .take_while(|(k, _)| k.namespace == key.namespace && k.deployment == key.deployment)
                .filter(|(k, _)| !versions.iter().any(|(v, _)| *v == k.version))
                .map(|(k, _)| k.clone())
                .collect();
            for k in idle {
                state.set_rate(&k, since, (0.0, 0.0), false);
            }
            for (version, rate) in versions {
                key.version = version;
                state.set_rate(&key, since, rate, true);
            }
        }
        state.ticks.push_back(now);
        let horizon = now - HISTORY.as_secs_f64();
        // Keep one tick at or before the horizon as the base of the longest window.
        while state.ticks.len() > 2 && state.ticks[1] <= horizon {
            state.ticks.pop_front();
        }
        state.horizon = horizon;
        state.last_tick = Some(now);
        state.cluster_generation = cluster_generation;
        state.behaviour_generation = behaviour_generation;
    }

    /// Sets a Deployment's counters back to zero, as when all its pods restart.
    pub fn reset(&self, namespace: &str, deployment: &str) {
        self.reset_at(namespace, deployment, self.clock.now());
    }

    fn reset_at(&self, namespace: &str, deployment: &str, now: f64) {
        let mut state = self.lock();
        let anchor = state.last_tick.unwrap_or(now);
        let from = VersionKey {
            namespace: namespace.to_string(),
            deployment: deployment.to_string(),
            version: String::new(),
        };
        for (_, c) in state
            .series
            .range_mut(from..)
            .take_while(|(k, _)| k.namespace == namespace && k.deployment == deployment)
        {
            let rate = c.last().map_or((0.0, 0.0), |p| p.rate);
            c.pieces.push_back(Piece {
                anchor,
                base: (0.0, 0.0),
                rate,
                reset: Some(now),
            });
        }
    }

    /// The time of the oldest tick still kept: nothing before it can be read.
    pub fn oldest(&self) -> Option<f64> {
        self.lock().ticks.front().copied()
    }

    /// The current counters `(key, successes, errors)`: as of the last tick, or zero after a
    /// reset since.
    pub fn current(&self) -> Vec<(VersionKey, f64, f64)> {
        let state = self.lock();
        let last_tick = state.last_tick.unwrap_or(f64::NEG_INFINITY);
        state
            .series
            .iter()
            .map(|(k, c)| {
                let (s, e) = c.last().map_or((0.0, 0.0), |p| p.at(last_tick));
                (k.clone(), s, e)
            })
            .collect()
    }

    /// The `http_requests_total` series (code "200" and "500") that `selection` keeps, with the
    /// samples `increase()` and `value_at` need at each of `times` (ascending; see
    /// [`increase`]): over these points both answer at those times exactly what they would
    /// over every tick's sample.
    pub fn sampled(&self, selection: &Selection<'_>, times: &[f64]) -> Vec<Series> {
        let state = self.lock();
        let from = VersionKey {
            namespace: selection.namespace.unwrap_or("").to_string(),
            deployment: selection.deployment.unwrap_or("").to_string(),
            version: String::new(),
        };
        let in_scope = |k: &VersionKey| {
            selection.namespace.is_none_or(|n| k.namespace == n)
                && selection.deployment.is_none_or(|d| k.deployment == d)
        };
        let candidates: Box<dyn Iterator<Item = (&VersionKey, &Counters)>> =
            match selection.namespace {
                Some(namespace) => Box::new(
                    state
                        .series
                        .range(from..)
                        .take_while(move |(k, _)| k.namespace == namespace),
                ),
                None => Box::new(state.series.iter()),
            };
        let mut out = Vec::new();
        for (key, counters) in candidates.filter(|(k, _)| in_scope(k)) {
            let codes = ["200", "500"].map(|code| (selection.keep)(&LabelView { key, code }));
            if !codes.contains(&true) {
                continue;
            }
            let points = state.points(counters, times);
            for (i, code) in ["200", "500"].into_iter().enumerate() {
                if !codes[i] {
                    continue;
                }
                let value = |v: (f64, f64)| if i == 0 { v.0 } else { v.1 };
                out.push(Series {
                    labels: labels(key, code),
                    points: points.iter().map(|(k, v)| (k.0, value(*v))).collect(),
                });
            }
        }
        out
    }

    /// Requests and errors of a Deployment (all versions) over the last `window`.
    pub fn counts(&self, namespace: &str, deployment: &str, window: Duration) -> (f64, f64) {
        self.counts_at(namespace, deployment, window, self.clock.now())
    }

    fn counts_at(
        &self,
        namespace: &str,
        deployment: &str,
        window: Duration,
        to: f64,
    ) -> (f64, f64) {
        let from = to - window.as_secs_f64();
        let selection = Selection {
            namespace: Some(namespace),
            deployment: Some(deployment),
            keep: &|_| true,
        };
        let (mut requests, mut errors) = (0.0, 0.0);
        for s in self.sampled(&selection, &[from, to]) {
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
    use crate::sim::behaviour::{AppKey, Behaviour};
    use std::collections::HashMap;

    type Ready = HashMap<(String, String), Vec<(String, u32)>>;

    /// A cluster whose ready pods a test sets; it cannot tell what changed.
    #[derive(Default)]
    struct Pods(Mutex<Ready>);

    impl Pods {
        fn set(&self, deployment: &str, ready: &[(&str, u32)]) {
            let ready = ready.iter().map(|(v, n)| (v.to_string(), *n)).collect();
            let mut pods = self.0.lock().unwrap_or_else(|e| e.into_inner());
            pods.insert(("prod".into(), deployment.into()), ready);
        }
    }

    impl ClusterView for Pods {
        fn ready_pods_by_version(&self, namespace: &str, name: &str) -> Vec<(String, u32)> {
            let pods = self.0.lock().unwrap_or_else(|e| e.into_inner());
            pods.get(&(namespace.into(), name.into()))
                .cloned()
                .unwrap_or_default()
        }
        fn deployments(&self) -> Vec<(String, String)> {
            let pods = self.0.lock().unwrap_or_else(|e| e.into_inner());
            pods.keys().cloned().collect()
        }
    }

    /// Successes, errors and every sample `(t, successes, errors)` of a version.
    type DenseCounters = (f64, f64, Vec<(f64, f64, f64)>);

    /// The counters as they were kept before: every tick adds `rate × dt` and stores a sample.
    #[derive(Default)]
    struct Dense {
        series: BTreeMap<(String, String), DenseCounters>,
        last_tick: Option<f64>,
    }

    impl Dense {
        fn tick(&mut self, now: f64, pods: &Pods, behaviours: &Behaviours) {
            let since = self.last_tick.unwrap_or(now);
            for (_, deployment) in pods.deployments() {
                let ready = pods.ready_pods_by_version("prod", &deployment);
                let total: u32 = ready.iter().map(|(_, n)| n).sum();
                for (version, n) in ready.into_iter().filter(|(_, n)| *n > 0) {
                    let b = behaviours.lookup("prod", &deployment, &version);
                    let requests = b.rps * f64::from(n) / f64::from(total) * (now - since);
                    let c = self
                        .series
                        .entry((deployment.clone(), version))
                        .or_default();
                    if c.2.is_empty() {
                        c.2.push((since, 0.0, 0.0));
                    }
                    c.0 += requests * (1.0 - b.error_ratio);
                    c.1 += requests * b.error_ratio;
                }
            }
            for c in self.series.values_mut() {
                c.2.push((now, c.0, c.1));
                while c.2.len() > 2 && c.2[1].0 <= now - HISTORY.as_secs_f64() {
                    c.2.remove(0);
                }
            }
            self.last_tick = Some(now);
        }

        fn reset(&mut self, deployment: &str, now: f64) {
            for ((d, _), c) in self.series.iter_mut() {
                if d == deployment {
                    (c.0, c.1) = (0.0, 0.0);
                    c.2.push((now, 0.0, 0.0));
                }
            }
        }

        fn points(&self, deployment: &str, version: &str, code: &str) -> Vec<(f64, f64)> {
            let key = (deployment.to_string(), version.to_string());
            let samples = self
                .series
                .get(&key)
                .map(|c| c.2.clone())
                .unwrap_or_default();
            let pick = |s: &(f64, f64, f64)| if code == "200" { s.1 } else { s.2 };
            samples.iter().map(|s| (s.0, pick(s))).collect()
        }
    }

    struct Fixture {
        pods: Arc<Pods>,
        behaviours: Behaviours,
        traffic: Traffic,
        dense: Dense,
        now: f64,
        ticks: u32,
    }

    impl Fixture {
        fn new() -> Self {
            let pods = Arc::new(Pods::default());
            let behaviours = Behaviours::default();
            let traffic = Traffic::new(behaviours.clone(), pods.clone(), SimClock::new());
            Fixture {
                pods,
                behaviours,
                traffic,
                dense: Dense::default(),
                now: 1_000.0,
                ticks: 0,
            }
        }

        fn behave(&self, deployment: &str, version: &str, rps: f64, error_ratio: f64) {
            let b = Behaviour {
                rps,
                error_ratio,
                ..Behaviour::default()
            };
            self.behaviours
                .set(AppKey::new("prod", deployment, version), b);
        }

        fn tick(&mut self) {
            self.traffic.tick_at(self.now);
            self.dense.tick(self.now, &self.pods, &self.behaviours);
        }

        fn reset(&mut self, deployment: &str) {
            self.traffic.reset_at("prod", deployment, self.now);
            self.dense.reset(deployment, self.now);
        }

        fn advance(&mut self, seconds: f64) {
            self.now += seconds;
        }

        /// Ticks 50 ms apart, a few of them late as under load.
        fn run(&mut self, ticks: usize) {
            for _ in 0..ticks {
                self.ticks += 1;
                let late = if self.ticks.is_multiple_of(7) {
                    0.013
                } else {
                    0.0
                };
                self.advance(TICK.as_secs_f64() + late);
                self.tick();
            }
        }

        fn counts(&self, deployment: &str, seconds: u64) -> (f64, f64) {
            let window = Duration::from_secs(seconds);
            self.traffic.counts_at("prod", deployment, window, self.now)
        }

        /// The piecewise series sampled at `times`.
        fn sampled(&self, deployment: &str, times: &[f64]) -> Vec<Series> {
            let selection = Selection {
                namespace: Some("prod"),
                deployment: Some(deployment),
                keep: &|_| true,
            };
            self.traffic.sampled(&selection, times)
        }

        /// Checks increase() and value_at over the windows against the dense samples.
        fn agrees(&self, deployment: &str, windows: &[(f64, f64)]) {
            for &(from, to) in windows {
                for s in self.sampled(deployment, &[from, to]) {
                    let (version, code) = (&s.labels["version"], &s.labels["code"]);
                    let dense = self.dense.points(deployment, version, code);
                    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                        (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                        (a, b) => a == b,
                    };
                    let what = format!("{deployment}@{version} {code} over ({from}, {to}]");
                    let (i, d) = (increase(&s.points, from, to), increase(&dense, from, to));
                    assert!(close(i, d), "{what}: increase {i:?} != {d:?}");
                    let (v, w) = (value_at(&s.points, to), value_at(&dense, to));
                    assert!(close(v, w), "{what}: value {v:?} != {w:?}");
                    let last = |p: &[(f64, f64)]| {
                        p[..p.partition_point(|x| x.0 <= to)].last().map(|x| x.0)
                    };
                    assert_eq!(last(&s.points), last(&dense), "{what}: last sample");
                }
            }
        }
    }

    fn windows(now: f64) -> Vec<(f64, f64)> {
        let mut out = Vec::new();
        for back in [0.0, 0.03, 0.05, 0.5, 1.0, 7.3] {
            for range in [0.01, 0.05, 0.2, 1.0, 5.0, 60.0, 599.0, 700.0] {
                out.push((now - back - range, now - back));
            }
        }
        out
    }

    #[test]
    fn value_at_a_time_is_the_last_ticks_integral_of_the_rate() {
        let mut f = Fixture::new();
        f.pods.set("app", &[("v1", 3), ("v2", 1)]);
        f.behave("app", "v2", 40.0, 0.5);
        f.tick();
        f.run(20);
        let now = f.now;
        let s = f.sampled("app", &[now - 0.5, now - 0.52, now]);
        let v1 = s
            .iter()
            .find(|s| s.labels["version"] == "v1" && s.labels["code"] == "200");
        let v2 = s
            .iter()
            .find(|s| s.labels["version"] == "v2" && s.labels["code"] == "500");
        let (Some(v1), Some(v2)) = (v1, v2) else {
            panic!("series missing: {s:?}")
        };
        // A quarter of v2's 40 rps reaches its one pod of four, half failing: 5 errors/s.
        let elapsed = now - 1_000.0;
        assert!((value_at(&v1.points, now).unwrap_or(0.0) - 75.0 * elapsed).abs() < 1e-9);
        assert!((value_at(&v2.points, now).unwrap_or(0.0) - 5.0 * elapsed).abs() < 1e-9);
        // Between ticks, the last tick's value.
        let i = v1.points.partition_point(|p| p.0 <= now - 0.52);
        let (t, v) = v1.points[i - 1];
        assert!(t < now - 0.5 && t > now - 0.6, "{t}");
        assert!((v - 75.0 * (t - 1_000.0)).abs() < 1e-9, "{v}");
        f.agrees("app", &windows(now));
        let (requests, errors) = f.counts("app", 1);
        // From the last tick at or before a second ago: the first one, at 1000 s.
        assert!((requests - 85.0 * elapsed).abs() < 1e-9, "{requests}");
        assert!((errors - 5.0 * elapsed).abs() < 1e-9, "{errors}");
    }

    #[test]
    fn increase_across_a_rate_change_adds_both_rates() {
        let mut f = Fixture::new();
        f.pods.set("app", &[("v1", 2)]);
        f.tick();
        f.run(40);
        f.pods.set("app", &[("v1", 1), ("v2", 1)]);
        f.behave("app", "v2", 100.0, 0.2);
        f.run(40);
        f.behave("app", "v1", 300.0, 0.0);
        f.run(40);
        let now = f.now;
        f.agrees("app", &windows(now));
        let (requests, errors) = f.counts("app", 1);
        // The last second: v1 at 150 rps, v2 at 50 of which 10 fail, from the tick before it.
        let s = f.sampled("app", &[now - 1.0, now]);
        let since = now - s[0].points[0].0;
        assert!(since > 1.0 && since < 1.07, "{since}");
        assert!((requests - 200.0 * since).abs() < 1e-6, "{requests}");
        assert!((errors - 10.0 * since).abs() < 1e-6, "{errors}");
    }

    #[test]
    fn a_reset_drops_to_zero_and_increase_counts_through_it() {
        let mut f = Fixture::new();
        f.pods.set("app", &[("v1", 1)]);
        f.tick();
        f.run(30);
        f.advance(0.02);
        f.reset("app");
        f.run(10);
        // Two resets between ticks, and one at the instant of a tick.
        f.advance(0.01);
        f.reset("app");
        f.advance(0.01);
        f.reset("app");
        f.run(10);
        f.reset("app");
        f.run(10);
        let now = f.now;
        f.agrees("app", &windows(now));
        let current = f.traffic.current();
        assert_eq!(current.len(), 1);
        let dense = f.dense.points("app", "v1", "200");
        let last = dense.last().map_or(0.0, |p| p.1);
        assert!(
            last > 40.0 && (current[0].1 - last).abs() < 1e-9,
            "{current:?}"
        );
        f.reset("app");
        assert_eq!(f.traffic.current()[0].1, 0.0);
        f.agrees("app", &windows(now));
    }

    #[test]
    fn history_keeps_one_sample_before_the_horizon() {
        let mut f = Fixture::new();
        f.pods.set("app", &[("v1", 1)]);
        f.pods.set("new", &[]);
        f.tick();
        for round in 0..26 {
            // Rate changes and resets throughout, so pieces pile up and must be pruned.
            f.behave("app", "v1", 10.0 + f64::from(round), 0.1);
            if round % 5 == 0 {
                f.reset("app");
            }
            if round == 20 {
                f.pods.set("new", &[("v1", 1)]);
            }
            f.run(500);
        }
        let now = f.now;
        f.agrees("app", &windows(now));
        f.agrees("new", &windows(now));
        let state = f.traffic.lock();
        assert!(state.ticks.len() <= HISTORY.as_millis() as usize / 50 + 2);
        let pieces: usize = state.series.values().map(|c| c.pieces.len()).sum();
        assert!(pieces <= 30, "{pieces} pieces kept");
        drop(state);
        // A window longer than the history counts from its oldest sample.
        let s = f.sampled("app", &[now - 3600.0, now]);
        let first = s[0].points[0].0;
        assert!(first <= now - 600.0 && first > now - 600.05, "{first}");
    }

    #[test]
    fn a_version_without_ready_pods_stops_counting_and_stays() {
        let mut f = Fixture::new();
        f.pods.set("app", &[("v1", 1), ("v2", 1)]);
        f.tick();
        f.run(20);
        f.pods.set("app", &[("v2", 1)]);
        f.run(20);
        f.pods.set("app", &[]);
        f.run(20);
        let now = f.now;
        f.agrees("app", &windows(now));
        assert_eq!(f.counts("app", 1), (0.0, 0.0));
        assert_eq!(f.sampled("app", &[now]).len(), 4);
    }

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

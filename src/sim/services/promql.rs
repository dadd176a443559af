//! A small PromQL subset over the apps' counters: selectors with `=`, `!=`, `=~`, `!~`
//! matchers, range selectors with Prometheus durations, `increase()` and `rate()`, and the
//! aggregations `sum`, `avg`, `min`, `max`, `count` with `by`/`without` before or after.
//!
//! `increase()` and `rate()` are Prometheus' `extrapolatedRate` (`promql/functions.go`): over
//! the samples inside the range `(t - range, t]` (left-open, as Prometheus 3 selects them),
//! the last minus the first plus the value before each counter reset, extrapolated towards
//! the range's ends — all the way when the first or last sample is within 1.1 average sample
//! intervals of that end, else by half an interval, and never below the counter's zero point.
//! A series with fewer than two samples in the range has no value. Against the apps' counters
//! the samples are the ones a scrape every `scrape_interval` would have stored ([`Scraped`]).

use std::collections::BTreeMap;

use regex::Regex;

use super::traffic::{LabelView, Selection, Series, Traffic, value_at};

/// How far back an instant selector looks for a sample, as in Prometheus.
const LOOKBACK: f64 = 300.0;

/// Series to evaluate queries over.
pub trait Source {
    /// The series every matcher accepts, with samples enough for [`increase`] and
    /// [`value_at`] at each of `times` (ascending) to answer as over all their samples.
    fn select(&self, matchers: &[Matcher], times: &[f64]) -> Vec<Series>;
}

impl Source for super::traffic::Traffic {
    fn select(&self, matchers: &[Matcher], times: &[f64]) -> Vec<Series> {
        // An exact namespace or deployment narrows the search to its series.
        let exact = |label: &str| {
            matchers.iter().find_map(|m| match m {
                Matcher::Equal(n, v) if n == label => Some(v.as_str()),
                _ => None,
            })
        };
        let keep = |labels: &LabelView<'_>| {
            matchers
                .iter()
                .all(|m| m.matches_with(|name| labels.get(name)))
        };
        let selection = Selection {
            namespace: exact("namespace"),
            deployment: exact("deployment"),
            keep: &keep,
        };
        self.sampled(&selection, times)
    }
}

impl Source for Vec<Series> {
    fn select(&self, matchers: &[Matcher], _times: &[f64]) -> Vec<Series> {
        self.iter()
            .filter(|s| matchers.iter().all(|m| m.matches(&s.labels)))
            .cloned()
            .collect()
    }
}

/// The apps' counters as a Prometheus scraping them every `interval` has stored them: one
/// sample per series at each scrape (instants on multiples of the interval since the Unix
/// epoch, in milliseconds as Prometheus keeps them), from the scrape after the series began,
/// none older than the counters' history.
pub struct Scraped<'a> {
    pub traffic: &'a Traffic,
    pub interval: std::time::Duration,
}

/// Scrapes looked at for one query at most: an hour at a 250 ms scrape.
const MAX_SCRAPES: i64 = 14_400;

impl Source for Scraped<'_> {
    /// Every scrape in `(min(times), max(times)]`, and the last one at or before `min(times)`.
    fn select(&self, matchers: &[Matcher], times: &[f64]) -> Vec<Series> {
        let (Some(&lo), Some(&hi)) = (times.first(), times.last()) else {
            return Vec::new();
        };
        let step = (self.interval.as_millis() as i64).max(1);
        // No scrape has happened yet after the simulation's now.
        let hi = hi.min(self.traffic.clock().now());
        let last = millis(hi).div_euclid(step) * step;
        let mut first = (millis(lo).div_euclid(step) * step).max(last - step * MAX_SCRAPES);
        if let Some(oldest) = self.traffic.oldest() {
            // Nothing older than the counters' history can have been scraped.
            first = first.max((millis(oldest) + step - 1).div_euclid(step) * step);
        }
        let scrapes: Vec<f64> = (0..)
            .map(|i| first + i * step)
            .take_while(|&s| s <= last)
            .map(|s| s as f64 / 1000.0)
            .collect();
        if scrapes.is_empty() {
            return Vec::new();
        }
        self.traffic
            .select(matchers, &scrapes)
            .into_iter()
            .filter_map(|s| {
                let points: Vec<(f64, f64)> = scrapes
                    .iter()
                    .filter_map(|&t| Some((t, value_at(&s.points, t)?)))
                    .collect();
                (!points.is_empty()).then_some(Series {
                    labels: s.labels,
                    points,
                })
            })
            .collect()
    }
}

/// Unix seconds to whole milliseconds, as Prometheus reads a query's `time`.
fn millis(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

/// Prometheus' `extrapolatedRate` for a counter, `increase()` form: `samples` are the ones
/// inside the range `(start, end]`, oldest first. `None` with fewer than two.
pub fn extrapolated_increase(samples: &[(f64, f64)], start: f64, end: f64) -> Option<f64> {
    let (&(first_t, first_v), &(last_t, last_v)) = (samples.first()?, samples.last()?);
    let intervals = samples.len().checked_sub(1).filter(|&n| n > 0)? as f64;
    let sampled = last_t - first_t;
    if sampled <= 0.0 {
        return None;
    }
    // A drop is a restart from zero: the value before it was counted too.
    let mut result = last_v - first_v;
    for pair in samples.windows(2) {
        if pair[1].1 < pair[0].1 {
            result += pair[0].1;
        }
    }
    let average = sampled / intervals;
    // A sample missing where the spacing says one would be: the series starts (or ends)
    // inside the range, half an interval beyond its first (or last) sample.
    let threshold = average * 1.1;
    let mut to_start = first_t - start;
    if to_start >= threshold {
        to_start = average / 2.0;
    }
    // A counter is never negative: no further back than where this slope reaches zero.
    if result > 0.0 && first_v >= 0.0 {
        to_start = to_start.min(sampled * (first_v / result));
    }
    let mut to_end = end - last_t;
    if to_end >= threshold {
        to_end = average / 2.0;
    }
    Some(result * (sampled + to_start + to_end) / sampled)
}

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromqlError {
    /// Prometheus' `bad_data`, answered with 400.
    #[error("1:{}: parse error: {message}", position + 1)]
    Parse { position: usize, message: String },
    /// Prometheus' `execution`, answered with 422.
    #[error("{0}")]
    Execution(String),
}

/// A label matcher.
#[derive(Debug, Clone)]
pub enum Matcher {
    Equal(String, String),
    NotEqual(String, String),
    Regex(String, Regex),
    NotRegex(String, Regex),
}

impl Matcher {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|name| labels.get(name).map(String::as_str).unwrap_or(""))
    }

    /// Whether labels read through `value` (`""` for a missing label) match.
    pub fn matches_with<'a>(&self, value: impl Fn(&str) -> &'a str) -> bool {
        match self {
            Matcher::Equal(n, v) => value(n) == v,
            Matcher::NotEqual(n, v) => value(n) != v,
            Matcher::Regex(n, re) => re.is_match(value(n)),
            Matcher::NotRegex(n, re) => !re.is_match(value(n)),
        }
    }

    fn matches_empty(&self) -> bool {
        self.matches(&BTreeMap::new())
    }
}

/// How an aggregation groups.
#[derive(Debug, Clone, PartialEq)]
pub enum Grouping {
    By(Vec<String>),
    Without(Vec<String>),
}

/// A parsed query.
#[derive(Debug, Clone)]
pub enum Expr {
    Selector {
        matchers: Vec<Matcher>,
        range: Option<f64>,
    },
    Call {
        function: Function,
        arg: Box<Expr>,
    },
    Aggregate {
        op: AggregateOp,
        grouping: Option<Grouping>,
        arg: Box<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Function {
    Increase,
    Rate,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggregateOp {
    Sum,
    Avg,
    Min,
    Max,
    Count,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Evaluates `query` at Unix time `t`, as an instant query.
pub fn query(source: &dyn Source, text: &str, t: f64) -> Result<Vec<Sample>, PromqlError> {
    let expr = super::promql_parse::parse(text)?;
    evaluate(&expr, source, t)
}

/// Evaluates a parsed expression at `t`; the result must be an instant vector.
pub fn evaluate(expr: &Expr, source: &dyn Source, t: f64) -> Result<Vec<Sample>, PromqlError> {
    match expr {
        Expr::Selector { range: Some(_), .. } => Err(PromqlError::Execution(
            "the simulation answers instant vectors only; wrap a range selector in increase() or rate()".into(),
        )),
        Expr::Selector { matchers, range: None } => Ok(source
            .select(matchers, &[t])
            .into_iter()
            .filter_map(|s| {
                let i = s.points.partition_point(|p| p.0 <= t);
                let last = s.points.get(i.checked_sub(1)?)?;
                (last.0 >= t - LOOKBACK).then_some(())?;
                Some(Sample { value: value_at(&s.points, t)?, labels: s.labels })
            })
            .collect()),
        Expr::Call { function, arg } => {
            let Expr::Selector { matchers, range: Some(range) } = arg.as_ref() else {
                return Err(PromqlError::Execution(format!(
                    "expected type range vector in call to function \"{}\"",
                    function.name()
                )));
            };
            // Prometheus works in milliseconds: the query's time and the range's start.
            let end = millis(t) as f64 / 1000.0;
            let from = (millis(t) - millis(*range)) as f64 / 1000.0;
            Ok(source
                .select(matchers, &[from, end])
                .into_iter()
                .filter_map(|mut s| {
                    let lo = s.points.partition_point(|p| p.0 <= from);
                    let hi = s.points.partition_point(|p| p.0 <= end);
                    let delta = extrapolated_increase(&s.points[lo..hi], from, end)?;
                    s.labels.remove("__name__");
                    let value = match function {
                        Function::Increase => delta,
                        Function::Rate => delta / range,
                    };
                    Some(Sample { labels: s.labels, value })
                })
                .collect())
        }
        Expr::Aggregate { op, grouping, arg } => {
            let input = evaluate(arg, source, t)?;
            let mut groups: BTreeMap<BTreeMap<String, String>, Vec<f64>> = BTreeMap::new();
            for sample in input {
                let key = match grouping {
                    None => BTreeMap::new(),
                    Some(Grouping::By(names)) => {
                        sample.labels.into_iter().filter(|(k, _)| names.contains(k)).collect()
                    }
                    Some(Grouping::Without(names)) => sample
                        .labels
                        .into_iter()
                        .filter(|(k, _)| k != "__name__" && !names.contains(k))
                        .collect(),
                };
                groups.entry(key).or_default().push(sample.value);
            }
            Ok(groups.into_iter().map(|(labels, values)| Sample { labels, value: op.apply(&values) }).collect())
        }
    }
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::Increase => "increase",
            Function::Rate => "rate",
        }
    }
}

impl AggregateOp {
    fn apply(self, values: &[f64]) -> f64 {
        let sum: f64 = values.iter().sum();
        match self {
            AggregateOp::Sum => sum,
            AggregateOp::Avg => sum / values.len() as f64,
            AggregateOp::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
            AggregateOp::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            AggregateOp::Count => values.len() as f64,
        }
    }
}

/// Builds a matcher, anchoring regexes as Prometheus does.
pub fn matcher(name: &str, op: &str, value: &str) -> Result<Matcher, String> {
    let regex = || {
        Regex::new(&format!("^(?:{value})$"))
            .map_err(|e| format!("invalid regular expression {value:?}: {e}"))
    };
    Ok(match op {
        "=" => Matcher::Equal(name.into(), value.into()),
        "!=" => Matcher::NotEqual(name.into(), value.into()),
        "=~" => Matcher::Regex(name.into(), regex()?),
        "!~" => Matcher::NotRegex(name.into(), regex()?),
        other => return Err(format!("unknown matcher operator {other:?}")),
    })
}

/// Whether a selector can match anything narrower than every series (Prometheus refuses
/// selectors such as `{code=~".*"}`).
pub fn has_non_empty_matcher(matchers: &[Matcher]) -> bool {
    matchers.iter().any(|m| !m.matches_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(deployment: &str, version: &str, code: &str, points: &[(f64, f64)]) -> Series {
        Series {
            labels: BTreeMap::from([
                ("__name__".into(), "http_requests_total".into()),
                ("namespace".into(), "production".into()),
                ("deployment".into(), deployment.into()),
                ("version".into(), version.into()),
                ("code".into(), code.into()),
            ]),
            points: points.to_vec(),
        }
    }

    /// A counter growing at `rate` per second from `start`, scraped every 15 s up to 120 s.
    fn scraped(start: f64, rate: f64) -> Vec<(f64, f64)> {
        (0..=8)
            .map(|i| f64::from(i) * 15.0)
            .filter(|&t| t >= start)
            .map(|t| (t, rate * (t - start)))
            .collect()
    }

    fn source() -> Vec<Series> {
        vec![
            series("app", "v1", "200", &scraped(0.0, 10.0)),
            series("app", "v1", "500", &scraped(0.0, 0.1)),
            series("app", "v2", "200", &scraped(60.0, 5.0)),
            series("app", "v2", "500", &scraped(60.0, 1.0)),
            series("other", "v9", "200", &scraped(0.0, 0.825)),
        ]
    }

    fn values(q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        match query(&source(), q, 120.0) {
            Ok(v) => v.into_iter().map(|s| (s.labels, s.value)).collect(),
            Err(e) => panic!("{q}: {e}"),
        }
    }

    #[test]
    fn sum_of_increase_adds_every_matching_series() {
        let v = values(
            r#"sum(increase(http_requests_total{namespace="production",deployment="app"}[1m]))"#,
        );
        assert_eq!(v, vec![(BTreeMap::new(), 600.0 + 6.0 + 300.0 + 60.0)]);
        let errors =
            values(r#"sum(increase(http_requests_total{deployment="app",code=~"5.."}[1m]))"#);
        assert_eq!(errors[0].1, 66.0);
    }

    #[test]
    fn sum_by_keeps_the_named_labels_before_or_after() {
        for q in [
            r#"sum by (version) (increase(http_requests_total{deployment="app"}[60s]))"#,
            r#"sum(increase(http_requests_total{deployment="app"}[60s])) by (version)"#,
        ] {
            let v = values(q);
            assert_eq!(v.len(), 2, "{q}");
            assert_eq!(
                v[0].0,
                BTreeMap::from([("version".to_string(), "v1".to_string())])
            );
            assert_eq!(v[0].1, 606.0);
            assert_eq!(v[1].1, 360.0);
        }
        let v = values(
            r#"sum without (code, version) (rate(http_requests_total{deployment!="other"}[1m]))"#,
        );
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0.get("deployment").map(String::as_str), Some("app"));
        assert_eq!(v[0].1, 966.0 / 60.0);
    }

    #[test]
    fn regex_matchers_are_anchored() {
        assert!(values(r#"http_requests_total{code=~"5"}"#).is_empty());
        assert_eq!(
            values(r#"http_requests_total{code!~"2..", deployment="app"}"#).len(),
            2
        );
        assert_eq!(
            values(r#"count(http_requests_total{version=~"v1|v9"})"#)[0].1,
            3.0
        );
    }

    #[test]
    fn nothing_matching_gives_an_empty_vector() {
        assert!(values(r#"sum(increase(http_requests_total{deployment="nope"}[1m]))"#).is_empty());
        assert!(values(r#"sum(increase(other_metric[1m]))"#).is_empty());
    }

    #[test]
    fn durations_follow_prometheus_syntax() {
        for (q, expected) in [("[30s]", 300.0), ("[1m30s]", 900.0), ("[2m]", 1200.0)] {
            let v = values(&format!(
                r#"sum(increase(http_requests_total{{version="v1",code="200"}}{q}))"#
            ));
            assert!((v[0].1 - expected).abs() < 1e-9, "{q}: {}", v[0].1);
        }
        // One scrape in the range: no value, as in Prometheus.
        for q in ["[500ms]", "[10s]", "[15s]"] {
            let v = values(&format!(
                r#"sum(increase(http_requests_total{{version="v1",code="200"}}{q}))"#
            ));
            assert!(v.is_empty(), "{q}: {v:?}");
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn increase_needs_two_samples_in_the_left_open_range() {
        assert_eq!(extrapolated_increase(&[], 0.0, 60.0), None);
        assert_eq!(extrapolated_increase(&[(30.0, 5.0)], 0.0, 60.0), None);
        // The selection is (start, end]: a sample exactly at the start is outside.
        let points = [(0.0, 0.0), (60.0, 60.0)];
        let s = source_of(&points);
        assert!(
            query(&s, "increase(m[1m])", 60.0)
                .expect("valid")
                .is_empty()
        );
        assert_eq!(query(&s, "increase(m[2m])", 60.0).expect("valid").len(), 1);
    }

    fn source_of(points: &[(f64, f64)]) -> Vec<Series> {
        vec![Series {
            labels: BTreeMap::from([("__name__".into(), "m".into())]),
            points: points.to_vec(),
        }]
    }

    #[test]
    fn increase_extrapolates_to_the_range_ends_as_prometheus_does() {
        // Samples 1.1 intervals or nearer to both ends: extrapolated all the way.
        let even = [(10.0, 110.0), (25.0, 125.0), (40.0, 140.0), (55.0, 155.0)];
        assert!(close(extrapolated_increase(&even, 0.0, 60.0), 60.0));
        // Far from the start (a series that began inside the range): half an interval.
        let late = [(40.0, 1000.0), (50.0, 1010.0), (60.0, 1020.0)];
        assert!(close(
            extrapolated_increase(&late, 0.0, 60.0),
            20.0 * 25.0 / 20.0
        ));
        // Never back beyond the counter's zero: 2 → 12 over 10 s reaches 0 two seconds before.
        let fresh = [(40.0, 2.0), (50.0, 12.0)];
        assert!(close(
            extrapolated_increase(&fresh, 30.0, 50.0),
            10.0 * 12.0 / 10.0
        ));
        // Far from the end (the series stopped): half an interval past the last sample.
        let stopped = [(5.0, 100.0), (15.0, 110.0)];
        assert!(close(
            extrapolated_increase(&stopped, 0.0, 60.0),
            10.0 * 20.0 / 10.0
        ));
    }

    #[test]
    fn a_counter_reset_counts_the_value_before_it() {
        let reset = [(0.0, 50.0), (15.0, 60.0), (30.0, 5.0), (45.0, 15.0)];
        // 10 + (5 after the restart) + 10, over 45 s sampled, extrapolated to 46 s.
        let v = extrapolated_increase(&reset, -1.0, 45.0);
        assert!(close(v, 25.0 * 46.0 / 45.0), "{v:?}");
    }

    /// One Deployment with three ready pods of v1 at 100 rps, 2 % errors.
    struct OneApp;

    impl crate::sim::services::ClusterView for OneApp {
        fn ready_pods_by_version(&self, _: &str, _: &str) -> Vec<(String, u32)> {
            vec![("v1".into(), 3)]
        }
        fn deployments(&self) -> Vec<(String, String)> {
            vec![("production".into(), "app".into())]
        }
    }

    /// The apps' counters after `minutes` of traffic, ticked every second from Unix time 1000.
    fn traffic(minutes: u32) -> (Traffic, f64) {
        let behaviours = crate::sim::behaviour::Behaviours::default();
        behaviours.set(
            crate::sim::behaviour::AppKey::new("production", "app", "v1"),
            crate::sim::behaviour::Behaviour {
                rps: 100.0,
                error_ratio: 0.02,
                ..Default::default()
            },
        );
        let clock = super::super::traffic::SimClock::new();
        let t = Traffic::new(behaviours, std::sync::Arc::new(OneApp), clock);
        let mut now = 1000.0;
        for _ in 0..=minutes * 60 {
            t.tick_at(now);
            now += 1.0;
        }
        (t, now - 1.0)
    }

    /// The shipped default queries over the shipped default window, as the provider fills them.
    fn default_queries() -> (String, String) {
        let window = crate::probes::prometheus::promql_duration(
            crate::config::JudgeConfig::default().sample_window.get(),
        );
        let p = crate::config::PrometheusConfig::default();
        let fill = |q: &str| crate::config::fill(q, "production", "app", &[("window", &window)]);
        (fill(&p.requests_query), fill(&p.errors_query))
    }

    #[test]
    fn the_default_queries_see_data_at_a_one_minute_scrape() {
        let (traffic, now) = traffic(10);
        let (requests, errors) = default_queries();
        for scrape in [15, 30, 60] {
            let source = Scraped {
                traffic: &traffic,
                interval: std::time::Duration::from_secs(scrape),
            };
            // At any phase of the scrapes: the query's time relative to them.
            for offset in [0.0, 0.5, 13.0, 29.9, 59.0] {
                let t = now - offset;
                let r = query(&source, &requests, t).expect("valid");
                let e = query(&source, &errors, t).expect("valid");
                let (Some(r), Some(e)) = (r.first(), e.first()) else {
                    panic!("no data at a {scrape}s scrape, {offset}s after one: {r:?} {e:?}");
                };
                let window = crate::config::JudgeConfig::default()
                    .sample_window
                    .as_secs_f64();
                // Extrapolated from whole scrapes: near the 100 rps served, exactly 2 % errors.
                assert!(
                    (r.value - 100.0 * window).abs() < 100.0 * window * 0.05,
                    "{scrape}s: {}",
                    r.value
                );
                assert!((e.value / r.value - 0.02).abs() < 1e-9, "{scrape}s");
            }
        }
    }

    #[test]
    fn a_one_minute_range_at_a_one_minute_scrape_has_no_value() {
        let (traffic, now) = traffic(5);
        let source = Scraped {
            traffic: &traffic,
            interval: std::time::Duration::from_secs(60),
        };
        let q =
            r#"sum(increase(http_requests_total{namespace="production",deployment="app"}[1m]))"#;
        for offset in [0.0, 1.0, 30.0, 59.0] {
            assert!(query(&source, q, now - offset).expect("valid").is_empty());
        }
        let q =
            r#"sum(increase(http_requests_total{namespace="production",deployment="app"}[2m]))"#;
        assert!(!query(&source, q, now).expect("valid").is_empty());
    }

    #[test]
    fn bad_queries_are_parse_errors() {
        for q in [
            "foo(http_requests_total[1m])",
            "sum(increase(http_requests_total[1m])",
            r#"http_requests_total{code=~"("}"#,
            "http_requests_total[1x]",
            r#"{code=~".*"}"#,
            "",
        ] {
            assert!(
                matches!(query(&source(), q, 120.0), Err(PromqlError::Parse { .. })),
                "{q}"
            );
        }
        let Err(e) = query(&source(), "foo(x[1m])", 0.0) else {
            panic!("parsed")
        };
        assert!(
            e.to_string().contains("unknown function with name \"foo\""),
            "{e}"
        );
    }
}

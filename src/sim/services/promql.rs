//! A small PromQL subset over the apps' counters: selectors with `=`, `!=`, `=~`, `!~`
//! matchers, range selectors with Prometheus durations, `increase()` and `rate()`, and the
//! aggregations `sum`, `avg`, `min`, `max`, `count` with `by`/`without` before or after.
//!
//! `increase()` is the plain delta over the window (no extrapolation to the window's edges):
//! the counter at `t` minus the counter at `t - range`, adding across counter resets;
//! `rate()` is that delta divided by the range in seconds.

use std::collections::BTreeMap;

use regex::Regex;

use super::traffic::{LabelView, Selection, Series, increase, value_at};

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
            let from = t - range;
            Ok(source
                .select(matchers, &[from, t])
                .into_iter()
                .filter_map(|mut s| {
                    let delta = increase(&s.points, from, t)?;
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

    fn source() -> Vec<Series> {
        vec![
            series(
                "app",
                "v1",
                "200",
                &[(0.0, 0.0), (60.0, 600.0), (120.0, 1200.0)],
            ),
            series(
                "app",
                "v1",
                "500",
                &[(0.0, 0.0), (60.0, 6.0), (120.0, 12.0)],
            ),
            series("app", "v2", "200", &[(60.0, 0.0), (120.0, 300.0)]),
            series("app", "v2", "500", &[(60.0, 0.0), (120.0, 60.0)]),
            series("other", "v9", "200", &[(0.0, 0.0), (120.0, 99.0)]),
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
        for (q, expected) in [
            ("[500ms]", 600.0),
            ("[30s]", 600.0),
            ("[1m30s]", 1200.0),
            ("[2m]", 1200.0),
        ] {
            let v = values(&format!(
                r#"sum(increase(http_requests_total{{version="v1",code="200"}}{q}))"#
            ));
            assert_eq!(v[0].1, expected, "{q}");
        }
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

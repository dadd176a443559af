//! Datadog metric queries over the apps' counters: the parser of
//! `sum:trace.<operation>.hits{service:app,env:prod} by {version}.as_count()` (and `.errors`)
//! and its evaluation into rollup buckets.
//!
//! Tags map to the counters' labels: `service` and `kube_deployment` ↔ deployment,
//! `kube_namespace` ↔ namespace, `version` ↔ version; `env` and any other tag match every
//! series (the simulation has one environment). With `.as_count()` a bucket holds the requests
//! counted in it; without, the per-second rate over it, as for Datadog count metrics.

use std::collections::BTreeMap;

use super::traffic::{Series, increase};

/// Which counter a trace metric reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Hits,
    Errors,
}

/// One `tag:value` filter of a scope; `value` may end in `*`.
#[derive(Debug, Clone, PartialEq)]
pub struct TagFilter {
    pub tag: String,
    pub value: String,
    pub negated: bool,
}

/// A parsed metric query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub aggregator: String,
    pub metric: String,
    pub measure: Option<Measure>,
    pub filters: Vec<TagFilter>,
    pub scope: String,
    pub group_by: Vec<String>,
    pub as_count: bool,
}

/// A query the parser refuses, with Datadog's wording.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Error parsing query: {0}")]
pub struct QueryError(pub String);

/// Parses `<aggr>:<metric>{<scope>} [by {<tags>}][.as_count()|.as_rate()]`.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    let err = |m: &str| QueryError(format!("{m} in {text:?}"));
    let text = text.trim();
    let (aggregator, rest) = text
        .split_once(':')
        .ok_or_else(|| err("missing space aggregator (e.g. sum:)"))?;
    if !["sum", "avg", "min", "max"].contains(&aggregator) {
        return Err(err(&format!("unknown aggregator {aggregator:?}")));
    }
    let open = rest.find('{').ok_or_else(|| err("missing scope {…}"))?;
    let metric = rest[..open].trim();
    if metric.is_empty()
        || !metric
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
    {
        return Err(err("invalid metric name"));
    }
    let close = rest[open..]
        .find('}')
        .ok_or_else(|| err("unclosed scope"))?
        + open;
    let scope = rest[open + 1..close].trim().to_string();
    let mut filters = Vec::new();
    if scope != "*" {
        for part in scope.split(',').map(str::trim) {
            let (negated, part) = match part.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, part),
            };
            let (tag, value) = part
                .split_once(':')
                .ok_or_else(|| err(&format!("scope term {part:?} is not tag:value")))?;
            filters.push(TagFilter {
                tag: tag.trim().into(),
                value: value.trim().into(),
                negated,
            });
        }
    }
    let mut tail = rest[close + 1..].trim();
    let mut as_count = false;
    let mut group_by = Vec::new();
    while !tail.is_empty() {
        if let Some(t) = tail.strip_prefix(".as_count()") {
            as_count = true;
            tail = t.trim_start();
        } else if let Some(t) = tail.strip_prefix(".as_rate()") {
            as_count = false;
            tail = t.trim_start();
        } else if let Some(t) = tail.strip_prefix("by") {
            let t = t
                .trim_start()
                .strip_prefix('{')
                .ok_or_else(|| err("expected { after by"))?;
            let end = t.find('}').ok_or_else(|| err("unclosed by {…}"))?;
            group_by = t[..end]
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            tail = t[end + 1..].trim_start();
        } else {
            return Err(err(&format!("unexpected {tail:?}")));
        }
    }
    let measure = match metric.strip_prefix("trace.") {
        Some(m) if m.ends_with(".hits") => Some(Measure::Hits),
        Some(m) if m.ends_with(".errors") => Some(Measure::Errors),
        _ => None,
    };
    Ok(Query {
        aggregator: aggregator.into(),
        metric: metric.into(),
        measure,
        filters,
        scope,
        group_by,
        as_count,
    })
}

/// The label a Datadog tag reads, or `None` for a tag every series carries (e.g. `env`).
fn label_of(tag: &str) -> Option<&'static str> {
    match tag {
        "service" | "kube_deployment" => Some("deployment"),
        "kube_namespace" => Some("namespace"),
        "version" => Some("version"),
        _ => None,
    }
}

fn value_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl Query {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.filters.iter().all(|f| {
            let Some(label) = label_of(&f.tag) else {
                return true;
            };
            let value = labels.get(label).map(String::as_str).unwrap_or("");
            value_matches(&f.value, value) != f.negated
        })
    }

    fn counts(&self, labels: &BTreeMap<String, String>) -> bool {
        match self.measure {
            Some(Measure::Hits) => true,
            Some(Measure::Errors) => labels.get("code").map(String::as_str) == Some("500"),
            None => false,
        }
    }

    /// The group tags of a series, e.g. `["version:v1"]`, in the query's order.
    fn group_tags(&self, labels: &BTreeMap<String, String>) -> Vec<String> {
        self.group_by
            .iter()
            .map(|tag| {
                let value = label_of(tag)
                    .and_then(|l| labels.get(l))
                    .map(String::as_str)
                    .unwrap_or("N/A");
                format!("{tag}:{value}")
            })
            .collect()
    }
}

/// One answered series: group tags and a value per bucket (`None` before the series existed).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub group_tags: Vec<String>,
    pub values: Vec<Option<f64>>,
}

/// Bucket start times (Unix seconds) covering `[from, to]`, aligned on `interval`, none after
/// `now`.
pub fn buckets(from: f64, to: f64, interval: f64, now: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut b = (from / interval).floor() * interval;
    while b <= to.min(now) && out.len() < 10_000 {
        out.push(b);
        b += interval;
    }
    out
}

/// Evaluates `query` over `series` into `buckets` of `interval` seconds, ending no later than
/// `to` and `now`.
pub fn evaluate(
    query: &Query,
    series: &[Series],
    buckets: &[f64],
    interval: f64,
    to: f64,
    now: f64,
) -> Vec<Answer> {
    let mut groups: BTreeMap<Vec<String>, Vec<Option<f64>>> = BTreeMap::new();
    for s in series
        .iter()
        .filter(|s| query.matches(&s.labels) && query.counts(&s.labels))
    {
        let values = groups
            .entry(query.group_tags(&s.labels))
            .or_insert_with(|| vec![None; buckets.len()]);
        for (slot, &start) in values.iter_mut().zip(buckets) {
            let end = (start + interval).min(to).min(now);
            let Some(delta) = increase(&s.points, start, end) else {
                continue;
            };
            // A series that had not begun by the bucket's end has no point there.
            if s.points.first().is_some_and(|p| p.0 >= end) {
                continue;
            }
            let value = if query.as_count {
                delta
            } else {
                delta / interval
            };
            *slot = Some(slot.unwrap_or(0.0) + value);
        }
    }
    groups
        .into_iter()
        .filter(|(_, values)| values.iter().any(Option::is_some))
        .map(|(group_tags, values)| Answer { group_tags, values })
        .collect()
}

/// The rollup interval Datadog would pick for a range, in seconds: about 300 points at most,
/// never finer than a second.
pub fn default_interval(from: f64, to: f64) -> f64 {
    ((to - from) / 300.0).ceil().max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trace_metric_queries() {
        let q = parse("sum:trace.http.request.hits{service:app,env:prod,version:v1}.as_count()")
            .expect("valid");
        assert_eq!(q.measure, Some(Measure::Hits));
        assert!(q.as_count);
        assert_eq!(q.filters.len(), 3);
        assert_eq!(q.scope, "service:app,env:prod,version:v1");
        let q =
            parse("sum:trace.http.request.errors{service:app,!version:v2} by {version}.as_count()")
                .expect("valid");
        assert_eq!(q.measure, Some(Measure::Errors));
        assert_eq!(q.group_by, vec!["version".to_string()]);
        assert!(q.filters[1].negated);
        let q =
            parse("sum:trace.web.request.hits{*}.as_count() by {service,version}").expect("valid");
        assert_eq!(q.group_by.len(), 2);
        assert!(q.filters.is_empty());
    }

    #[test]
    fn refuses_malformed_queries() {
        for q in [
            "trace.http.request.hits{*}",
            "sum:trace.http.request.hits",
            "sum:x{service}",
            "sum:x{*} foo",
            "median:x{*}",
        ] {
            assert!(parse(q).is_err(), "{q}");
        }
    }

    #[test]
    fn counts_fill_buckets_per_group() {
        let labels = |v: &str, code: &str| {
            BTreeMap::from([
                ("deployment".to_string(), "app".to_string()),
                ("namespace".to_string(), "production".to_string()),
                ("version".to_string(), v.to_string()),
                ("code".to_string(), code.to_string()),
            ])
        };
        let series = vec![
            Series {
                labels: labels("v1", "200"),
                points: vec![(0.0, 0.0), (10.0, 90.0), (20.0, 180.0)],
            },
            Series {
                labels: labels("v1", "500"),
                points: vec![(0.0, 0.0), (10.0, 10.0), (20.0, 20.0)],
            },
            Series {
                labels: labels("v2", "500"),
                points: vec![(10.0, 0.0), (20.0, 5.0)],
            },
        ];
        let b = buckets(0.0, 20.0, 10.0, 20.0);
        assert_eq!(b, vec![0.0, 10.0, 20.0]);
        let q = parse("sum:trace.http.request.hits{service:app} by {version}.as_count()")
            .expect("valid");
        let a = evaluate(&q, &series, &b, 10.0, 20.0, 20.0);
        assert_eq!(a[0].group_tags, vec!["version:v1".to_string()]);
        assert_eq!(a[0].values, vec![Some(100.0), Some(100.0), Some(0.0)]);
        assert_eq!(a[1].values, vec![None, Some(5.0), Some(0.0)]);
        let q = parse("sum:trace.http.request.errors{service:app,version:v1}.as_count()")
            .expect("valid");
        let a = evaluate(&q, &series, &b, 10.0, 20.0, 20.0);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].values.iter().flatten().sum::<f64>(), 20.0);
        let q = parse("sum:trace.http.request.hits{service:nope}.as_count()").expect("valid");
        assert!(evaluate(&q, &series, &b, 10.0, 20.0, 20.0).is_empty());
    }
}

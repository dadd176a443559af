//! Datadog metric queries over the apps' counters: the parser of
//! `sum:trace.<operation>.hits{service:app,env:prod} by {version}.as_count()` (and `.errors`)
//! and its evaluation into rollup buckets.
//!
//! A scope is written in one of Datadog's two syntaxes, never both (Datadog refuses the mix):
//! symbolic, `tag:value` terms joined by `,`, `!` negating one; or functional, terms joined by
//! `AND`, each `tag:value`, `NOT tag:value`, `tag IN (a, b)` or `tag NOT IN (a, b)`. `OR` and
//! parenthesised groups are valid Datadog but not simulated: refused, saying so.
//!
//! The metrics are APM trace metrics, tagged as Datadog tags them: `service` (the Deployment's
//! name), `version`, `env` (the one environment of the simulated apps), `http.status_code` and
//! `http.status_class`. They carry no pod tags (`kube_namespace`, `kube_deployment`, …): a
//! filter on a tag the metric lacks matches nothing (negated, everything), and grouping by one
//! gives `tag:N/A`. A value that is an operator word (`in`, `not`, `and`, `or`) must be quoted
//! in an `IN` list, as Datadog's parser requires. With `.as_count()` a bucket holds the
//! requests counted in it; without, the per-second rate over it, as for Datadog count metrics.

use std::collections::BTreeMap;

use super::traffic::{Series, increase};

/// Which counter a trace metric reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    Hits,
    Errors,
}

/// One filter of a scope: the tag has one of `values` (each may end in `*`), or, negated, none.
#[derive(Debug, Clone, PartialEq)]
pub struct TagFilter {
    pub tag: String,
    pub values: Vec<String>,
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

/// A query the parser refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// Not a valid Datadog query, in Datadog's wording.
    #[error("Error parsing query: {0}")]
    Invalid(String),
    /// Valid Datadog, but beyond what the simulation evaluates.
    #[error("{0} is not supported by the simulation, which evaluates terms joined by AND")]
    Unsupported(String),
}

/// Parses `<aggr>:<metric>{<scope>} [by {<tags>}][.as_count()|.as_rate()]`.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    let err = |m: &str| QueryError::Invalid(format!("{m} in {text:?}"));
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
    let filters = if scope == "*" {
        Vec::new()
    } else {
        scope_filters(&scope).map_err(|e| match e {
            QueryError::Invalid(m) => err(&m),
            QueryError::Unsupported(m) => QueryError::Unsupported(format!("{m} in {text:?}")),
        })?
    };
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

/// A piece of a scope: a word (`tag:value`, a tag, a value, a keyword) or punctuation.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    Open,
    Close,
    Comma,
}

fn tokens(scope: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut word_start: Option<usize> = None;
    let mut quoted = false;
    for (i, c) in scope.char_indices() {
        // A double-quoted value is one word, whatever it holds.
        if c == '"' {
            if quoted {
                quoted = false;
                continue;
            }
            if word_start.is_none() {
                word_start = Some(i);
                quoted = true;
                continue;
            }
        }
        if quoted {
            continue;
        }
        let punctuation = match c {
            '(' => Some(Token::Open),
            ')' => Some(Token::Close),
            ',' => Some(Token::Comma),
            _ => None,
        };
        if punctuation.is_some() || c.is_whitespace() {
            if let Some(start) = word_start.take() {
                out.push(Token::Word(&scope[start..i]));
            }
            out.extend(punctuation);
        } else if word_start.is_none() {
            word_start = Some(i);
        }
    }
    if let Some(start) = word_start {
        out.push(Token::Word(&scope[start..]));
    }
    out
}

/// A value without the double quotes around it.
fn unquoted(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Datadog takes its boolean operators in either case.
fn keyword(token: Option<&Token<'_>>, name: &str) -> bool {
    matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(name))
}

fn is_keyword(token: &Token<'_>) -> bool {
    ["AND", "OR", "NOT", "IN"]
        .iter()
        .any(|k| keyword(Some(token), k))
}

/// The filters of a scope other than `*`, in whichever syntax it is written.
fn scope_filters(scope: &str) -> Result<Vec<TagFilter>, QueryError> {
    let tokens = tokens(scope);
    let functional = tokens
        .iter()
        .any(|t| is_keyword(t) || matches!(t, Token::Open | Token::Close));
    let mut depth = 0usize;
    let symbolic = tokens.iter().any(|t| match t {
        Token::Open => {
            depth += 1;
            false
        }
        Token::Close => {
            depth = depth.saturating_sub(1);
            false
        }
        Token::Comma => depth == 0,
        Token::Word(w) => w.starts_with('!'),
    });
    match (functional, symbolic) {
        (true, true) => Err(QueryError::Invalid(
            "symbolic boolean syntax (!, ,) cannot be used with functional syntax operators (NOT, AND, OR, IN, NOT IN)".into(),
        )),
        (true, false) => functional_filters(&tokens),
        (false, _) => symbolic_filters(scope),
    }
}

/// `tag:value,!tag:value`.
fn symbolic_filters(scope: &str) -> Result<Vec<TagFilter>, QueryError> {
    scope
        .split(',')
        .map(str::trim)
        .map(|part| {
            let (negated, part) = match part.strip_prefix('!') {
                Some(p) => (true, p),
                None => (false, part),
            };
            let (tag, value) = part.split_once(':').ok_or_else(|| {
                QueryError::Invalid(format!("scope term {part:?} is not tag:value"))
            })?;
            Ok(TagFilter {
                tag: tag.trim().into(),
                values: vec![value.trim().into()],
                negated,
            })
        })
        .collect()
}

/// Terms joined by `AND`: `[NOT] tag:value` or `[NOT] tag [NOT] IN (a, b)`.
fn functional_filters(tokens: &[Token<'_>]) -> Result<Vec<TagFilter>, QueryError> {
    let invalid = |m: String| QueryError::Invalid(m);
    let unsupported_group = || QueryError::Unsupported("a parenthesised group".into());
    let mut filters = Vec::new();
    let mut rest = tokens;
    loop {
        let mut negated = false;
        if keyword(rest.first(), "NOT") {
            negated = true;
            rest = &rest[1..];
        }
        let word = match rest.first() {
            Some(Token::Open) => return Err(unsupported_group()),
            Some(t @ Token::Word(w)) if !is_keyword(t) => *w,
            other => return Err(invalid(format!("expected a term, found {other:?}"))),
        };
        rest = &rest[1..];
        let not_in = keyword(rest.first(), "NOT") && keyword(rest.get(1), "IN");
        if not_in || keyword(rest.first(), "IN") {
            rest = &rest[if not_in { 2 } else { 1 }..];
            if rest.first() != Some(&Token::Open) {
                return Err(invalid(format!("expected ( after {word} IN")));
            }
            rest = &rest[1..];
            let mut values = Vec::new();
            loop {
                match rest.first() {
                    Some(t @ Token::Word(_)) if is_keyword(t) => {
                        return Err(invalid(format!(
                            "unexpected operator {t:?} in the IN list of {word} (quote a value that is an operator word)"
                        )));
                    }
                    Some(Token::Word(v)) => values.push(unquoted(v).to_string()),
                    other => {
                        return Err(invalid(format!(
                            "expected a value in the IN list of {word}, found {other:?}"
                        )));
                    }
                }
                match rest.get(1) {
                    Some(Token::Comma) => rest = &rest[2..],
                    Some(Token::Close) => {
                        rest = &rest[2..];
                        break;
                    }
                    other => {
                        return Err(invalid(format!(
                            "expected , or ) in the IN list of {word}, found {other:?}"
                        )));
                    }
                }
            }
            filters.push(TagFilter {
                tag: word.into(),
                values,
                negated: negated != not_in,
            });
        } else {
            let (tag, value) = word
                .split_once(':')
                .ok_or_else(|| invalid(format!("scope term {word:?} is not tag:value")))?;
            filters.push(TagFilter {
                tag: tag.into(),
                values: vec![value.into()],
                negated,
            });
        }
        match rest.first() {
            None => return Ok(filters),
            Some(t) if keyword(Some(t), "AND") => rest = &rest[1..],
            Some(t) if keyword(Some(t), "OR") => {
                return Err(QueryError::Unsupported("OR".into()));
            }
            Some(Token::Open) => return Err(unsupported_group()),
            other => return Err(invalid(format!("expected AND, found {other:?}"))),
        }
    }
}

/// The value of a trace metric's tag on a series of the counters, `None` for a tag trace
/// metrics do not carry.
fn tag_value(tag: &str, labels: &BTreeMap<String, String>, env: &str) -> Option<String> {
    let label = |name: &str| labels.get(name).cloned();
    match tag {
        "service" => label("deployment"),
        "version" => label("version"),
        "env" => Some(env.to_string()),
        "http.status_code" => label("code"),
        "http.status_class" => label("code").map(|c| format!("{}xx", &c[..1.min(c.len())])),
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
    fn matches(&self, labels: &BTreeMap<String, String>, env: &str) -> bool {
        self.filters.iter().all(|f| {
            // A tag the series lacks has none of the values.
            let has = tag_value(&f.tag, labels, env)
                .is_some_and(|value| f.values.iter().any(|v| value_matches(v, &value)));
            has != f.negated
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
    fn group_tags(&self, labels: &BTreeMap<String, String>, env: &str) -> Vec<String> {
        self.group_by
            .iter()
            .map(|tag| {
                let value = tag_value(tag, labels, env).unwrap_or_else(|| "N/A".into());
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
    evaluate_in(query, series, buckets, interval, to, now, DEFAULT_ENV)
}

/// The `env` of the simulated apps' traces when none is set: the Agent's own default.
pub const DEFAULT_ENV: &str = "none";

/// As [`evaluate`], the apps' traces tagged `env:<env>`.
pub fn evaluate_in(
    query: &Query,
    series: &[Series],
    buckets: &[f64],
    interval: f64,
    to: f64,
    now: f64,
    env: &str,
) -> Vec<Answer> {
    let mut groups: BTreeMap<Vec<String>, Vec<Option<f64>>> = BTreeMap::new();
    for s in series
        .iter()
        .filter(|s| query.matches(&s.labels, env) && query.counts(&s.labels))
    {
        let values = groups
            .entry(query.group_tags(&s.labels, env))
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

    fn filter(tag: &str, values: &[&str], negated: bool) -> TagFilter {
        TagFilter {
            tag: tag.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
            negated,
        }
    }

    #[test]
    fn parses_the_functional_syntax() {
        let q = parse(
            "sum:trace.http.request.hits{kube_namespace IN (ns-0, ns-1) AND service IN (app,web.v2) AND env:prod} by {kube_namespace,service}.as_count()",
        )
        .expect("valid");
        assert_eq!(
            q.filters,
            vec![
                filter("kube_namespace", &["ns-0", "ns-1"], false),
                filter("service", &["app", "web.v2"], false),
                filter("env", &["prod"], false),
            ]
        );
        assert_eq!(q.group_by, vec!["kube_namespace", "service"]);
        let q = parse(
            "sum:trace.http.request.errors{NOT version:v2 and service not in (a) AND NOT service NOT IN (b)}",
        )
        .expect("valid");
        assert_eq!(
            q.filters,
            vec![
                filter("version", &["v2"], true),
                filter("service", &["a"], true),
                filter("service", &["b"], false),
            ]
        );
    }

    #[test]
    fn refuses_symbolic_and_functional_syntax_mixed() {
        for q in [
            "sum:x{env:prod AND !region:us-east}",
            "sum:x{service:app, kube_namespace IN (a, b)}",
            "sum:x{service IN (a) AND env:prod,version:v1}",
        ] {
            let e = parse(q).expect_err(q);
            assert!(
                matches!(&e, QueryError::Invalid(m) if m.contains("cannot be used with functional syntax")),
                "{q}: {e}"
            );
        }
    }

    #[test]
    fn refuses_or_and_groups_as_not_simulated() {
        for q in [
            "sum:x{service:a OR service:b}",
            "sum:x{env:prod AND (service:a OR service:b)}",
            "sum:x{(service:a)}",
            "sum:x{NOT (service:a)}",
        ] {
            let e = parse(q).expect_err(q);
            assert!(
                matches!(&e, QueryError::Unsupported(_))
                    && e.to_string().contains("not supported by the simulation"),
                "{q}: {e}"
            );
        }
    }

    #[test]
    fn refuses_malformed_functional_scopes() {
        for q in [
            "sum:x{service IN ()}",
            "sum:x{service IN (a b)}",
            "sum:x{service IN (a,}",
            "sum:x{service IN a}",
            "sum:x{service AND env:prod}",
            "sum:x{service:a AND}",
            "sum:x{AND service:a}",
            "sum:x{service:a env:b AND env:c}",
            "sum:x{NOT}",
        ] {
            assert!(
                matches!(parse(q), Err(QueryError::Invalid(_))),
                "{q}: {:?}",
                parse(q)
            );
        }
    }

    #[test]
    fn in_lists_match_any_of_their_values() {
        let labels = |v: &str, d: &str| {
            BTreeMap::from([
                ("version".to_string(), v.to_string()),
                ("deployment".to_string(), d.to_string()),
            ])
        };
        let q = parse("sum:x{version IN (a, b) AND service NOT IN (skip, web-*)}").expect("valid");
        assert!(q.matches(&labels("a", "app"), DEFAULT_ENV));
        assert!(q.matches(&labels("b", "app"), DEFAULT_ENV));
        assert!(!q.matches(&labels("c", "app"), DEFAULT_ENV));
        assert!(!q.matches(&labels("a", "skip"), DEFAULT_ENV));
        assert!(!q.matches(&labels("a", "web-1"), DEFAULT_ENV));
    }

    #[test]
    fn a_tag_trace_metrics_lack_matches_nothing() {
        let labels = BTreeMap::from([
            ("namespace".to_string(), "prod".to_string()),
            ("deployment".to_string(), "app".to_string()),
            ("code".to_string(), "500".to_string()),
        ]);
        for (scope, matches) in [
            ("service:app", true),
            ("service:app,kube_namespace:prod", false),
            ("kube_namespace IN (prod) AND service IN (app)", false),
            ("service:app,!kube_namespace:prod", true),
            ("service:app,env:none", true),
            ("service:app,env:prod", false),
            (
                "service:app,http.status_class:5xx,http.status_code:500",
                true,
            ),
        ] {
            let q = parse(&format!("sum:trace.http.request.hits{{{scope}}}")).expect(scope);
            assert_eq!(q.matches(&labels, DEFAULT_ENV), matches, "{scope}");
        }
        let q = parse("sum:trace.http.request.hits{*} by {kube_namespace,service}").expect("valid");
        assert_eq!(
            q.group_tags(&labels, DEFAULT_ENV),
            vec!["kube_namespace:N/A".to_string(), "service:app".to_string()]
        );
    }

    #[test]
    fn in_lists_take_operator_words_only_quoted() {
        for q in [
            "sum:x{service IN (in, web)}",
            "sum:x{service IN (web, and)}",
            "sum:x{service IN (or)}",
            "sum:x{service NOT IN (not)}",
        ] {
            assert!(matches!(parse(q), Err(QueryError::Invalid(_))), "{q}");
        }
        let q = parse(r#"sum:x{service IN ("in", web, "OR") AND env:prod}"#).expect("valid");
        assert_eq!(q.filters[0], filter("service", &["in", "web", "OR"], false));
        assert_eq!(q.filters[1], filter("env", &["prod"], false));
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

use super::client::{DEFAULT_BACKOFF, MAX_BACKOFF, request};
use super::*;
use crate::probes::prometheus::QueryResult;
use reqwest::header::{HeaderMap, HeaderValue};

/// An answer as the API gives it, two formulas, with Datadog's unit objects.
const ANSWER: &[u8] = br#"{"data":{"id":"0","type":"timeseries_response","attributes":{
    "series":[
      {"group_tags":[],"query_index":0,"unit":[{"family":"cache","id":39,"name":"hit","plural":"hits","scale_factor":1.0,"short_name":null},null]},
      {"group_tags":[],"query_index":1,"unit":[{"family":"general","id":34,"name":"error","plural":"errors","scale_factor":1.0,"short_name":null},null]}],
    "times":[1700000000000,1700000010000,1700000020000],
    "values":[[100.0,null,50.5],[2.0,3.0,null]]}}}"#;

#[test]
fn points_are_summed_per_formula() {
    assert_eq!(
        parse(200, ANSWER, 2),
        vec![QueryResult::Value(150.5), QueryResult::Value(5.0)]
    );
}

#[test]
fn grouped_series_of_one_formula_add_up() {
    let body = br#"{"data":{"type":"timeseries_response","attributes":{
        "series":[{"group_tags":["version:v1"],"query_index":0,"unit":null},
                  {"group_tags":["version:v2"],"query_index":0,"unit":null}],
        "times":[1,2],"values":[[1.0,2.0],[3.0,4.0]]}}}"#;
    assert_eq!(
        parse(200, body, 2),
        vec![QueryResult::Value(10.0), QueryResult::Empty]
    );
}

#[test]
fn no_series_is_no_data_and_no_error_series_is_zero_errors() {
    let empty = br#"{"data":{"id":"0","type":"timeseries_response","attributes":{"series":[],"times":[],"values":[]}}}"#;
    let answers = parse(200, empty, 2);
    assert_eq!(answers, vec![QueryResult::Empty, QueryResult::Empty]);
    assert_eq!(
        combine(answers[0].clone(), answers[1].clone()),
        ProviderSample::NoData
    );
    let hits_only = br#"{"data":{"type":"timeseries_response","attributes":{
        "series":[{"group_tags":[],"query_index":0,"unit":null}],"times":[1],"values":[[40.0]]}}}"#;
    let answers = parse(200, hits_only, 2);
    assert_eq!(
        combine(answers[0].clone(), answers[1].clone()),
        ProviderSample::Counts {
            requests: 40.0,
            errors: 0.0
        }
    );
    // A series whose every point is null has no data either.
    let nulls = br#"{"data":{"type":"timeseries_response","attributes":{
        "series":[{"query_index":0}],"times":[1,2],"values":[[null,null]]}}}"#;
    assert_eq!(parse(200, nulls, 2)[0], QueryResult::Empty);
}

#[test]
fn error_bodies_are_failures_that_say_why() {
    let cases: [(u16, &[u8], &str); 6] = [
        (
            400,
            br#"{"errors":["Error parsing query: unexpected token"]}"#,
            "HTTP 400: Error parsing query",
        ),
        (403, br#"{"errors":["Forbidden"]}"#, "HTTP 403: Forbidden"),
        (500, br#"{"errors":["Internal Server Error"]}"#, "HTTP 500"),
        (502, b"<html>Bad Gateway</html>", "HTTP 502"),
        (200, b"not json", "unreadable answer"),
        (200, br#"{"errors":"query timed out"}"#, "query timed out"),
    ];
    for (status, body, want) in cases {
        let got = parse(status, body, 2);
        assert!(
            matches!(&got[0], QueryResult::Failed(m) if m.to_string().contains(want)),
            "{status}: {got:?} should say {want:?}"
        );
        assert!(matches!(&got[1], QueryResult::Failed(_)));
        let grouped = parse_grouped(status, body, "", "service");
        assert!(
            matches!(&grouped, Err(m) if m.to_string().contains(want)),
            "grouped, {status}: {grouped:?} should say {want:?}"
        );
    }
    let wrong_index = br#"{"data":{"attributes":{"series":[{"query_index":5}],"values":[[1.0]]}}}"#;
    assert!(matches!(
        &parse(200, wrong_index, 2)[0],
        QueryResult::Failed(_)
    ));
    let mismatched = br#"{"data":{"attributes":{"series":[{"query_index":0}],"values":[]}}}"#;
    assert!(matches!(
        &parse(200, mismatched, 2)[0],
        QueryResult::Failed(_)
    ));
}

#[test]
fn errors_beside_data_are_a_partial_answer_not_counts() {
    let body = br#"{"data":{"type":"timeseries_response","attributes":{
        "series":[{"group_tags":["service:web"],"query_index":0}],
        "times":[1],"values":[[100.0]]}},
        "errors":"Query timed out before all data could be read: partial results"}"#;
    for got in parse(200, body, 2) {
        assert!(
            matches!(&got, QueryResult::Failed(m) if m.to_string().starts_with("partial answer")),
            "{got:?}"
        );
    }
    assert!(parse_grouped(200, body, "", "service").is_err());
}

/// A grouped answer as the API gives it: `by {kube_namespace,service}`, two formulas.
const GROUPED: &[u8] = br#"{"data":{"id":"0","type":"timeseries_response","attributes":{
    "series":[
      {"group_tags":["kube_namespace:prod","service:web"],"query_index":0,"unit":[{"family":"cache","id":39,"name":"hit","plural":"hits","scale_factor":1.0,"short_name":null},null]},
      {"group_tags":["kube_namespace:staging","service:web"],"query_index":0,"unit":null},
      {"group_tags":["kube_namespace:prod","service:api"],"query_index":0,"unit":null},
      {"group_tags":["kube_namespace:prod","service:web"],"query_index":1,"unit":[{"family":"general","id":34,"name":"error","plural":"errors","scale_factor":1.0,"short_name":null},null]},
      {"group_tags":["kube_namespace:prod","service:idle"],"query_index":0,"unit":null},
      {"group_tags":["service:orphan"],"query_index":0,"unit":null}],
    "times":[1700000000000,1700000010000],
    "values":[[100.0,50.0],[7.0,null],[30.0,10.0],[2.0,3.0],[null,null],[9.0,9.0]]}}}"#;

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

#[test]
fn grouped_answers_are_split_by_their_group_tags() {
    let [requests, errors] =
        parse_grouped(200, GROUPED, "kube_namespace", "service").expect("parses");
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert_eq!(requests[&key("prod", "web")], 150.0);
    assert_eq!(requests[&key("staging", "web")], 7.0);
    assert_eq!(requests[&key("prod", "api")], 40.0);
    // Only null points: no data, not zero requests.
    assert!(!requests.contains_key(&key("prod", "idle")));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[&key("prod", "web")], 5.0);
    // Other tags name the series: nothing matches.
    let [requests, _] = parse_grouped(200, GROUPED, "namespace", "deployment").expect("parses");
    assert!(requests.is_empty());
}

#[test]
fn series_of_one_rollout_in_several_groups_add_up() {
    let body = br#"{"data":{"type":"timeseries_response","attributes":{
        "series":[{"group_tags":["kube_namespace:prod","service:web","version:v1"],"query_index":0},
                  {"group_tags":["version:v2","service:web","kube_namespace:prod"],"query_index":0}],
        "times":[1],"values":[[1.0],[2.0]]}}}"#;
    let [requests, errors] = parse_grouped(200, body, "kube_namespace", "service").expect("parses");
    assert_eq!(requests[&key("prod", "web")], 3.0);
    assert!(errors.is_empty());
}

#[test]
fn a_grouped_series_of_a_formula_not_asked_for_is_an_error() {
    let body = br#"{"data":{"attributes":{"series":[{"query_index":2}],"values":[[1.0]]}}}"#;
    let err = parse_grouped(200, body, "kube_namespace", "service").expect_err("refused");
    assert!(err.to_string().contains("formula 2 of 2"), "{err}");
}

#[test]
fn grouped_queries_list_the_members_in_the_functional_syntax() {
    let keys = Keys {
        api: "a".into(),
        app: "b".into(),
    };
    let cfg = DatadogConfig {
        env: Some("prod".into()),
        ..DatadogConfig::default()
    };
    let d = Datadog::new(super::super::http_client(), cfg.clone(), keys.clone());
    let (requests, errors) = d.grouped_queries(
        &cfg.grouped,
        &["ns-0", "ns-1"],
        &["a", "b.c"],
        &["a", "b.c"],
    );
    assert_eq!(
        requests,
        "sum:trace.http.request.hits{service IN (a, b.c) AND env:prod} by {service}.as_count()"
    );
    assert!(errors.starts_with("sum:trace.http.request.errors{"));
    let d = Datadog::new(super::super::http_client(), DatadogConfig::default(), keys);
    let (requests, _) = d.grouped_queries(&cfg.grouped, &["ns"], &["a"], &["a"]);
    assert!(requests.contains("IN (a)} by"), "{requests}");
}

#[test]
fn in_lists_quote_values_that_are_operator_words() {
    assert_eq!(
        list(&["web", "in", "NOT", "and", "or", "orders"]),
        r#"web, "in", "NOT", "and", "or", orders"#
    );
    assert_eq!(list(&[]), "");
}

#[test]
fn grouped_series_are_told_apart_by_the_service_alone_by_default() {
    let keys = Keys {
        api: "a".into(),
        app: "b".into(),
    };
    let cfg = DatadogConfig {
        service: "{namespace}-{name}".into(),
        ..DatadogConfig::default()
    };
    let d = Datadog::new(super::super::http_client(), cfg.clone(), keys);
    assert_eq!(
        d.series_key(&cfg.grouped, &key("prod", "web")),
        key("", "prod-web")
    );
    let body = br#"{"data":{"type":"timeseries_response","attributes":{
        "series":[{"group_tags":["service:prod-web"],"query_index":0},
                  {"group_tags":["service:prod-web"],"query_index":1}],
        "times":[1],"values":[[100.0],[4.0]]}}}"#;
    let [requests, errors] = parse_grouped(200, body, "", "service").expect("parses");
    let k = d.series_key(&cfg.grouped, &key("prod", "web"));
    assert_eq!(
        member_sample(&requests, &errors, &k),
        ProviderSample::Counts {
            requests: 100.0,
            errors: 4.0
        }
    );
}

#[test]
fn long_member_lists_are_split_into_few_batches_that_fit() {
    let members: Vec<ObjectKey> = (0..2000)
        .map(|i| ObjectKey::new(format!("ns-{}", i % 3), format!("rollout-number-{i}")))
        .collect();
    let length = |ns: usize, names: usize| 100 + ns + names;
    let all = batches(&members, MAX_GROUPED_QUERY, length);
    assert!(all.len() > 1 && all.len() <= 10, "{}", all.len());
    assert_eq!(all.iter().map(Vec::len).sum::<usize>(), members.len());
    for b in &all {
        let mut ns: Vec<&str> = b.iter().map(|k| k.namespace.as_str()).collect();
        let mut names: Vec<&str> = b.iter().map(|k| k.name.as_str()).collect();
        ns.dedup();
        names.sort_unstable();
        names.dedup();
        let text = length(ns.join(", ").len(), names.join(", ").len());
        assert!(text <= MAX_GROUPED_QUERY, "{text}");
    }
    // A few members: one batch; one too long for any: alone in its own.
    assert_eq!(batches(&members[..20], MAX_GROUPED_QUERY, length).len(), 1);
    let huge = vec![key("ns", &"x".repeat(9000)), key("ns", "a"), key("ns", "b")];
    let split = batches(&huge, MAX_GROUPED_QUERY, length);
    assert_eq!(split.len(), 2);
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).expect("valid"));
    }
    h
}

#[test]
fn rate_limit_headers_suspend_calls_until_the_reset() {
    let limited = headers(&[
        ("x-ratelimit-limit", "1600"),
        ("x-ratelimit-period", "3600"),
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "42"),
        ("x-ratelimit-name", "query"),
    ]);
    assert_eq!(backoff(429, &limited), Some(Duration::from_secs(42)));
    // The last request of the period was answered: use it, then wait.
    assert_eq!(backoff(200, &limited), Some(Duration::from_secs(42)));
    let plenty = headers(&[
        ("x-ratelimit-remaining", "1599"),
        ("x-ratelimit-reset", "42"),
    ]);
    assert_eq!(backoff(200, &plenty), None);
    assert_eq!(backoff(200, &HeaderMap::new()), None);
    // A 429 without headers, or with Retry-After only.
    assert_eq!(backoff(429, &HeaderMap::new()), Some(DEFAULT_BACKOFF));
    assert_eq!(
        backoff(429, &headers(&[("retry-after", "3")])),
        Some(Duration::from_secs(3))
    );
    // Absurd resets are capped; a reset of 0 does not mean "retry at once".
    assert_eq!(
        backoff(429, &headers(&[("x-ratelimit-reset", "99999999")])),
        Some(MAX_BACKOFF)
    );
    assert_eq!(
        backoff(429, &headers(&[("x-ratelimit-reset", "0")])),
        Some(DEFAULT_BACKOFF)
    );
}

#[test]
fn queries_fill_the_deployment_operation_and_env() {
    let keys = Keys {
        api: "APIKEY0123".into(),
        app: "APPKEY0123".into(),
    };
    let d = Datadog::new(
        super::super::http_client(),
        DatadogConfig::default(),
        keys.clone(),
    );
    // Only tags trace metrics carry: no kube_namespace.
    assert_eq!(
        d.queries("production", "app").0,
        "sum:trace.http.request.hits{service:app}.as_count()"
    );
    let cfg = DatadogConfig {
        operation: "web.request".into(),
        env: Some("prod".into()),
        service: "{namespace}-{name}".into(),
        ..DatadogConfig::default()
    };
    let d = Datadog::new(super::super::http_client(), cfg, keys.clone());
    assert_eq!(
        d.queries("production", "app").1,
        "sum:trace.web.request.errors{service:production-app,env:prod}.as_count()"
    );
    assert_eq!(
        d.endpoint,
        "https://api.datadoghq.com/api/v2/query/timeseries"
    );
    assert!(!format!("{keys:?}").contains("KEY0123"));
}

#[test]
fn the_request_body_is_a_timeseries_formula_request() {
    let (q1, q2) = ("sum:a{*}.as_count()", "sum:b{*}.as_count()");
    let body = request([q1, q2], 1000, 2000);
    let v = serde_json::to_value(&body).expect("serialises");
    assert_eq!(
        v,
        serde_json::json!({"data": {"type": "timeseries_request", "attributes": {
            "from": 1000, "to": 2000,
            "queries": [
                {"data_source": "metrics", "query": q1, "name": "query1"},
                {"data_source": "metrics", "query": q2, "name": "query2"}],
            "formulas": [{"formula": "query1"}, {"formula": "query2"}]}}})
    );
}

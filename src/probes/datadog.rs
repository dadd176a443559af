//! The Datadog provider: the requests and errors queries over the sample window, both in one
//! `POST /api/v2/query/timeseries` (one formula each), their points summed.
//!
//! Datadog limits metric queries per organisation and says so in `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (seconds until the period ends). After a 429, or an answer that used the
//! last request of the period, no call is made until the reset: every session shares the one
//! client, and meanwhile the provider is unavailable (inconclusive), never a pass or a failure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::prometheus::{QueryResult, combine};
use crate::config::{self, DatadogConfig};
use crate::judge::ProviderSample;

/// The longest wait a reset header can impose: Datadog's longest rate-limit period.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The wait after a 429 that names no reset.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);

/// The two keys, sent as `DD-API-KEY` and `DD-APPLICATION-KEY`; never printed.
#[derive(Clone)]
pub struct Keys {
    pub api: String,
    pub app: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// A Datadog metrics client for one organisation, shared by every session.
#[derive(Clone)]
pub struct Datadog {
    client: reqwest::Client,
    cfg: DatadogConfig,
    endpoint: String,
    keys: Keys,
    /// No call before this instant: the rate limit is exhausted until its reset.
    blocked_until: Arc<Mutex<Option<Instant>>>,
}

// The request body (TimeseriesFormulaQueryRequest).

#[derive(Debug, Serialize)]
struct Request<'a> {
    data: RequestData<'a>,
}

#[derive(Debug, Serialize)]
struct RequestData<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    attributes: RequestAttributes<'a>,
}

#[derive(Debug, Serialize)]
struct RequestAttributes<'a> {
    /// Milliseconds since the Unix epoch, inclusive.
    from: i64,
    /// Milliseconds since the Unix epoch, exclusive.
    to: i64,
    queries: Vec<MetricsQuery<'a>>,
    formulas: Vec<Formula>,
}

#[derive(Debug, Serialize)]
struct MetricsQuery<'a> {
    data_source: &'static str,
    query: &'a str,
    name: String,
}

#[derive(Debug, Serialize)]
struct Formula {
    formula: String,
}

// The answer (TimeseriesFormulaQueryResponse) and the error body (APIErrorResponse).

#[derive(Debug, Deserialize)]
struct Response {
    #[serde(default)]
    data: Option<ResponseData>,
    #[serde(default)]
    errors: Option<Errors>,
}

#[derive(Debug, Deserialize)]
struct ResponseData {
    #[serde(default)]
    attributes: Option<ResponseAttributes>,
}

#[derive(Debug, Deserialize)]
struct ResponseAttributes {
    #[serde(default)]
    series: Vec<Series>,
    #[serde(default)]
    values: Vec<Vec<Option<f64>>>,
}

#[derive(Debug, Deserialize)]
struct Series {
    /// Index in the request's `formulas`.
    #[serde(default)]
    query_index: usize,
}

/// `errors` is a list in error bodies and a single string in a partial timeseries answer.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Errors {
    List(Vec<String>),
    One(String),
}

impl Errors {
    fn text(self) -> String {
        match self {
            Errors::List(list) => list.join("; "),
            Errors::One(s) => s,
        }
    }
}

/// Reads an answer to a request of `formulas` formulas: each formula's points summed, `Empty`
/// when it has no series or no point. Pure, for tests.
pub fn parse(status: u16, body: &[u8], formulas: usize) -> Vec<QueryResult> {
    let failed = |m: String| vec![QueryResult::Failed(m); formulas];
    let response: Response = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) if status != 200 => return failed(format!("HTTP {status}")),
        Err(e) => return failed(format!("unreadable answer: {e}")),
    };
    let errors = response.errors.map(Errors::text).filter(|e| !e.is_empty());
    if status != 200 {
        return failed(match errors {
            Some(e) => format!("HTTP {status}: {e}"),
            None => format!("HTTP {status}"),
        });
    }
    let Some(attributes) = response.data.and_then(|d| d.attributes) else {
        return failed(match errors {
            Some(e) => format!("error in the answer: {e}"),
            None => "no data in the answer".into(),
        });
    };
    if attributes.series.len() != attributes.values.len() {
        return failed(format!(
            "{} series but {} value lists",
            attributes.series.len(),
            attributes.values.len()
        ));
    }
    let mut sums: Vec<Option<f64>> = vec![None; formulas];
    for (series, values) in attributes.series.iter().zip(&attributes.values) {
        let Some(slot) = sums.get_mut(series.query_index) else {
            return failed(format!(
                "series for formula {} of {formulas}",
                series.query_index
            ));
        };
        for v in values.iter().flatten() {
            *slot = Some(slot.unwrap_or(0.0) + v);
        }
    }
    sums.into_iter()
        .map(|s| s.map_or(QueryResult::Empty, QueryResult::Value))
        .collect()
}

/// What the rate-limit headers of an answer ask of the next call: wait this long, or not.
pub fn backoff(status: u16, headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let reset = number("x-ratelimit-reset")
        .or_else(|| number("retry-after"))
        .map(|s| Duration::from_secs_f64(s).min(MAX_BACKOFF));
    let exhausted = status == 429 || number("x-ratelimit-remaining") == Some(0.0);
    if !exhausted {
        return None;
    }
    // A reset of 0 s would let a 429 be retried at once, every tick.
    Some(reset.filter(|d| !d.is_zero()).unwrap_or(if status == 429 {
        DEFAULT_BACKOFF
    } else {
        Duration::from_secs(1)
    }))
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Datadog {
    pub fn new(client: reqwest::Client, cfg: DatadogConfig, keys: Keys) -> Datadog {
        let endpoint = format!("{}/api/v2/query/timeseries", cfg.base_url());
        Datadog {
            client,
            cfg,
            endpoint,
            keys,
            blocked_until: Arc::default(),
        }
    }

    /// The same client (keys, rate-limit state) with another config: a Deployment's overrides.
    pub fn with_config(&self, cfg: DatadogConfig) -> Datadog {
        Datadog {
            endpoint: format!("{}/api/v2/query/timeseries", cfg.base_url()),
            cfg,
            ..self.clone()
        }
    }

    /// The bound of one query.
    pub fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    /// The two queries of one Deployment, placeholders filled.
    pub fn queries(&self, namespace: &str, name: &str) -> (String, String) {
        let env_filter = self
            .cfg
            .env
            .as_ref()
            .map(|e| format!(",env:{e}"))
            .unwrap_or_default();
        let extra = [
            ("operation", self.cfg.operation.as_str()),
            ("env_filter", env_filter.as_str()),
        ];
        (
            config::fill(&self.cfg.requests_query, namespace, name, &extra),
            config::fill(&self.cfg.errors_query, namespace, name, &extra),
        )
    }

    /// How long calls stay suspended by the rate limit, if they are.
    fn blocked_for(&self) -> Option<Duration> {
        let mut guard = self.blocked_until.lock().unwrap_or_else(|e| e.into_inner());
        match *guard {
            Some(until) if until > Instant::now() => Some(until - Instant::now()),
            Some(_) => {
                *guard = None;
                None
            }
            None => None,
        }
    }

    fn block_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut guard = self.blocked_until.lock().unwrap_or_else(|e| e.into_inner());
        // Two answers racing: keep the later reset.
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }

    fn headers(&self) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("dd-api-key", &self.keys.api),
            ("dd-application-key", &self.keys.app),
        ] {
            let mut v = HeaderValue::from_str(value)
                .map_err(|_| format!("the {name} secret is not a valid header value"))?;
            v.set_sensitive(true);
            headers.insert(name, v);
        }
        Ok(headers)
    }

    /// Requests and errors of one Deployment over `window` ending now.
    pub async fn sample(&self, namespace: &str, name: &str, window: Duration) -> ProviderSample {
        if let Some(wait) = self.blocked_for() {
            return ProviderSample::Unavailable(format!(
                "rate limited by Datadog: next query in {:.1}s",
                wait.as_secs_f64()
            ));
        }
        let (requests, errors) = self.queries(namespace, name);
        let now = SystemTime::now();
        let body = Request {
            data: RequestData {
                kind: "timeseries_request",
                attributes: RequestAttributes {
                    from: unix_ms(now.checked_sub(window).unwrap_or(UNIX_EPOCH)),
                    to: unix_ms(now),
                    queries: vec![
                        MetricsQuery {
                            data_source: "metrics",
                            query: &requests,
                            name: "query1".into(),
                        },
                        MetricsQuery {
                            data_source: "metrics",
                            query: &errors,
                            name: "query2".into(),
                        },
                    ],
                    formulas: vec![
                        Formula {
                            formula: "query1".into(),
                        },
                        Formula {
                            formula: "query2".into(),
                        },
                    ],
                },
            },
        };
        let headers = match self.headers() {
            Ok(h) => h,
            Err(e) => return ProviderSample::Unavailable(e),
        };
        let request = self
            .client
            .post(&self.endpoint)
            .headers(headers)
            .json(&body)
            .timeout(self.cfg.timeout);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return ProviderSample::Unavailable(super::describe(&e)),
        };
        let status = response.status().as_u16();
        let wait = backoff(status, response.headers());
        if let Some(wait) = wait {
            self.block_for(wait);
        }
        if status == 429 {
            return ProviderSample::Unavailable(format!(
                "rate limited by Datadog (HTTP 429): next query in {:.1}s",
                wait.unwrap_or(DEFAULT_BACKOFF).as_secs_f64()
            ));
        }
        let body = match tokio::time::timeout(
            self.cfg.timeout,
            super::read_bounded(response, super::MAX_BODY),
        )
        .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => return ProviderSample::Unavailable(e),
            Err(_) => return ProviderSample::Unavailable("timed out reading the answer".into()),
        };
        let mut answers = parse(status, &body, 2).into_iter();
        match (answers.next(), answers.next()) {
            (Some(requests), Some(errors)) => combine(requests, errors),
            _ => ProviderSample::Unavailable("no answer".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                matches!(&got[0], QueryResult::Failed(m) if m.contains(want)),
                "{status}: {got:?} should say {want:?}"
            );
            assert!(matches!(&got[1], QueryResult::Failed(_)));
        }
        let wrong_index =
            br#"{"data":{"attributes":{"series":[{"query_index":5}],"values":[[1.0]]}}}"#;
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
        assert_eq!(
            d.queries("production", "app").0,
            "sum:trace.http.request.hits{service:app,kube_namespace:production}.as_count()"
        );
        let cfg = DatadogConfig {
            operation: "web.request".into(),
            env: Some("prod".into()),
            ..DatadogConfig::default()
        };
        let d = Datadog::new(super::super::http_client(), cfg, keys.clone());
        assert_eq!(
            d.queries("production", "app").1,
            "sum:trace.web.request.errors{service:app,kube_namespace:production,env:prod}.as_count()"
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
        let body = Request {
            data: RequestData {
                kind: "timeseries_request",
                attributes: RequestAttributes {
                    from: 1000,
                    to: 2000,
                    queries: vec![
                        MetricsQuery {
                            data_source: "metrics",
                            query: q1,
                            name: "query1".into(),
                        },
                        MetricsQuery {
                            data_source: "metrics",
                            query: q2,
                            name: "query2".into(),
                        },
                    ],
                    formulas: vec![Formula {
                        formula: "query1".into(),
                    }],
                },
            },
        };
        let v = serde_json::to_value(&body).expect("serialises");
        assert_eq!(
            v,
            serde_json::json!({"data": {"type": "timeseries_request", "attributes": {
                "from": 1000, "to": 2000,
                "queries": [
                    {"data_source": "metrics", "query": q1, "name": "query1"},
                    {"data_source": "metrics", "query": q2, "name": "query2"}],
                "formulas": [{"formula": "query1"}]}}})
        );
    }
}

//! The Prometheus provider: two instant queries (requests and errors over the sample window)
//! through `/api/v1/query`.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{self, PrometheusConfig};
use crate::judge::ProviderSample;

#[derive(Clone)]
pub struct Prometheus {
    client: reqwest::Client,
    cfg: PrometheusConfig,
}

/// The API's envelope (`status`, `data` or `errorType`/`error`).
#[derive(Debug, Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Vector(Vec<VectorSample>),
    Scalar((f64, String)),
    Matrix(serde::de::IgnoredAny),
    String(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct VectorSample {
    value: (f64, String),
}

/// What one query answered: a sum, nothing, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    Value(f64),
    Empty,
    Failed(String),
}

/// Reads a query response body: pure, for tests and fuzzing.
pub fn parse(status: u16, body: &[u8]) -> QueryResult {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) if status != 200 => return QueryResult::Failed(format!("HTTP {status}")),
        Err(e) => return QueryResult::Failed(format!("unreadable answer: {e}")),
    };
    if envelope.status != "success" {
        return QueryResult::Failed(format!(
            "HTTP {status}: {}: {}",
            envelope.error_type.unwrap_or_default(),
            envelope.error.unwrap_or_default()
        ));
    }
    let value = |s: &str| {
        s.parse::<f64>()
            .map_err(|_| format!("value {s:?} is not a number"))
    };
    match envelope.data {
        Some(Data::Vector(samples)) if samples.is_empty() => QueryResult::Empty,
        Some(Data::Vector(samples)) => {
            let mut sum = 0.0;
            for s in samples {
                match value(&s.value.1) {
                    Ok(v) => sum += v,
                    Err(e) => return QueryResult::Failed(e),
                }
            }
            QueryResult::Value(sum)
        }
        Some(Data::Scalar((_, v))) => {
            value(&v).map_or_else(QueryResult::Failed, QueryResult::Value)
        }
        Some(_) => QueryResult::Failed("expected an instant vector".into()),
        None => QueryResult::Failed("no data in the answer".into()),
    }
}

/// A Prometheus duration: `1m`, `1m30s`, `500ms`.
pub fn promql_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "1ms".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

impl Prometheus {
    pub fn new(client: reqwest::Client, cfg: PrometheusConfig) -> Prometheus {
        Prometheus { client, cfg }
    }

    /// The bound of one query.
    pub fn timeout(&self) -> Duration {
        self.cfg.timeout
    }

    async fn query(&self, query: &str) -> QueryResult {
        let url = format!("{}/api/v1/query", self.cfg.url.trim_end_matches('/'));
        let request = self
            .client
            .get(url)
            .query(&[("query", query)])
            .timeout(self.cfg.timeout);
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return QueryResult::Failed(super::describe(&e)),
        };
        let status = response.status().as_u16();
        if status == 429 {
            return QueryResult::Failed("rate limited (HTTP 429)".into());
        }
        match tokio::time::timeout(
            self.cfg.timeout,
            super::read_bounded(response, super::MAX_BODY),
        )
        .await
        {
            Ok(Ok(body)) => parse(status, &body),
            Ok(Err(e)) => QueryResult::Failed(e),
            Err(_) => QueryResult::Failed("timed out reading the answer".into()),
        }
    }

    /// Requests and errors of one Deployment over `window`.
    pub async fn sample(&self, namespace: &str, name: &str, window: Duration) -> ProviderSample {
        let w = promql_duration(window);
        let requests = config::fill(&self.cfg.requests_query, namespace, name, &[("window", &w)]);
        let errors = config::fill(&self.cfg.errors_query, namespace, name, &[("window", &w)]);
        let (requests, errors) = tokio::join!(self.query(&requests), self.query(&errors));
        combine(requests, errors)
    }
}

/// Two query answers → one sample. No error series at all is zero errors: Prometheus has no
/// `code="500"` series for an app that never failed.
pub fn combine(requests: QueryResult, errors: QueryResult) -> ProviderSample {
    match (requests, errors) {
        (QueryResult::Failed(e), _) | (_, QueryResult::Failed(e)) => ProviderSample::Unavailable(e),
        (QueryResult::Empty, _) => ProviderSample::NoData,
        (QueryResult::Value(r), QueryResult::Empty) => ProviderSample::Counts {
            requests: r,
            errors: 0.0,
        },
        (QueryResult::Value(r), QueryResult::Value(e)) => ProviderSample::Counts {
            requests: r,
            errors: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_answers_are_summed() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"version":"v1"},"value":[1700000000.1,"150"]},
            {"metric":{"version":"v2"},"value":[1700000000.1,"50.5"]}]}}"#;
        assert_eq!(parse(200, body), QueryResult::Value(200.5));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse(200, empty), QueryResult::Empty);
    }

    #[test]
    fn errors_and_garbage_are_failures_not_values() {
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(matches!(parse(400, err), QueryResult::Failed(m) if m.contains("bad_data")));
        assert!(
            matches!(parse(502, b"<html>bad gateway</html>"), QueryResult::Failed(m) if m == "HTTP 502")
        );
        let words = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"lots"]}]}}"#;
        assert!(matches!(parse(200, words), QueryResult::Failed(_)));
        // NaN parses as a number; the judge treats it as no evidence.
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(matches!(parse(200, nan), QueryResult::Value(v) if v.is_nan()));
    }

    #[test]
    fn no_error_series_means_zero_errors() {
        assert_eq!(
            combine(QueryResult::Value(100.0), QueryResult::Empty),
            ProviderSample::Counts {
                requests: 100.0,
                errors: 0.0
            }
        );
        assert_eq!(
            combine(QueryResult::Empty, QueryResult::Empty),
            ProviderSample::NoData
        );
    }

    #[test]
    fn durations_in_promql_form() {
        assert_eq!(promql_duration(Duration::from_secs(60)), "1m");
        assert_eq!(promql_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(promql_duration(Duration::from_secs(900)), "15m");
    }
}

//! The Prometheus provider: two instant queries (requests and errors over the sample window)
//! through `/api/v1/query`, for one Deployment or, grouped, for every watched rollout at once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{self, GroupedQueries, PrometheusConfig};
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
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// A namespace and a Deployment name.
pub type Key = (String, String);

/// What one query answered: a sum, nothing, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    Value(f64),
    Empty,
    Failed(String),
}

/// The data of a successful answer, or why there is none.
fn envelope_data(status: u16, body: &[u8]) -> Result<Option<Data>, String> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) if status != 200 => return Err(format!("HTTP {status}")),
        Err(e) => return Err(format!("unreadable answer: {e}")),
    };
    if envelope.status != "success" {
        return Err(format!(
            "HTTP {status}: {}: {}",
            envelope.error_type.unwrap_or_default(),
            envelope.error.unwrap_or_default()
        ));
    }
    Ok(envelope.data)
}

fn number(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .map_err(|_| format!("value {s:?} is not a number"))
}

/// Reads a query response body: pure, for tests and fuzzing.
pub fn parse(status: u16, body: &[u8]) -> QueryResult {
    let data = match envelope_data(status, body) {
        Ok(d) => d,
        Err(e) => return QueryResult::Failed(e),
    };
    let value = number;
    match data {
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

/// Reads a grouped query's answer: one value per (namespace, Deployment) named by the two
/// labels, series of the same pair summed. A series without both labels is not ours to count.
pub fn parse_grouped(
    status: u16,
    body: &[u8],
    namespace_label: &str,
    deployment_label: &str,
) -> Result<HashMap<Key, f64>, String> {
    let samples = match envelope_data(status, body)? {
        Some(Data::Vector(samples)) => samples,
        Some(_) => return Err("expected an instant vector".into()),
        None => return Err("no data in the answer".into()),
    };
    let mut out: HashMap<Key, f64> = HashMap::new();
    for s in samples {
        let v = number(&s.value.1)?;
        let (Some(ns), Some(name)) = (
            s.metric.get(namespace_label),
            s.metric.get(deployment_label),
        ) else {
            continue;
        };
        *out.entry((ns.clone(), name.clone())).or_default() += v;
    }
    Ok(out)
}

/// `a|b[.]c`: an alternation matching exactly these values, as a PromQL regex. Kubernetes
/// names hold only `[a-z0-9.-]`; anything else is put in a class so it matches itself, and
/// written so that a double-quoted PromQL string needs no escape.
pub fn alternation<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        for c in v.chars() {
            match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => out.push(c),
                // In a class these still mean something, and a quoted string would need them
                // escaped: no Kubernetes name holds them.
                '\\' | ']' | '^' | '"' => out.push_str(&format!("\\\\x{{{:x}}}", c as u32)),
                c => {
                    out.push('[');
                    out.push(c);
                    out.push(']');
                }
            }
        }
    }
    out
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

    /// Sends one instant query and reads the answer's status and body. A long query (a grouped
    /// one names every watched rollout) goes in a form body, as `promtool` and Grafana send it.
    async fn fetch(&self, query: &str, max_body: usize) -> Result<(u16, Vec<u8>), String> {
        let url = format!("{}/api/v1/query", self.cfg.url.trim_end_matches('/'));
        let request = if query.len() > 2048 {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("query", query)
                .finish();
            self.client
                .post(url)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body)
        } else {
            self.client.get(url).query(&[("query", query)])
        };
        let response = request
            .timeout(self.cfg.timeout)
            .send()
            .await
            .map_err(|e| super::describe(&e))?;
        let status = response.status().as_u16();
        if status == 429 {
            return Err("rate limited (HTTP 429)".into());
        }
        match tokio::time::timeout(self.cfg.timeout, super::read_bounded(response, max_body)).await
        {
            Ok(Ok(body)) => Ok((status, body)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("timed out reading the answer".into()),
        }
    }

    async fn query(&self, query: &str) -> QueryResult {
        match self.fetch(query, super::MAX_BODY).await {
            Ok((status, body)) => parse(status, &body),
            Err(e) => QueryResult::Failed(e),
        }
    }

    /// Requests and errors of every rollout in `members` over `window`, in two queries.
    /// A member with no requests series has no data; one with no errors series, zero errors.
    pub async fn sample_grouped(
        &self,
        g: &GroupedQueries,
        members: &[Key],
        window: Duration,
    ) -> Result<HashMap<Key, ProviderSample>, String> {
        let w = promql_duration(window);
        let mut namespaces: Vec<&str> = members.iter().map(|(ns, _)| ns.as_str()).collect();
        let mut names: Vec<&str> = members.iter().map(|(_, n)| n.as_str()).collect();
        namespaces.sort_unstable();
        namespaces.dedup();
        names.sort_unstable();
        names.dedup();
        let (namespaces, names) = (alternation(namespaces), alternation(names));
        let fill = |q: &str| {
            config::fill(
                q,
                "",
                "",
                &[
                    ("namespaces", &namespaces),
                    ("names", &names),
                    ("window", &w),
                ],
            )
        };
        // Room for one series per member and some to spare, never less than one query's.
        let max_body = super::MAX_BODY.max(members.len() * 1024);
        let read = |answer: Result<(u16, Vec<u8>), String>| {
            let (status, body) = answer?;
            parse_grouped(status, &body, &g.namespace_label, &g.deployment_label)
        };
        let (requests_query, errors_query) = (fill(&g.requests_query), fill(&g.errors_query));
        let (requests, errors) = tokio::join!(
            self.fetch(&requests_query, max_body),
            self.fetch(&errors_query, max_body)
        );
        let (requests, errors) = (read(requests)?, read(errors)?);
        Ok(members
            .iter()
            .map(|key| (key.clone(), member_sample(&requests, &errors, key)))
            .collect())
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

/// One member's sample from a grouped answer's requests and errors by (namespace, Deployment):
/// absent from the requests is no data, absent from the errors zero errors, as [`combine`].
pub fn member_sample(
    requests: &HashMap<Key, f64>,
    errors: &HashMap<Key, f64>,
    key: &Key,
) -> ProviderSample {
    let value = |m: &HashMap<Key, f64>| {
        m.get(key)
            .map_or(QueryResult::Empty, |v| QueryResult::Value(*v))
    };
    combine(value(requests), value(errors))
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
    fn grouped_answers_are_split_by_namespace_and_deployment() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"namespace":"prod","deployment":"web"},"value":[1,"120"]},
            {"metric":{"namespace":"prod","deployment":"web"},"value":[1,"30"]},
            {"metric":{"namespace":"staging","deployment":"web"},"value":[1,"7"]},
            {"metric":{"deployment":"orphan"},"value":[1,"9"]}]}}"#;
        let m = parse_grouped(200, body, "namespace", "deployment").expect("parses");
        assert_eq!(m.len(), 2);
        assert_eq!(m[&("prod".into(), "web".into())], 150.0);
        assert_eq!(m[&("staging".into(), "web".into())], 7.0);
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse_grouped(400, err, "namespace", "deployment").is_err());
        let words = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"namespace":"a","deployment":"b"},"value":[1,"x"]}]}}"#;
        assert!(parse_grouped(200, words, "namespace", "deployment").is_err());
    }

    #[test]
    fn alternations_match_names_literally() {
        assert_eq!(alternation(["web", "api-v2"]), "web|api-v2");
        assert_eq!(alternation(["web.frontend"]), "web[.]frontend");
        let re =
            regex::Regex::new(&format!("^(?:{})$", alternation(["a.b", "c"]))).expect("a regex");
        assert!(re.is_match("a.b") && re.is_match("c"));
        assert!(!re.is_match("axb") && !re.is_match("a.bc"));
    }

    #[test]
    fn durations_in_promql_form() {
        assert_eq!(promql_duration(Duration::from_secs(60)), "1m");
        assert_eq!(promql_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(promql_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(promql_duration(Duration::from_secs(900)), "15m");
    }
}

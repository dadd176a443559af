//! The Prometheus provider: two instant queries (requests and errors over the sample window)
//! through `/api/v1/query`, for one Deployment or, grouped, for every watched rollout at once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use super::error::{ProbeError, read_answer};
use crate::check::ObjectKey;
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
    /// Beside data: the answer may be incomplete (Thanos, Mimir and Cortex say so of a
    /// partial response; Prometheus of series it had to leave out).
    #[serde(default)]
    warnings: Vec<String>,
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
    /// A float sample; a native histogram sample has `histogram` instead.
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    histogram: Option<serde::de::IgnoredAny>,
}

impl VectorSample {
    fn number(&self) -> Result<f64, ProbeError> {
        match (&self.value, &self.histogram) {
            (Some((_, v)), _) => number(v),
            (None, Some(_)) => Err(ProbeError::BadResponse(
                "a native histogram sample, not a number (wrap the query in histogram_count())"
                    .into(),
            )),
            (None, None) => Err(ProbeError::BadResponse("a sample without a value".into())),
        }
    }
}

/// What one query answered: a sum, nothing, or why not.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    Value(f64),
    Empty,
    Failed(ProbeError),
}

/// The data of a successful answer, or why there is none.
fn envelope_data(status: u16, body: &[u8]) -> Result<Option<Data>, ProbeError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) if status != 200 => return Err(ProbeError::status(status, None)),
        Err(e) => return Err(ProbeError::BadResponse(format!("unreadable answer: {e}"))),
    };
    if envelope.status != "success" {
        let explanation = format!(
            "{}: {}",
            envelope.error_type.unwrap_or_default(),
            envelope.error.unwrap_or_default()
        );
        return Err(ProbeError::status(status, Some(explanation)));
    }
    // Missing series would read as fewer errors: a partial answer is no evidence at all.
    if let Some(first) = envelope.warnings.first() {
        return Err(ProbeError::Partial(format!(
            "partial answer ({} warning{}): {first}",
            envelope.warnings.len(),
            if envelope.warnings.len() == 1 {
                ""
            } else {
                "s"
            }
        )));
    }
    Ok(envelope.data)
}

fn number(s: &str) -> Result<f64, ProbeError> {
    s.parse::<f64>()
        .map_err(|_| ProbeError::BadResponse(format!("value {s:?} is not a number")))
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
                match s.number() {
                    Ok(v) => sum += v,
                    Err(e) => return QueryResult::Failed(e),
                }
            }
            QueryResult::Value(sum)
        }
        Some(Data::Scalar((_, v))) => {
            value(&v).map_or_else(QueryResult::Failed, QueryResult::Value)
        }
        Some(_) => {
            QueryResult::Failed(ProbeError::BadResponse("expected an instant vector".into()))
        }
        None => QueryResult::Failed(ProbeError::BadResponse("no data in the answer".into())),
    }
}

/// A grouped query's answer: a sum per (namespace, Deployment), and the pairs with a sample
/// that is not a number (a native histogram), which have no value.
#[derive(Debug, Default, PartialEq)]
pub struct Grouped {
    pub values: HashMap<ObjectKey, f64>,
    pub unreadable: HashMap<ObjectKey, ProbeError>,
}

/// Reads a grouped query's answer: one value per (namespace, Deployment) named by the two
/// labels, series of the same pair summed. A series without both labels is not ours to count;
/// one that is not a number leaves its own pair without a value, not the whole answer.
pub fn parse_grouped(
    status: u16,
    body: &[u8],
    namespace_label: &str,
    deployment_label: &str,
) -> Result<Grouped, ProbeError> {
    let samples = match envelope_data(status, body)? {
        Some(Data::Vector(samples)) => samples,
        Some(_) => {
            return Err(ProbeError::BadResponse("expected an instant vector".into()));
        }
        None => return Err(ProbeError::BadResponse("no data in the answer".into())),
    };
    let mut out = Grouped::default();
    for s in samples {
        let (Some(ns), Some(name)) = (
            s.metric.get(namespace_label),
            s.metric.get(deployment_label),
        ) else {
            continue;
        };
        let key = ObjectKey::new(ns.clone(), name.clone());
        match s.number() {
            Ok(v) => *out.values.entry(key).or_default() += v,
            Err(e) => {
                out.unreadable.insert(key, e);
            }
        }
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
        self.cfg.timeout.get()
    }

    /// Sends one instant query and reads the answer's status and body. A long query (a grouped
    /// one names every watched rollout) goes in a form body, as `promtool` and Grafana send it.
    async fn fetch(
        &self,
        query: &str,
        at: SystemTime,
        max_body: usize,
    ) -> Result<(u16, Vec<u8>), ProbeError> {
        let url = format!("{}/api/v1/query", self.cfg.url.trim_end_matches('/'));
        let time = evaluation_time(at);
        let request = if query.len() > 2048 {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("query", query)
                .append_pair("time", &time)
                .finish();
            self.client
                .post(url)
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body)
        } else {
            self.client
                .get(url)
                .query(&[("query", query), ("time", time.as_str())])
        };
        let response = request
            .timeout(self.cfg.timeout.get())
            .send()
            .await
            .map_err(|e| ProbeError::from_request(&e))?;
        let status = response.status().as_u16();
        if status == 429 {
            return Err(ProbeError::RateLimited("rate limited (HTTP 429)".into()));
        }
        let body = read_answer(response, self.cfg.timeout.get(), max_body).await?;
        Ok((status, body))
    }

    async fn query(&self, query: &str, at: SystemTime) -> QueryResult {
        match self.fetch(query, at, super::MAX_BODY).await {
            Ok((status, body)) => parse(status, &body),
            Err(e) => QueryResult::Failed(e),
        }
    }

    /// Requests and errors of every rollout in `members` over `window` ending now, in two
    /// queries. A member with no requests series has no data; one with no errors series, zero
    /// errors.
    pub async fn sample_grouped(
        &self,
        g: &GroupedQueries,
        members: &[ObjectKey],
        window: Duration,
    ) -> Result<HashMap<ObjectKey, ProviderSample>, ProbeError> {
        self.sample_grouped_at(g, members, window, SystemTime::now())
            .await
    }

    /// As [`Prometheus::sample_grouped`], over `window` ending at `at`: both queries are
    /// evaluated at that one instant, so the errors are counted over the very samples the
    /// requests are.
    pub async fn sample_grouped_at(
        &self,
        g: &GroupedQueries,
        members: &[ObjectKey],
        window: Duration,
        at: SystemTime,
    ) -> Result<HashMap<ObjectKey, ProviderSample>, ProbeError> {
        let w = promql_duration(window);
        let mut namespaces: Vec<&str> = members.iter().map(|k| k.namespace.as_str()).collect();
        let mut names: Vec<&str> = members.iter().map(|k| k.name.as_str()).collect();
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
        let read = |answer: Result<(u16, Vec<u8>), ProbeError>| {
            let (status, body) = answer?;
            parse_grouped(status, &body, &g.namespace_label, &g.deployment_label)
        };
        let (requests_query, errors_query) = (fill(&g.requests_query), fill(&g.errors_query));
        let (requests, errors) = tokio::join!(
            self.fetch(&requests_query, at, max_body),
            self.fetch(&errors_query, at, max_body)
        );
        let (requests, errors) = (read(requests)?, read(errors)?);
        Ok(members
            .iter()
            .map(|key| {
                let unreadable = requests
                    .unreadable
                    .get(key)
                    .or_else(|| errors.unreadable.get(key));
                let sample = match unreadable {
                    Some(e) => ProviderSample::Unavailable(e.clone()),
                    None => member_sample(&requests.values, &errors.values, key),
                };
                (key.clone(), sample)
            })
            .collect())
    }

    /// Requests and errors of one Deployment over `window` ending now.
    pub async fn sample(&self, namespace: &str, name: &str, window: Duration) -> ProviderSample {
        self.sample_at(namespace, name, window, SystemTime::now())
            .await
    }

    /// Requests and errors of one Deployment over `window` ending at `at`, both queries
    /// evaluated at that one instant.
    pub async fn sample_at(
        &self,
        namespace: &str,
        name: &str,
        window: Duration,
        at: SystemTime,
    ) -> ProviderSample {
        let w = promql_duration(window);
        let requests = config::fill(&self.cfg.requests_query, namespace, name, &[("window", &w)]);
        let errors = config::fill(&self.cfg.errors_query, namespace, name, &[("window", &w)]);
        let (requests, errors) = tokio::join!(self.query(&requests, at), self.query(&errors, at));
        combine(requests, errors)
    }
}

/// A query's `time` parameter: Unix seconds with the milliseconds Prometheus keeps.
pub fn evaluation_time(at: SystemTime) -> String {
    let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// One member's sample from a grouped answer's requests and errors by (namespace, Deployment):
/// absent from the requests is no data, absent from the errors zero errors, as [`combine`].
pub fn member_sample(
    requests: &HashMap<ObjectKey, f64>,
    errors: &HashMap<ObjectKey, f64>,
    key: &ObjectKey,
) -> ProviderSample {
    let value = |m: &HashMap<ObjectKey, f64>| {
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
        assert!(
            matches!(parse(400, err), QueryResult::Failed(m) if m.to_string().contains("bad_data"))
        );
        assert!(
            matches!(parse(502, b"<html>bad gateway</html>"), QueryResult::Failed(m) if m.to_string() == "HTTP 502" && m.category() == "http_status")
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
        let m = parse_grouped(200, body, "namespace", "deployment")
            .expect("parses")
            .values;
        assert_eq!(m.len(), 2);
        assert_eq!(m[&ObjectKey::new("prod", "web")], 150.0);
        assert_eq!(m[&ObjectKey::new("staging", "web")], 7.0);
        let err = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse_grouped(400, err, "namespace", "deployment").is_err());
        let words = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"namespace":"a","deployment":"b"},"value":[1,"x"]}]}}"#;
        // A value that is not a number leaves its own pair without one.
        let g = parse_grouped(200, words, "namespace", "deployment").expect("parses");
        assert!(g.values.is_empty() && g.unreadable.contains_key(&ObjectKey::new("a", "b")));
    }

    #[test]
    fn warnings_make_an_answer_partial_never_a_value() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"namespace":"prod","deployment":"web"},"value":[1,"120"]}]},
            "warnings":["receive series from store: partial response"]}"#;
        assert!(
            matches!(parse(200, body), QueryResult::Failed(m) if m.to_string().starts_with("partial answer (1 warning): receive series") && m.category() == "partial")
        );
        assert!(
            matches!(parse_grouped(200, body, "namespace", "deployment"), Err(m) if m.to_string().starts_with("partial answer"))
        );
        // No warnings, or an empty list: complete.
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]},"warnings":[],"infos":["PromQL info: x"]}"#;
        assert_eq!(parse(200, body), QueryResult::Empty);
    }

    #[test]
    fn a_native_histogram_sample_leaves_only_its_own_deployment_without_a_value() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"namespace":"prod","deployment":"web"},"value":[1,"120"]},
            {"metric":{"namespace":"prod","deployment":"api"},"histogram":[1,{"count":"10","sum":"2.5","buckets":[[0,"0.5","1","10"]]}]}]}}"#;
        let g = parse_grouped(200, body, "namespace", "deployment").expect("the rest is read");
        assert_eq!(g.values[&ObjectKey::new("prod", "web")], 120.0);
        assert!(
            g.unreadable[&ObjectKey::new("prod", "api")]
                .to_string()
                .contains("histogram_count()")
        );
        assert!(
            matches!(parse(200, body), QueryResult::Failed(m) if m.to_string().contains("native histogram"))
        );
    }

    #[test]
    fn evaluation_times_carry_milliseconds() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_042);
        assert_eq!(evaluation_time(at), "1700000000.042");
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

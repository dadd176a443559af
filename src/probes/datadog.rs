//! The Datadog provider: the requests and errors queries over the sample window, both in one
//! `POST /api/v2/query/timeseries` (one formula each), their points summed.
//!
//! Trace metrics carry `env`, `service` and `version` (and the Agent's host tags), never the
//! pod's `kube_namespace`: a Deployment is found by its service (`service` in the config, the
//! Deployment's name by default) and the configured `env`.
//!
//! Grouped, one request answers for every watched rollout: the grouped queries name them all
//! (`service IN (…)`, grouped `by {service}`) and the series are told apart by their group tags.
//!
//! The sample window ends `ingestion_delay` before now: Datadog's latest points are not yet
//! complete, and a window ending now would count too few requests.
//!
//! Datadog limits metric queries per organisation and says so in `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (seconds until the period ends). After a 429, or an answer that used the
//! last request of the period, no call is made until the reset: every session shares the one
//! client, and meanwhile the provider is unavailable (inconclusive), never a pass or a failure.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::error::{ProbeError, read_answer};
use super::prometheus::{QueryResult, combine, member_sample};
use crate::check::ObjectKey;
use crate::config::{self, DatadogConfig, DatadogGrouped};
use crate::judge::ProviderSample;

/// The longest wait a reset header can impose: Datadog's longest rate-limit period.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The wait after a 429 that names no reset.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
/// The longest grouped query sent: past it, the members are split over several requests. The
/// API documents no limit, but a query of thousands of tag values is slow to parse and risks
/// a refusal; 8 KiB still holds several hundred rollouts per request.
pub const MAX_GROUPED_QUERY: usize = 8 * 1024;

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
    /// `tag:value` of each `by {…}` tag.
    #[serde(default)]
    group_tags: Option<Vec<String>>,
}

/// One answered series: its formula, group tags, and its points summed (`None`: no point).
struct Summed {
    formula: usize,
    group_tags: Vec<String>,
    sum: Option<f64>,
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

/// Reads an answer to a request of `formulas` formulas into its series, each one's points
/// summed.
fn series(status: u16, body: &[u8], formulas: usize) -> Result<Vec<Summed>, ProbeError> {
    let response: Response = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) if status != 200 => return Err(ProbeError::status(status, None)),
        Err(e) => return Err(ProbeError::BadResponse(format!("unreadable answer: {e}"))),
    };
    let errors = response.errors.map(Errors::text).filter(|e| !e.is_empty());
    if status != 200 {
        return Err(ProbeError::status(status, errors));
    }
    let Some(attributes) = response.data.and_then(|d| d.attributes) else {
        return Err(ProbeError::BadResponse(match errors {
            Some(e) => format!("error in the answer: {e}"),
            None => "no data in the answer".into(),
        }));
    };
    // Errors beside data: some of it could not be read, and what is missing could be the
    // errors' series. A partial answer is no evidence at all.
    if let Some(e) = errors {
        return Err(ProbeError::Partial(format!("partial answer: {e}")));
    }
    if attributes.series.len() != attributes.values.len() {
        return Err(ProbeError::BadResponse(format!(
            "{} series but {} value lists",
            attributes.series.len(),
            attributes.values.len()
        )));
    }
    attributes
        .series
        .into_iter()
        .zip(attributes.values)
        .map(|(series, values)| {
            if series.query_index >= formulas {
                return Err(ProbeError::BadResponse(format!(
                    "series for formula {} of {formulas}",
                    series.query_index
                )));
            }
            let sum = values
                .iter()
                .flatten()
                .fold(None, |sum: Option<f64>, v| Some(sum.unwrap_or(0.0) + v));
            Ok(Summed {
                formula: series.query_index,
                group_tags: series.group_tags.unwrap_or_default(),
                sum,
            })
        })
        .collect()
}

/// Reads an answer to a request of `formulas` formulas: each formula's points summed, `Empty`
/// when it has no series or no point. Pure, for tests.
pub fn parse(status: u16, body: &[u8], formulas: usize) -> Vec<QueryResult> {
    let series = match series(status, body, formulas) {
        Ok(s) => s,
        Err(e) => return vec![QueryResult::Failed(e); formulas],
    };
    let mut sums: Vec<Option<f64>> = vec![None; formulas];
    for s in series {
        if let Some(v) = s.sum {
            sums[s.formula] = Some(sums[s.formula].unwrap_or(0.0) + v);
        }
    }
    sums.into_iter()
        .map(|s| s.map_or(QueryResult::Empty, QueryResult::Value))
        .collect()
}

/// Reads a grouped answer of two formulas (requests, errors): per formula, one sum per
/// (namespace, Deployment) named by the group tags `namespace_tag:…` and `name_tag:…`, series
/// of the same pair added up. A series without both tags, or without a point, counts for no one.
pub fn parse_grouped(
    status: u16,
    body: &[u8],
    namespace_tag: &str,
    name_tag: &str,
) -> Result<[HashMap<ObjectKey, f64>; 2], ProbeError> {
    let mut out: [HashMap<ObjectKey, f64>; 2] = Default::default();
    for s in series(status, body, 2)? {
        let tag = |name: &str| {
            s.group_tags.iter().find_map(|t| {
                t.split_once(':')
                    .filter(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            })
        };
        let ns = match namespace_tag {
            "" => Some(String::new()),
            t => tag(t),
        };
        let (Some(ns), Some(name), Some(v)) = (ns, tag(name_tag), s.sum) else {
            continue;
        };
        *out[s.formula].entry(ObjectKey::new(ns, name)).or_default() += v;
    }
    Ok(out)
}

/// Splits `members` into batches whose grouped queries stay within `max` bytes, each batch as
/// large as fits (at least one member). `length(namespaces, names)` is the longest of the
/// queries once filled with lists of that many bytes. Members sharing a namespace come
/// together, so most batches name few namespaces.
pub fn batches(
    members: &[ObjectKey],
    max: usize,
    length: impl Fn(usize, usize) -> usize,
) -> Vec<Vec<&ObjectKey>> {
    let mut sorted: Vec<&ObjectKey> = members.iter().collect();
    sorted.sort_unstable();
    let mut out: Vec<Vec<&ObjectKey>> = Vec::new();
    let (mut namespaces, mut names) = (BTreeSet::new(), BTreeSet::new());
    let (mut ns_len, mut names_len) = (0, 0);
    // The length of a list once `value` joins it, separators included.
    let grown = |list: &BTreeSet<&str>, len: usize, value: &str| {
        if list.contains(value) {
            len
        } else if list.is_empty() {
            value.len()
        } else {
            len + LIST_SEPARATOR.len() + value.len()
        }
    };
    for key in sorted {
        let (ns, name) = (key.namespace.as_str(), key.name.as_str());
        let (ns_next, names_next) = (
            grown(&namespaces, ns_len, ns),
            grown(&names, names_len, name),
        );
        match out.last_mut() {
            Some(batch) if length(ns_next, names_next) <= max => {
                batch.push(key);
                (ns_len, names_len) = (ns_next, names_next);
            }
            _ => {
                out.push(vec![key]);
                (namespaces, names) = (BTreeSet::new(), BTreeSet::new());
                (ns_len, names_len) = (ns.len(), name.len());
            }
        }
        namespaces.insert(ns);
        names.insert(name);
    }
    out
}

/// Between the values of an `IN (…)` list.
const LIST_SEPARATOR: &str = ", ";

/// An `IN (…)` list of `values`. A value that is one of the scope's operator words (valid
/// Kubernetes names all) would end the list or change its meaning: it goes in double quotes.
pub fn list(values: &[&str]) -> String {
    let quoted = |v: &&str| {
        if ["in", "not", "and", "or"]
            .iter()
            .any(|k| v.eq_ignore_ascii_case(k))
        {
            format!("\"{v}\"")
        } else {
            v.to_string()
        }
    };
    values
        .iter()
        .map(quoted)
        .collect::<Vec<_>>()
        .join(LIST_SEPARATOR)
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
        (
            self.fill(&self.cfg.requests_query, namespace, name, &[]),
            self.fill(&self.cfg.errors_query, namespace, name, &[]),
        )
    }

    /// The `service` tag value of a Deployment's traces.
    pub fn service(&self, namespace: &str, name: &str) -> String {
        config::fill(&self.cfg.service, namespace, name, &[])
    }

    /// Fills a query: the Deployment and its service, `{operation}`, both forms of the env
    /// filter and `lists`.
    fn fill(&self, query: &str, namespace: &str, name: &str, lists: &[(&str, &str)]) -> String {
        let env = self.cfg.env.as_deref();
        let env_filter = env.map(|e| format!(",env:{e}")).unwrap_or_default();
        let env_and = env.map(|e| format!(" AND env:{e}")).unwrap_or_default();
        let service = self.service(namespace, name);
        let mut extra = vec![
            ("operation", self.cfg.operation.as_str()),
            ("env_filter", env_filter.as_str()),
            ("env_and", env_and.as_str()),
            ("service_name", service.as_str()),
        ];
        extra.extend_from_slice(lists);
        config::fill(query, namespace, name, &extra)
    }

    /// The two grouped queries for `namespaces`, `names` and `services`, lists as `IN (…)`
    /// takes them.
    pub fn grouped_queries(
        &self,
        g: &DatadogGrouped,
        namespaces: &[&str],
        names: &[&str],
        services: &[&str],
    ) -> (String, String) {
        let (namespaces, names, services) = (list(namespaces), list(names), list(services));
        let lists = [
            ("namespaces", namespaces.as_str()),
            ("names", names.as_str()),
            ("services", services.as_str()),
        ];
        (
            self.fill(&g.requests_query, "", "", &lists),
            self.fill(&g.errors_query, "", "", &lists),
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

    fn headers(&self) -> Result<HeaderMap, ProbeError> {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("dd-api-key", &self.keys.api),
            ("dd-application-key", &self.keys.app),
        ] {
            let mut v = HeaderValue::from_str(value).map_err(|_| {
                ProbeError::Request(format!("the {name} secret is not a valid header value"))
            })?;
            v.set_sensitive(true);
            headers.insert(name, v);
        }
        Ok(headers)
    }

    /// Sends `queries` (one formula each) over `window` ending now, keeping to the rate limit
    /// every clone shares, and reads the answer's status and body (at most `max_body` bytes).
    async fn post(
        &self,
        queries: [&str; 2],
        window: Duration,
        max_body: usize,
    ) -> Result<(u16, Vec<u8>), ProbeError> {
        if let Some(wait) = self.blocked_for() {
            return Err(ProbeError::RateLimited(format!(
                "rate limited by Datadog: next query in {:.1}s",
                wait.as_secs_f64()
            )));
        }
        // The window ends early enough for Datadog to have made its last points queryable.
        let now = SystemTime::now()
            .checked_sub(self.cfg.ingestion_delay)
            .unwrap_or(UNIX_EPOCH);
        let names = ["query1", "query2"];
        let body = Request {
            data: RequestData {
                kind: "timeseries_request",
                attributes: RequestAttributes {
                    from: unix_ms(now.checked_sub(window).unwrap_or(UNIX_EPOCH)),
                    to: unix_ms(now),
                    queries: queries
                        .iter()
                        .zip(names)
                        .map(|(query, name)| MetricsQuery {
                            data_source: "metrics",
                            query,
                            name: name.into(),
                        })
                        .collect(),
                    formulas: names
                        .iter()
                        .map(|name| Formula {
                            formula: (*name).into(),
                        })
                        .collect(),
                },
            },
        };
        let response = self
            .client
            .post(&self.endpoint)
            .headers(self.headers()?)
            .json(&body)
            .timeout(self.cfg.timeout)
            .send()
            .await
            .map_err(|e| ProbeError::from_request(&e))?;
        let status = response.status().as_u16();
        let wait = backoff(status, response.headers());
        if let Some(wait) = wait {
            self.block_for(wait);
        }
        if status == 429 {
            return Err(ProbeError::RateLimited(format!(
                "rate limited by Datadog (HTTP 429): next query in {:.1}s",
                wait.unwrap_or(DEFAULT_BACKOFF).as_secs_f64()
            )));
        }
        let body = read_answer(response, self.cfg.timeout, max_body).await?;
        Ok((status, body))
    }

    /// Requests and errors of one Deployment over `window` ending now.
    pub async fn sample(&self, namespace: &str, name: &str, window: Duration) -> ProviderSample {
        let (requests, errors) = self.queries(namespace, name);
        let (status, body) = match self
            .post([&requests, &errors], window, super::MAX_BODY)
            .await
        {
            Ok(answer) => answer,
            Err(e) => return ProviderSample::Unavailable(e),
        };
        let mut answers = parse(status, &body, 2).into_iter();
        match (answers.next(), answers.next()) {
            (Some(requests), Some(errors)) => combine(requests, errors),
            _ => ProviderSample::Unavailable(ProbeError::BadResponse("no answer".into())),
        }
    }

    /// Requests and errors of every rollout in `members` over `window` ending now, in one
    /// request (several when the members would make a query longer than
    /// [`MAX_GROUPED_QUERY`], still far fewer than one per rollout; those go out at once, and
    /// the members of a failed one are unavailable). A member with no requests series has no
    /// data; one with no errors series, zero errors. `Err` when no request was answered.
    pub async fn sample_grouped(
        &self,
        g: &DatadogGrouped,
        members: &[ObjectKey],
        window: Duration,
    ) -> Result<HashMap<ObjectKey, ProviderSample>, ProbeError> {
        // A query's length is its text without the lists plus each list as often as it occurs.
        let shapes: Vec<(usize, usize, usize)> = [&g.requests_query, &g.errors_query]
            .iter()
            .map(|q| {
                // A service list is about as long as the names' (their default template).
                (
                    self.fill(
                        q,
                        "",
                        "",
                        &[("namespaces", ""), ("names", ""), ("services", "")],
                    )
                    .len(),
                    q.matches("{namespaces}").count(),
                    q.matches("{names}").count() + q.matches("{services}").count(),
                )
            })
            .collect();
        let length = |ns: usize, names: usize| {
            shapes
                .iter()
                .map(|(base, n_ns, n_names)| base + n_ns * ns + n_names * names)
                .max()
                .unwrap_or(0)
        };
        let batches = batches(members, MAX_GROUPED_QUERY, length);
        let answers =
            futures::future::join_all(batches.iter().map(|b| self.sample_batch(g, b, window)))
                .await;
        if let Some(Err(e)) = answers.iter().find(|a| a.is_err())
            && answers.iter().all(Result::is_err)
        {
            return Err(e.clone());
        }
        let mut out = HashMap::with_capacity(members.len());
        for (batch, answer) in batches.iter().zip(&answers) {
            for &key in batch {
                let sample = match answer {
                    Ok([requests, errors]) => {
                        member_sample(requests, errors, &self.series_key(g, key))
                    }
                    Err(e) => ProviderSample::Unavailable(e.clone()),
                };
                out.insert(key.clone(), sample);
            }
        }
        Ok(out)
    }

    /// The group tags' values that name a member's series: its namespace (none when the
    /// series are told apart by their name tag alone) and, for the `service` tag, its service.
    fn series_key(&self, g: &DatadogGrouped, key: &ObjectKey) -> ObjectKey {
        let (namespace, name) = (&key.namespace, &key.name);
        let ns = if g.namespace_tag.is_empty() {
            String::new()
        } else {
            namespace.clone()
        };
        let name = if g.name_tag == "service" {
            self.service(namespace, name)
        } else {
            name.clone()
        };
        ObjectKey::new(ns, name)
    }

    /// One grouped request for `batch`: its namespaces, names and services as lists.
    async fn sample_batch(
        &self,
        g: &DatadogGrouped,
        batch: &[&ObjectKey],
        window: Duration,
    ) -> Result<[HashMap<ObjectKey, f64>; 2], ProbeError> {
        let namespaces: BTreeSet<&str> = batch.iter().map(|k| k.namespace.as_str()).collect();
        let names: BTreeSet<&str> = batch.iter().map(|k| k.name.as_str()).collect();
        let services: BTreeSet<String> = batch
            .iter()
            .map(|k| self.service(&k.namespace, &k.name))
            .collect();
        let namespaces: Vec<&str> = namespaces.into_iter().collect();
        let names: Vec<&str> = names.into_iter().collect();
        let services: Vec<&str> = services.iter().map(String::as_str).collect();
        let (requests, errors) = self.grouped_queries(g, &namespaces, &names, &services);
        // Room for two series of a few hundred points per member, never less than one query's.
        let max_body = super::MAX_BODY.max(batch.len() * 16 * 1024);
        let (status, body) = self.post([&requests, &errors], window, max_body).await?;
        parse_grouped(status, &body, &g.namespace_tag, &g.name_tag)
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
        let [requests, errors] =
            parse_grouped(200, body, "kube_namespace", "service").expect("parses");
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

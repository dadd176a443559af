//! A Datadog-compatible metrics query API over the apps' counters: `GET /api/v1/query` and
//! `POST /api/v2/query/timeseries`, with key checks, rate-limit headers and fault states.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::apps::Apps;
use super::datadog_query::{self as dq, Answer};
use super::fault::{self, SLOW, Shared, Switch, form_fields};
use super::traffic::{Selection, Traffic};
use crate::sim::scenario::ProviderState;

/// Requests allowed per rate-limit period, as Datadog announces for metric queries.
const RATE_LIMIT: u64 = 1600;
const RATE_PERIOD: u64 = 3600;
/// The `errors` of a partial answer (state `partial`): some of the data could not be read.
pub const PARTIAL_ERROR: &str = "Query timed out before all data could be read: partial results";

/// A Datadog-compatible metrics query API over the apps' counters.
///
/// Requires non-empty `DD-API-KEY` and `DD-APPLICATION-KEY` headers, or exactly the keys given
/// to [`DatadogSim::set_api_keys`].
#[derive(Clone)]
pub struct DatadogSim {
    traffic: Traffic,
    state: Shared<ProviderState>,
    switch: Switch,
    keys: Arc<Mutex<Option<(String, String)>>>,
    /// The current rate-limit period (its number since the epoch) and the requests used in it.
    used: Arc<Mutex<(u64, u64)>>,
    /// Every request received on the query endpoints, whatever its answer.
    requests: Arc<AtomicU64>,
    /// The `env` tag of the apps' traces.
    env: Arc<Mutex<String>>,
    /// Points younger than this are not queryable yet, in milliseconds.
    ingestion_delay_ms: Arc<AtomicU64>,
}

impl DatadogSim {
    pub fn new(apps: &Apps) -> Self {
        DatadogSim {
            traffic: apps.traffic().clone(),
            state: Shared::default(),
            switch: Switch::default(),
            keys: Arc::default(),
            used: Arc::default(),
            requests: Arc::default(),
            env: Arc::new(Mutex::new(dq::DEFAULT_ENV.to_string())),
            ingestion_delay_ms: Arc::default(),
        }
    }

    /// The apps' traces are tagged `env:<env>` from now on (`none` before, the Agent's
    /// default).
    pub fn set_env(&self, env: &str) {
        *self.env.lock().unwrap_or_else(|e| e.into_inner()) = env.to_string();
    }

    /// Points become queryable `delay` after their time, as Datadog ingests them.
    pub fn set_ingestion_delay(&self, delay: std::time::Duration) {
        self.ingestion_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Requests received on the query endpoints so far, answered or refused.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Serves on an ephemeral loopback port until `shutdown`.
    pub async fn start(&self, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        let router = Router::new()
            .route("/api/v1/query", get(v1_query))
            .route("/api/v2/query/timeseries", post(v2_timeseries))
            .with_state(self.clone());
        fault::serve(router, self.switch.clone(), shutdown).await
    }

    /// Same states as Prometheus: `down` refuses connections, `error` answers 500, `slow`
    /// after 30 s, `no_data` an empty answer, `partial` a 200 whose `errors` says part of the
    /// data is missing (and the failed requests' series are), `rate_limited` 429 with `X-RateLimit-Remaining: 0`,
    /// `X-RateLimit-Reset: 1` and `Retry-After: 1` (a short reset, so a scenario can recover).
    pub fn set_state(&self, state: ProviderState) {
        self.state.set(state);
        self.switch.set_up(state != ProviderState::Down);
    }

    /// Only these keys are accepted from now on (any non-empty pair before).
    pub fn set_api_keys(&self, api: &str, app: &str) {
        *self.keys.lock().unwrap_or_else(|e| e.into_inner()) = Some((api.into(), app.into()));
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        let (api, app) = (header("dd-api-key"), header("dd-application-key"));
        match &*self.keys.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((want_api, want_app)) => &api == want_api && &app == want_app,
            None => !api.is_empty() && !app.is_empty(),
        }
    }

    /// Checks the keys and the fault state; `Err` is the answer to send instead.
    async fn admit(&self, headers: &HeaderMap) -> Result<(), Response> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if !self.authorized(headers) {
            return Err(self.answer(StatusCode::FORBIDDEN, json!({"errors": ["Forbidden"]})));
        }
        match self.state.get() {
            ProviderState::RateLimited => Err(self.answer(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"errors": ["Too many requests"]}),
            )),
            ProviderState::Error => Err(self.answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"errors": ["Internal Server Error"]}),
            )),
            ProviderState::Slow => {
                tokio::time::sleep(SLOW).await;
                Ok(())
            }
            ProviderState::Up
            | ProviderState::NoData
            | ProviderState::Down
            | ProviderState::Partial => Ok(()),
        }
    }

    /// An answer with Datadog's rate-limit headers; each one counts against the limit, which
    /// starts afresh every period.
    fn answer(&self, status: StatusCode, body: Value) -> Response {
        let now = self.traffic.clock().now() as u64;
        let limited = self.state.get() == ProviderState::RateLimited;
        let remaining = {
            let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
            let period = now / RATE_PERIOD;
            if used.0 != period {
                *used = (period, 0);
            }
            used.1 = (used.1 + 1).min(RATE_LIMIT);
            if limited { 0 } else { RATE_LIMIT - used.1 }
        };
        let reset = if limited {
            1
        } else {
            RATE_PERIOD - (now % RATE_PERIOD)
        };
        let mut r = (status, axum::Json(body)).into_response();
        rate_headers(r.headers_mut(), remaining, reset);
        if limited {
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
        }
        r
    }
    fn run(&self, query: &dq::Query, from: f64, to: f64, interval: f64) -> (Vec<f64>, Vec<Answer>) {
        // Nothing younger than the ingestion delay is known yet.
        let delay = self.ingestion_delay_ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let now = self.traffic.clock().now() - delay;
        let buckets = dq::buckets(from, to, interval, now);
        if self.state.get() == ProviderState::NoData {
            return (buckets, Vec::new());
        }
        // The evaluation reads the counters at bucket starts and ends only.
        let mut times: Vec<f64> = buckets
            .iter()
            .flat_map(|&b| [b, (b + interval).min(to).min(now)])
            .collect();
        times.sort_by(f64::total_cmp);
        times.dedup();
        let mut series = self.traffic.sampled(&Selection::all(), &times);
        if self.state.get() == ProviderState::Partial {
            // The part of the answer that timed out: the failed requests' series.
            series.retain(|s| s.labels.get("code").is_none_or(|c| !c.starts_with('5')));
        }
        let env = self.env.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let answers = dq::evaluate_in(query, &series, &buckets, interval, to, now, &env);
        (buckets, answers)
    }
}

fn rate_headers(headers: &mut HeaderMap, remaining: u64, reset: u64) {
    for (name, value) in [
        ("x-ratelimit-limit", RATE_LIMIT.to_string()),
        ("x-ratelimit-period", RATE_PERIOD.to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-name", "query".to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

fn ms(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

async fn v1_query(
    State(sim): State<DatadogSim>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(r) = sim.admit(&headers).await {
        return r;
    }
    let fields = form_fields(raw.unwrap_or_default().as_bytes());
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let bad = |m: String| sim.answer(StatusCode::BAD_REQUEST, json!({"errors": [m]}));
    let number = |name: &str| {
        field(name)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    let (Some(from), Some(to)) = (number("from"), number("to")) else {
        return bad(
            "The parameters 'from' and 'to' are required and must be Unix timestamps in seconds"
                .into(),
        );
    };
    let Some(text) = field("query").filter(|q| !q.trim().is_empty()) else {
        return bad("The parameter 'query' is required".into());
    };
    if from >= to {
        return bad("'from' must be before 'to'".into());
    }
    let query = match dq::parse(&text) {
        Ok(q) => q,
        Err(e) => return bad(e.to_string()),
    };
    let interval = dq::default_interval(from, to);
    let (buckets, answers) = sim.run(&query, from, to, interval);
    let series: Vec<Value> = answers
        .iter()
        .map(|a| v1_series(&query, a, &buckets, interval))
        .collect();
    let body = json!({
        "status": "ok",
        "res_type": "time_series",
        "resp_version": 1,
        "query": text,
        "message": "",
        "error": null,
        "from_date": ms(from),
        "to_date": ms(to),
        "group_by": query.group_by,
        "series": series,
    });
    sim.answer(StatusCode::OK, body)
}

fn v1_series(query: &dq::Query, answer: &Answer, buckets: &[f64], interval: f64) -> Value {
    let points: Vec<(f64, f64)> = buckets
        .iter()
        .zip(&answer.values)
        .filter_map(|(&t, v)| v.map(|v| (t, v)))
        .collect();
    let pointlist: Vec<Value> = points
        .iter()
        .map(|&(t, v)| json!([ms(t) as f64, v]))
        .collect();
    let mut scope: Vec<String> = if query.scope == "*" {
        Vec::new()
    } else {
        vec![query.scope.clone()]
    };
    scope.extend(answer.group_tags.iter().cloned());
    let scope = if scope.is_empty() {
        "*".to_string()
    } else {
        scope.join(",")
    };
    let suffix = if query.as_count { ".as_count()" } else { "" };
    let start = points.first().map(|p| ms(p.0)).unwrap_or(0);
    let end = points.last().map(|p| ms(p.0 + interval) - 1).unwrap_or(0);
    json!({
        "metric": query.metric,
        "display_name": query.metric,
        "aggr": query.aggregator,
        "scope": scope,
        "tag_set": answer.group_tags,
        "expression": format!("{}:{}{{{scope}}}{suffix}", query.aggregator, query.metric),
        "pointlist": pointlist,
        "start": start,
        "end": end,
        "interval": interval as i64,
        "length": points.len(),
        "query_index": 0,
        "unit": null,
    })
}

async fn v2_timeseries(State(sim): State<DatadogSim>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = sim.admit(&headers).await {
        return r;
    }
    let bad = |m: &str| sim.answer(StatusCode::BAD_REQUEST, json!({"errors": [m]}));
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad("Request body is not valid JSON");
    };
    let data = &request["data"];
    if data["type"] != "timeseries_request" {
        return bad("data.type must be \"timeseries_request\"");
    }
    let attributes = &data["attributes"];
    let (Some(from), Some(to)) = (attributes["from"].as_f64(), attributes["to"].as_f64()) else {
        return bad(
            "attributes.from and attributes.to are required (milliseconds since the Unix epoch)",
        );
    };
    let (from, to) = (from / 1000.0, to / 1000.0);
    if from >= to {
        return bad("attributes.from must be before attributes.to");
    }
    let interval = attributes["interval"]
        .as_f64()
        .map(|ms| (ms / 1000.0).max(1.0))
        .unwrap_or_else(|| dq::default_interval(from, to));
    let Some(queries) = attributes["queries"].as_array().filter(|q| !q.is_empty()) else {
        return bad("attributes.queries must list at least one query");
    };
    let mut parsed = Vec::new();
    for q in queries {
        if q["data_source"] != "metrics" {
            return bad("only the \"metrics\" data_source is supported");
        }
        let Some(text) = q["query"].as_str() else {
            return bad("every query needs a query string");
        };
        match dq::parse(text) {
            Ok(p) => parsed.push((q["name"].as_str().map(str::to_string), p)),
            Err(e) => return bad(&e.to_string()),
        }
    }
    // A formula that names one query answers that query; without formulas, every query answers.
    let mut selected: Vec<usize> = (0..parsed.len()).collect();
    if let Some(formulas) = attributes["formulas"].as_array().filter(|f| !f.is_empty()) {
        selected.clear();
        for f in formulas {
            let name = f["formula"].as_str().unwrap_or("").trim();
            match parsed.iter().position(|(n, _)| n.as_deref() == Some(name)) {
                Some(i) => selected.push(i),
                None => {
                    return bad(&format!(
                        "formula {name:?} is not supported: the simulation answers formulas naming one query"
                    ));
                }
            }
        }
    }
    let mut series = Vec::new();
    let mut values = Vec::new();
    let mut times = Vec::new();
    for (index, &i) in selected.iter().enumerate() {
        let (buckets, answers) = sim.run(&parsed[i].1, from, to, interval);
        times = buckets.iter().map(|&t| ms(t)).collect();
        for a in answers {
            series.push(json!({"group_tags": a.group_tags, "query_index": index, "unit": null}));
            values.push(a.values);
        }
    }
    let mut body = json!({
        "data": {
            "id": "0",
            "type": "timeseries_response",
            "attributes": {"series": series, "times": times, "values": values},
        }
    });
    if sim.state.get() == ProviderState::Partial {
        body["errors"] = json!(PARTIAL_ERROR);
    }
    sim.answer(StatusCode::OK, body)
}

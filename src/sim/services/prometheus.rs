//! A Prometheus-compatible instant query API (`GET`/`POST /api/v1/query`) over the apps'
//! counters, answering in Prometheus' HTTP API envelope, with switchable fault states.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::apps::Apps;
use super::fault::{self, SLOW, Shared, Switch, form_fields};
use super::promql::{self, Matcher, PromqlError, Sample, Scraped, Source};
use super::traffic::Series;
use super::traffic::Traffic;
use crate::sim::scenario::ProviderState;

/// A Prometheus-compatible `/api/v1/query` over the apps' counters.
#[derive(Clone)]
pub struct PrometheusSim {
    traffic: Traffic,
    state: Shared<ProviderState>,
    switch: Switch,
    queries: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// How often the counters are "scraped", in milliseconds.
    scrape_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// The scrape interval until [`PrometheusSim::set_scrape_interval`] sets one.
pub const DEFAULT_SCRAPE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// What a partial answer's warning says, as Thanos words a store it could not reach.
pub const PARTIAL_WARNING: &str = "receive series from store: rpc error: code = Unavailable desc = simulated store unreachable: partial response";

impl PrometheusSim {
    pub fn new(apps: &Apps) -> Self {
        PrometheusSim {
            traffic: apps.traffic().clone(),
            state: Shared::default(),
            switch: Switch::default(),
            queries: std::sync::Arc::default(),
            scrape_ms: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
                DEFAULT_SCRAPE_INTERVAL.as_millis() as u64,
            )),
        }
    }

    /// Stores the counters every `interval` from now on (at least a millisecond).
    pub fn set_scrape_interval(&self, interval: std::time::Duration) {
        let ms = (interval.as_millis() as u64).max(1);
        self.scrape_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn scrape_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.scrape_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// The counters as scraped.
    fn scraped(&self) -> Scraped<'_> {
        Scraped {
            traffic: &self.traffic,
            interval: self.scrape_interval(),
        }
    }

    /// Queries answered so far (any state), for the benchmark.
    pub fn queries(&self) -> u64 {
        self.queries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Serves on an ephemeral loopback port until `shutdown`.
    pub async fn start(&self, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        let router = Router::new()
            .route("/api/v1/query", get(query).post(query))
            .route(
                "/-/healthy",
                get(|| async { "Prometheus Server is Healthy.\n" }),
            )
            .route(
                "/-/ready",
                get(|| async { "Prometheus Server is Ready.\n" }),
            )
            .with_state(self.clone());
        fault::serve(router, self.switch.clone(), shutdown).await
    }

    /// `down` refuses connections (and cuts open ones), `error` answers 500, `slow` answers
    /// after 30 s, `no_data` answers success with an empty vector, `rate_limited` answers 429
    /// with `Retry-After: 1`, `partial` answers success with a warning and without the series
    /// of failed requests (as Thanos, Mimir or Cortex answer when a store holding them is
    /// unreachable and partial responses are allowed). Takes effect for the next request.
    pub fn set_state(&self, state: ProviderState) {
        self.state.set(state);
        self.switch.set_up(state != ProviderState::Down);
    }

    /// Evaluates a query now, as the HTTP API would (for tests and the runner).
    pub fn evaluate(&self, query: &str) -> Result<Vec<Sample>, PromqlError> {
        promql::query(&self.scraped(), query, self.traffic.clock().now())
    }
}

fn envelope_error(status: StatusCode, error_type: &str, error: &str) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "errorType": error_type, "error": error})),
    )
        .into_response()
}

async fn query(
    State(sim): State<PrometheusSim>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    sim.queries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match sim.state.get() {
        ProviderState::Error => {
            return envelope_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "simulated internal server error",
            );
        }
        ProviderState::RateLimited => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                "Too Many Requests\n",
            )
                .into_response();
        }
        ProviderState::Slow => tokio::time::sleep(SLOW).await,
        ProviderState::Up | ProviderState::NoData | ProviderState::Down => {}
        ProviderState::Partial => {}
    }
    let mut fields = form_fields(raw.unwrap_or_default().as_bytes());
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if method == Method::POST && is_form {
        fields.extend(form_fields(&body));
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let now = sim.traffic.clock().now();
    let t = match field("time") {
        None => now,
        Some(text) => match parse_time(&text) {
            Some(t) => t,
            None => {
                let msg = format!(
                    "invalid parameter \"time\": cannot parse \"{text}\" to a valid timestamp"
                );
                return envelope_error(StatusCode::BAD_REQUEST, "bad_data", &msg);
            }
        },
    };
    let text = field("query").unwrap_or_default();
    let partial = sim.state.get() == ProviderState::Partial;
    let scraped = sim.scraped();
    let unreachable = Unreachable(&scraped);
    let source: &dyn Source = if partial { &unreachable } else { &scraped };
    let samples = match promql::query(source, &text, t) {
        Ok(samples) => samples,
        Err(e @ PromqlError::Parse { .. }) => {
            return envelope_error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                &format!("invalid parameter \"query\": {e}"),
            );
        }
        Err(e @ PromqlError::Execution(_)) => {
            return envelope_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "execution",
                &e.to_string(),
            );
        }
    };
    let samples = if sim.state.get() == ProviderState::NoData {
        Vec::new()
    } else {
        samples
    };
    let mut answer = vector_response(&samples, t);
    if partial {
        answer["warnings"] = json!([PARTIAL_WARNING]);
    }
    axum::Json(answer).into_response()
}

/// The series a partial answer still holds: every one but those of failed requests, whose
/// store is the one out of reach.
struct Unreachable<'a>(&'a Scraped<'a>);

impl Source for Unreachable<'_> {
    fn select(&self, matchers: &[Matcher], times: &[f64]) -> Vec<Series> {
        let mut series = self.0.select(matchers, times);
        series.retain(|s| !s.labels.get("code").is_some_and(|c| c.starts_with('5')));
        series
    }
}

/// Prometheus' success envelope for an instant vector.
pub fn vector_response(samples: &[Sample], t: f64) -> Value {
    // Prometheus answers evaluation times with millisecond precision.
    let t = (t * 1000.0).round() / 1000.0;
    let result: Vec<Value> = samples
        .iter()
        .map(|s| json!({"metric": s.labels, "value": [t, format_value(s.value)]}))
        .collect();
    json!({"status": "success", "data": {"resultType": "vector", "result": result}})
}

/// A sample value as Prometheus writes it: shortest decimal, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// A `time` parameter: Unix seconds (fractions allowed) or RFC 3339.
fn parse_time(text: &str) -> Option<f64> {
    if let Ok(t) = text.parse::<f64>() {
        return t.is_finite().then_some(t);
    }
    let ts: jiff::Timestamp = text.parse().ok()?;
    Some(ts.as_millisecond() as f64 / 1000.0)
}

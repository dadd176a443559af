//! The HTTP side of the Datadog provider: the `POST /api/v2/query/timeseries` request body,
//! the keys as headers, and the rate limit every clone of the client shares (after a 429, or
//! an answer that used the last request of the period, no call until the reset).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderValue};
use serde::Serialize;
use tokio::time::Instant;

use super::Datadog;
use crate::probes::error::{ProbeError, read_answer};

/// The longest wait a reset header can impose: Datadog's longest rate-limit period.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The wait after a 429 that names no reset.
pub(super) const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);

// The request body (TimeseriesFormulaQueryRequest).

#[derive(Debug, Serialize)]
pub(super) struct Request<'a> {
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

/// The request body for `queries` (one formula each) over `[from, to)`, in milliseconds since
/// the Unix epoch.
pub(super) fn request(queries: [&str; 2], from: i64, to: i64) -> Request<'_> {
    let names = ["query1", "query2"];
    Request {
        data: RequestData {
            kind: "timeseries_request",
            attributes: RequestAttributes {
                from,
                to,
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
    }
}

impl Datadog {
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
    pub(super) async fn post(
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
            .checked_sub(self.cfg.ingestion_delay.get())
            .unwrap_or(UNIX_EPOCH);
        let body = request(
            queries,
            unix_ms(now.checked_sub(window).unwrap_or(UNIX_EPOCH)),
            unix_ms(now),
        );
        let response = self
            .client
            .post(&self.endpoint)
            .headers(self.headers()?)
            .json(&body)
            .timeout(self.cfg.timeout.get())
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
        let body = read_answer(response, self.cfg.timeout.get(), max_body).await?;
        Ok((status, body))
    }
}

//! A small typed client of the PagerDuty Events API v2 (`POST {base}/v2/enqueue`).
//!
//! The base URL is configurable (US `https://events.pagerduty.com`, EU
//! `https://events.eu.pagerduty.com`, or a test server), unlike clients that hard-code it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Trigger,
    Resolve,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

/// `payload` of a trigger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payload {
    pub summary: String,
    pub source: String,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub custom_details: serde_json::Value,
}

/// One event, without the routing key (added when sent).
#[derive(Debug, Clone, PartialEq)]
pub struct PageEvent {
    pub action: Action,
    pub dedup_key: String,
    /// Present for triggers.
    pub payload: Option<Payload>,
}

#[derive(Serialize)]
struct Body<'a> {
    routing_key: &'a str,
    event_action: Action,
    dedup_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a Payload>,
    client: &'static str,
}

#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<String>,
}

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SendError {
    /// 429, 5xx, timeouts, refused connections: try again later.
    #[error("PagerDuty unavailable: {0}")]
    Retry(String),
    /// 400: the event is invalid and will never be accepted.
    #[error("PagerDuty rejected the event: {0}")]
    Rejected(String),
}

#[derive(Clone)]
pub struct PagerDuty {
    client: reqwest::Client,
    url: String,
    routing_key: String,
    timeout: std::time::Duration,
}

impl PagerDuty {
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        routing_key: String,
        timeout: std::time::Duration,
    ) -> Self {
        PagerDuty {
            client,
            url: format!("{}/v2/enqueue", base_url.trim_end_matches('/')),
            routing_key,
            timeout,
        }
    }

    /// The JSON body of an event (the routing key included).
    pub fn body(&self, event: &PageEvent) -> serde_json::Value {
        serde_json::to_value(Body {
            routing_key: &self.routing_key,
            event_action: event.action,
            dedup_key: &event.dedup_key,
            payload: event.payload.as_ref(),
            client: "deploy-watchdog",
        })
        .unwrap_or_default()
    }

    pub async fn send(&self, event: &PageEvent) -> Result<(), SendError> {
        let response = self
            .client
            .post(&self.url)
            .json(&self.body(event))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| SendError::Retry(crate::probes::describe(&e)))?;
        let status = response.status().as_u16();
        let body = crate::probes::read_bounded(response, 64 * 1024)
            .await
            .unwrap_or_default();
        let answer: Option<Answer> = serde_json::from_slice(&body).ok();
        let detail = answer
            .map(|a| {
                if a.errors.is_empty() {
                    a.message
                } else {
                    format!("{}: {}", a.message, a.errors.join("; "))
                }
            })
            .unwrap_or_default();
        match status {
            200..=299 => Ok(()),
            400 => Err(SendError::Rejected(format!("HTTP 400 {detail}"))),
            _ => Err(SendError::Retry(
                format!("HTTP {status} {detail}").trim_end().to_string(),
            )),
        }
    }
}

//! A Slack incoming webhook (`POST /services/...`), answering with Slack's plain-text codes
//! and recording every request.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::fault::Sink;
use super::{Received, recorded_body};
use crate::sim::scenario::SinkState;

/// A Slack incoming webhook: `POST /services/...`.
///
/// Answers `200 ok`; a body that is not a JSON object → `400 invalid_payload`; no `text` and no
/// `blocks` → `400 no_text` (Slack's code for a message with nothing to show);
/// `rate_limited` → `429 rate_limited` with `Retry-After: 1`; `error` → `500 rollup_error`.
#[derive(Clone)]
pub struct SlackSim {
    sink: Sink,
}

impl Default for SlackSim {
    fn default() -> Self {
        Self::new()
    }
}

impl SlackSim {
    pub fn new() -> Self {
        SlackSim {
            sink: Sink::default(),
        }
    }

    /// Serves on an ephemeral loopback port until `shutdown`.
    pub async fn start(&self, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        let router = Router::new()
            .route("/services/{*rest}", post(webhook))
            .with_state(self.clone());
        self.sink.serve(router, shutdown).await
    }

    /// `down` refuses connections, `error` answers 500, `rate_limited` answers 429.
    pub fn set_state(&self, state: SinkState) {
        self.sink.set_state(state);
    }

    /// Every request received, accepted or not, in order.
    pub fn received(&self) -> Vec<Received> {
        self.sink.log.all()
    }

    /// The mentions and links Slack would render in the messages posted, in order: the
    /// content of every `<…>` control sequence (see [`control_sequences`]).
    pub fn control_sequences(&self) -> Vec<String> {
        self.texts()
            .iter()
            .flat_map(|t| control_sequences(t))
            .collect()
    }

    /// The `text` of every message posted (answered 200), in order.
    pub fn texts(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.body["text"].as_str().map(str::to_string))
            .collect()
    }
}

/// What Slack reads as a control sequence in message text: every `<…>` span, which it shows as
/// a mention (`<!channel>`, `<@U123>`, `<#C123>`) or a link (`<https://…|label>`). Text meant
/// to show as written carries `&lt;`, `&gt;` and `&amp;` instead (Slack's escaping).
pub fn control_sequences(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        let after = &rest[start + 1..];
        match after.find('>') {
            Some(end) => {
                found.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    found
}

/// Slack's answer to a webhook body: status and plain-text code.
pub fn judge(body: &[u8]) -> (StatusCode, &'static str) {
    let Ok(Value::Object(message)) = serde_json::from_slice::<Value>(body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload");
    };
    let has_text = message
        .get("text")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.trim().is_empty());
    let blocks = message.get("blocks");
    let has_blocks = match blocks {
        None | Some(Value::Null) => false,
        Some(Value::Array(b)) => !b.is_empty(),
        Some(_) => return (StatusCode::BAD_REQUEST, "invalid_blocks"),
    };
    if !has_text && !has_blocks {
        return (StatusCode::BAD_REQUEST, "no_text");
    }
    (StatusCode::OK, "ok")
}

async fn webhook(State(sim): State<SlackSim>, body: Bytes) -> Response {
    let (status, text) = match sim.sink.state.get() {
        SinkState::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        SinkState::Error => (StatusCode::INTERNAL_SERVER_ERROR, "rollup_error"),
        SinkState::Up | SinkState::Down => judge(&body),
    };
    sim.sink.log.push(status.as_u16(), recorded_body(&body));
    let mut response = (status, [(header::CONTENT_TYPE, "text/html")], text).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

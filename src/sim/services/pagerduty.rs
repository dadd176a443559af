//! PagerDuty Events API v2 (`POST /v2/enqueue`), validating events the way PagerDuty does and
//! recording every request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::fault::Sink;
use super::{Received, recorded_body};
use crate::sim::scenario::SinkState;

const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];
const ACTIONS: [&str; 3] = ["trigger", "acknowledge", "resolve"];

/// PagerDuty Events API v2: `POST /v2/enqueue`.
///
/// Events are checked as PagerDuty checks them, with its messages: a `routing_key` must have
/// the form of an integration key (32 letters and digits), a `dedup_key` at most 255
/// characters; a trigger without `dedup_key` gets a generated one, returned in the answer.
///
/// Behind the API it keeps PagerDuty's incidents, one per dedup key, and notifies on-call as
/// PagerDuty does: a trigger opens an incident (or a new one once the last was resolved) and
/// notifies; a trigger on an incident still open, triggered or acknowledged, is only added to
/// its log and notifies nobody.
#[derive(Clone)]
pub struct PagerDutySim {
    sink: Sink,
    next_key: Arc<AtomicU64>,
    incidents: Arc<Mutex<Incidents>>,
}

/// The state of PagerDuty's incident for one dedup key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentState {
    /// Open, and on-call was notified when it opened.
    Triggered,
    /// Open and acknowledged: further triggers notify nobody.
    Acknowledged,
    Resolved,
}

/// One time PagerDuty notified on-call: the trigger that opened an incident.
#[derive(Debug, Clone)]
pub struct Notification {
    pub at: Instant,
    pub dedup_key: String,
    /// The trigger event as received.
    pub event: Value,
}

#[derive(Default)]
struct Incidents {
    /// By dedup key: the state and the trigger that opened the incident.
    by_key: BTreeMap<String, (IncidentState, Value)>,
    notifications: Vec<Notification>,
}

impl Incidents {
    /// What an accepted event does to the incident of its key.
    fn apply(&mut self, dedup_key: &str, event: &Value) {
        let state = self.by_key.get(dedup_key).map(|(s, _)| *s);
        let next = match (event["event_action"].as_str(), state) {
            (Some("trigger"), None | Some(IncidentState::Resolved)) => {
                self.notifications.push(Notification {
                    at: Instant::now(),
                    dedup_key: dedup_key.to_string(),
                    event: event.clone(),
                });
                self.by_key.insert(
                    dedup_key.to_string(),
                    (IncidentState::Triggered, event.clone()),
                );
                return;
            }
            (Some("acknowledge"), Some(IncidentState::Triggered)) => IncidentState::Acknowledged,
            (Some("resolve"), Some(IncidentState::Triggered | IncidentState::Acknowledged)) => {
                IncidentState::Resolved
            }
            // A trigger on an open incident goes to its log; an acknowledge or resolve of
            // nothing open changes nothing.
            _ => return,
        };
        if let Some((s, _)) = self.by_key.get_mut(dedup_key) {
            *s = next;
        }
    }
}

impl Default for PagerDutySim {
    fn default() -> Self {
        Self::new()
    }
}

impl PagerDutySim {
    pub fn new() -> Self {
        PagerDutySim {
            sink: Sink::default(),
            next_key: Arc::default(),
            incidents: Arc::default(),
        }
    }

    /// Serves on an ephemeral loopback port until `shutdown`.
    pub async fn start(&self, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        let router = Router::new()
            .route("/v2/enqueue", post(enqueue))
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

    /// The accepted events (answered 202), in order.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.status == 202)
            .collect()
    }

    /// The `dedup_key` of every accepted `trigger`, in order, repeats included.
    pub fn triggered_dedup_keys(&self) -> Vec<String> {
        self.keys_of("trigger")
    }

    /// The `dedup_key` of every accepted `resolve`, in order.
    pub fn resolved_dedup_keys(&self) -> Vec<String> {
        self.keys_of("resolve")
    }

    /// Every time on-call was notified, in order.
    pub fn notifications(&self) -> Vec<Notification> {
        self.lock_incidents().notifications.clone()
    }

    /// The state of the incident of `dedup_key`, if one was ever opened.
    pub fn incident(&self, dedup_key: &str) -> Option<IncidentState> {
        self.lock_incidents().by_key.get(dedup_key).map(|(s, _)| *s)
    }

    /// On-call acknowledges, in PagerDuty's web app, every triggered incident whose opening
    /// event `matches`; how many.
    pub fn acknowledge_open(&self, matches: impl Fn(&Value) -> bool) -> usize {
        let mut incidents = self.lock_incidents();
        let mut n = 0;
        for (state, event) in incidents.by_key.values_mut() {
            if *state == IncidentState::Triggered && matches(event) {
                *state = IncidentState::Acknowledged;
                n += 1;
            }
        }
        n
    }

    fn lock_incidents(&self) -> std::sync::MutexGuard<'_, Incidents> {
        self.incidents.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keys_of(&self, action: &str) -> Vec<String> {
        self.accepted()
            .into_iter()
            .filter(|r| r.body["event_action"] == action)
            .filter_map(|r| r.body["dedup_key"].as_str().map(str::to_string))
            .collect()
    }
}

/// Checks an event like PagerDuty does; the list of problems, empty when valid.
pub fn validate(event: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let text = |v: &Value| {
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if !event.is_object() {
        return vec!["Event object is not a JSON object".into()];
    }
    match event["routing_key"].as_str().map(str::trim) {
        None | Some("") => errors.push("'routing_key' is missing or blank".into()),
        // An Events API v2 integration key: 32 letters and digits.
        Some(key) => {
            if key.chars().count() != 32 {
                errors
                    .push("Length of 'routing_key' is incorrect (should be 32 characters)".into());
            }
            if !key.chars().all(|c| c.is_ascii_alphanumeric()) {
                errors.push("'routing_key' cannot contain non-alphanumeric characters.".into());
            }
        }
    }
    let action = text(&event["event_action"]);
    match action.as_deref() {
        None => errors.push("'event_action' is missing or blank".into()),
        Some(a) if !ACTIONS.contains(&a) => errors.push(format!(
            "'event_action' is invalid (must be one of {})",
            ACTIONS.join(", ")
        )),
        _ => {}
    }
    match &event["dedup_key"] {
        Value::Null => {
            if matches!(action.as_deref(), Some("acknowledge" | "resolve")) {
                errors.push("'dedup_key' is missing or blank".into());
            }
        }
        Value::String(k) if k.chars().count() > 255 => {
            errors.push("'dedup_key' is too long (maximum is 255 characters)".into())
        }
        Value::String(k) if k.trim().is_empty() && action.as_deref() != Some("trigger") => {
            errors.push("'dedup_key' is missing or blank".into())
        }
        Value::String(_) => {}
        _ => errors.push("'dedup_key' must be a string".into()),
    }
    if action.as_deref() == Some("trigger") {
        let payload = &event["payload"];
        if !payload.is_object() {
            errors.push("'payload' is missing or invalid".into());
            return errors;
        }
        match text(&payload["summary"]) {
            None => errors.push("'payload.summary' is missing or blank".into()),
            Some(s) if s.chars().count() > 1024 => {
                errors.push("'payload.summary' is too long (maximum is 1024 characters)".into())
            }
            _ => {}
        }
        if text(&payload["source"]).is_none() {
            errors.push("'payload.source' is missing or blank".into());
        }
        match text(&payload["severity"]) {
            None => errors.push("'payload.severity' is missing or blank".into()),
            Some(s) if !SEVERITIES.contains(&s.as_str()) => errors.push(format!(
                "'payload.severity' is invalid (must be one of {})",
                SEVERITIES.join(", ")
            )),
            _ => {}
        }
        if !matches!(payload["custom_details"], Value::Null | Value::Object(_)) {
            errors.push("'payload.custom_details' must be an object".into());
        }
        if let Some(ts) = payload["timestamp"].as_str()
            && ts.parse::<jiff::Timestamp>().is_err()
        {
            errors.push("'payload.timestamp' is not a valid ISO 8601 timestamp".into());
        }
        for list in ["links", "images"] {
            if !matches!(event[list], Value::Null | Value::Array(_)) {
                errors.push(format!("'{list}' must be an array"));
            }
        }
    }
    errors
}

async fn enqueue(State(sim): State<PagerDutySim>, body: Bytes) -> Response {
    let recorded = recorded_body(&body);
    let (status, answer) = match sim.sink.state.get() {
        SinkState::RateLimited => (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"status": "throttle event", "message": "Requests for this service are arriving too quickly.  Please retry later."}),
        ),
        SinkState::Error => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"status": "error", "message": "Internal Server Error"}),
        ),
        SinkState::Up | SinkState::Down => answer(&sim, &body),
    };
    let mut recorded = recorded;
    if status == StatusCode::ACCEPTED
        && let (Some(map), Some(key)) = (recorded.as_object_mut(), answer["dedup_key"].as_str())
    {
        // Record the key PagerDuty assigned, so helpers see generated keys too.
        map.insert("dedup_key".into(), Value::String(key.to_string()));
    }
    sim.sink.log.push(status.as_u16(), recorded);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}

fn answer(sim: &PagerDutySim, body: &[u8]) -> (StatusCode, Value) {
    let invalid = |errors: Vec<String>| {
        (
            StatusCode::BAD_REQUEST,
            json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
        )
    };
    let event: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return invalid(vec![format!("Event object is not valid JSON: {e}")]),
    };
    let errors = validate(&event);
    if !errors.is_empty() {
        return invalid(errors);
    }
    let dedup_key = match event["dedup_key"].as_str().filter(|k| !k.trim().is_empty()) {
        Some(k) => k.to_string(),
        None => {
            // PagerDuty generates a UUID-like key; a counter keeps the simulation deterministic.
            let n = sim.next_key.fetch_add(1, Ordering::Relaxed) + 1;
            format!("00000000-0000-4000-8000-{n:012x}")
        }
    };
    sim.lock_incidents().apply(&dedup_key, &event);
    (
        StatusCode::ACCEPTED,
        json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key}),
    )
}

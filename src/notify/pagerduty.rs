//! A small typed client of the PagerDuty Events API v2 (`POST {base}/v2/enqueue`).
//!
//! The base URL is configurable (US `https://events.pagerduty.com`, EU
//! `https://events.eu.pagerduty.com`, or a test server), unlike clients that hard-code it; the
//! documented full URL (`…/v2/enqueue`) is accepted too.

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

/// PagerDuty's limit on a `dedup_key`, in characters: a longer one is refused with a 400.
pub const DEDUP_KEY_MAX: usize = 255;

/// `key` as PagerDuty accepts it: unchanged within [`DEDUP_KEY_MAX`] characters, else its
/// beginning, `~` and a hash of the whole key. The result is readable, the same in every
/// process and release (FNV-1a, not std's seeded hasher), and differs for keys that differ
/// only past the cut, as long names of one cluster do.
pub fn capped_dedup_key(key: &str) -> String {
    if key.chars().count() <= DEDUP_KEY_MAX {
        return key.to_string();
    }
    let suffix = format!("~{:016x}", fnv1a(key.as_bytes()));
    let prefix: String = key.chars().take(DEDUP_KEY_MAX - suffix.len()).collect();
    format!("{prefix}{suffix}")
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The path of the Events API v2 endpoint.
const ENQUEUE: &str = "/v2/enqueue";

/// The endpoint events are posted to, from the configured URL: a base (`https://events.pagerduty.com`,
/// or a relay's base path) gets `/v2/enqueue`; the documented full URL is used as it is. A URL
/// that cannot be either (another scheme, a query, the v1 or Change Events API, a path on
/// PagerDuty's own hosts other than the endpoint) is refused with the reason.
pub fn endpoint(configured: &str) -> Result<url::Url, String> {
    let hint = "give the base (https://events.pagerduty.com, or https://events.eu.pagerduty.com) or the full URL (https://events.pagerduty.com/v2/enqueue)";
    let mut url = url::Url::parse(configured.trim())
        .map_err(|e| format!("{configured:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{configured:?}: scheme {:?} is not http or https",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{configured:?} names no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{configured:?} carries a query or fragment: {hint}"
        ));
    }
    let path = url.path().trim_end_matches('/').to_string();
    let base = path.strip_suffix(ENQUEUE).unwrap_or(&path);
    let api_path = base.split('/').any(|segment| {
        matches!(segment, "v1" | "v2" | "enqueue" | "generic" | "change")
            || segment.ends_with(".json")
    });
    let pagerduty_host = url
        .host_str()
        .is_some_and(|h| h == "pagerduty.com" || h.ends_with(".pagerduty.com"));
    if api_path || (pagerduty_host && !base.is_empty()) {
        return Err(format!(
            "{configured:?} is not the Events API v2 endpoint: {hint}"
        ));
    }
    url.set_path(&format!("{base}{ENQUEUE}"));
    Ok(url)
}

/// Whether `key` has the form of an Events API v2 integration (routing) key: 32 letters and
/// digits. PagerDuty refuses any other with a 400; a REST API key (20 characters) is the usual
/// mistake.
pub fn routing_key_ok(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| b.is_ascii_alphanumeric())
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
    /// 408, 429, 5xx, timeouts, refused connections: try again later.
    #[error("PagerDuty unavailable: {0}")]
    Retry(String),
    /// Any other answer but 2xx: an invalid event (400), a key or URL PagerDuty does not know
    /// (401, 403, 404), an event too large (413). Sending it again would get the same answer.
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
    /// A client posting to `endpoint` (see [`endpoint`]).
    pub fn new(
        client: reqwest::Client,
        endpoint: &url::Url,
        routing_key: String,
        timeout: std::time::Duration,
    ) -> Self {
        PagerDuty {
            client,
            url: endpoint.to_string(),
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
        let what = format!("HTTP {status} {detail}").trim_end().to_string();
        match status {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(SendError::Retry(what)),
            _ => Err(SendError::Rejected(what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_within_the_limit_are_kept_and_longer_ones_capped_stably() {
        let short = "deploy-watchdog/prod/production/app/7";
        assert_eq!(capped_dedup_key(short), short);
        let exact = "k".repeat(DEDUP_KEY_MAX);
        assert_eq!(capped_dedup_key(&exact), exact);

        let cluster = "c".repeat(200);
        let long = |name: &str| format!("deploy-watchdog/{cluster}/production/{name}/7");
        let a = capped_dedup_key(&long(&"a".repeat(253)));
        let b = capped_dedup_key(&long(&format!("{}b", "a".repeat(252))));
        for key in [&a, &b] {
            assert_eq!(key.chars().count(), DEDUP_KEY_MAX);
            assert!(key.starts_with(&format!("deploy-watchdog/{cluster}/production/")));
        }
        assert_ne!(a, b, "names differing past the cut keep distinct keys");
        assert_eq!(
            a,
            capped_dedup_key(&long(&"a".repeat(253))),
            "deterministic"
        );
        // Fixed for ever: a page re-sent by a newer release must land on the same incident.
        assert_eq!(fnv1a(b"deploy-watchdog"), 0x794d_5dbe_fc2e_49ce);
        // Characters, not bytes: a multi-byte cluster name is cut on a character.
        let wide = capped_dedup_key(&"é".repeat(300));
        assert_eq!(wide.chars().count(), DEDUP_KEY_MAX);
    }

    #[test]
    fn the_endpoint_is_the_base_plus_enqueue_or_the_full_url() {
        for (configured, want) in [
            (
                "https://events.pagerduty.com",
                "https://events.pagerduty.com/v2/enqueue",
            ),
            (
                "https://events.pagerduty.com/",
                "https://events.pagerduty.com/v2/enqueue",
            ),
            (
                "https://events.pagerduty.com/v2/enqueue",
                "https://events.pagerduty.com/v2/enqueue",
            ),
            (
                "https://events.eu.pagerduty.com/v2/enqueue/",
                "https://events.eu.pagerduty.com/v2/enqueue",
            ),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v2/enqueue"),
            (
                "https://relay.internal/pagerduty",
                "https://relay.internal/pagerduty/v2/enqueue",
            ),
            (
                "https://relay.internal/pagerduty/v2/enqueue",
                "https://relay.internal/pagerduty/v2/enqueue",
            ),
        ] {
            assert_eq!(
                endpoint(configured).map(|u| u.to_string()),
                Ok(want.to_string()),
                "{configured}"
            );
        }
        for nonsense in [
            "events dot pagerduty",
            "ftp://events.pagerduty.com",
            "https://events.pagerduty.com/v2/enqueue/v2/enqueue",
            "https://events.pagerduty.com/v2",
            "https://events.pagerduty.com/v2/change/enqueue",
            "https://events.pagerduty.com/generic/2010-04-15/create_event.json",
            "https://events.pagerduty.com/integration/abc/enqueue",
            "https://events.pagerduty.com/v2/enqueue?routing_key=x",
            "https://api.pagerduty.com/incidents",
        ] {
            assert!(endpoint(nonsense).is_err(), "{nonsense} was accepted");
        }
    }

    #[test]
    fn routing_keys_have_the_integration_key_form() {
        assert!(routing_key_ok("0123456789abcdef0123456789ABCDEF"));
        assert!(routing_key_ok("R0UTING0KEY0SIMULATED00000000000"));
        assert!(
            !routing_key_ok("R0UTING0KEY0SIMULATED0000000000"),
            "31 characters"
        );
        assert!(!routing_key_ok("u+abcdefghijklmnopqr"), "a REST API key");
        assert!(!routing_key_ok("0123456789abcdef0123456789abcde-"));
        assert!(!routing_key_ok(""));
    }
}

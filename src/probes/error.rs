//! Why a provider gave no usable answer, by category: a 429 and a timeout are different
//! problems on a dashboard and in an Event.

use std::fmt;

/// A provider's failure to answer usably. Each carries the text shown in logs and Events (no
/// URL: it may carry a secret); [`ProbeError::category`] is the bounded label for metrics.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeError {
    /// The request or reading its answer took longer than the provider's timeout.
    Timeout(String),
    /// No connection: refused, unreachable, a name that does not resolve, a failed handshake.
    Connect(String),
    /// HTTP 429, or a wait the provider's last 429 or rate-limit headers asked for.
    RateLimited(String),
    /// An error status other than 429.
    Status { status: u16, text: String },
    /// An answer that is not the API's: not JSON, another shape, not a number, too large.
    BadResponse(String),
    /// Data with warnings or errors beside it: part of the series may be missing.
    Partial(String),
    /// Any other failure to send the request (a header the secrets cannot make, a redirect
    /// refused).
    Request(String),
}

impl ProbeError {
    /// Every category, for metric labels set up in advance and for tests.
    pub const CATEGORIES: [&'static str; 7] = [
        "timeout",
        "connect",
        "rate_limited",
        "http_status",
        "bad_response",
        "partial",
        "request",
    ];

    /// A label from a fixed set (see [`ProbeError::CATEGORIES`]).
    pub fn category(&self) -> &'static str {
        match self {
            ProbeError::Timeout(_) => "timeout",
            ProbeError::Connect(_) => "connect",
            ProbeError::RateLimited(_) => "rate_limited",
            ProbeError::Status { .. } => "http_status",
            ProbeError::BadResponse(_) => "bad_response",
            ProbeError::Partial(_) => "partial",
            ProbeError::Request(_) => "request",
        }
    }

    /// `HTTP 502`, or `HTTP 400: bad_data: …` with the provider's explanation.
    pub fn status(status: u16, explanation: Option<String>) -> ProbeError {
        let text = match explanation {
            Some(e) => format!("HTTP {status}: {e}"),
            None => format!("HTTP {status}"),
        };
        if status == 429 {
            ProbeError::RateLimited(text)
        } else {
            ProbeError::Status { status, text }
        }
    }

    /// A request error, classified; its text without the URL.
    pub fn from_request(e: &reqwest::Error) -> ProbeError {
        let text = super::describe(e);
        if e.is_timeout() {
            ProbeError::Timeout(text)
        } else if e.is_connect() {
            ProbeError::Connect(text)
        } else if e.is_body() || e.is_decode() {
            ProbeError::BadResponse(text)
        } else {
            ProbeError::Request(text)
        }
    }

    fn text(&self) -> &str {
        match self {
            ProbeError::Timeout(t)
            | ProbeError::Connect(t)
            | ProbeError::RateLimited(t)
            | ProbeError::Status { text: t, .. }
            | ProbeError::BadResponse(t)
            | ProbeError::Partial(t)
            | ProbeError::Request(t) => t,
        }
    }
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl std::error::Error for ProbeError {}

/// Reads a provider's answer body within `timeout`, at most `max` bytes.
pub async fn read_answer(
    response: reqwest::Response,
    timeout: std::time::Duration,
    max: usize,
) -> Result<Vec<u8>, ProbeError> {
    match tokio::time::timeout(timeout, super::read_bounded(response, max)).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(ProbeError::BadResponse(e)),
        Err(_) => Err(ProbeError::Timeout("timed out reading the answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_and_a_timeout_differ_by_category_and_keep_their_text() {
        let limited = ProbeError::status(429, None);
        assert_eq!(limited.category(), "rate_limited");
        assert_eq!(limited.to_string(), "HTTP 429");
        let down = ProbeError::status(502, None);
        assert_eq!(down.category(), "http_status");
        assert_eq!(
            ProbeError::status(400, Some("bad_data: parse error".into())).to_string(),
            "HTTP 400: bad_data: parse error"
        );
        let slow = ProbeError::Timeout("timed out".into());
        assert_eq!(slow.category(), "timeout");
        assert_ne!(slow.category(), limited.category());
        for e in [
            slow,
            ProbeError::Connect(String::new()),
            limited,
            down,
            ProbeError::BadResponse(String::new()),
            ProbeError::Partial(String::new()),
            ProbeError::Request(String::new()),
        ] {
            assert!(ProbeError::CATEGORIES.contains(&e.category()));
        }
    }
}

//! Slack incoming webhooks: `POST <webhook URL>` with `{"text": …}`; `ok` on success.

use std::time::Duration;

/// The longest `Retry-After` honoured: a broken or hostile answer of years must not stall the
/// queue.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);

/// Text that Slack shows as written: `&`, `<` and `>` escaped (`&amp;`, `&lt;`, `&gt;`), the
/// three characters Slack's formatting rules reserve in message text, and only those. A version
/// an app reports, an error or a scheduler message can then neither mention anyone
/// (`<!channel>`) nor become a link (`<https://…|click>`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Why a post did not go through.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PostError {
    /// Rate-limited, 5xx, timeouts: try again after the given wait, if Slack named one.
    #[error("Slack unavailable: {reason}")]
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// `invalid_payload`, `no_text`, `channel_not_found`…: never accepted.
    #[error("Slack rejected the message: {0}")]
    Rejected(String),
}

#[derive(Clone)]
pub struct Slack {
    client: reqwest::Client,
    webhook: String,
    timeout: Duration,
}

impl Slack {
    pub fn new(client: reqwest::Client, webhook: String, timeout: Duration) -> Self {
        Slack {
            client,
            webhook,
            timeout,
        }
    }

    pub async fn post(&self, text: &str) -> Result<(), PostError> {
        let body = serde_json::json!({ "text": text });
        let response = self
            .client
            .post(&self.webhook)
            .json(&body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| PostError::Retry {
                reason: crate::probes::describe(&e),
                after: None,
            })?;
        let status = response.status().as_u16();
        let after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(RETRY_AFTER_MAX));
        let text = crate::probes::read_bounded(response, 16 * 1024)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_string();
        match status {
            200..=299 => Ok(()),
            429 => Err(PostError::Retry {
                reason: "rate limited (HTTP 429)".into(),
                after,
            }),
            400..=499 => Err(PostError::Rejected(format!("HTTP {status} {text}"))),
            _ => Err(PostError::Retry {
                reason: format!("HTTP {status}"),
                after,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ampersand_and_angle_brackets_are_escaped() {
        assert_eq!(
            escape("<!channel> <https://evil.example|click> & <@U0ADMIN>"),
            "&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; &lt;@U0ADMIN&gt;"
        );
        // Slack's own formatting and everything else pass as written.
        let ours = "⚠️ *Rolled back* production/app v1.2.3 to v1.2.2 due to error rate 3.4% _over_ 1% `x` :warning:\nnext";
        assert_eq!(escape(ours), ours);
        assert_eq!(
            escape("&amp;"),
            "&amp;amp;",
            "text that looks escaped is text too"
        );
    }
}

//! Paging and posting, off the rollback's path: each sink has its own queue and worker, and a
//! sink that is down never delays a decision. A page is retried until PagerDuty accepts it or
//! the daemon stops; one PagerDuty refuses for good (a 4xx but 408 and 429) ends at once, so it
//! never holds up the pages behind it. Slack messages are retried a bounded number of times,
//! one a second.

pub mod pagerduty;
pub mod slack;

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secrets};
use crate::telemetry::Metrics;
pub use pagerduty::{Action, PageEvent, Payload, Severity};

/// Slack asks incoming webhooks for at most one message a second.
const SLACK_SPACING: Duration = Duration::from_secs(1);
const SLACK_ATTEMPTS: u32 = 20;
/// Messages waiting for Slack at most.
const SLACK_QUEUE: usize = 1000;
/// Messages waiting when one is posted go with it, one per line, up to this much text (Slack
/// advises at most 4,000 characters a message): a burst of rollouts, or Slack back after an
/// outage, drains at many messages a second instead of one.
const SLACK_BATCH_CHARS: usize = 3_500;
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How a queued page ended: accepted by PagerDuty, or refused for good with PagerDuty's reason.
/// A page still being retried when the daemon stops never answers.
pub type PageReceipt = oneshot::Receiver<Result<(), String>>;

/// A page waiting for the worker, with where to say how it ended.
type QueuedPage = (PageEvent, oneshot::Sender<Result<(), String>>);

/// Handle to the sinks' queues. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    /// Unbounded on purpose: a page is never dropped, and there are at most a few per rollout.
    pages: Option<mpsc::UnboundedSender<QueuedPage>>,
    posts: Option<mpsc::Sender<String>>,
    in_flight: IntGauge,
}

impl Notifier {
    /// Starts a worker per configured sink; they stop with `shutdown`.
    pub fn start(
        config: &Config,
        secrets: &Secrets,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Notifier {
        let client = crate::probes::http_client();
        let in_flight = metrics.notifications_in_flight_gauge();
        let pages = match (
            &secrets.pagerduty_routing_key,
            config.notify.pagerduty.enabled,
        ) {
            (Some(key), true) => pagerduty::endpoint(&config.notify.pagerduty.url)
                // Validated with the config: this is for a config built in code.
                .inspect_err(|problem| {
                    tracing::error!(problem, "notify.pagerduty.url is not usable: paging is off")
                })
                .ok()
                .map(|endpoint| {
                    let pd = pagerduty::PagerDuty::new(
                        client.clone(),
                        &endpoint,
                        key.clone(),
                        config.notify.pagerduty.timeout,
                    );
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(page_worker(
                        pd,
                        rx,
                        in_flight.clone(),
                        metrics.clone(),
                        shutdown.clone(),
                    ));
                    tx
                }),
            _ => None,
        };
        let posts = match (&secrets.slack_webhook_url, config.notify.slack.enabled) {
            (Some(url), true) => {
                let slack = slack::Slack::new(client, url.clone(), config.notify.slack.timeout);
                let (tx, rx) = mpsc::channel(SLACK_QUEUE);
                tokio::spawn(slack_worker(
                    slack,
                    rx,
                    in_flight.clone(),
                    metrics,
                    shutdown,
                ));
                Some(tx)
            }
            _ => None,
        };
        Notifier {
            pages,
            posts,
            in_flight,
        }
    }

    pub fn pages_enabled(&self) -> bool {
        self.pages.is_some()
    }

    /// Queues a PagerDuty event; the receipt answers once PagerDuty has accepted or refused it.
    pub fn page(&self, event: PageEvent) -> Option<PageReceipt> {
        let tx = self.pages.as_ref()?;
        let (done, receipt) = oneshot::channel();
        self.in_flight.inc();
        if tx.send((event, done)).is_err() {
            self.in_flight.dec();
            return None;
        }
        Some(receipt)
    }

    /// Queues a Slack message; when Slack has been down long enough to fill the queue, the
    /// new message is dropped with an error log (pages carry what matters).
    ///
    /// `text` is plain text and is escaped here, whole ([`slack::escape`]): the messages carry
    /// versions, errors and scheduler messages from outside, and the watchdog's own wording uses
    /// only formatting that needs none of `&`, `<`, `>` (emoji, line breaks), so it arrives as
    /// written while nothing in it can mention anyone or become a link.
    pub fn post(&self, text: String) {
        if let Some(tx) = &self.posts {
            self.in_flight.inc();
            if let Err(e) = tx.try_send(slack::escape(&text)) {
                self.in_flight.dec();
                tracing::error!(
                    queue = SLACK_QUEUE,
                    full = matches!(e, mpsc::error::TrySendError::Full(_)),
                    "Slack message dropped: the queue is full"
                );
            }
        }
    }

    /// Pages and messages queued or being retried.
    pub fn in_flight(&self) -> usize {
        usize::try_from(self.in_flight.get()).unwrap_or(0)
    }
}

fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF_MAX)
}

async fn page_worker(
    pd: pagerduty::PagerDuty,
    mut rx: mpsc::UnboundedReceiver<QueuedPage>,
    in_flight: IntGauge,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let (event, done) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let mut backoff = BACKOFF_START;
        let action = match event.action {
            Action::Trigger => "trigger",
            Action::Resolve => "resolve",
        };
        loop {
            match pd.send(&event).await {
                Ok(()) => {
                    tracing::info!(dedup_key = %event.dedup_key, action = ?event.action, "page delivered");
                    let _ = done.send(Ok(()));
                    metrics.page(action, "delivered");
                    break;
                }
                Err(pagerduty::SendError::Rejected(e)) => {
                    tracing::error!(dedup_key = %event.dedup_key, action, error = %e, "page rejected by PagerDuty; not retried");
                    metrics.page(action, "rejected");
                    let _ = done.send(Err(e));
                    break;
                }
                Err(pagerduty::SendError::Retry(e)) => {
                    tracing::warn!(dedup_key = %event.dedup_key, error = %e, retry_in = ?backoff, "page not delivered; retrying");
                    metrics.page(action, "retried");
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = next_backoff(backoff);
                }
            }
        }
        in_flight.dec();
    }
}

async fn slack_worker(
    slack: slack::Slack,
    mut rx: mpsc::Receiver<String>,
    in_flight: IntGauge,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    // A message taken from the queue that did not fit in the last post.
    let mut held: Option<String> = None;
    loop {
        let first = match held.take() {
            Some(t) => t,
            None => tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                t = rx.recv() => match t { Some(t) => t, None => return },
            },
        };
        let (text, messages) = batch(first, &mut rx, &mut held);
        let outcome = post_with_retries(&slack, &text, &metrics, &shutdown).await;
        for _ in 0..messages {
            metrics.notification(outcome);
        }
        in_flight.sub(i64::try_from(messages).unwrap_or(i64::MAX));
        if shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SLACK_SPACING) => {}
        }
    }
}

/// `first` and the messages queued behind it, one per line, up to `SLACK_BATCH_CHARS`; the
/// first message that does not fit is `held` for the next post.
fn batch(
    first: String,
    rx: &mut mpsc::Receiver<String>,
    held: &mut Option<String>,
) -> (String, usize) {
    let mut text = first;
    let mut messages = 1;
    while text.len() < SLACK_BATCH_CHARS {
        match rx.try_recv() {
            Ok(more) if text.len() + 1 + more.len() <= SLACK_BATCH_CHARS => {
                text.push('\n');
                text.push_str(&more);
                messages += 1;
            }
            Ok(more) => {
                *held = Some(more);
                break;
            }
            Err(_) => break,
        }
    }
    (text, messages)
}

/// Posts `text`, retrying what Slack asks to retry; the metric outcome of the post.
async fn post_with_retries(
    slack: &slack::Slack,
    text: &str,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> &'static str {
    let mut backoff = BACKOFF_START;
    for attempt in 1..=SLACK_ATTEMPTS {
        match slack.post(text).await {
            Ok(()) => return "delivered",
            Err(slack::PostError::Rejected(e)) => {
                tracing::error!(error = %e, "Slack message rejected; not retried");
                return "rejected";
            }
            Err(slack::PostError::Retry { reason, after }) => {
                if attempt == SLACK_ATTEMPTS {
                    tracing::error!(error = %reason, attempts = attempt, "Slack message dropped after retries");
                    return "dropped";
                }
                let wait = after.unwrap_or(backoff);
                tracing::warn!(error = %reason, retry_in = ?wait, "Slack message not delivered; retrying");
                metrics.notification("retried");
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return "dropped",
                    _ = tokio::time::sleep(wait) => {}
                }
                backoff = next_backoff(backoff);
            }
        }
    }
    "dropped"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn queued_messages_go_in_one_post_up_to_the_size_limit() {
        let (tx, mut rx) = mpsc::channel(SLACK_QUEUE);
        let mut held = None;
        // Nothing queued behind it: posted alone, as it was.
        assert_eq!(
            batch("alone".into(), &mut rx, &mut held),
            ("alone".to_string(), 1)
        );
        for i in 0..3 {
            tx.try_send(format!("rollout {i} started")).unwrap();
        }
        let (text, n) = batch("first".into(), &mut rx, &mut held);
        assert_eq!(
            (text.as_str(), n),
            (
                "first\nrollout 0 started\nrollout 1 started\nrollout 2 started",
                4
            )
        );
        assert!(held.is_none());

        // A burst larger than one post: every message is in exactly one post, in order.
        let line = "x".repeat(100);
        for i in 0..200 {
            tx.try_send(format!("{i:03}{line}")).unwrap();
        }
        let mut posted = Vec::new();
        let mut first = rx.try_recv().ok();
        while let Some(f) = first.take().or_else(|| held.take()) {
            let (text, n) = batch(f, &mut rx, &mut held);
            assert!(text.len() <= SLACK_BATCH_CHARS, "{} chars", text.len());
            assert_eq!(text.lines().count(), n);
            posted.extend(text.lines().map(|l| l[..3].to_string()));
            first = held.take().or_else(|| rx.try_recv().ok());
        }
        let expected: Vec<String> = (0..200).map(|i| format!("{i:03}")).collect();
        assert_eq!(posted, expected);
    }
}

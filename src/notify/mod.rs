//! Paging and posting, off the rollback's path: each sink has its own queue and worker, and a
//! sink that is down never delays a decision. A page is retried until PagerDuty accepts it or
//! the daemon stops; Slack messages are retried a bounded number of times, one a second.

pub mod pagerduty;
pub mod slack;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Handle to the sinks' queues. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    /// Unbounded on purpose: a page is never dropped, and there are at most a few per rollout.
    pages: Option<mpsc::UnboundedSender<(PageEvent, oneshot::Sender<()>)>>,
    posts: Option<mpsc::Sender<String>>,
    in_flight: Arc<AtomicUsize>,
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
        let in_flight = Arc::new(AtomicUsize::new(0));
        let pages = match (
            &secrets.pagerduty_routing_key,
            config.notify.pagerduty.enabled,
        ) {
            (Some(key), true) => {
                let pd = pagerduty::PagerDuty::new(
                    client.clone(),
                    &config.notify.pagerduty.url,
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
                Some(tx)
            }
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

    /// A notifier with no sinks.
    pub fn disabled() -> Notifier {
        Notifier {
            pages: None,
            posts: None,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn pages_enabled(&self) -> bool {
        self.pages.is_some()
    }

    /// Queues a PagerDuty event; the receiver resolves once PagerDuty has accepted it.
    pub fn page(&self, event: PageEvent) -> Option<oneshot::Receiver<()>> {
        let tx = self.pages.as_ref()?;
        let (done, receipt) = oneshot::channel();
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        if tx.send((event, done)).is_err() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(receipt)
    }

    /// Queues a Slack message; when Slack has been down long enough to fill the queue, the
    /// new message is dropped with an error log (pages carry what matters).
    pub fn post(&self, text: String) {
        if let Some(tx) = &self.posts {
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = tx.try_send(text) {
                self.in_flight.fetch_sub(1, Ordering::SeqCst);
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
        self.in_flight.load(Ordering::SeqCst)
    }
}

fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF_MAX)
}

async fn page_worker(
    pd: pagerduty::PagerDuty,
    mut rx: mpsc::UnboundedReceiver<(PageEvent, oneshot::Sender<()>)>,
    in_flight: Arc<AtomicUsize>,
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
                    let _ = done.send(());
                    metrics.page(action, "delivered");
                    break;
                }
                Err(pagerduty::SendError::Rejected(e)) => {
                    tracing::error!(dedup_key = %event.dedup_key, error = %e, "page rejected; not retried");
                    metrics.page(action, "rejected");
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
        in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn slack_worker(
    slack: slack::Slack,
    mut rx: mpsc::Receiver<String>,
    in_flight: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    loop {
        let text = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            t = rx.recv() => match t { Some(t) => t, None => return },
        };
        let mut backoff = BACKOFF_START;
        for attempt in 1..=SLACK_ATTEMPTS {
            match slack.post(&text).await {
                Ok(()) => {
                    metrics.notification("delivered");
                    break;
                }
                Err(slack::PostError::Rejected(e)) => {
                    tracing::error!(error = %e, "Slack message rejected; not retried");
                    metrics.notification("rejected");
                    break;
                }
                Err(slack::PostError::Retry { reason, after }) => {
                    if attempt == SLACK_ATTEMPTS {
                        tracing::error!(error = %reason, attempts = attempt, "Slack message dropped after retries");
                        metrics.notification("dropped");
                        break;
                    }
                    let wait = after.unwrap_or(backoff);
                    tracing::warn!(error = %reason, retry_in = ?wait, "Slack message not delivered; retrying");
                    metrics.notification("retried");
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = next_backoff(backoff);
                }
            }
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SLACK_SPACING) => {}
        }
    }
}

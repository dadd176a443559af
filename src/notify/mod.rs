//! Paging and posting, off the rollback's path: each sink has its own queue, and a sink that is
//! down never delays a decision.
//!
//! Every page is delivered on its own (at most [`PAGE_SENDS`] requests to PagerDuty at once), so
//! a page stuck in retries never holds up another rollout's page; pages with the same dedup key
//! go in the order they were queued, so a `resolve` never overtakes its `trigger`. A page is
//! retried, with [`crate::backoff`], until PagerDuty accepts it or the daemon stops; one
//! PagerDuty refuses for good (a 4xx but 408 and 429) ends at once.
//!
//! Slack messages go one post at a time, at most one a second (Slack's limit for a webhook), the
//! messages queued meanwhile together in one post; a post is retried a bounded number of times.

pub mod pagerduty;
pub mod slack;

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntGauge;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::backoff;
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
/// Retries of a page, and of a Slack post that Slack gave no `Retry-After` for.
const BACKOFF: backoff::Policy =
    backoff::Policy::new(Duration::from_millis(200), Duration::from_secs(30));
/// Requests to PagerDuty at once at most; a page waiting to retry does not hold one.
pub const PAGE_SENDS: usize = 16;

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
                        config.notify.pagerduty.timeout.get(),
                    );
                    pages_to(pd, in_flight.clone(), metrics.clone(), shutdown.clone())
                }),
            _ => None,
        };
        let posts = match (&secrets.slack_webhook_url, config.notify.slack.enabled) {
            (Some(url), true) => {
                let slack =
                    slack::Slack::new(client, url.clone(), config.notify.slack.timeout.get());
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

    /// A notifier whose pages and messages wait in the returned queues instead of going to
    /// PagerDuty and Slack: for whoever delivers them itself, such as a test that drives a
    /// session in virtual time (real sockets do not mix with paused time).
    pub fn queued(metrics: &Metrics) -> (Notifier, Queued) {
        let (pages, page_rx) = mpsc::unbounded_channel();
        let (posts, post_rx) = mpsc::channel(SLACK_QUEUE);
        let notifier = Notifier {
            pages: Some(pages),
            posts: Some(posts),
            in_flight: metrics.notifications_in_flight_gauge(),
        };
        let queued = Queued {
            pages: page_rx,
            posts: post_rx,
        };
        (notifier, queued)
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

/// The queues of a [`Notifier::queued`]: each page with where to say how it ended (as
/// PagerDuty's worker would), and each Slack message, escaped. Whoever takes an item out lowers
/// the in-flight gauge when done with it ([`Metrics::notifications_in_flight_gauge`]).
pub struct Queued {
    pub pages: mpsc::UnboundedReceiver<(PageEvent, oneshot::Sender<Result<(), String>>)>,
    pub posts: mpsc::Receiver<String>,
}

/// Where pages go: PagerDuty's Events API.
trait PageSink: Send + Sync + 'static {
    fn deliver(
        &self,
        event: &PageEvent,
    ) -> impl Future<Output = Result<(), pagerduty::SendError>> + Send;
}

impl PageSink for pagerduty::PagerDuty {
    fn deliver(
        &self,
        event: &PageEvent,
    ) -> impl Future<Output = Result<(), pagerduty::SendError>> + Send {
        self.send(event)
    }
}

/// Starts delivering the pages queued on the returned sender to `sink`.
fn pages_to<S: PageSink>(
    sink: S,
    in_flight: IntGauge,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> mpsc::UnboundedSender<QueuedPage> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(page_dispatcher(
        Arc::new(sink),
        rx,
        in_flight,
        metrics,
        shutdown,
    ));
    tx
}

/// Starts a delivery for each page as it is queued, unless a page with its dedup key is being
/// delivered: it then waits for that one, and the ones queued before it, to end.
async fn page_dispatcher<S: PageSink>(
    sink: Arc<S>,
    mut rx: mpsc::UnboundedReceiver<QueuedPage>,
    in_flight: IntGauge,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let sends = Arc::new(Semaphore::new(PAGE_SENDS));
    // By dedup key being delivered: the pages queued behind it, in order.
    let mut waiting: HashMap<String, VecDeque<QueuedPage>> = HashMap::new();
    let mut deliveries: JoinSet<()> = JoinSet::new();
    let mut keys: HashMap<tokio::task::Id, String> = HashMap::new();
    let start = |deliveries: &mut JoinSet<()>,
                 keys: &mut HashMap<tokio::task::Id, String>,
                 (event, done): QueuedPage| {
        let key = event.dedup_key.clone();
        let task = deliveries.spawn(deliver_page(
            sink.clone(),
            sends.clone(),
            event,
            done,
            metrics.clone(),
            shutdown.clone(),
        ));
        keys.insert(task.id(), key);
    };
    let mut open = true;
    while open || !deliveries.is_empty() {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            Some(ended) = deliveries.join_next_with_id() => {
                in_flight.dec();
                let id = match ended {
                    Ok((id, ())) => id,
                    Err(e) => {
                        if e.is_panic() {
                            metrics.task_panic(crate::tasks::Task::Page.as_str());
                            tracing::error!(error = %e, "a page delivery panicked");
                        }
                        e.id()
                    }
                };
                let Some(key) = keys.remove(&id) else { continue };
                match waiting.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(next) => start(&mut deliveries, &mut keys, next),
                    None => {
                        waiting.remove(&key);
                    }
                }
            }
            page = rx.recv(), if open => match page {
                Some(page) => match waiting.get_mut(&page.0.dedup_key) {
                    Some(queue) => queue.push_back(page),
                    None => {
                        waiting.insert(page.0.dedup_key.clone(), VecDeque::new());
                        start(&mut deliveries, &mut keys, page);
                    }
                },
                None => open = false,
            },
        }
    }
}

/// Delivers one page: until PagerDuty accepts or refuses it, or the daemon stops.
async fn deliver_page<S: PageSink>(
    sink: Arc<S>,
    sends: Arc<Semaphore>,
    event: PageEvent,
    done: oneshot::Sender<Result<(), String>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let mut backoff = BACKOFF.start();
    let action = match event.action {
        Action::Trigger => "trigger",
        Action::Resolve => "resolve",
    };
    loop {
        let sent = {
            let Ok(_send) = sends.acquire().await else {
                return;
            };
            sink.deliver(&event).await
        };
        match sent {
            Ok(()) => {
                tracing::info!(dedup_key = %event.dedup_key, action = ?event.action, "page delivered");
                let _ = done.send(Ok(()));
                metrics.page(action, "delivered");
                return;
            }
            Err(pagerduty::SendError::Rejected(e)) => {
                tracing::error!(dedup_key = %event.dedup_key, action, error = %e, "page rejected by PagerDuty; not retried");
                metrics.page(action, "rejected");
                let _ = done.send(Err(e));
                return;
            }
            Err(pagerduty::SendError::Retry(e)) => {
                let wait = backoff.next_wait();
                tracing::warn!(dedup_key = %event.dedup_key, error = %e, retry_in = ?wait, "page not delivered; retrying");
                metrics.page(action, "retried");
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
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
    let mut backoff = BACKOFF.start();
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
                let wait = backoff.next_wait_at_least(after);
                tracing::warn!(error = %reason, retry_in = ?wait, "Slack message not delivered; retrying");
                metrics.notification("retried");
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return "dropped",
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    "dropped"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use tokio::time::Instant;

    use super::*;

    /// Never accepted: the failures left of a page that PagerDuty keeps answering 503.
    const NEVER: u32 = u32::MAX;

    #[derive(Default)]
    struct Script {
        /// By dedup key: 503s left before PagerDuty accepts it (none here: accepted at once).
        failures: HashMap<String, u32>,
        /// What each request takes to answer.
        latency: Duration,
        attempts: Vec<(String, Action, Instant)>,
        accepted: Vec<(String, Action, Instant)>,
        sending: usize,
        most_at_once: usize,
    }

    /// PagerDuty as a script, on the paused clock.
    #[derive(Clone, Default)]
    struct Fake(Arc<Mutex<Script>>);

    impl Fake {
        fn script(&self) -> std::sync::MutexGuard<'_, Script> {
            self.0.lock().unwrap()
        }
    }

    impl PageSink for Fake {
        fn deliver(
            &self,
            event: &PageEvent,
        ) -> impl Future<Output = Result<(), pagerduty::SendError>> + Send {
            let fake = self.clone();
            let (key, action) = (event.dedup_key.clone(), event.action);
            async move {
                let latency = {
                    let mut s = fake.script();
                    s.sending += 1;
                    s.most_at_once = s.most_at_once.max(s.sending);
                    s.attempts.push((key.clone(), action, Instant::now()));
                    s.latency
                };
                tokio::time::sleep(latency).await;
                let mut s = fake.script();
                s.sending -= 1;
                match s.failures.get_mut(&key) {
                    Some(n) if *n > 0 => {
                        if *n != NEVER {
                            *n -= 1;
                        }
                        Err(pagerduty::SendError::Retry("HTTP 503".into()))
                    }
                    _ => {
                        s.accepted.push((key, action, Instant::now()));
                        Ok(())
                    }
                }
            }
        }
    }

    fn notifier(fake: &Fake) -> Notifier {
        let metrics = Arc::new(Metrics::register(&prometheus::Registry::new()).unwrap());
        let in_flight = metrics.notifications_in_flight_gauge();
        Notifier {
            pages: Some(pages_to(
                fake.clone(),
                in_flight.clone(),
                metrics,
                CancellationToken::new(),
            )),
            posts: None,
            in_flight,
        }
    }

    fn page(key: &str, action: Action) -> PageEvent {
        PageEvent {
            action,
            dedup_key: key.into(),
            payload: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_stuck_in_retries_holds_up_no_other_page_and_is_never_dropped() {
        let fake = Fake::default();
        fake.script().failures.insert("stuck".into(), NEVER);
        fake.script().latency = Duration::from_millis(50);
        let notifier = notifier(&fake);
        let started = Instant::now();
        let mut stuck = notifier.page(page("stuck", Action::Trigger)).unwrap();
        // Let it fail a few times first.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let critical = notifier.page(page("critical", Action::Trigger)).unwrap();
        let asked = Instant::now();
        assert_eq!(critical.await.unwrap(), Ok(()));
        assert!(
            asked.elapsed() <= Duration::from_millis(100),
            "the critical page waited {:?} behind a page in retries",
            asked.elapsed()
        );

        // Ten minutes of PagerDuty answering 503 to the other page: retried all along, with
        // growing, jittered, capped waits; never given up.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(stuck.try_recv().is_err(), "the page ended without delivery");
        assert_eq!(notifier.in_flight(), 1);
        let times: Vec<Instant> = fake
            .script()
            .attempts
            .iter()
            .filter(|(k, _, _)| k == "stuck")
            .map(|(_, _, t)| *t)
            .collect();
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() >= 20, "{} retries in ten minutes", gaps.len());
        for gap in &gaps {
            // Each wait is 200 ms to 30 s, plus the 50 ms the answer takes.
            assert!(*gap >= Duration::from_millis(250), "{gaps:?}");
            assert!(*gap <= Duration::from_millis(30_050), "{gaps:?}");
        }
        // Decorrelated jitter may fall back towards the base after a long wait, but the waits
        // grow well past it: some reach seconds, and on average they are far above 200 ms.
        let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
        assert!(
            gaps.iter().any(|g| *g >= Duration::from_secs(5)) && mean >= Duration::from_secs(1),
            "the waits did not grow (mean {mean:?}): {gaps:?}"
        );

        // PagerDuty is back: delivered within one capped wait.
        fake.script().failures.remove("stuck");
        let back = Instant::now();
        tokio::time::timeout(Duration::from_secs(31), &mut stuck)
            .await
            .expect("not delivered after PagerDuty came back")
            .unwrap()
            .unwrap();
        assert!(back.elapsed() <= Duration::from_millis(30_100));
        assert_eq!(notifier.in_flight(), 0);
        assert!(started.elapsed() >= Duration::from_secs(605));
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolve_never_overtakes_its_trigger_and_other_keys_go_meanwhile() {
        let fake = Fake::default();
        fake.script().failures.insert("rollout-a".into(), 3);
        fake.script().latency = Duration::from_millis(20);
        let notifier = notifier(&fake);
        let trigger = notifier.page(page("rollout-a", Action::Trigger)).unwrap();
        let resolve = notifier.page(page("rollout-a", Action::Resolve)).unwrap();
        let other = notifier.page(page("rollout-b", Action::Trigger)).unwrap();
        assert_eq!(other.await.unwrap(), Ok(()));
        assert_eq!(trigger.await.unwrap(), Ok(()));
        assert_eq!(resolve.await.unwrap(), Ok(()));
        let s = fake.script();
        let order: Vec<(&str, Action)> = s
            .accepted
            .iter()
            .map(|(k, a, _)| (k.as_str(), *a))
            .collect();
        assert_eq!(
            order,
            [
                ("rollout-b", Action::Trigger),
                ("rollout-a", Action::Trigger),
                ("rollout-a", Action::Resolve)
            ]
        );
        // The resolve was not even sent before its trigger was accepted.
        let trigger_accepted = s.accepted[1].2;
        let first_resolve = s
            .attempts
            .iter()
            .find(|(k, a, _)| k == "rollout-a" && *a == Action::Resolve)
            .unwrap()
            .2;
        assert!(first_resolve >= trigger_accepted);
        // rollout-b went out with the trigger's first attempt, not after its retries.
        assert_eq!(s.accepted[0].2, s.attempts[0].2 + Duration::from_millis(20));
    }

    #[tokio::test(start_paused = true)]
    async fn pages_go_out_at_once_up_to_the_bound() {
        let fake = Fake::default();
        fake.script().latency = Duration::from_secs(1);
        let notifier = notifier(&fake);
        let started = Instant::now();
        let receipts: Vec<_> = (0..100)
            .map(|i| {
                notifier
                    .page(page(&format!("rollout-{i}"), Action::Trigger))
                    .unwrap()
            })
            .collect();
        for r in receipts {
            assert_eq!(r.await.unwrap(), Ok(()));
        }
        assert_eq!(fake.script().most_at_once, PAGE_SENDS);
        assert_eq!(fake.script().accepted.len(), 100);
        // 100 pages, 16 at a time, a second each: 7 seconds, not 100.
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(100u64.div_ceil(PAGE_SENDS as u64))
        );
    }

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

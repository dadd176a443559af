//! Every task the daemon starts is tracked here, and none is left to vanish.
//!
//! A task that panics is counted (`deploy_watchdog_task_panics_total{task}`) and logged. A
//! supervised task (a rollout's session) is then asked what to do: a session reports the panic
//! as a Warning Event on its Deployment, reads the state recorded there and runs again from it,
//! after a backoff so a task that panics at once every time does not spin.
//!
//! Shutdown waits on the tracker: [`Tasks::wait`] returns once every task has ended.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error};

use crate::backoff;
use crate::telemetry::Metrics;

/// What a task is, as the panic metric labels it: a short, fixed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Session,
    Record,
    Leader,
    Page,
}

impl Task {
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Session => "session",
            Task::Record => "record",
            Task::Leader => "leader",
            Task::Page => "page",
        }
    }
}

/// A task that can run again after a panic.
pub trait Restart: Send + 'static {
    /// One run, from where the task stands now.
    fn run(&mut self) -> impl Future<Output = ()> + Send + 'static;

    /// The last run panicked with `message`: report it, and prepare the next run. False when
    /// there is nothing left to run (the work was finished or is no longer this task's).
    fn panicked(&mut self, message: &str) -> impl Future<Output = bool> + Send + '_;
}

/// Waits between restarts of a task that keeps panicking.
const RESTART_BACKOFF: backoff::Policy = backoff::Policy::new(
    std::time::Duration::from_millis(100),
    std::time::Duration::from_secs(30),
);

/// The daemon's tasks. Cheap to clone.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
}

impl Tasks {
    pub fn new(metrics: Arc<Metrics>) -> Tasks {
        Tasks {
            tracker: TaskTracker::new(),
            metrics,
        }
    }

    /// Runs `task` once; a panic is logged and counted.
    pub fn spawn<F>(&self, kind: Task, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let metrics = self.metrics.clone();
        self.tracker.spawn(
            async move {
                if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
                    report(&metrics, kind, &message(&*panic));
                }
            }
            .in_current_span(),
        );
    }

    /// Runs `task`, and again after each panic for as long as it asks to, until `stop`.
    pub fn supervise<R: Restart>(&self, kind: Task, mut task: R, stop: CancellationToken) {
        let metrics = self.metrics.clone();
        self.tracker.spawn(
            async move {
                let mut backoff = RESTART_BACKOFF.start();
                loop {
                    let run = std::panic::AssertUnwindSafe(task.run()).catch_unwind();
                    let Err(panic) = run.await else {
                        return;
                    };
                    let message = message(&*panic);
                    report(&metrics, kind, &message);
                    if stop.is_cancelled() || !task.panicked(&message).await {
                        return;
                    }
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                    }
                }
            }
            .in_current_span(),
        );
    }

    /// Tasks running now.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Waits until every task has ended; tasks may still be started meanwhile.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
    }
}

fn report(metrics: &Metrics, kind: Task, message: &str) {
    metrics.task_panic(kind.as_str());
    error!(task = kind.as_str(), panic = message, "task panicked");
}

/// The text a panic carried.
pub fn message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    fn tasks() -> (Tasks, prometheus::Registry) {
        let registry = prometheus::Registry::new();
        let metrics = Arc::new(Metrics::register(&registry).unwrap());
        (Tasks::new(metrics), registry)
    }

    fn panics(registry: &prometheus::Registry, task: &str) -> String {
        crate::telemetry::encode(registry)
            .lines()
            .find(|l| {
                l.starts_with("deploy_watchdog_task_panics_total{")
                    && l.contains(&format!("task=\"{task}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
            .unwrap_or_default()
    }

    /// Panics on its first `panics` runs, then finishes; says what it was told.
    struct Flaky {
        runs: Arc<AtomicU32>,
        panics: u32,
        told: Vec<String>,
        told_out: Arc<std::sync::Mutex<Vec<String>>>,
    }

    impl Restart for Flaky {
        fn run(&mut self) -> impl Future<Output = ()> + Send + 'static {
            let run = self.runs.fetch_add(1, Ordering::SeqCst);
            let panics = self.panics;
            async move {
                tokio::task::yield_now().await;
                if run < panics {
                    panic!("run {run} failed");
                }
            }
        }

        fn panicked(&mut self, message: &str) -> impl Future<Output = bool> + Send + '_ {
            self.told.push(message.to_string());
            *self.told_out.lock().unwrap() = self.told.clone();
            async { true }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_counted_told_and_run_again_until_it_finishes() {
        let (tasks, registry) = tasks();
        let runs = Arc::new(AtomicU32::new(0));
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let started = tokio::time::Instant::now();
        tasks.supervise(
            Task::Session,
            Flaky {
                runs: runs.clone(),
                panics: 3,
                told: Vec::new(),
                told_out: told.clone(),
            },
            CancellationToken::new(),
        );
        tasks.wait().await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(
            *told.lock().unwrap(),
            ["run 0 failed", "run 1 failed", "run 2 failed"]
        );
        assert_eq!(panics(&registry, "session"), "3");
        // Three restarts, each after at least the first wait and at most the cap.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took <= Duration::from_secs(90), "{took:?}");
        assert!(tasks.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopped_supervisor_does_not_restart_and_a_plain_task_panic_is_counted() {
        let (tasks, registry) = tasks();
        let runs = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        stop.cancel();
        tasks.supervise(
            Task::Session,
            Flaky {
                runs: runs.clone(),
                panics: 10,
                told: Vec::new(),
                told_out: Arc::default(),
            },
            stop,
        );
        tasks.spawn(Task::Record, async { panic!("boom") });
        tasks.spawn(Task::Record, async {});
        tasks.wait().await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(panics(&registry, "session"), "1");
        assert_eq!(panics(&registry, "record"), "1");
    }
}

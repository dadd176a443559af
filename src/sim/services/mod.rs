//! The simulated apps and the services the daemon talks to: a Prometheus-compatible query API,
//! a Datadog-compatible metrics API, the PagerDuty Events API v2 and a Slack incoming webhook.
//!
//! CONTRACT (the runner relies on exactly these signatures): [`ClusterView`], [`Apps`],
//! [`PrometheusSim`], [`DatadogSim`], [`PagerDutySim`], [`SlackSim`], [`Received`].
//!
//! Every server binds 127.0.0.1 on an ephemeral port, serves until its `CancellationToken` is
//! cancelled, and (providers and sinks) follows its fault state from the next request on.

pub mod apps;
pub mod datadog;
pub mod datadog_query;
pub mod fault;
pub mod pagerduty;
pub mod prometheus;
pub mod promql;
pub mod promql_parse;
pub mod slack;
pub mod traffic;

use tokio::time::Instant;

pub use apps::Apps;
pub use datadog::DatadogSim;
pub use pagerduty::PagerDutySim;
pub use prometheus::PrometheusSim;
pub use slack::SlackSim;

/// What the services need to know of the cluster.
pub trait ClusterView: Send + Sync + 'static {
    /// Ready pods of a Deployment by version.
    fn ready_pods_by_version(&self, namespace: &str, name: &str) -> Vec<(String, u32)>;
    /// Every Deployment as (namespace, name).
    fn deployments(&self) -> Vec<(String, String)>;
    /// The Deployments whose ready pods may have changed after `generation` (0, or a
    /// generation this returned before), and the generation to ask from next. `None` when the
    /// view cannot tell: every Deployment is read again at every traffic tick.
    fn ready_changes_since(&self, generation: u64) -> (u64, Option<Vec<(String, String)>>) {
        (generation, None)
    }
}

/// One request a sink received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    /// The HTTP status it answered.
    pub status: u16,
    pub body: serde_json::Value,
}

/// The requests a sink received, in order.
#[derive(Clone, Default)]
pub(crate) struct Log {
    inner: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Log {
    pub(crate) fn push(&self, status: u16, body: serde_json::Value) {
        let entry = Received {
            at: Instant::now(),
            status,
            body,
        };
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
    }

    pub(crate) fn all(&self) -> Vec<Received> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A request body as recorded: its JSON, or the raw text as a JSON string when it is not JSON.
pub(crate) fn recorded_body(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

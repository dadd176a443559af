//! The simulated apps behind one HTTP server: each Deployment's health endpoint and smoke routes
//! (answered by one ready pod's version, round-robin as a Service balances), and `/metrics` with
//! every app's `http_requests_total` in the Prometheus text format.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio_util::sync::CancellationToken;

use super::ClusterView;
use super::fault::{self, Switch};
use super::traffic::{METRIC, SimClock, TICK, Traffic};
use crate::sim::behaviour::{Behaviour, Behaviours};

/// The Prometheus text exposition format, version 0.0.4.
pub const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The simulated apps: `/apps/{namespace}/{name}/health`, `/apps/{namespace}/{name}/{path}`
/// (smoke routes) and `/metrics` (`http_requests_total{namespace,deployment,version,code}`),
/// with request and error counters that grow with each version's rps and ready pods.
#[derive(Clone)]
pub struct Apps {
    traffic: Traffic,
    behaviours: Behaviours,
    cluster: Arc<dyn ClusterView>,
    /// Next pod to answer, per Deployment.
    turns: Arc<Mutex<HashMap<(String, String), u64>>>,
}

impl Apps {
    pub fn new(behaviours: Behaviours, cluster: Arc<dyn ClusterView>) -> Self {
        let traffic = Traffic::new(behaviours.clone(), cluster.clone(), SimClock::new());
        Apps {
            traffic,
            behaviours,
            cluster,
            turns: Arc::default(),
        }
    }

    /// Starts the counters ticking and serves every app on one ephemeral loopback port until
    /// `shutdown`.
    pub async fn start(&self, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
        let traffic = self.traffic.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => traffic.tick(),
                }
            }
        });
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/apps/{namespace}/{name}/health", any(health))
            .route("/apps/{namespace}/{name}/", any(root_route))
            .route("/apps/{namespace}/{name}/{*path}", any(smoke_route))
            .with_state(self.clone());
        fault::serve(router, Switch::default(), shutdown).await
    }

    /// The counters, shared with the query services.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The clock every simulated timestamp follows.
    pub fn clock(&self) -> SimClock {
        self.traffic.clock()
    }

    /// Requests and errors of a Deployment, all versions, over the last `window`.
    pub fn counts(&self, namespace: &str, name: &str, window: Duration) -> (f64, f64) {
        self.traffic.counts(namespace, name, window)
    }

    /// Sets a Deployment's counters back to zero (a counter reset, as after pod restarts).
    pub fn reset_counters(&self, namespace: &str, name: &str) {
        self.traffic.reset(namespace, name);
    }

    /// The `/metrics` text: every series' counter, rounded down to whole requests as a real
    /// app's integer counters would read.
    pub fn exposition(&self) -> String {
        let mut out = format!(
            "# HELP {METRIC} HTTP requests served by the simulated apps, by status code.\n# TYPE {METRIC} counter\n"
        );
        for (key, successes, errors) in self.traffic.current() {
            for (code, value) in [("200", successes), ("500", errors)] {
                let _ = writeln!(
                    out,
                    "{METRIC}{{namespace=\"{}\",deployment=\"{}\",version=\"{}\",code=\"{code}\"}} {}",
                    escape(&key.namespace),
                    escape(&key.deployment),
                    escape(&key.version),
                    value.floor()
                );
            }
        }
        out
    }

    /// The version of the ready pod whose turn it is to answer, or `None` with no ready pod.
    fn pick(&self, namespace: &str, name: &str) -> Option<(String, Behaviour)> {
        let ready = self.cluster.ready_pods_by_version(namespace, name);
        let total: u64 = ready.iter().map(|(_, n)| u64::from(*n)).sum();
        if total == 0 {
            return None;
        }
        let turn = {
            let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            let next = turns
                .entry((namespace.to_string(), name.to_string()))
                .or_default();
            let turn = *next % total;
            *next = next.wrapping_add(1);
            turn
        };
        let mut remaining = turn;
        for (version, pods) in ready {
            if remaining < u64::from(pods) {
                let behaviour = self.behaviours.lookup(namespace, name, &version);
                return Some((version, behaviour));
            }
            remaining -= u64::from(pods);
        }
        None
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(apps): State<Apps>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(EXPOSITION_CONTENT_TYPE),
        )],
        apps.exposition(),
    )
        .into_response()
}

fn no_endpoints(namespace: &str, name: &str) -> Response {
    // What a Service with no ready endpoints looks like through an ingress.
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("no endpoints available for service \"{namespace}/{name}\"\n"),
    )
        .into_response()
}

/// The runbook's health JSON. `"status"` reads `healthy` when the HTTP status is 200 and every
/// check is `ok`, `degraded` when the status is 200 but a check is not `ok`, and `unhealthy`
/// when the status is not 200.
pub fn health_body(version: &str, behaviour: &Behaviour) -> (StatusCode, String, &'static str) {
    let health = &behaviour.health;
    let code = health
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    if let Some(raw) = &health.body {
        return (code, raw.clone(), "text/plain; charset=utf-8");
    }
    let checks = health.checks.clone().unwrap_or_else(|| {
        BTreeMap::from([
            ("database".to_string(), "ok".to_string()),
            ("cache".to_string(), "ok".to_string()),
        ])
    });
    let status = if code != StatusCode::OK {
        "unhealthy"
    } else if checks.values().any(|v| v != "ok") {
        "degraded"
    } else {
        "healthy"
    };
    let body = serde_json::json!({
        "status": status,
        "version": health.version.clone().unwrap_or_else(|| version.to_string()),
        "checks": checks,
    });
    (code, body.to_string(), "application/json")
}

async fn health(
    State(apps): State<Apps>,
    method: Method,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let Some((version, behaviour)) = apps.pick(&namespace, &name) else {
        return no_endpoints(&namespace, &name);
    };
    if let Some(delay) = behaviour.health.delay {
        tokio::time::sleep(delay).await;
    }
    let (code, body, content_type) = health_body(&version, &behaviour);
    let body = if method == Method::HEAD {
        String::new()
    } else {
        body
    };
    (code, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn root_route(
    state: State<Apps>,
    method: Method,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    route(state, method, namespace, name, "/".to_string())
}

async fn smoke_route(
    state: State<Apps>,
    method: Method,
    Path((namespace, name, path)): Path<(String, String, String)>,
) -> Response {
    route(state, method, namespace, name, format!("/{path}"))
}

fn route(
    State(apps): State<Apps>,
    method: Method,
    namespace: String,
    name: String,
    path: String,
) -> Response {
    let Some((version, behaviour)) = apps.pick(&namespace, &name) else {
        return no_endpoints(&namespace, &name);
    };
    let status = behaviour.routes.get(&path).copied().unwrap_or(200);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let body = if method == Method::HEAD {
        String::new()
    } else {
        format!(
            "{} {} from {namespace}/{name} {version}\n",
            code.as_u16(),
            path
        )
    };
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        [("x-app-version", version)],
        body,
    )
        .into_response()
}

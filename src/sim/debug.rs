//! The debug API of `simulate --serve`: what the benchmark (`bench`) reads from and plays into a
//! served simulation. Simulation-only; it never exists beside a real cluster.
//!
//! - `GET /debug/state`: API requests by "VERB resource", Prometheus queries answered, how
//!   many Deployments are rolled out, and the timestamped records (rollback patches, first
//!   `CrashLoopBackOff` per version, PagerDuty triggers), every time in milliseconds since the
//!   serve started (`now_ms` is the answer's own time, `unix_ms` the same moment on the wall
//!   clock, to line the records up with a daemon's log).
//! - `POST /debug/script`: a JSON list of script events (the scenario format, `at` ignored), played at
//!   once; answers `{"at_ms": …}`, the time they were played.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::runner::Simulation;
use super::scenario::ScriptEvent;

#[derive(Clone)]
struct Debug {
    sim: Arc<Simulation>,
    origin: Instant,
}

impl Debug {
    fn ms(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.origin).as_secs_f64() * 1000.0
    }
}

/// Serves the debug API on an ephemeral loopback port until `shutdown`.
pub async fn start(
    sim: Arc<Simulation>,
    origin: Instant,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/debug/state", get(state))
        .route("/debug/script", post(script))
        .with_state(Debug { sim, origin });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(addr)
}

async fn state(State(d): State<Debug>) -> Response {
    let sim = &d.sim;
    let changes: Vec<Value> = sim
        .cluster
        .template_changes()
        .iter()
        .map(|c| json!({"at_ms": d.ms(c.at), "deployment": format!("{}/{}", c.namespace, c.name), "user_agent": c.user_agent}))
        .collect();
    let crashloops: Vec<Value> = sim
        .cluster
        .crashloops()
        .into_iter()
        .map(|((ns, name, version), t)| json!({"at_ms": d.ms(t), "deployment": format!("{ns}/{name}"), "version": version}))
        .collect();
    let pages: Vec<Value> = sim
        .pagerduty
        .accepted()
        .iter()
        .filter(|r| r.body["event_action"] == "trigger")
        .map(|r| json!({"at_ms": d.ms(r.at), "dedup_key": r.body["dedup_key"]}))
        .collect();
    let (rolled_out, deployments) = sim.cluster.rolled_out();
    let body = json!({
        "now_ms": d.ms(Instant::now()),
        "unix_ms": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |t| t.as_secs_f64() * 1000.0),
        "requests": sim.cluster.request_counts(),
        "prometheus_queries": sim.prometheus.queries(),
        "deployments": deployments,
        "rolled_out": rolled_out,
        "template_changes": changes,
        "crashloops": crashloops,
        "pages": pages,
    });
    axum::Json(body).into_response()
}

async fn script(State(d): State<Debug>, body: axum::body::Bytes) -> Response {
    let events: Vec<ScriptEvent> = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let at = Instant::now();
    for e in &events {
        d.sim.play(&e.action);
    }
    axum::Json(json!({"at_ms": d.ms(at)})).into_response()
}

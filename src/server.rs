//! The daemon's own HTTP endpoints: `/metrics` (Prometheus text format), `/healthz` (the
//! process answers), `/readyz` (the initial watch sync is done and the daemon is not
//! draining), the status page (`/`) and `/api/v1/rollouts` (the rollouts it watches, as
//! `status -o json` shows them), `/api/v1/findings` (the start-up checks). One small server, serving until its `CancellationToken` is
//! cancelled. Every route is read-only.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::Registry;
use tokio_util::sync::CancellationToken;

use crate::daemon::Status;

/// The server's listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the HTTP server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What the endpoints read.
#[derive(Clone)]
pub struct Endpoints {
    pub registry: Registry,
    pub status: Status,
    /// Cancelled when shutdown begins: `/readyz` turns false.
    pub draining: CancellationToken,
}

impl Endpoints {
    /// The routes, without a listener (tests call it directly).
    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/", get(crate::status::page::page))
            .route("/status", get(crate::status::page::page))
            .route("/api/v1/rollouts", get(rollouts))
            .route("/api/v1/findings", get(findings))
            .with_state(self)
    }

    fn ready(&self) -> bool {
        self.status.ready() && !self.draining.is_cancelled()
    }
}

/// A bound listener: binding is separate so a bad address stops start-up before anything runs.
pub struct Server {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Server {
    pub async fn bind(addr: SocketAddr) -> Result<Server, ServerError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let addr = listener.local_addr().unwrap_or(addr);
        Ok(Server { listener, addr })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`.
    pub async fn serve(
        self,
        endpoints: Endpoints,
        shutdown: CancellationToken,
    ) -> Result<(), ServerError> {
        let addr = self.addr;
        axum::serve(self.listener, endpoints.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(|source| ServerError::Serve { addr, source })
    }
}

async fn metrics(State(e): State<Endpoints>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::telemetry::encode(&e.registry),
    )
}

async fn rollouts(State(e): State<Endpoints>) -> axum::Json<crate::status::Report> {
    axum::Json(e.status.board().report(jiff::Timestamp::now()))
}

/// The start-up checks' findings (`deploy-watchdog doctor -o json` in shape); empty until
/// they are done.
async fn findings(State(e): State<Endpoints>) -> axum::Json<Vec<crate::doctor::Finding>> {
    axum::Json(e.status.board().findings())
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(e): State<Endpoints>) -> impl IntoResponse {
    if e.ready() {
        (StatusCode::OK, "ready\n")
    } else if e.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "initial sync not complete\n",
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    async fn get(server: SocketAddr, path: &str) -> (u16, String) {
        let r = crate::probes::http_client()
            .get(format!("http://{server}{path}"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    #[tokio::test]
    async fn readyz_follows_the_sync_and_the_drain_and_metrics_are_text() {
        let registry = Registry::new();
        let metrics = crate::telemetry::Metrics::register(&registry).unwrap();
        metrics.detected();
        let status = Status::default();
        let draining = CancellationToken::new();
        let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.serve(
            Endpoints {
                registry,
                status: status.clone(),
                draining: draining.clone(),
            },
            shutdown.clone(),
        ));

        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        status.set_ready();
        assert_eq!(get(addr, "/readyz").await.0, 200);
        draining.cancel();
        assert_eq!(get(addr, "/readyz").await, (503, "draining\n".into()));
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("deploy_watchdog_rollouts_detected_total 1"));

        shutdown.cancel();
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_taken_port_is_a_bind_error_naming_the_address() {
        let first = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let err = Server::bind(first.local_addr()).await.err().unwrap();
        assert!(err.to_string().contains(&first.local_addr().to_string()));
    }
}

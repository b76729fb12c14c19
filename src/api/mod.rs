//! The HTTP surface. For now: `/healthz` (alive), `/readyz` (database and, when this
//! process ingests, the broker reachable) and `/metrics` (Prometheus). The `/api/v1`
//! routes arrive with their issue.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::observability::Metrics;
use crate::shutdown::Shutdown;
use crate::store::HealthCheck;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("http server failed: {0}")]
    Serve(#[source] std::io::Error),
}

#[derive(Clone)]
pub struct ApiState {
    /// `/readyz`'s own small pool ([`Store::health_check`](crate::store::Store::health_check)),
    /// never the store's, so probes cannot starve ingest of connections.
    pub health: HealthCheck,
    pub metrics: Arc<Metrics>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// A bound listener, so callers (tests) learn the port before serving.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
}

impl HttpServer {
    pub async fn bind(addr: SocketAddr) -> Result<HttpServer, ApiError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError::Bind { addr, source })?;
        Ok(HttpServer { listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub async fn serve(self, state: ApiState, mut shutdown: Shutdown) -> Result<(), ApiError> {
        tracing::info!(addr = %self.local_addr(), "http listening");
        axum::serve(self.listener, router(state))
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
            .map_err(ApiError::Serve)
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<ApiState>) -> Response {
    // The pool's acquire timeout bounds the wait for a connection; this bounds the whole
    // round trip (a server that accepts and never answers).
    let database =
        tokio::time::timeout(crate::store::HEALTH_ACQUIRE_TIMEOUT, state.health.ping()).await;
    let database_ok = matches!(database, Ok(Ok(())));
    let broker = state.metrics.mqtt_ready();
    let ingest_failure = state.metrics.ingest_failure();
    let body = serde_json::json!({
        "database": if database_ok { "ok" } else { "unavailable" },
        "broker": match broker { None => "not used", Some(true) => "ok", Some(false) => "unavailable" },
        "ingest": match &ingest_failure { None => "ok".to_string(), Some(why) => format!("writes failing: {why}") },
    });
    let status = if database_ok && broker != Some(false) && ingest_failure.is_none() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

//! Operations endpoints: `/healthz` (alive), `/readyz` (database and, when this process
//! ingests, the broker reachable; ingest's writes not failing) and `/metrics` (Prometheus).
//! Their answers are for probes and scrapers, not problem+json.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::ApiState;

pub fn router() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// `/readyz`'s body: each dependency's state in words.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub database: &'static str,
    pub broker: &'static str,
    pub ingest: String,
}

async fn readyz(State(state): State<ApiState>) -> Response {
    // The pool's acquire timeout bounds the wait for a connection; this bounds the whole
    // round trip (a server that accepts and never answers).
    let database =
        tokio::time::timeout(crate::store::HEALTH_ACQUIRE_TIMEOUT, state.health.ping()).await;
    let database_ok = matches!(database, Ok(Ok(())));
    let broker = state.metrics.mqtt_ready();
    let ingest_failure = state.metrics.ingest_failure();
    let body = Readiness {
        database: if database_ok { "ok" } else { "unavailable" },
        broker: match broker {
            None => "not used",
            Some(true) => "ok",
            Some(false) => "unavailable",
        },
        ingest: match &ingest_failure {
            None => "ok".to_string(),
            Some(why) => format!("writes failing: {why}"),
        },
    };
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

//! The OpenAPI document of `/api/v1`, served at `/api/openapi.json`: made at start from
//! the handlers' `#[utoipa::path]` annotations and the types they take and give (never
//! written by hand), with the one security scheme every keyed route names.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

use super::ApiState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "forewarn",
        description = "Predictive field service: devices and their risk, tickets, technicians, \
                       customers, models and KPIs. Every call presents an API key \
                       (`Authorization: Bearer fwk_…`); errors are application/problem+json.",
    ),
    components(schemas(super::problem::Problem)),
    modifiers(&ApiKey),
    tags(
        (name = "devices", description = "The fleet, its risk, telemetry, events and scores"),
        (name = "tickets", description = "Service tickets and their life"),
        (name = "technicians", description = "The roster, unavailability, day routes"),
        (name = "customers"), (name = "replies", description = "Customers' replies: the queue"),
        (name = "incidents"), (name = "outreach", description = "Messages to customers"),
        (name = "models", description = "The model registry"),
        (name = "dead letters", description = "What ingest refused"),
        (name = "kpis", description = "Service KPIs"),
        (name = "stream", description = "Live changes (server-sent events)"),
    )
)]
struct Document;

/// The `api_key` bearer scheme.
struct ApiKey;

impl Modify for ApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The document the routes' annotations are added to.
pub fn base() -> utoipa::openapi::OpenApi {
    Document::openapi()
}

/// `/api/openapi.json`, open to anyone (it holds no data).
pub fn router(document: utoipa::openapi::OpenApi) -> Router<ApiState> {
    let document = Arc::new(document);
    Router::new().route(
        "/api/openapi.json",
        get(move |State(_): State<ApiState>| {
            let document = Arc::clone(&document);
            async move { Json(document.as_ref().clone()) }
        }),
    )
}

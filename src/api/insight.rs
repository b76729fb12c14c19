//! `/api/v1/models`, `/dead-letters`, `/kpis`: the model registry (cards, activation and
//! rollback — admin only), what ingest refused and why, and the service KPIs.

use axum::Json;
use axum::extract::{Extension, State};
use chrono::Duration;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Role};
use super::params::{self, Body, Items, Page, Params, PathOf};
use super::problem::{HttpError, Refusals};
use super::{ApiState, fleet_range};
use crate::store::{DeadLetterItem, Kpis, ModelCard, ModelItem, ReasonCount};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(models))
        .routes(routes!(card))
        .routes(routes!(activate))
        .routes(routes!(rollback))
        .routes(routes!(dead_letters))
        .routes(routes!(reasons))
        .routes(routes!(kpis))
}

/// Who reads models, dead letters and KPIs.
const READERS: [Role; 3] = [Role::Admin, Role::Dispatcher, Role::Integration];

/// Models, newest first.
#[utoipa::path(get, path = "/models", tag = "models",
    responses((status = 200, body = Items<ModelItem>), Refusals),
    security(("api_key" = [])))]
async fn models(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Items<ModelItem>>, HttpError> {
    caller.allow(&READERS, "read models")?;
    Ok(Json(Items {
        items: state.store.model_items(None).await?,
    }))
}

/// `version`, `kind/component` of a model path, checked.
fn model_of(version: &str, kind: &str, component: &str) -> Result<(String, String), HttpError> {
    let version = params::text("version", version, 128)?;
    let word = |field: &str, text: &str| {
        if !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            Ok(())
        } else {
            Err(HttpError::rejected(field, "1-64 characters of [a-z0-9_]"))
        }
    };
    word("kind", kind)?;
    word("component", component)?;
    Ok((version, format!("{kind}/{component}")))
}

async fn card_of(state: &ApiState, version: &str, mode: &str) -> Result<ModelCard, HttpError> {
    state
        .store
        .model_card(version, mode)
        .await?
        .ok_or_else(|| HttpError::NotFound {
            detail: format!("no model {version} of {mode}"),
        })
}

/// A model's card: how it was chosen and judged, and its mode's promotions.
#[utoipa::path(get, path = "/models/{version}/{kind}/{component}", tag = "models",
    params(("version" = String, Path), ("kind" = String, Path), ("component" = String, Path)),
    responses((status = 200, body = ModelCard), Refusals),
    security(("api_key" = [])))]
async fn card(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf((version, kind, component)): PathOf<(String, String, String)>,
) -> Result<Json<ModelCard>, HttpError> {
    caller.allow(&READERS, "read models")?;
    let (version, mode) = model_of(&version, &kind, &component)?;
    Ok(Json(card_of(&state, &version, &mode).await?))
}

/// Makes a model its failure mode's active one (live scoring uses it from its next cycle).
#[utoipa::path(post, path = "/models/{version}/{kind}/{component}/activate", tag = "models",
    params(("version" = String, Path), ("kind" = String, Path), ("component" = String, Path)),
    responses((status = 200, body = ModelCard), Refusals),
    security(("api_key" = [])))]
async fn activate(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf((version, kind, component)): PathOf<(String, String, String)>,
) -> Result<Json<ModelCard>, HttpError> {
    caller.allow(&[Role::Admin], "activate models")?;
    let (version, mode) = model_of(&version, &kind, &component)?;
    card_of(&state, &version, &mode).await?;
    state
        .store
        .promote_model(
            &version,
            &mode,
            &format!("activated by {}", caller.actor()),
            &serde_json::json!({}),
        )
        .await?;
    Ok(Json(card_of(&state, &version, &mode).await?))
}

/// A failure mode to roll back.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// `kind/component`.
    failure_mode: String,
}

/// Makes the model that was active before the current one active again.
#[utoipa::path(post, path = "/models/rollback", tag = "models", request_body = Rollback,
    responses((status = 200, body = ModelCard), Refusals),
    security(("api_key" = [])))]
async fn rollback(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<Rollback>,
) -> Result<Json<ModelCard>, HttpError> {
    caller.allow(&[Role::Admin], "roll models back")?;
    let Some((kind, component)) = body.failure_mode.split_once('/') else {
        return Err(HttpError::rejected("failure_mode", "kind/component"));
    };
    let (_, mode) = model_of("-", kind, component)
        .map_err(|_| HttpError::rejected("failure_mode", "kind/component of [a-z0-9_]"))?;
    let Some(previous) = state.store.previous_active_model(&mode).await? else {
        return Err(HttpError::Conflict {
            detail: format!("{mode} has no earlier active model to go back to"),
        });
    };
    state
        .store
        .promote_model(
            &previous,
            &mode,
            &format!("rolled back by {}", caller.actor()),
            &serde_json::json!({}),
        )
        .await?;
    Ok(Json(card_of(&state, &previous, &mode).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLettersQuery {
    /// A reason (`bad_json`, `unknown_metric`…).
    reason: Option<String>,
    /// A device id named in the topic.
    device: Option<String>,
    /// Received at or after (RFC 3339; default: 7 days before `to`).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Received before (default: now).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    cursor: Option<String>,
}

fn received_range(
    query_from: Option<&str>,
    query_to: Option<&str>,
) -> Result<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>), HttpError> {
    // Dead letters are stamped on receipt: the wall clock.
    params::range(
        query_from,
        query_to,
        chrono::Utc::now(),
        Duration::days(7),
        Duration::days(400),
    )
}

/// What ingest refused, newest first, with why.
#[utoipa::path(get, path = "/dead-letters", tag = "dead letters", params(DeadLettersQuery),
    responses((status = 200, body = Page<DeadLetterItem>), Refusals),
    security(("api_key" = [])))]
async fn dead_letters(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<DeadLettersQuery>,
) -> Result<Json<Page<DeadLetterItem>>, HttpError> {
    caller.allow(&READERS, "read dead letters")?;
    let (from, to) = received_range(query.from.as_deref(), query.to.as_deref())?;
    let reason = params::optional_text("reason", query.reason.as_deref(), 64)?;
    let device = match query.device.as_deref().filter(|d| !d.is_empty()) {
        Some(device) => Some(params::device_id("device", device)?),
        None => None,
    };
    let limit = params::limit(query.limit.as_deref())?;
    let before = params::id_cursor(query.cursor.as_deref())?;
    let items = state
        .store
        .dead_letter_items(
            reason.as_deref(),
            device.as_deref(),
            from,
            to,
            before,
            limit,
        )
        .await?;
    Ok(Json(Page::of(items, limit, |d| d.id.to_string())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeriodQuery {
    /// Start (RFC 3339; default: 30 days before `to`, 7 for dead letters).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// End, exclusive (default: now).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
}

/// Dead letters per reason, most first.
#[utoipa::path(get, path = "/dead-letters/reasons", tag = "dead letters", params(PeriodQuery),
    responses((status = 200, body = Items<ReasonCount>), Refusals),
    security(("api_key" = [])))]
async fn reasons(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<PeriodQuery>,
) -> Result<Json<Items<ReasonCount>>, HttpError> {
    caller.allow(&READERS, "read dead letters")?;
    let (from, to) = received_range(query.from.as_deref(), query.to.as_deref())?;
    Ok(Json(Items {
        items: state.store.dead_letter_reasons(from, to).await?,
    }))
}

/// The service KPIs of a period (event time, as tickets are): proactive share and
/// precision, lead time, time to first contact and to resolution, first-time fixes,
/// customers' answers.
#[utoipa::path(get, path = "/kpis", tag = "kpis", params(PeriodQuery),
    responses((status = 200, body = Kpis), Refusals),
    security(("api_key" = [])))]
async fn kpis(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<PeriodQuery>,
) -> Result<Json<Kpis>, HttpError> {
    caller.allow(&READERS, "read KPIs")?;
    let (from, to) = fleet_range(
        &state,
        query.from.as_deref(),
        query.to.as_deref(),
        Duration::days(30),
        Duration::days(400),
    )
    .await?;
    Ok(Json(state.store.kpis(from, to).await?))
}

//! `/api/v1/devices`: the fleet-risk list, a device's detail, its registration, its
//! telemetry in time buckets, events and scores over time. A technician's key sees the
//! devices of their jobs only; any other answers 404.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Role};
use super::params::{self, Body, Page, Params, PathOf};
use super::problem::{HttpError, Refusals};
use super::{ApiState, fleet_range};
use crate::store::{
    Bucket, DeviceCursor, DeviceFilter, DeviceItem, DevicePut, DeviceSort, DeviceWritten,
    EventItem, ModeRisk, PredictionItem, TelemetrySource, TicketFilter, TicketItem,
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(detail, put))
        .routes(routes!(telemetry))
        .routes(routes!(events))
        .routes(routes!(predictions))
}

/// A device with what is known of it now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub device: DeviceItem,
    pub installed_at: Option<DateTime<Utc>>,
    /// The metrics it has reported.
    pub metrics: Vec<String>,
    /// Its current score of each failure mode, highest first.
    pub risks: Vec<ModeRisk>,
    /// Its newest tickets (at most 20).
    pub tickets: Vec<TicketItem>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Device kind (`washer`).
    kind: Option<String>,
    model: Option<String>,
    /// A customer's external id.
    customer: Option<String>,
    /// Only devices whose highest current risk is at least this.
    #[param(value_type = Option<f64>, minimum = 0, maximum = 1)]
    min_risk: Option<String>,
    /// External ids starting with this.
    q: Option<String>,
    /// `risk` (highest first, the default), `external_id` or `last_seen` (newest first).
    #[param(value_type = Option<String>, pattern = "^(risk|external_id|last_seen)$")]
    sort: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The fleet, riskiest first.
#[utoipa::path(get, path = "/devices", tag = "devices", params(ListQuery),
    responses((status = 200, body = Page<DeviceItem>), Refusals),
    security(("api_key" = [])))]
async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<ListQuery>,
) -> Result<Json<Page<DeviceItem>>, HttpError> {
    caller.allow(&Role::ALL, "read devices")?;
    let sort = match params::one_of(
        "sort",
        query.sort.as_deref(),
        &["risk", "external_id", "last_seen"],
    )? {
        Some("external_id") => DeviceSort::ExternalId,
        Some("last_seen") => DeviceSort::LastSeen,
        _ => DeviceSort::Risk,
    };
    let limit = params::limit(query.limit.as_deref())?;
    let cursor = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => Some(
            DeviceCursor::decode(sort, text)
                .ok_or_else(|| HttpError::rejected("cursor", "not a cursor of this sort"))?,
        ),
        None => None,
    };
    let filter = DeviceFilter {
        kind: short("kind", query.kind.as_deref())?,
        model: short("model", query.model.as_deref())?,
        customer: short("customer", query.customer.as_deref())?,
        min_risk: params::number("min_risk", query.min_risk.as_deref(), 0.0, 1.0)?,
        prefix: short("q", query.q.as_deref())?,
        technician_id: caller.technician_id,
        external_id: None,
    };
    let items = state
        .store
        .device_items(&filter, sort, cursor.as_ref(), limit)
        .await?;
    Ok(Json(Page::of(items, limit, |item| {
        DeviceCursor::after(sort, item).encode()
    })))
}

/// An optional filter value of at most 64 characters.
fn short(field: &str, value: Option<&str>) -> Result<Option<String>, HttpError> {
    params::optional_text(field, value, 64)
}

/// The device, or 404 (also for a technician's key and a device not of their jobs).
pub(super) async fn visible_device(
    state: &ApiState,
    caller: &Caller,
    external_id: &str,
) -> Result<DeviceItem, HttpError> {
    let external_id = params::device_id("external_id", external_id)?;
    let filter = DeviceFilter {
        technician_id: caller.technician_id,
        external_id: Some(external_id.clone()),
        ..DeviceFilter::default()
    };
    state
        .store
        .device_items(&filter, DeviceSort::ExternalId, None, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| HttpError::NotFound {
            detail: format!("no device {external_id:?}"),
        })
}

/// The id of a device the caller may see, or 404 (the cheap form of [`visible_device`]).
pub(super) async fn visible_device_id(
    state: &ApiState,
    caller: &Caller,
    external_id: &str,
) -> Result<i32, HttpError> {
    let external_id = params::device_id("external_id", external_id)?;
    state
        .store
        .visible_device_id(&external_id, caller.technician_id)
        .await?
        .ok_or_else(|| HttpError::NotFound {
            detail: format!("no device {external_id:?}"),
        })
}

/// A device with its current risks, metrics and newest tickets.
#[utoipa::path(get, path = "/devices/{external_id}", tag = "devices",
    params(("external_id" = String, Path, description = "The device's id")),
    responses((status = 200, body = DeviceDetail), Refusals),
    security(("api_key" = [])))]
async fn detail(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
) -> Result<Json<DeviceDetail>, HttpError> {
    caller.allow(&Role::ALL, "read devices")?;
    let device = visible_device(&state, &caller, &external_id).await?;
    let tickets = state
        .store
        .ticket_items(
            &TicketFilter {
                device: Some(device.external_id.clone()),
                technician_id: caller.technician_id,
                ..TicketFilter::default()
            },
            None,
            20,
        )
        .await?
        .into_iter()
        .take(20)
        .collect();
    Ok(Json(DeviceDetail {
        installed_at: device.installed_at,
        metrics: state.store.device_metrics(device.id).await?,
        risks: state.store.device_risks(device.id).await?,
        tickets,
        device,
    }))
}

/// A device as registered through the API.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceBody {
    /// `washer`, `car`, `camera`…: 1-32 characters of `[a-z0-9_]`.
    kind: String,
    model: Option<String>,
    /// A customer's external id (must exist).
    customer: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    installed_at: Option<DateTime<Utc>>,
}

/// Registers a device, or replaces its registry facts (its data stays).
#[utoipa::path(put, path = "/devices/{external_id}", tag = "devices",
    params(("external_id" = String, Path, description = "The device's id")),
    request_body = DeviceBody,
    responses((status = 201, body = DeviceItem, description = "Registered"),
              (status = 200, body = DeviceItem, description = "Updated"), Refusals),
    security(("api_key" = [])))]
async fn put(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
    Body(body): Body<DeviceBody>,
) -> Result<(StatusCode, Json<DeviceItem>), HttpError> {
    caller.allow(&[Role::Admin, Role::Integration], "register devices")?;
    let external_id = params::device_id("external_id", &external_id)?;
    let kind_ok = !body.kind.is_empty()
        && body.kind.len() <= 32
        && body
            .kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !kind_ok {
        return Err(HttpError::rejected("kind", "1-32 characters of [a-z0-9_]"));
    }
    let position = match (body.latitude, body.longitude) {
        (Some(latitude), Some(longitude)) => Some(params::coordinates(latitude, longitude)?),
        (None, None) => None,
        (None, Some(_)) => return Err(HttpError::rejected("latitude", "given with longitude")),
        (Some(_), None) => return Err(HttpError::rejected("longitude", "given with latitude")),
    };
    let installed_at = body
        .installed_at
        .map(|t| params::checked_time("installed_at", t))
        .transpose()?;
    let written = state
        .store
        .put_device(&DevicePut {
            external_id: external_id.clone(),
            kind: body.kind,
            model: params::optional_text("model", body.model.as_deref(), 64)?,
            customer: params::optional_text("customer", body.customer.as_deref(), 64)?,
            position,
            installed_at,
        })
        .await?;
    let status = match written {
        DeviceWritten::Created => StatusCode::CREATED,
        DeviceWritten::Updated => StatusCode::OK,
        DeviceWritten::NoSuchCustomer => {
            return Err(HttpError::rejected("customer", "no customer with this id"));
        }
    };
    let device = visible_device(&state, &caller, &external_id).await?;
    Ok((status, Json(device)))
}

/// Buckets a telemetry answer may hold.
const MAX_POINTS: i64 = 2_000;
/// The bucket chosen when none is asked: the smallest of these giving at most 500 points.
const BUCKETS: [i64; 9] = [
    60,
    300,
    900,
    3_600,
    3 * 3_600,
    6 * 3_600,
    86_400,
    7 * 86_400,
    28 * 86_400,
];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TelemetryQuery {
    /// The metric's name.
    metric: String,
    /// Start (RFC 3339; default: 7 days before `to`).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// End, exclusive (default: now).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    /// Bucket width in seconds, 60 to 2419200 (default: the smallest common width giving
    /// at most 500 buckets).
    #[param(value_type = Option<i64>, minimum = 60, maximum = 2419200)]
    bucket: Option<String>,
}

/// A metric of a device in time buckets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Telemetry {
    pub metric: String,
    pub bucket_seconds: i64,
    /// `telemetry_hourly` (whole-hour buckets) or `telemetry`.
    pub source: String,
    pub points: Vec<Bucket>,
}

/// A device's metric in time buckets: average, minimum, maximum, count.
#[utoipa::path(get, path = "/devices/{external_id}/telemetry", tag = "devices",
    params(("external_id" = String, Path, description = "The device's id"), TelemetryQuery),
    responses((status = 200, body = Telemetry), Refusals),
    security(("api_key" = [])))]
async fn telemetry(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
    Params(query): Params<TelemetryQuery>,
) -> Result<Json<Telemetry>, HttpError> {
    caller.allow(&Role::ALL, "read telemetry")?;
    let external_id = params::device_id("external_id", &external_id)?;
    let (from, to) = fleet_range(
        &state,
        query.from.as_deref(),
        query.to.as_deref(),
        Duration::days(7),
        Duration::days(400),
    )
    .await?;
    let span = (to - from).num_seconds().max(1);
    let bucket = match params::bounded("bucket", query.bucket.as_deref(), 60, 28 * 86_400)? {
        Some(bucket) => bucket,
        None => BUCKETS
            .into_iter()
            .find(|b| span / b <= 500)
            .unwrap_or(28 * 86_400),
    };
    if span / bucket > MAX_POINTS {
        return Err(HttpError::rejected(
            "bucket",
            format!("at most {MAX_POINTS} buckets: widen the bucket or narrow from/to"),
        ));
    }
    let source = if bucket % 3_600 == 0 {
        TelemetrySource::Hourly
    } else if span > 7 * 86_400 {
        return Err(HttpError::rejected(
            "bucket",
            "buckets shorter than whole hours read raw readings: at most 7 days",
        ));
    } else {
        TelemetrySource::Raw
    };
    let metric = params::text("metric", &query.metric, 64)?;
    let points = state
        .store
        .telemetry_buckets(
            &external_id,
            caller.technician_id,
            &metric,
            (from, to),
            bucket,
            source,
        )
        .await?;
    if points.is_empty() {
        // Nothing: no such device (404), no such metric (422), or no readings then.
        visible_device_id(&state, &caller, &external_id).await?;
        if state.store.metric_id(&metric).await?.is_none() {
            return Err(HttpError::rejected("metric", "no metric of this name"));
        }
    }
    Ok(Json(Telemetry {
        metric,
        bucket_seconds: bucket,
        source: match source {
            TelemetrySource::Hourly => "telemetry_hourly",
            TelemetrySource::Raw => "telemetry",
        }
        .to_string(),
        points,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// Only this failure mode (predictions).
    failure_mode: Option<String>,
    /// Start (RFC 3339; default: 30 days before `to`).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// End, exclusive (default: now).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    cursor: Option<String>,
}

/// `from`, `to`: at most 400 days apart, 30 days by default.
async fn range_of(
    state: &ApiState,
    query: &RangeQuery,
) -> Result<(DateTime<Utc>, DateTime<Utc>), HttpError> {
    fleet_range(
        state,
        query.from.as_deref(),
        query.to.as_deref(),
        Duration::days(30),
        Duration::days(400),
    )
    .await
}

/// A device's events, newest first.
#[utoipa::path(get, path = "/devices/{external_id}/events", tag = "devices",
    params(("external_id" = String, Path, description = "The device's id"), RangeQuery),
    responses((status = 200, body = Page<EventItem>), Refusals),
    security(("api_key" = [])))]
async fn events(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
    Params(query): Params<RangeQuery>,
) -> Result<Json<Page<EventItem>>, HttpError> {
    caller.allow(&Role::ALL, "read events")?;
    let device_id = visible_device_id(&state, &caller, &external_id).await?;
    let (from, to) = range_of(&state, &query).await?;
    let limit = params::limit(query.limit.as_deref())?;
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => Some(
            text.split_once('/')
                .and_then(|(micros, code)| {
                    let time = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
                    Some((time, code.to_string()))
                })
                .ok_or_else(|| HttpError::rejected("cursor", "not an events cursor"))?,
        ),
        None => None,
    };
    let items = state
        .store
        .device_event_items(device_id, from, to, after, limit)
        .await?;
    Ok(Json(Page::of(items, limit, |e| {
        format!("{}/{}", e.time.timestamp_micros(), e.code)
    })))
}

/// A device's scores over time, oldest first (up to 500 a page).
#[utoipa::path(get, path = "/devices/{external_id}/predictions", tag = "devices",
    params(("external_id" = String, Path, description = "The device's id"), RangeQuery),
    responses((status = 200, body = Page<PredictionItem>), Refusals),
    security(("api_key" = [])))]
async fn predictions(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
    Params(query): Params<RangeQuery>,
) -> Result<Json<Page<PredictionItem>>, HttpError> {
    caller.allow(&Role::ALL, "read predictions")?;
    let device_id = visible_device_id(&state, &caller, &external_id).await?;
    let (from, to) = range_of(&state, &query).await?;
    let limit = params::limit(query.limit.as_deref())?;
    let mode = params::optional_text("failure_mode", query.failure_mode.as_deref(), 64)?;
    let after = match query.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(text) => {
            let mut parts = text.splitn(3, '/');
            let parsed = (|| {
                let micros: i64 = parts.next()?.parse().ok()?;
                let version = parts.next()?.to_string();
                let mode = parts.next()?.to_string();
                Some((DateTime::from_timestamp_micros(micros)?, mode, version))
            })();
            Some(parsed.ok_or_else(|| HttpError::rejected("cursor", "not a predictions cursor"))?)
        }
        None => None,
    };
    let items = state
        .store
        .prediction_items(device_id, mode.as_deref(), from, to, after, limit)
        .await?;
    Ok(Json(Page::of(items, limit, |p| {
        format!(
            "{}/{}/{}",
            p.time.timestamp_micros(),
            p.model_version,
            p.failure_mode
        )
    })))
}

//! `/api/v1/technicians`: the roster (list, add, replace, deactivate), a technician's
//! unavailability (their overlapping visits are cancelled and planned again), and their
//! visits of a day as an ordered route. A technician's key reads only itself.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use chrono::{NaiveDate, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Role};
use super::params::{self, Body, Items, Params, PathOf};
use super::problem::{HttpError, Refusals};
use super::{ApiState, clock};
use crate::dispatch::plan::{Point, haversine_km};
use crate::store::{RouteStop, TechnicianItem};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(detail, replace, deactivate))
        .routes(routes!(unavailability))
        .routes(routes!(route))
}

/// Who may change the roster.
const ROSTER: [Role; 2] = [Role::Admin, Role::Dispatcher];

/// The technician, or 404 (also another one, for a technician's key).
async fn visible(
    state: &ApiState,
    caller: &Caller,
    external_id: &str,
) -> Result<(i32, String, TechnicianItem), HttpError> {
    let external_id = params::external_id("external_id", external_id)?;
    let not_found = || HttpError::NotFound {
        detail: format!("no technician {external_id:?}"),
    };
    let (id, timezone) = state
        .store
        .technician_ref(&external_id)
        .await?
        .ok_or_else(not_found)?;
    if caller.technician_id.is_some_and(|own| own != id) {
        return Err(not_found());
    }
    let item = state
        .store
        .technician_items(Some(&external_id))
        .await?
        .into_iter()
        .next()
        .ok_or_else(not_found)?;
    Ok((id, timezone, item))
}

/// Technicians.
#[utoipa::path(get, path = "/technicians", tag = "technicians",
    responses((status = 200, body = Items<TechnicianItem>), Refusals),
    security(("api_key" = [])))]
async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<Items<TechnicianItem>>, HttpError> {
    caller.allow(&Role::ALL, "read technicians")?;
    let mut items = state.store.technician_items(None).await?;
    if let Some(own) = caller.technician_id {
        let names = state.store.technician_names(&[own]).await?;
        let own = names.get(&own).map(|(e, _)| e.clone());
        items.retain(|t| Some(&t.external_id) == own.as_ref());
    }
    Ok(Json(Items { items }))
}

/// A technician.
#[utoipa::path(get, path = "/technicians/{external_id}", tag = "technicians",
    params(("external_id" = String, Path, description = "The technician's id")),
    responses((status = 200, body = TechnicianItem), Refusals),
    security(("api_key" = [])))]
async fn detail(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
) -> Result<Json<TechnicianItem>, HttpError> {
    caller.allow(&Role::ALL, "read technicians")?;
    Ok(Json(visible(&state, &caller, &external_id).await?.2))
}

/// A technician's facts, checked; their shift's start and end.
fn checked(item: &TechnicianItem) -> Result<(NaiveTime, NaiveTime), HttpError> {
    params::external_id("external_id", &item.external_id)?;
    params::text("name", &item.name, 200)?;
    params::optional_text("email", item.email.as_deref(), 254)?;
    params::optional_text("phone", item.phone.as_deref(), 32)?;
    params::optional_text("home_city", item.home_city.as_deref(), 100)?;
    params::coordinates(item.home_latitude, item.home_longitude).map_err(|e| match e {
        HttpError::Rejected { field, detail } => {
            HttpError::rejected(&format!("home_{field}"), detail)
        }
        other => other,
    })?;
    if item.skills.len() > 100
        || item.skills.iter().any(|s| {
            s.split_once('/')
                .is_none_or(|(kind, component)| kind.is_empty() || component.is_empty())
                || s.len() > 64
        })
    {
        return Err(HttpError::rejected(
            "skills",
            "at most 100 of `kind/component` or `kind/*`",
        ));
    }
    if item.timezone.parse::<chrono_tz::Tz>().is_err() {
        return Err(HttpError::rejected(
            "timezone",
            "an IANA time zone (Europe/Warsaw)",
        ));
    }
    if item.shift_days.is_empty()
        || item.shift_days.len() > 7
        || item.shift_days.iter().any(|d| !(1..=7).contains(d))
    {
        return Err(HttpError::rejected(
            "shift_days",
            "ISO weekdays 1 (Monday) to 7",
        ));
    }
    let time = |field: &str, text: &str| {
        NaiveTime::parse_from_str(text, "%H:%M")
            .map_err(|_| HttpError::rejected(field, "a local time HH:MM"))
    };
    let (start, end) = (
        time("shift_start", &item.shift_start)?,
        time("shift_end", &item.shift_end)?,
    );
    if start >= end {
        return Err(HttpError::rejected("shift_end", "after shift_start"));
    }
    if !(item.max_travel_km.is_finite() && (1.0..=2_000.0).contains(&item.max_travel_km)) {
        return Err(HttpError::rejected(
            "max_travel_km",
            "a number from 1 to 2000",
        ));
    }
    Ok((start, end))
}

/// Adds a technician.
#[utoipa::path(post, path = "/technicians", tag = "technicians", request_body = TechnicianItem,
    responses((status = 201, body = TechnicianItem), Refusals),
    security(("api_key" = [])))]
async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Body(item): Body<TechnicianItem>,
) -> Result<(StatusCode, Json<TechnicianItem>), HttpError> {
    caller.allow(&ROSTER, "change the roster")?;
    let (start, end) = checked(&item)?;
    if !state.store.create_technician(&item, start, end).await? {
        return Err(HttpError::Conflict {
            detail: format!("technician {:?} exists: PUT replaces it", item.external_id),
        });
    }
    let created = visible(&state, &caller, &item.external_id).await?.2;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Replaces a technician's facts (their shift, skills, home, range; their id stays).
#[utoipa::path(put, path = "/technicians/{external_id}", tag = "technicians",
    params(("external_id" = String, Path, description = "The technician's id")),
    request_body = TechnicianItem,
    responses((status = 200, body = TechnicianItem), Refusals),
    security(("api_key" = [])))]
async fn replace(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
    Body(item): Body<TechnicianItem>,
) -> Result<Json<TechnicianItem>, HttpError> {
    caller.allow(&ROSTER, "change the roster")?;
    let external_id = params::external_id("external_id", &external_id)?;
    if item.external_id != external_id {
        return Err(HttpError::rejected("external_id", "must be the path's"));
    }
    let (start, end) = checked(&item)?;
    if !state
        .store
        .replace_technician(&external_id, &item, start, end)
        .await?
    {
        return Err(HttpError::NotFound {
            detail: format!("no technician {external_id:?}"),
        });
    }
    Ok(Json(visible(&state, &caller, &external_id).await?.2))
}

/// Deactivates a technician: planning leaves them out from now (booked visits stay; mark
/// them unavailable to have those planned again).
#[utoipa::path(delete, path = "/technicians/{external_id}", tag = "technicians",
    params(("external_id" = String, Path, description = "The technician's id")),
    responses((status = 204, description = "Deactivated"), Refusals),
    security(("api_key" = [])))]
async fn deactivate(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
) -> Result<StatusCode, HttpError> {
    caller.allow(&ROSTER, "change the roster")?;
    let (_, _, mut item) = visible(&state, &caller, &external_id).await?;
    item.active = false;
    let (start, end) = checked(&item)?;
    state
        .store
        .replace_technician(&item.external_id, &item, start, end)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A time a technician is away.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unavailability {
    from: chrono::DateTime<chrono::Utc>,
    /// Absent: until further notice.
    to: Option<chrono::DateTime<chrono::Utc>>,
    /// Why (sick, training…), at most 200 characters.
    reason: String,
}

/// What marking a technician away did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Replanned {
    /// Tickets whose visits were cancelled and go back to planning.
    pub replanned: Vec<i64>,
}

/// Marks a technician away: their visits in that time are cancelled and planned again
/// (their customers hear of the new time).
#[utoipa::path(post, path = "/technicians/{external_id}/unavailability", tag = "technicians",
    params(("external_id" = String, Path, description = "The technician's id")),
    request_body = Unavailability,
    responses((status = 201, body = Replanned), Refusals),
    security(("api_key" = [])))]
async fn unavailability(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
    Body(body): Body<Unavailability>,
) -> Result<(StatusCode, Json<Replanned>), HttpError> {
    caller.allow(
        &[Role::Admin, Role::Dispatcher, Role::Technician],
        "mark technicians away",
    )?;
    let (id, _, _) = visible(&state, &caller, &external_id).await?;
    let from = params::checked_time("from", body.from)?;
    let to = body.to.map(|t| params::checked_time("to", t)).transpose()?;
    if to.is_some_and(|to| to <= from) {
        return Err(HttpError::rejected("to", "after from"));
    }
    let reason = params::text("reason", &body.reason, 200)?;
    let replanned = state
        .store
        .mark_unavailable(
            id,
            from.timestamp_micros(),
            to.map(|t| t.timestamp_micros()),
            &reason,
            clock(&state).await?,
            &caller.actor(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(Replanned { replanned })))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteQuery {
    /// The day in the technician's time zone (`YYYY-MM-DD`; default: today by the fleet's
    /// clock).
    #[param(value_type = Option<String>, format = Date)]
    date: Option<String>,
}

/// A place on a route.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Place {
    pub latitude: f64,
    pub longitude: f64,
}

/// A technician's day: visits in order, from home and back.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Route {
    pub technician: String,
    pub date: NaiveDate,
    pub timezone: String,
    pub home: Place,
    /// Straight-line kilometres from home through every visit with a location and back.
    pub travel_km: f64,
    pub stops: Vec<RouteStop>,
}

/// A technician's visits of a day, in order.
#[utoipa::path(get, path = "/technicians/{external_id}/route", tag = "technicians",
    params(("external_id" = String, Path, description = "The technician's id"), RouteQuery),
    responses((status = 200, body = Route), Refusals),
    security(("api_key" = [])))]
async fn route(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
    Params(query): Params<RouteQuery>,
) -> Result<Json<Route>, HttpError> {
    caller.allow(&Role::ALL, "read routes")?;
    let (id, timezone, item) = visible(&state, &caller, &external_id).await?;
    let zone: chrono_tz::Tz = timezone.parse().unwrap_or(chrono_tz::UTC);
    let date = match query.date.as_deref().filter(|d| !d.is_empty()) {
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .ok()
            .filter(|d| (1970..=2200).contains(&chrono::Datelike::year(d)))
            .ok_or_else(|| HttpError::rejected("date", "a day YYYY-MM-DD"))?,
        None => super::clock_time(&state)
            .await?
            .with_timezone(&zone)
            .date_naive(),
    };
    let start_of = |day: NaiveDate| {
        zone.from_local_datetime(&day.and_time(NaiveTime::MIN))
            .earliest()
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let (Some(from), Some(to)) = (start_of(date), date.succ_opt().and_then(start_of)) else {
        return Err(HttpError::rejected(
            "date",
            "a day of the technician's calendar",
        ));
    };
    let stops = state.store.route_stops(id, from, to).await?;
    let home = Point {
        latitude: item.home_latitude,
        longitude: item.home_longitude,
    };
    let mut travel_km = 0.0;
    let mut at = home;
    for stop in &stops {
        if let (Some(latitude), Some(longitude)) = (stop.latitude, stop.longitude) {
            let next = Point {
                latitude,
                longitude,
            };
            travel_km += haversine_km(at, next);
            at = next;
        }
    }
    travel_km += haversine_km(at, home);
    Ok(Json(Route {
        technician: item.external_id,
        date,
        timezone,
        home: Place {
            latitude: item.home_latitude,
            longitude: item.home_longitude,
        },
        travel_km,
        stops,
    }))
}

//! `/api/v1/tickets`: the list (filters, newest first, cursor pages), a ticket's detail
//! (audit, bookings, messages, replies), a customer's call opening a reactive ticket, and
//! the steps of a ticket's life through the dispatch rules: book by hand (a time the
//! planner's rules allow), en route, on site, resolve with an outcome, close, cancel.
//! A technician's key sees and moves only their own jobs (another's answers 404) and
//! cannot book, open or cancel.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Caller, Role};
use super::params::{self, Body, Items, Page, Params, PathOf};
use super::problem::{HttpError, Refusals};
use super::{ApiState, clock};
use crate::dispatch::manual::{HandBooked, SlotOption};
use crate::dispatch::{CustomerCall, customer_call};
use crate::store::{
    Opened, Outcome, TicketDetail, TicketFilter, TicketItem, Transition, Transitioned,
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(detail))
        .routes(routes!(options))
        .routes(routes!(book))
        .routes(routes!(transition))
}

use crate::store::{TICKET_KINDS as KINDS, TICKET_STATUSES as STATUSES};
/// Who may run the desk: open, book, cancel.
const DESK: [Role; 3] = [Role::Admin, Role::Dispatcher, Role::Integration];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated statuses (`open,booked`).
    status: Option<String>,
    /// `proactive`, `reactive` or `incident`.
    #[param(value_type = Option<String>, pattern = "^(proactive|reactive|incident)$")]
    kind: Option<String>,
    /// A technician's external id.
    technician: Option<String>,
    /// A device's external id.
    device: Option<String>,
    /// A customer's external id.
    customer: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 4)]
    priority: Option<String>,
    /// Opened at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<String>,
    /// Opened before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Tickets, newest first.
#[utoipa::path(get, path = "/tickets", tag = "tickets", params(ListQuery),
    responses((status = 200, body = Page<TicketItem>), Refusals),
    security(("api_key" = [])))]
async fn list(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<ListQuery>,
) -> Result<Json<Page<TicketItem>>, HttpError> {
    caller.allow(&Role::ALL, "read tickets")?;
    let from = params::time("from", query.from.as_deref())?;
    let to = params::time("to", query.to.as_deref())?;
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(HttpError::rejected("from", "must come before to"));
    }
    let filter = TicketFilter {
        statuses: params::many_of("status", query.status.as_deref(), &STATUSES)?,
        kind: params::one_of("kind", query.kind.as_deref(), &KINDS)?.map(str::to_string),
        technician: params::optional_text("technician", query.technician.as_deref(), 64)?,
        device: params::optional_text("device", query.device.as_deref(), 64)?,
        customer: params::optional_text("customer", query.customer.as_deref(), 64)?,
        priority: params::bounded("priority", query.priority.as_deref(), 1, 4)?
            .and_then(|p| i16::try_from(p).ok()),
        from,
        to,
        technician_id: caller.technician_id,
        id: None,
    };
    let limit = params::limit(query.limit.as_deref())?;
    let before = params::id_cursor(query.cursor.as_deref())?;
    let items = state.store.ticket_items(&filter, before, limit).await?;
    Ok(Json(Page::of(items, limit, |t| t.id.to_string())))
}

/// The ticket, or 404 (also another technician's, for a technician's key).
async fn visible_ticket(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<TicketDetail, HttpError> {
    let id = params::path_id("id", id)?;
    state
        .store
        .ticket_detail(id, caller.technician_id)
        .await?
        .ok_or_else(|| HttpError::NotFound {
            detail: format!("no ticket {id}"),
        })
}

/// A ticket with its audit, bookings, messages and replies.
#[utoipa::path(get, path = "/tickets/{id}", tag = "tickets",
    params(("id" = i64, Path, description = "The ticket's id")),
    responses((status = 200, body = TicketDetail), Refusals),
    security(("api_key" = [])))]
async fn detail(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(id): PathOf<String>,
) -> Result<Json<TicketDetail>, HttpError> {
    caller.allow(&Role::ALL, "read tickets")?;
    Ok(Json(visible_ticket(&state, &caller, &id).await?))
}

/// A customer's call.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicket {
    /// The device's external id.
    device: String,
    /// What failed, as `kind/component` (`washer/pump`) or only the component (`pump`);
    /// absent: `<kind>/unknown`.
    component: Option<String>,
    /// 1 (most urgent) to 4; default 2.
    #[schema(minimum = 1, maximum = 4)]
    priority: Option<i64>,
    /// What the customer said (1-2000 characters).
    note: String,
}

/// What a call did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Created {
    pub ticket_id: i64,
    /// Added to the device's open ticket of that failure mode instead of a new one.
    pub merged: bool,
}

/// Opens a reactive ticket for a customer's call (or adds the call to the device's open
/// ticket of that failure mode).
#[utoipa::path(post, path = "/tickets", tag = "tickets", request_body = NewTicket,
    responses((status = 201, body = Created, description = "Opened"),
              (status = 200, body = Created, description = "Added to the open ticket"),
              Refusals),
    security(("api_key" = [])))]
async fn create(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Body(body): Body<NewTicket>,
) -> Result<(StatusCode, Json<Created>), HttpError> {
    caller.allow(&DESK, "open tickets")?;
    let note = params::text("note", &body.note, 2_000)?;
    let priority = match body.priority {
        None => 2,
        Some(p @ 1..=4) => u8::try_from(p).unwrap_or(2),
        Some(_) => return Err(HttpError::rejected("priority", "an integer from 1 to 4")),
    };
    let external_id = params::device_id("device", &body.device)?;
    let Some(device) = state.store.device(&external_id).await? else {
        return Err(HttpError::rejected("device", "no device with this id"));
    };
    let component = params::optional_text("component", body.component.as_deref(), 64)?
        .unwrap_or_else(|| "unknown".to_string());
    let component = match component.split_once('/') {
        Some((kind, component)) if kind == device.kind => component.to_string(),
        Some(_) => {
            return Err(HttpError::rejected(
                "component",
                format!(
                    "the device is a {}: `{}/<component>` or `<component>`",
                    device.kind, device.kind
                ),
            ));
        }
        None => component,
    };
    if component.is_empty()
        || !component
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(HttpError::rejected("component", "characters of [a-z0-9_]"));
    }
    let opened = customer_call(
        &state.store,
        &CustomerCall {
            device_id: device.id,
            failure_mode: format!("{}/{component}", device.kind),
            at: clock(&state).await?,
            priority,
            actor: caller.actor(),
            note,
        },
    )
    .await?;
    let (status, ticket_id, merged) = match opened {
        Opened::Created { ticket_id } => (StatusCode::CREATED, ticket_id, false),
        Opened::Merged { ticket_id, .. } => (StatusCode::OK, ticket_id, true),
    };
    Ok((status, Json(Created { ticket_id, merged })))
}

/// A time a technician could take the ticket.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BookingOption {
    /// The technician's external id.
    pub technician: String,
    pub technician_name: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// Before the ticket is due.
    pub meets_due: bool,
}

async fn option_items(
    state: &ApiState,
    options: Vec<SlotOption>,
) -> Result<Vec<BookingOption>, HttpError> {
    let ids: Vec<i32> = options.iter().map(|o| o.technician_id).collect();
    let names = state.store.technician_names(&ids).await?;
    Ok(options
        .into_iter()
        .filter_map(|o| {
            let (technician, technician_name) = names.get(&o.technician_id)?.clone();
            Some(BookingOption {
                technician,
                technician_name,
                start: DateTime::from_timestamp_micros(o.start)?,
                end: DateTime::from_timestamp_micros(o.end)?,
                meets_due: o.meets_due,
            })
        })
        .collect())
}

fn refusal(refused: HandBooked) -> HttpError {
    HttpError::Conflict {
        detail: match refused {
            HandBooked::NotOpen => "the ticket is not open: only an open ticket is booked",
            HandBooked::NoSite => "the ticket's device has no location: nobody can be routed",
            HandBooked::Unfit(_) | HandBooked::Booked { .. } => "the time does not fit",
        }
        .to_string(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OptionsQuery {
    #[param(value_type = Option<i64>, minimum = 1, maximum = 20)]
    limit: Option<String>,
}

/// Times the planner would choose now for an open ticket, best first.
#[utoipa::path(get, path = "/tickets/{id}/options", tag = "tickets",
    params(("id" = i64, Path, description = "The ticket's id"), OptionsQuery),
    responses((status = 200, body = Items<BookingOption>), Refusals),
    security(("api_key" = [])))]
async fn options(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(id): PathOf<String>,
    Params(query): Params<OptionsQuery>,
) -> Result<Json<Items<BookingOption>>, HttpError> {
    caller.allow(&DESK, "book tickets")?;
    let ticket = visible_ticket(&state, &caller, &id).await?;
    let limit = params::bounded("limit", query.limit.as_deref(), 1, 20)?.unwrap_or(3);
    let found = state
        .dispatcher
        .booking_options(
            ticket.ticket.id,
            clock(&state).await?,
            usize::try_from(limit).unwrap_or(3),
        )
        .await
        .map_err(dispatch_error)?
        .map_err(refusal)?;
    Ok(Json(Items {
        items: option_items(&state, found).await?,
    }))
}

/// A time chosen for a ticket.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookRequest {
    /// The technician's external id.
    technician: String,
    /// The visit's start (on the planner's 15-minute grid).
    start: DateTime<Utc>,
}

/// Books an open ticket at a time the planner's rules allow now; the customer is told.
#[utoipa::path(post, path = "/tickets/{id}/book", tag = "tickets",
    params(("id" = i64, Path, description = "The ticket's id")),
    request_body = BookRequest,
    responses((status = 200, body = TicketDetail), Refusals),
    security(("api_key" = [])))]
async fn book(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(id): PathOf<String>,
    Body(body): Body<BookRequest>,
) -> Result<Json<TicketDetail>, HttpError> {
    caller.allow(&DESK, "book tickets")?;
    let ticket = visible_ticket(&state, &caller, &id).await?;
    let technician = params::external_id("technician", &body.technician)?;
    let Some((technician_id, _)) = state.store.technician_ref(&technician).await? else {
        return Err(HttpError::rejected(
            "technician",
            "no technician with this id",
        ));
    };
    let start = params::checked_time("start", body.start)?;
    let booked = state
        .dispatcher
        .book_by_hand(
            ticket.ticket.id,
            technician_id,
            start.timestamp_micros(),
            clock(&state).await?,
            &caller.actor(),
        )
        .await
        .map_err(dispatch_error)?;
    match booked {
        HandBooked::Booked { .. } => {}
        HandBooked::Unfit(fits) => {
            let times: Vec<String> = option_items(&state, fits)
                .await?
                .iter()
                .map(|o| format!("{} at {}", o.technician, o.start.to_rfc3339()))
                .collect();
            return Err(HttpError::Conflict {
                detail: format!(
                    "the time does not fit {technician} now (shift, skills, range, other visits); \
                     times that fit: {}",
                    if times.is_empty() {
                        "none".to_string()
                    } else {
                        times.join(", ")
                    }
                ),
            });
        }
        refused => return Err(refusal(refused)),
    }
    Ok(Json(visible_ticket(&state, &caller, &id).await?))
}

/// A step of a ticket's life.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    /// `en_route`, `on_site`, `resolved`, `closed` or `cancelled`.
    #[schema(pattern = "^(en_route|on_site|resolved|closed|cancelled)$")]
    to: String,
    /// Required to resolve: `fault_confirmed`, `no_fault_found` or `customer_declined`.
    outcome: Option<String>,
    /// What was found (required with `fault_confirmed` when the failure mode names no
    /// component, as a silence does).
    component: Option<String>,
    /// What was done (`replaced` by default).
    action: Option<String>,
    /// Why, for the audit (at most 500 characters).
    reason: Option<String>,
}

/// Moves a ticket one step: en route, on site, resolved (with its outcome, which writes
/// the labels of the next training), closed or cancelled.
#[utoipa::path(post, path = "/tickets/{id}/transitions", tag = "tickets",
    params(("id" = i64, Path, description = "The ticket's id")),
    request_body = TransitionRequest,
    responses((status = 200, body = TicketDetail), Refusals),
    security(("api_key" = [])))]
async fn transition(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(id): PathOf<String>,
    Body(body): Body<TransitionRequest>,
) -> Result<Json<TicketDetail>, HttpError> {
    caller.allow(&Role::ALL, "move tickets")?;
    let ticket = visible_ticket(&state, &caller, &id).await?;
    let to = params::one_of(
        "to",
        Some(&body.to),
        &["en_route", "on_site", "resolved", "closed", "cancelled"],
    )?
    .unwrap_or("resolved");
    let outcome = match body.outcome.as_deref() {
        Some(text) => Some(
            text.parse::<Outcome>()
                .map_err(|detail| HttpError::rejected("outcome", detail))?,
        ),
        None => None,
    };
    let component = params::optional_text("component", body.component.as_deref(), 64)?;
    let action = params::optional_text("action", body.action.as_deref(), 32)?;
    let step = match to {
        "en_route" => Transition::EnRoute,
        "on_site" => Transition::OnSite,
        "closed" => Transition::Close,
        "cancelled" => {
            caller.allow(&DESK, "cancel tickets")?;
            Transition::Cancel
        }
        _ => Transition::Resolve {
            outcome: outcome.ok_or_else(|| {
                HttpError::rejected(
                    "outcome",
                    "required to resolve: fault_confirmed, no_fault_found or customer_declined",
                )
            })?,
            component,
            action,
        },
    };
    if to != "resolved" && outcome.is_some() {
        return Err(HttpError::rejected("outcome", "only with to = resolved"));
    }
    let reason = params::optional_text("reason", body.reason.as_deref(), 500)?
        .unwrap_or_else(|| format!("{to} by {}", caller.actor()));
    let done = state
        .store
        .transition(
            ticket.ticket.id,
            &step,
            clock(&state).await?,
            &caller.actor(),
            &reason,
        )
        .await?;
    match done {
        Transitioned::Done { .. } => Ok(Json(visible_ticket(&state, &caller, &id).await?)),
        Transitioned::Refused { from } => Err(HttpError::Conflict {
            detail: format!("a {from} ticket cannot go to {to}"),
        }),
        Transitioned::ComponentRequired => Err(HttpError::rejected(
            "component",
            "required: the failure mode names no component, say what failed",
        )),
        Transitioned::NotFound => Err(HttpError::NotFound {
            detail: format!("no ticket {id}"),
        }),
    }
}

/// A dispatch failure as an HTTP error: the store's by its class.
pub(super) fn dispatch_error(error: crate::dispatch::DispatchError) -> HttpError {
    match error {
        crate::dispatch::DispatchError::Store(store) => store.into(),
        other => HttpError::Internal(other.to_string()),
    }
}

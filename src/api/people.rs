//! `/api/v1/customers`, `/replies`, `/incidents`, `/outreach`: whom forewarn serves, what
//! they wrote back (the dispatchers' reply queue, answered here), the incidents, and the
//! messages sent. The desk's roles read them; a technician's key does not.

use axum::Json;
use axum::extract::{Extension, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiState;
use super::auth::{Caller, Role};
use super::params::{self, Body, Page, Params, PathOf};
use super::problem::{HttpError, Refusals};
use crate::store::{
    CustomerItem, DeviceFilter, DeviceItem, DeviceSort, IncidentItem, OutreachItem, ReplyItem,
    TicketFilter, TicketItem,
};

pub fn router() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(customers))
        .routes(routes!(customer))
        .routes(routes!(replies))
        .routes(routes!(answer))
        .routes(routes!(incidents))
        .routes(routes!(outreach))
}

/// Who reads the desk's lists.
const DESK: [Role; 3] = [Role::Admin, Role::Dispatcher, Role::Integration];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomersQuery {
    /// A prefix of the customer's external id or name (any case).
    q: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    cursor: Option<String>,
}

/// Customers by external id.
#[utoipa::path(get, path = "/customers", tag = "customers", params(CustomersQuery),
    responses((status = 200, body = Page<CustomerItem>), Refusals),
    security(("api_key" = [])))]
async fn customers(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<CustomersQuery>,
) -> Result<Json<Page<CustomerItem>>, HttpError> {
    caller.allow(&DESK, "read customers")?;
    let limit = params::limit(query.limit.as_deref())?;
    let q = params::optional_text("q", query.q.as_deref(), 64)?;
    let after = params::optional_text("cursor", query.cursor.as_deref(), 64)?;
    let items = state
        .store
        .customer_items(q.as_deref(), None, after.as_deref(), limit)
        .await?;
    Ok(Json(Page::of(items, limit, |c| {
        c.external_id.clone().unwrap_or_default()
    })))
}

/// A customer with their devices and tickets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CustomerDetail {
    #[serde(flatten)]
    pub customer: CustomerItem,
    /// Their devices (at most 200), riskiest first.
    pub devices: Vec<DeviceItem>,
    /// Their newest tickets (at most 50).
    pub tickets: Vec<TicketItem>,
}

/// A customer with their devices and newest tickets.
#[utoipa::path(get, path = "/customers/{external_id}", tag = "customers",
    params(("external_id" = String, Path, description = "The customer's id")),
    responses((status = 200, body = CustomerDetail), Refusals),
    security(("api_key" = [])))]
async fn customer(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(external_id): PathOf<String>,
) -> Result<Json<CustomerDetail>, HttpError> {
    caller.allow(&DESK, "read customers")?;
    let external_id = params::external_id("external_id", &external_id)?;
    let customer = state
        .store
        .customer_items(None, Some(&external_id), None, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| HttpError::NotFound {
            detail: format!("no customer {external_id:?}"),
        })?;
    let mut devices = state
        .store
        .device_items(
            &DeviceFilter {
                customer: Some(external_id.clone()),
                ..DeviceFilter::default()
            },
            DeviceSort::Risk,
            None,
            200,
        )
        .await?;
    devices.truncate(200);
    let mut tickets = state
        .store
        .ticket_items(
            &TicketFilter {
                customer: Some(external_id),
                ..TicketFilter::default()
            },
            None,
            50,
        )
        .await?;
    tickets.truncate(50);
    Ok(Json(CustomerDetail {
        customer,
        devices,
        tickets,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepliesQuery {
    /// A queue's name.
    queue: Option<String>,
    /// `true`: only those waiting for an answer; `false`: only answered ones.
    #[param(value_type = Option<bool>)]
    waiting: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    cursor: Option<String>,
}

/// Customers' replies, newest first: the dispatchers' queue.
#[utoipa::path(get, path = "/replies", tag = "replies", params(RepliesQuery),
    responses((status = 200, body = Page<ReplyItem>), Refusals),
    security(("api_key" = [])))]
async fn replies(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<RepliesQuery>,
) -> Result<Json<Page<ReplyItem>>, HttpError> {
    caller.allow(&DESK, "read replies")?;
    let waiting = params::one_of("waiting", query.waiting.as_deref(), &["true", "false"])?
        .map(|text| text == "true");
    let limit = params::limit(query.limit.as_deref())?;
    let before = params::id_cursor(query.cursor.as_deref())?;
    let queue = params::optional_text("queue", query.queue.as_deref(), 64)?;
    let items = state
        .store
        .reply_items(queue.as_deref(), waiting, None, before, limit)
        .await?;
    Ok(Json(Page::of(items, limit, |r| r.id.to_string())))
}

/// A dispatcher's answer to a reply.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// What was done (kept in the log), at most 2000 characters.
    note: Option<String>,
}

/// Marks a reply answered (its first answer's time is kept: the queue's response time).
#[utoipa::path(post, path = "/replies/{id}/answer", tag = "replies",
    params(("id" = i64, Path, description = "The reply's id")),
    request_body = Answer,
    responses((status = 200, body = ReplyItem), Refusals),
    security(("api_key" = [])))]
async fn answer(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    PathOf(id): PathOf<String>,
    Body(body): Body<Answer>,
) -> Result<Json<ReplyItem>, HttpError> {
    caller.allow(&[Role::Admin, Role::Dispatcher], "answer replies")?;
    let id = params::path_id("id", &id)?;
    let note = params::optional_text("note", body.note.as_deref(), 2_000)?;
    if state
        .store
        .answer_reply(id, &caller.actor())
        .await?
        .is_none()
    {
        return Err(HttpError::NotFound {
            detail: format!("no reply {id}"),
        });
    }
    tracing::info!(reply = id, by = %caller.actor(), note = note.as_deref().unwrap_or(""), "reply answered");
    let item = state
        .store
        .reply_items(None, None, None, Some(id + 1), 1)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| HttpError::NotFound {
            detail: format!("no reply {id}"),
        })?;
    Ok(Json(item))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IncidentsQuery {
    #[param(value_type = Option<String>, pattern = "^(open|triaged|resolved)$")]
    status: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    cursor: Option<String>,
}

/// Incidents, newest first.
#[utoipa::path(get, path = "/incidents", tag = "incidents", params(IncidentsQuery),
    responses((status = 200, body = Page<IncidentItem>), Refusals),
    security(("api_key" = [])))]
async fn incidents(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<IncidentsQuery>,
) -> Result<Json<Page<IncidentItem>>, HttpError> {
    caller.allow(&DESK, "read incidents")?;
    let status = params::one_of(
        "status",
        query.status.as_deref(),
        &["open", "triaged", "resolved"],
    )?;
    let limit = params::limit(query.limit.as_deref())?;
    let before = params::id_cursor(query.cursor.as_deref())?;
    let items = state.store.incident_items(status, before, limit).await?;
    Ok(Json(Page::of(items, limit, |i| i.id.to_string())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutreachQuery {
    /// A ticket's id.
    #[param(value_type = Option<i64>, minimum = 1)]
    ticket: Option<String>,
    #[param(value_type = Option<String>, pattern = "^(pending|sending|sent|failed)$")]
    status: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    cursor: Option<String>,
}

/// Messages to customers, newest first (of a ticket, of a status).
#[utoipa::path(get, path = "/outreach", tag = "outreach", params(OutreachQuery),
    responses((status = 200, body = Page<OutreachItem>), Refusals),
    security(("api_key" = [])))]
async fn outreach(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Params(query): Params<OutreachQuery>,
) -> Result<Json<Page<OutreachItem>>, HttpError> {
    caller.allow(&DESK, "read messages")?;
    let ticket = params::bounded("ticket", query.ticket.as_deref(), 1, i64::MAX)?;
    let status = params::one_of(
        "status",
        query.status.as_deref(),
        &["pending", "sending", "sent", "failed"],
    )?;
    let limit = params::limit(query.limit.as_deref())?;
    let before = params::id_cursor(query.cursor.as_deref())?;
    let items = state
        .store
        .outreach_items(ticket, status, before, limit)
        .await?;
    Ok(Json(Page::of(items, limit, |o| o.id.to_string())))
}

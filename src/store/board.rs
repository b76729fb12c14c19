//! What the API shows of tickets (`/api/v1/tickets…`) and technicians' days: the ticket
//! list (filters, newest first, keyset on the id), a ticket's detail (its audit, bookings,
//! messages and replies), and a technician's visits of a day in order.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Store, StoreError};

/// Every status a ticket can have (the `tickets.status` check).
pub const TICKET_STATUSES: [&str; 7] = [
    "open",
    "booked",
    "en_route",
    "on_site",
    "resolved",
    "closed",
    "cancelled",
];

/// Every kind of ticket (the `tickets.kind` check).
pub const TICKET_KINDS: [&str; 3] = ["proactive", "reactive", "incident"];

/// A ticket in a list.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct TicketItem {
    pub id: i64,
    /// `proactive`, `reactive` or `incident`.
    pub kind: String,
    /// `open`, `booked`, `en_route`, `on_site`, `resolved`, `closed` or `cancelled`.
    pub status: String,
    /// 1 is the most urgent.
    pub priority: i16,
    /// The device's external id.
    pub device: String,
    pub device_kind: String,
    pub failure_mode: String,
    pub opened_at: DateTime<Utc>,
    pub due_at: Option<DateTime<Utc>>,
    pub expected_failure_at: Option<DateTime<Utc>>,
    pub risk_at_opening: Option<f64>,
    pub incident_id: Option<i64>,
    /// The booked technician's external id.
    pub technician: Option<String>,
    pub technician_name: Option<String>,
    pub slot_start: Option<DateTime<Utc>>,
    pub slot_end: Option<DateTime<Utc>>,
    /// The customer confirmed the booked visit.
    pub confirmed: bool,
    /// `fault_confirmed`, `no_fault_found` or `customer_declined`, once resolved.
    pub outcome: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// A ticket list's filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TicketFilter {
    pub statuses: Vec<String>,
    pub kind: Option<String>,
    /// A technician's external id.
    pub technician: Option<String>,
    /// A device's external id.
    pub device: Option<String>,
    pub priority: Option<i16>,
    /// Opened in `[from, to)`.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only this technician's (a technician's key).
    pub technician_id: Option<i32>,
    /// Only this ticket (a detail).
    pub id: Option<i64>,
    /// Only tickets of this customer's devices (external id).
    pub customer: Option<String>,
}

/// A step of a ticket's audit.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct TicketEventItem {
    pub at: DateTime<Utc>,
    /// Who: `dispatch`, `customer`, `api:<key name>`…
    pub actor: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub reason: String,
    pub detail: serde_json::Value,
}

/// A booking of a ticket, live or cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct BookingItem {
    pub id: i64,
    pub technician: String,
    pub technician_name: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub confirmed_at: Option<DateTime<Utc>>,
    /// When its customer was told (`null`: held, told nobody yet).
    pub proposed_at: Option<DateTime<Utc>>,
}

/// A message to a customer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct OutreachItem {
    pub id: i64,
    pub ticket_id: Option<i64>,
    pub incident_id: Option<i64>,
    /// The customer's external id.
    pub customer: Option<String>,
    pub message_type: String,
    pub channel: String,
    pub language: String,
    /// `pending`, `sending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub subject: Option<String>,
    pub last_error: Option<String>,
}

/// A customer's reply.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct ReplyItem {
    pub id: i64,
    pub queue: String,
    pub channel: String,
    pub sender: String,
    pub subject: Option<String>,
    pub body: String,
    /// The customer's external id, when the sender is known.
    pub customer: Option<String>,
    pub ticket_id: Option<i64>,
    pub incident_id: Option<i64>,
    pub received_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub answered_by: Option<String>,
}

/// A ticket with what happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TicketDetail {
    #[serde(flatten)]
    pub ticket: TicketItem,
    /// Repeat occurrences while it was open.
    pub occurrences: i32,
    /// Why the model flagged it.
    pub top_factors: serde_json::Value,
    /// The device's customer (external id).
    pub customer: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub events: Vec<TicketEventItem>,
    pub bookings: Vec<BookingItem>,
    pub outreach: Vec<OutreachItem>,
    pub replies: Vec<ReplyItem>,
}

/// A visit of a technician's day.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct RouteStop {
    pub ticket_id: i64,
    pub device: String,
    pub failure_mode: String,
    pub status: String,
    pub priority: i16,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub confirmed: bool,
}

/// The columns of [`TicketItem`]; `b` is the ticket's live booking, `tech` its technician.
macro_rules! ticket_columns {
    () => {
        "t.id, t.kind, t.status, t.priority, d.external_id as device, d.kind as device_kind,
         t.failure_mode, t.opened_at, t.due_at, t.expected_failure_at, t.risk_at_opening,
         t.incident_id, tech.external_id as technician, tech.name as technician_name,
         lower(b.slot) as slot_start, upper(b.slot) as slot_end,
         coalesce(b.confirmed_at is not null, false) as confirmed, t.outcome, t.updated_at"
    };
}

/// The joins of [`ticket_columns`].
macro_rules! ticket_joins {
    () => {
        "from tickets t
         join devices d on d.id = t.device_id
         left join lateral (
             select b.slot, b.confirmed_at, b.technician_id from bookings b
             where b.ticket_id = t.id and b.cancelled_at is null
             order by b.id desc limit 1
         ) b on true
         left join technicians tech on tech.id = coalesce(b.technician_id, t.technician_id)"
    };
}

impl Store {
    /// Tickets matching `filter`, newest first, `limit` + 1 (to tell a next page) with ids
    /// below `before`.
    ///
    /// Two steps: the page's ids from `tickets` alone (for the board's status columns an
    /// index-only scan of `tickets_status_id`), then their columns. The statement holds only
    /// the filters given, statuses and kind written in as literals of [`TICKET_STATUSES`]
    /// and [`TICKET_KINDS`], so each shape of filter is its own prepared statement with a
    /// plan made for it. (One statement with every filter optional, `$n is null or …`, got
    /// a generic plan after five runs that read every ticket for `status=booked`: 17 ms
    /// instead of 0.1 ms in `forewarn bench api`.)
    pub async fn ticket_items(
        &self,
        filter: &TicketFilter,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<TicketItem>, StoreError> {
        let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(
            "with page as (select t.id from tickets t where true",
        );
        if !filter.statuses.is_empty() {
            // Known statuses only, as literals; an unknown one matches no ticket.
            let known: Vec<&str> = TICKET_STATUSES
                .into_iter()
                .filter(|s| filter.statuses.iter().any(|given| given == s))
                .collect();
            if known.is_empty() {
                query.push(" and false");
            } else {
                query.push(format!(" and t.status in ('{}')", known.join("', '")));
            }
        }
        if let Some(kind) = &filter.kind {
            match TICKET_KINDS.into_iter().find(|k| k == kind) {
                Some(kind) => query.push(format!(" and t.kind = '{kind}'")),
                None => query.push(" and false"),
            };
        }
        if let Some(technician) = &filter.technician {
            query
                .push(" and t.technician_id = (select id from technicians where external_id = ")
                .push_bind(technician.clone())
                .push(")");
        }
        if let Some(device) = &filter.device {
            query
                .push(" and t.device_id = (select id from devices where external_id = ")
                .push_bind(device.clone())
                .push(")");
        }
        if let Some(customer) = &filter.customer {
            query
                .push(
                    " and t.device_id in (select d.id from devices d join customers c
                      on c.id = d.customer_id where c.external_id = ",
                )
                .push_bind(customer.clone())
                .push(")");
        }
        if let Some(priority) = filter.priority {
            query.push(" and t.priority = ").push_bind(priority);
        }
        if let Some(from) = filter.from {
            query.push(" and t.opened_at >= ").push_bind(from);
        }
        if let Some(to) = filter.to {
            query.push(" and t.opened_at < ").push_bind(to);
        }
        if let Some(technician_id) = filter.technician_id {
            query
                .push(" and t.technician_id = ")
                .push_bind(technician_id);
        }
        if let Some(id) = filter.id {
            query.push(" and t.id = ").push_bind(id);
        }
        if let Some(before) = before {
            query.push(" and t.id < ").push_bind(before);
        }
        // The limit written in too: with `limit $n` the server priced a generic plan above
        // the custom ones and planned the statement again on every call (a third of its
        // time under load).
        query
            .push(format!(
                " order by t.id desc limit {}",
                limit.clamp(0, 10_000) + 1
            ))
            .push(concat!(
                ") select ",
                ticket_columns!(),
                " ",
                ticket_joins!(),
                " where t.id in (select id from page) order by t.id desc"
            ));
        Ok(query.build_query_as().fetch_all(&self.pool).await?)
    }

    /// A ticket with its audit, bookings, messages and replies; `technician_id`: only if it
    /// is that technician's.
    pub async fn ticket_detail(
        &self,
        id: i64,
        technician_id: Option<i32>,
    ) -> Result<Option<TicketDetail>, StoreError> {
        let filter = TicketFilter {
            id: Some(id),
            technician_id,
            ..TicketFilter::default()
        };
        let Some(ticket) = self
            .ticket_items(&filter, None, 1)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let (occurrences, top_factors, customer, latitude, longitude): (
            i32,
            serde_json::Value,
            Option<String>,
            Option<f64>,
            Option<f64>,
        ) = sqlx::query_as(
            "select t.occurrences, t.top_factors, c.external_id,
                    coalesce(t.site_latitude, d.latitude), coalesce(t.site_longitude, d.longitude)
             from tickets t join devices d on d.id = t.device_id
             left join customers c on c.id = d.customer_id where t.id = $1",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        let events = sqlx::query_as(
            "select at, actor, from_status, to_status, reason, detail from ticket_events
             where ticket_id = $1 order by id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let bookings = sqlx::query_as(
            "select b.id, tech.external_id as technician, tech.name as technician_name,
                    lower(b.slot) as start, upper(b.slot) as end, b.cancelled_at, b.confirmed_at,
                    b.proposed_at
             from bookings b join technicians tech on tech.id = b.technician_id
             where b.ticket_id = $1 order by b.id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let outreach = self.outreach_items(Some(id), None, None, 200).await?;
        let replies = self.reply_items(None, None, Some(id), None, 200).await?;
        Ok(Some(TicketDetail {
            ticket,
            occurrences,
            top_factors,
            customer,
            latitude,
            longitude,
            events,
            bookings,
            outreach,
            replies,
        }))
    }

    /// Messages, newest first: of a ticket, of a status, with ids below `before`.
    pub async fn outreach_items(
        &self,
        ticket_id: Option<i64>,
        status: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<OutreachItem>, StoreError> {
        Ok(sqlx::query_as(
            "select o.id, o.ticket_id, o.incident_id, c.external_id as customer, o.message_type,
                    o.channel, o.language, o.status, o.attempts, o.created_at, o.sent_at,
                    o.subject, o.last_error
             from outreach o left join customers c on c.id = o.customer_id
             where ($1::int8 is null or o.ticket_id = $1)
               and ($2::text is null or o.status = $2)
               and ($3::int8 is null or o.id < $3)
             order by o.id desc limit $4",
        )
        .bind(ticket_id)
        .bind(status)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replies, newest first: of a queue, waiting for an answer or answered, of a ticket,
    /// with ids below `before`.
    pub async fn reply_items(
        &self,
        queue: Option<&str>,
        waiting: Option<bool>,
        ticket_id: Option<i64>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<ReplyItem>, StoreError> {
        Ok(sqlx::query_as(
            "select r.id, r.queue, r.channel, r.sender, r.subject, r.body,
                    c.external_id as customer, r.ticket_id, r.incident_id, r.received_at,
                    r.first_response_at as answered_at, r.responded_by as answered_by
             from customer_replies r left join customers c on c.id = r.customer_id
             where ($1::text is null or r.queue = $1)
               and ($2::bool is null or (r.first_response_at is null) = $2)
               and ($3::int8 is null or r.ticket_id = $3)
               and ($4::int8 is null or r.id < $4)
             order by r.id desc limit $5",
        )
        .bind(queue)
        .bind(waiting)
        .bind(ticket_id)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A technician's live visits starting in `[from, to)`, in order.
    pub async fn route_stops(
        &self,
        technician_id: i32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<RouteStop>, StoreError> {
        Ok(sqlx::query_as(
            "select t.id as ticket_id, d.external_id as device, t.failure_mode, t.status,
                    t.priority, lower(b.slot) as start, upper(b.slot) as end,
                    coalesce(t.site_latitude, d.latitude) as latitude,
                    coalesce(t.site_longitude, d.longitude) as longitude,
                    b.confirmed_at is not null as confirmed
             from bookings b
             join tickets t on t.id = b.ticket_id
             join devices d on d.id = t.device_id
             where b.technician_id = $1 and b.cancelled_at is null
               and lower(b.slot) >= $2 and lower(b.slot) < $3
             order by lower(b.slot)",
        )
        .bind(technician_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A ticket's device (its internal id), if the ticket exists and, with
    /// `technician_id`, is that technician's.
    pub async fn ticket_device(
        &self,
        ticket_id: i64,
        technician_id: Option<i32>,
    ) -> Result<Option<i32>, StoreError> {
        Ok(sqlx::query_scalar(
            "select device_id from tickets
             where id = $1 and ($2::int4 is null or technician_id = $2)",
        )
        .bind(ticket_id)
        .bind(technician_id)
        .fetch_optional(&self.pool)
        .await?)
    }
}

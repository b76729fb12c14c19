//! Signed links' side of the database: the link key (`signing_keys`), what a link's
//! message is about now (`LinkContext`), and the writes of an answer — the single use
//! (`link_answers`), a confirmation, a booking given up for another time. Each answer runs
//! in one transaction under its ticket's row lock (`dispatch::answers`).

use chrono::{DateTime, Utc};

use super::dispatch::position;
use super::{Store, StoreError, StoreTx, micros, timestamp};
use crate::contract::EpochMicros;

/// A ticket's live booking as a link's page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveBooking {
    pub id: i64,
    pub technician_id: i32,
    /// The technician's first name.
    pub technician: String,
    pub start: EpochMicros,
    pub end: EpochMicros,
    pub site: Option<(f64, f64)>,
    pub confirmed: bool,
}

/// How a message was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkAnswer {
    pub action: String,
    pub answered_at: DateTime<Utc>,
    /// The booking the answer confirmed or made.
    pub booking_id: Option<i64>,
}

/// A link's message and its ticket as they are now.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkContext {
    pub outreach_id: i64,
    pub message_type: String,
    pub language: String,
    pub timezone: String,
    pub customer_name: String,
    /// The booking the message was about.
    pub booking_id: Option<i64>,
    pub answer: Option<LinkAnswer>,
    pub ticket: Option<LinkTicket>,
}

/// The ticket a link's message is about, with what planning another time needs.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkTicket {
    pub id: i64,
    pub status: String,
    pub device_kind: String,
    pub failure_mode: String,
    pub priority: u8,
    pub opened_at: EpochMicros,
    pub due_at: Option<EpochMicros>,
    /// Where the visit goes (the ticket's site, else the device's position).
    pub site: Option<(f64, f64)>,
    pub live: Option<LiveBooking>,
}

type ContextRow = (
    i64,
    Option<i64>,
    String,
    String,
    String,
    String,
    Option<i64>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<i64>,
);

type TicketRow = (
    i64,
    String,
    String,
    String,
    i16,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<f64>,
    Option<f64>,
);

type BookingRow = (i64, i32, String, DateTime<Utc>, DateTime<Utc>, bool);

async fn context(
    connection: &mut sqlx::PgConnection,
    outreach_id: i64,
) -> Result<Option<LinkContext>, StoreError> {
    let row: Option<ContextRow> = sqlx::query_as(
        "select o.id, o.ticket_id, o.message_type, o.language, c.timezone, c.name,
                (o.payload ->> 'booking_id')::bigint, a.action, a.answered_at, a.booking_id
         from outreach o
         join customers c on c.id = o.customer_id
         left join link_answers a on a.outreach_id = o.id
         where o.id = $1",
    )
    .bind(outreach_id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let ticket = match row.1 {
        Some(id) => ticket(connection, id).await?,
        None => None,
    };
    Ok(Some(LinkContext {
        outreach_id: row.0,
        message_type: row.2,
        language: row.3,
        timezone: row.4,
        customer_name: row.5,
        booking_id: row.6,
        answer: match (row.7, row.8) {
            (Some(action), Some(answered_at)) => Some(LinkAnswer {
                action,
                answered_at,
                booking_id: row.9,
            }),
            _ => None,
        },
        ticket,
    }))
}

async fn ticket(
    connection: &mut sqlx::PgConnection,
    ticket_id: i64,
) -> Result<Option<LinkTicket>, StoreError> {
    let row: Option<TicketRow> = sqlx::query_as(
        "select t.id, t.status, d.kind, t.failure_mode, t.priority, t.opened_at, t.due_at,
                coalesce(t.site_latitude, d.latitude), coalesce(t.site_longitude, d.longitude)
         from tickets t join devices d on d.id = t.device_id
         where t.id = $1",
    )
    .bind(ticket_id)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let live: Option<BookingRow> = sqlx::query_as(
        "select b.id, b.technician_id, split_part(tech.name, ' ', 1), lower(b.slot),
                upper(b.slot), b.confirmed_at is not null
         from bookings b join technicians tech on tech.id = b.technician_id
         where b.ticket_id = $1 and b.cancelled_at is null
         order by b.id desc limit 1",
    )
    .bind(ticket_id)
    .fetch_optional(&mut *connection)
    .await?;
    let site = position(row.7, row.8);
    Ok(Some(LinkTicket {
        id: row.0,
        status: row.1,
        device_kind: row.2,
        failure_mode: row.3,
        priority: row.4.clamp(1, 4) as u8,
        opened_at: micros(row.5),
        due_at: row.6.map(micros),
        site,
        live: live.map(|b| LiveBooking {
            id: b.0,
            technician_id: b.1,
            technician: b.2,
            start: micros(b.3),
            end: micros(b.4),
            site,
            confirmed: b.5,
        }),
    }))
}

impl Store {
    /// The key named `name`: the one stored, or `fresh`, stored now, when there is none
    /// (two replicas starting at once agree on the first stored).
    pub async fn signing_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        sqlx::query("insert into signing_keys (name, key) values ($1, $2) on conflict do nothing")
            .bind(name)
            .bind(fresh)
            .execute(&self.pool)
            .await?;
        Ok(
            sqlx::query_scalar("select key from signing_keys where name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// What the link's message is about now; `None` when there is no such message.
    pub async fn link_context(&self, outreach_id: i64) -> Result<Option<LinkContext>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        context(&mut connection, outreach_id).await
    }
}

impl StoreTx {
    /// [`Store::link_context`] with the ticket's row locked until commit: answers to one
    /// ticket take turns, and each sees what the one before it did.
    pub async fn lock_link(&mut self, outreach_id: i64) -> Result<Option<LinkContext>, StoreError> {
        sqlx::query(
            "select t.id from outreach o join tickets t on t.id = o.ticket_id
             where o.id = $1 for update of t",
        )
        .bind(outreach_id)
        .fetch_optional(self.connection())
        .await?;
        context(self.connection(), outreach_id).await
    }

    /// Uses up the message's links; false (nothing written) when it was answered already.
    pub async fn record_link_answer(
        &mut self,
        outreach_id: i64,
        ticket_id: i64,
        action: &str,
        at: EpochMicros,
        booking_id: Option<i64>,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "insert into link_answers (outreach_id, ticket_id, action, at, booking_id)
             values ($1, $2, $3, $4, $5)
             on conflict (outreach_id) do nothing",
        )
        .bind(outreach_id)
        .bind(ticket_id)
        .bind(action)
        .bind(timestamp(at)?)
        .bind(booking_id)
        .execute(self.connection())
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// The customer confirmed the live booking: marked, and audited.
    pub async fn confirm_booking(
        &mut self,
        ticket_id: i64,
        booking_id: i64,
        at: EpochMicros,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let at_time = timestamp(at)?;
        sqlx::query(
            "update bookings set confirmed_at = coalesce(confirmed_at, $3)
             where id = $1 and ticket_id = $2 and cancelled_at is null",
        )
        .bind(booking_id)
        .bind(ticket_id)
        .bind(at_time)
        .execute(self.connection())
        .await?;
        self.ticket_event_with(
            ticket_id,
            at,
            actor,
            Some("booked"),
            "booked",
            reason,
            serde_json::json!({ "booking_id": booking_id, "confirmed": true }),
        )
        .await
    }

    /// The customer wants another time: the live booking is cancelled and the ticket open
    /// again, in the transaction that books the time they chose.
    pub async fn give_up_booking(
        &mut self,
        ticket_id: i64,
        booking_id: i64,
        at: EpochMicros,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("update bookings set cancelled_at = $2 where id = $1 and cancelled_at is null")
            .bind(booking_id)
            .bind(timestamp(at)?)
            .execute(self.connection())
            .await?;
        sqlx::query(
            "update tickets set status = 'open', technician_id = null, updated_at = now()
             where id = $1",
        )
        .bind(ticket_id)
        .execute(self.connection())
        .await?;
        self.ticket_event_with(
            ticket_id,
            at,
            actor,
            Some("booked"),
            "open",
            reason,
            serde_json::json!({ "booking_id": booking_id }),
        )
        .await
    }
}

//! Customers' replies (`customer_replies`): threaded onto their ticket, queued for a
//! dispatcher who speaks their language in their area, answered once.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

/// A reply as the provider's inbound webhook delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundReply {
    pub provider_id: String,
    pub channel: String,
    /// A phone number or an email address.
    pub sender: String,
    pub subject: Option<String>,
    pub body: String,
    /// The reference found in it (`FW-42`: ticket 42; `FW-I7`: incident 7).
    pub reference: Option<Reference>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    Ticket(i64),
    Incident(i64),
}

/// Where a reply landed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct StoredReply {
    pub id: i64,
    pub customer_id: Option<i64>,
    pub ticket_id: Option<i64>,
    pub incident_id: Option<i64>,
    pub threaded_by: String,
    pub queue: String,
    pub received_at: DateTime<Utc>,
}

/// One dispatcher queue's figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct ReplyQueue {
    pub queue: String,
    pub waiting: i64,
    pub answered: i64,
    /// Median seconds from a reply to its first answer (answered replies).
    pub median_first_response_s: Option<f64>,
}

impl Store {
    /// Stores a reply, threaded and queued, with a `customer_reply` row in its ticket's
    /// audit. A reply the provider delivers again (same `provider_id`) is stored once; the
    /// first storing is returned.
    pub async fn store_reply(&self, reply: &InboundReply) -> Result<StoredReply, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (ticket, incident) = match reply.reference {
            Some(Reference::Ticket(id)) => (Some(id), None),
            Some(Reference::Incident(id)) => (None, Some(id)),
            None => (None, None),
        };
        // Threading: the referenced ticket (or incident) when it exists and, when the sender
        // is a known customer, is theirs; else the sender's newest open ticket; else none.
        let stored: Option<StoredReply> = sqlx::query_as(
            "with sender as (
                 select c.* from customers c
                 where ($2 = 'email' and lower(c.email) = lower($3))
                    or ($2 <> 'email' and regexp_replace(c.phone, '[^0-9+]', '', 'g')
                                          = regexp_replace($3, '[^0-9+]', '', 'g'))
                 order by c.id limit 1
             ),
             referenced as (
                 select t.id as ticket_id, t.incident_id, d.customer_id
                 from tickets t join devices d on d.id = t.device_id
                 where t.id = $6
                   and (not exists (select 1 from sender) or d.customer_id = (select id from sender))
             ),
             referenced_incident as (
                 select i.id from incidents i where i.id = $7
             ),
             newest_open as (
                 select t.id as ticket_id, t.incident_id
                 from tickets t join devices d on d.id = t.device_id
                 where d.customer_id = (select id from sender)
                   and t.status not in ('closed', 'cancelled', 'resolved')
                 order by t.opened_at desc limit 1
             ),
             threaded as (
                 select
                     coalesce((select customer_id from referenced), (select id from sender))
                         as customer_id,
                     coalesce((select ticket_id from referenced),
                              case when (select id from referenced_incident) is null
                                   then (select ticket_id from newest_open) end) as ticket_id,
                     coalesce((select id from referenced_incident),
                              (select incident_id from referenced),
                              (select incident_id from newest_open)) as incident_id,
                     case when exists (select 1 from referenced)
                               or exists (select 1 from referenced_incident) then 'reference'
                          when exists (select 1 from sender) then 'sender'
                          else 'none' end as threaded_by
             ),
             inserted as (
                 insert into customer_replies (provider_id, channel, sender, subject, body,
                                               customer_id, ticket_id, incident_id,
                                               threaded_by, queue)
                 select $1, $2, $3, $4, $5, th.customer_id, th.ticket_id, th.incident_id,
                        th.threaded_by,
                        coalesce(lower(split_part(c.language, '-', 1)), 'und') || '/' ||
                        coalesce(lower(nullif(c.city, '')), lower(nullif(c.country, '')),
                                 'unknown')
                 from threaded th left join customers c on c.id = th.customer_id
                 on conflict (provider_id) do nothing
                 returning id, customer_id, ticket_id, incident_id, threaded_by, queue,
                           received_at
             )
             select * from inserted",
        )
        .bind(&reply.provider_id)
        .bind(&reply.channel)
        .bind(&reply.sender)
        .bind(&reply.subject)
        .bind(&reply.body)
        .bind(ticket)
        .bind(incident)
        .fetch_optional(&mut *tx)
        .await?;
        let stored = match stored {
            Some(stored) => {
                if let Some(ticket_id) = stored.ticket_id {
                    sqlx::query(
                        "insert into ticket_events (ticket_id, at, actor, from_status, to_status,
                                                    reason, detail)
                         select id, now(), 'customer', status, status, 'customer_reply',
                                jsonb_build_object('reply_id', $2::bigint, 'channel', $3::text)
                         from tickets where id = $1",
                    )
                    .bind(ticket_id)
                    .bind(stored.id)
                    .bind(&reply.channel)
                    .execute(&mut *tx)
                    .await?;
                }
                stored
            }
            None => {
                sqlx::query_as(
                    "select id, customer_id, ticket_id, incident_id, threaded_by, queue,
                            received_at
                     from customer_replies where provider_id = $1",
                )
                .bind(&reply.provider_id)
                .fetch_one(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        Ok(stored)
    }

    /// Records a dispatcher's first answer to a reply (later answers change nothing).
    /// Returns the seconds from the reply to its first answer; `None`: no such reply.
    pub async fn answer_reply(&self, reply_id: i64, by: &str) -> Result<Option<f64>, StoreError> {
        let seconds: Option<f64> = sqlx::query_scalar(
            "with answered as (
                 update customer_replies
                 set first_response_at = coalesce(first_response_at, now()),
                     responded_by = coalesce(responded_by, $2)
                 where id = $1
                 returning first_response_at, received_at
             )
             select extract(epoch from first_response_at - received_at)::float8 from answered",
        )
        .bind(reply_id)
        .bind(by)
        .fetch_optional(&self.pool)
        .await?;
        Ok(seconds)
    }

    /// Every queue's waiting and answered replies, and its median time to first response.
    pub async fn reply_queues(&self) -> Result<Vec<ReplyQueue>, StoreError> {
        Ok(sqlx::query_as(
            "select queue,
                    count(*) filter (where first_response_at is null) as waiting,
                    count(*) filter (where first_response_at is not null) as answered,
                    (percentile_cont(0.5) within group (
                        order by extract(epoch from first_response_at - received_at)::float8)
                     filter (where first_response_at is not null))::float8
                        as median_first_response_s
             from customer_replies group by queue order by queue",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}

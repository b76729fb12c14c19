//! Delivering the `outreach` outbox: claiming due rows for a lease, and writing what each
//! attempt did — only while the claim that took it holds.

use chrono::{DateTime, NaiveTime, Utc};

use super::{Store, StoreError};

/// A message claimed for delivery, with what its customer is reached by.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ClaimedMessage {
    pub id: i64,
    /// Fences the claim: an outcome is written only while the row still carries it.
    pub claim_token: i64,
    pub idempotency_key: String,
    pub customer_id: i64,
    pub ticket_id: Option<i64>,
    pub incident_id: Option<i64>,
    pub message_type: String,
    /// The channel of this attempt.
    pub channel: String,
    pub language: String,
    pub urgent: bool,
    pub payload: serde_json::Value,
    /// Attempts so far, this one included.
    pub attempts: i32,
    pub channel_attempts: i32,
    pub channels_tried: Vec<String>,
    pub customer_external_id: Option<String>,
    pub customer_name: String,
    pub preferred_channel: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub timezone: String,
    pub quiet_hours_start: Option<NaiveTime>,
    pub quiet_hours_end: Option<NaiveTime>,
    /// When it was queued (wall clock): its links' lifetime counts from here.
    pub created_at: DateTime<Utc>,
}

/// What an attempt did to its message.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// Delivered: the provider's answer, and what was sent.
    Sent {
        response: String,
        subject: String,
        body: String,
    },
    /// Try again at `at` on `channel` (the same one, or the next after a fallback).
    Retry {
        at: DateTime<Utc>,
        channel: String,
        channel_attempts: i32,
        channels_tried: Vec<String>,
        error: String,
        /// The provider refused it for good (this channel is given up on).
        rejected: bool,
    },
    /// Not an attempt (quiet hours; handed back before its claim could run out): due
    /// again at `until`.
    Deferred {
        until: DateTime<Utc>,
        reason: String,
    },
    /// Given up on.
    Failed {
        reason: String,
        channels_tried: Vec<String>,
    },
}

/// One attempt's outcome for [`Store::finish_attempts`].
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub id: i64,
    pub claim_token: i64,
    /// The channel the attempt used.
    pub channel: String,
    pub outcome: AttemptOutcome,
}

impl Store {
    /// Claims up to `limit` due messages for `lease`, oldest due first, skipping rows
    /// another worker holds. Each claim counts as an attempt.
    pub async fn claim_outreach(
        &self,
        limit: usize,
        lease: std::time::Duration,
        max_attempts: u32,
        claim_token: i64,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // A worker that died left its rows `sending`: once the lease is over they are due
        // again (they may have been sent: the idempotency key makes the retry harmless) —
        // unless they were claimed `max_attempts` times already (a message that kills its
        // worker must not be re-sent forever). Rows another worker is reclaiming are
        // skipped.
        sqlx::query(
            "with expired as (
                 select id from outreach
                 where status = 'sending' and claimed_until < now()
                 for update skip locked
             )
             update outreach o
             set status = case when o.attempts >= $1 then 'failed' else 'pending' end,
                 last_error = case when o.attempts >= $1
                     then 'claimed ' || o.attempts || ' times without an outcome (its worker \
                           stopped each time)'
                     else 'its worker stopped before writing an outcome' end,
                 claim_token = null, claimed_until = null
             from expired where o.id = expired.id",
        )
        .bind(i32::try_from(max_attempts).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        let rows = sqlx::query_as::<_, ClaimedMessage>(
            "with due as (
                 select id from outreach
                 where status = 'pending' and next_attempt_at <= now()
                 order by next_attempt_at
                 limit $1
                 for update skip locked
             ),
             claimed as (
                 update outreach o
                 set status = 'sending', claim_token = $3,
                     claimed_until = now() + $2::interval, attempts = o.attempts + 1
                 from due where o.id = due.id
                 returning o.*
             )
             select c.id, c.claim_token, c.idempotency_key, c.customer_id, c.ticket_id,
                    c.incident_id, c.message_type, c.channel, c.language, c.urgent, c.payload,
                    c.attempts, c.channel_attempts, c.channels_tried,
                    cu.external_id as customer_external_id, cu.name as customer_name,
                    cu.preferred_channel, cu.email, cu.phone, cu.timezone,
                    cu.quiet_hours_start, cu.quiet_hours_end, c.created_at
             from claimed c join customers cu on cu.id = c.customer_id
             order by c.id
             limit $1",
        )
        .bind(limit)
        .bind(format!("{} milliseconds", lease.as_millis()))
        .bind(claim_token)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// Writes the outcomes of a batch of attempts in one statement, each with its
    /// `outreach_attempts` row, and only for rows still held by the claim that took them
    /// (a worker whose lease ran out writes nothing). Returns how many were written.
    pub async fn finish_attempts(&self, attempts: &[Attempt]) -> Result<u64, StoreError> {
        if attempts.is_empty() {
            return Ok(0);
        }
        let n = attempts.len();
        let mut ids = Vec::with_capacity(n);
        let mut claims = Vec::with_capacity(n);
        let mut used = Vec::with_capacity(n);
        let mut outcome = Vec::with_capacity(n);
        let mut status = Vec::with_capacity(n);
        let mut next_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
        let mut channel = Vec::with_capacity(n);
        let mut channel_attempts = Vec::with_capacity(n);
        let mut tried: Vec<Option<String>> = Vec::with_capacity(n);
        let mut attempt_delta = Vec::with_capacity(n);
        let mut response: Vec<Option<String>> = Vec::with_capacity(n);
        let mut subject: Vec<Option<String>> = Vec::with_capacity(n);
        let mut body: Vec<Option<String>> = Vec::with_capacity(n);
        let mut error: Vec<Option<String>> = Vec::with_capacity(n);
        for a in attempts {
            ids.push(a.id);
            claims.push(a.claim_token);
            used.push(a.channel.clone());
            match &a.outcome {
                AttemptOutcome::Sent {
                    response: r,
                    subject: s,
                    body: b,
                } => {
                    outcome.push("sent");
                    status.push("sent");
                    next_at.push(None);
                    channel.push(a.channel.clone());
                    channel_attempts.push(None);
                    tried.push(None);
                    attempt_delta.push(0);
                    response.push(Some(r.clone()));
                    subject.push(Some(s.clone()));
                    body.push(Some(b.clone()));
                    error.push(None);
                }
                AttemptOutcome::Retry {
                    at,
                    channel: c,
                    channel_attempts: ca,
                    channels_tried,
                    error: e,
                    rejected,
                } => {
                    outcome.push(if *rejected { "rejected" } else { "retry" });
                    status.push("pending");
                    next_at.push(Some(*at));
                    channel.push(c.clone());
                    channel_attempts.push(Some(*ca));
                    tried.push(Some(channels_tried.join(",")));
                    attempt_delta.push(0);
                    response.push(None);
                    subject.push(None);
                    body.push(None);
                    error.push(Some(e.clone()));
                }
                AttemptOutcome::Deferred { until, reason } => {
                    outcome.push("deferred");
                    status.push("pending");
                    next_at.push(Some(*until));
                    channel.push(a.channel.clone());
                    channel_attempts.push(None);
                    tried.push(None);
                    attempt_delta.push(-1);
                    response.push(None);
                    subject.push(None);
                    body.push(None);
                    error.push(Some(reason.clone()));
                }
                AttemptOutcome::Failed {
                    reason,
                    channels_tried,
                } => {
                    outcome.push("failed");
                    status.push("failed");
                    next_at.push(None);
                    channel.push(a.channel.clone());
                    channel_attempts.push(None);
                    tried.push(Some(channels_tried.join(",")));
                    attempt_delta.push(0);
                    response.push(None);
                    subject.push(None);
                    body.push(None);
                    error.push(Some(reason.clone()));
                }
            }
        }
        let written: i64 = sqlx::query_scalar(
            "with u as (
                 select * from unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[],
                                      $5::text[], $6::timestamptz[], $7::text[], $8::int[],
                                      $9::text[], $10::int[], $11::text[], $12::text[],
                                      $13::text[], $14::text[])
                     as u(id, claim, used, outcome, status, next_at, channel, channel_attempts,
                          tried, attempt_delta, response, subject, body, error)
             ),
             done as (
                 update outreach o set
                     status = u.status,
                     next_attempt_at = coalesce(u.next_at, o.next_attempt_at),
                     channel = u.channel,
                     channel_attempts = coalesce(u.channel_attempts,
                                                 case when u.channel = o.channel
                                                      then o.channel_attempts else 0 end),
                     channels_tried = coalesce(string_to_array(u.tried, ','), o.channels_tried),
                     attempts = o.attempts + u.attempt_delta,
                     provider_response = coalesce(u.response, o.provider_response),
                     subject = coalesce(u.subject, o.subject),
                     body = coalesce(u.body, o.body),
                     last_error = u.error,
                     sent_at = case when u.status = 'sent' then now() else o.sent_at end,
                     claim_token = null,
                     claimed_until = null
                 from u
                 where o.id = u.id and o.claim_token = u.claim and o.status = 'sending'
                 returning o.id, u.used, u.outcome, coalesce(u.response, u.error) as detail
             ),
             logged as (
                 insert into outreach_attempts (outreach_id, channel, outcome, detail)
                 select id, used, outcome, detail from done
                 returning 1
             )
             select count(*) from logged",
        )
        .bind(&ids)
        .bind(&claims)
        .bind(&used)
        .bind(&outcome)
        .bind(&status)
        .bind(&next_at)
        .bind(&channel)
        .bind(&channel_attempts)
        .bind(&tried)
        .bind(&attempt_delta)
        .bind(&response)
        .bind(&subject)
        .bind(&body)
        .bind(&error)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(written).unwrap_or(0))
    }

    /// Messages of an incident written `sent`.
    pub async fn incident_outreach_sent(&self, incident_id: i64) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "select count(*) from outreach where incident_id = $1 and status = 'sent'",
        )
        .bind(incident_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

impl super::StoreTx {
    /// Queues one incident notice per customer (`external_id`, the devices of theirs it
    /// affects) in one statement; the key is `incident:<id>:customer:<id>` (as triage's), so a
    /// customer is told once whatever the number of their devices. Returns rows queued.
    pub async fn queue_incident_notices(
        &mut self,
        incident_id: i64,
        notices: &[(String, Vec<String>)],
        urgent: bool,
        at: crate::contract::EpochMicros,
    ) -> Result<u64, StoreError> {
        let customers: Vec<&str> = notices.iter().map(|(c, _)| c.as_str()).collect();
        let devices: Vec<serde_json::Value> =
            notices.iter().map(|(_, d)| serde_json::json!(d)).collect();
        let queued = sqlx::query(
            "insert into outreach (idempotency_key, customer_id, incident_id, message_type,
                                   channel, language, urgent, payload, event_at)
             select 'incident:' || i.id || ':customer:' || c.id, c.id, i.id,
                    'incident_notice', c.preferred_channel, c.language, $3,
                    jsonb_build_object('incident_id', i.id, 'failure_mode', i.failure_mode,
                                       'customer_name', c.name, 'timezone', c.timezone,
                                       'devices', u.devices),
                    $4
             from unnest($2::text[], $5::jsonb[]) as u(external_id, devices)
             join customers c on c.external_id = u.external_id
             join incidents i on i.id = $1
             on conflict (idempotency_key) do nothing",
        )
        .bind(incident_id)
        .bind(&customers)
        .bind(urgent)
        .bind(super::timestamp(at)?)
        .bind(&devices)
        .execute(self.connection())
        .await?;
        Ok(queued.rows_affected())
    }
}

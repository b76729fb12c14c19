//! What operators read through the API: the model registry (`/api/v1/models…`), dead
//! letters (`/dead-letters`) and the service KPIs (`/kpis`, DESIGN.md §Service KPIs).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Store, StoreError};

/// A trained model of one failure mode.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct ModelItem {
    pub version: String,
    /// `kind/component`.
    pub failure_mode: String,
    pub algorithm: String,
    pub horizon_hours: f64,
    pub threshold: f64,
    pub active: bool,
    pub trained_at: DateTime<Utc>,
    /// The training data's time span.
    pub data_from: DateTime<Utc>,
    pub data_to: DateTime<Utc>,
    /// The card's headline precision (the held-out test window's when it has one).
    pub precision: Option<f64>,
    /// The card's headline recall of failures.
    pub recall: Option<f64>,
}

/// A model with its card.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ModelCard {
    #[serde(flatten)]
    pub model: ModelItem,
    /// Its features, in the model's order.
    pub features: serde_json::Value,
    /// The model card: how it was chosen and judged.
    pub metrics: serde_json::Value,
    /// How it became active, and every later change of its failure mode's active model.
    pub promotions: Vec<PromotionItem>,
}

/// A change of a failure mode's active model.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct PromotionItem {
    pub time: DateTime<Utc>,
    pub from_version: Option<String>,
    pub to_version: String,
    pub reason: String,
}

/// A message ingest refused.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeadLetterItem {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub topic: String,
    pub reason: String,
    pub detail: String,
    /// The payload was cut to the stored limit.
    pub truncated: bool,
    /// Bytes stored.
    pub size: i32,
    /// The payload's start as text (invalid UTF-8 replaced), at most 512 characters.
    pub payload_preview: String,
}

#[derive(sqlx::FromRow)]
struct DeadLetterRow {
    id: i64,
    received_at: DateTime<Utc>,
    topic: String,
    reason: String,
    detail: String,
    truncated: bool,
    size: i32,
    head: Vec<u8>,
}

/// Characters of a payload's preview.
const PREVIEW_CHARS: usize = 512;

/// How many dead letters one reason has.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct ReasonCount {
    pub reason: String,
    pub count: i64,
}

/// Tickets opened in a period, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct TicketCounts {
    pub proactive: i64,
    pub reactive: i64,
    pub incident: i64,
}

/// The service KPIs of a period (DESIGN.md §Service KPIs). A figure with nothing to judge
/// (no ticket resolved, no message sent) is `null`, not 0.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Kpis {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Tickets opened in the period.
    pub tickets: TicketCounts,
    /// Proactive tickets over all opened.
    pub proactive_share: Option<f64>,
    /// Of proactive tickets resolved in the period with a finding, the share where the
    /// technician confirmed the fault (a customer's decline judges nothing).
    pub proactive_precision: Option<f64>,
    /// Median hours from a proactive ticket's opening to the failure it met or prevented:
    /// the first failure of its device and component at or after the opening (a repair
    /// that prevented it is recorded as one, `technician_confirmed`).
    pub median_lead_time_hours: Option<f64>,
    /// Median hours from the ticket's writing to the first message sent to its customer
    /// (both wall-clock times; tickets opened in the period that have one).
    pub median_time_to_first_contact_hours: Option<f64>,
    /// Median hours from opening to resolution (tickets resolved in the period).
    pub median_time_to_resolution_hours: Option<f64>,
    /// Of tickets resolved in the period with the fault confirmed, the share fixed at the
    /// first visit: one arrival on site, and no ticket of the same device and failure mode
    /// opened within 30 days after.
    pub first_time_fix_rate: Option<f64>,
    /// Customers' answers by link in the period (event time).
    pub confirmations: i64,
    pub reschedules: i64,
    pub declines: i64,
    /// Messages sent about changes in the period (event time of the change).
    pub messages_sent: i64,
    /// Devices whose telemetry has stopped, now.
    pub stale_devices: i64,
    /// Incidents open now.
    pub open_incidents: i64,
}

impl Store {
    /// Models, newest first; with `only`: that version and failure mode.
    pub async fn model_items(
        &self,
        only: Option<(&str, &str)>,
    ) -> Result<Vec<ModelItem>, StoreError> {
        let (version, mode) = only.unzip();
        Ok(sqlx::query_as(
            "select version, failure_mode, algorithm, horizon_hours, threshold, active,
                    trained_at, data_from, data_to,
                    (coalesce(metrics #> '{test,events,precision}',
                              metrics #> '{events,precision}'))::float8 as precision,
                    (coalesce(metrics #> '{test,events,recall}',
                              metrics #> '{events,recall}'))::float8 as recall
             from models
             where ($1::text is null or version = $1) and ($2::text is null or failure_mode = $2)
             order by trained_at desc, version desc, failure_mode",
        )
        .bind(version)
        .bind(mode)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A model with its card and its mode's promotions.
    pub async fn model_card(
        &self,
        version: &str,
        failure_mode: &str,
    ) -> Result<Option<ModelCard>, StoreError> {
        let Some(model) = self
            .model_items(Some((version, failure_mode)))
            .await?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let (features, metrics): (serde_json::Value, serde_json::Value) = sqlx::query_as(
            "select features, metrics from models where version = $1 and failure_mode = $2",
        )
        .bind(version)
        .bind(failure_mode)
        .fetch_one(&self.pool)
        .await?;
        let promotions = sqlx::query_as(
            "select time, from_version, to_version, reason from model_promotions
             where failure_mode = $1 order by id desc limit 50",
        )
        .bind(failure_mode)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(ModelCard {
            model,
            features,
            metrics,
            promotions,
        }))
    }

    /// The version that was active before the current one of `failure_mode`, if any.
    pub async fn previous_active_model(
        &self,
        failure_mode: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "select p.from_version from model_promotions p
             join models m on m.version = p.to_version and m.failure_mode = p.failure_mode
             where p.failure_mode = $1 and m.active and p.from_version is not null
             order by p.id desc limit 1",
        )
        .bind(failure_mode)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Dead letters, newest first, of a reason, naming a device in their topic, received
    /// in `[from, to)`, with ids below `before`.
    pub async fn dead_letter_items(
        &self,
        reason: Option<&str>,
        device: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeadLetterItem>, StoreError> {
        let rows: Vec<DeadLetterRow> = sqlx::query_as(
            "select id, received_at, topic, reason, detail, truncated,
                    length(payload) as size, substring(payload from 1 for 2048) as head
             from dead_letters
             where ($1::text is null or reason = $1)
               and ($2::text is null or position('/' || $2 || '/' in topic || '/') > 0)
               and received_at >= $3 and received_at < $4
               and ($5::int8 is null or id < $5)
             order by id desc limit $6",
        )
        .bind(reason)
        .bind(device)
        .bind(from)
        .bind(to)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        // Payloads are bytes as received: invalid UTF-8 is replaced, never an error.
        Ok(rows
            .into_iter()
            .map(|row| DeadLetterItem {
                id: row.id,
                received_at: row.received_at,
                topic: row.topic,
                reason: row.reason,
                detail: row.detail,
                truncated: row.truncated,
                size: row.size,
                payload_preview: String::from_utf8_lossy(&row.head)
                    .chars()
                    .take(PREVIEW_CHARS)
                    .collect(),
            })
            .collect())
    }

    /// Dead letters per reason received in `[from, to)`, most first.
    pub async fn dead_letter_reasons(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<ReasonCount>, StoreError> {
        Ok(sqlx::query_as(
            "select reason, count(*) as count from dead_letters
             where received_at >= $1 and received_at < $2
             group by reason order by count desc, reason",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The service KPIs of `[from, to)` (event time, as tickets are).
    pub async fn kpis(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Kpis, StoreError> {
        let tickets: TicketCounts = sqlx::query_as(
            "select count(*) filter (where kind = 'proactive') as proactive,
                    count(*) filter (where kind = 'reactive') as reactive,
                    count(*) filter (where kind = 'incident') as incident
             from tickets where opened_at >= $1 and opened_at < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        let hours = "extract(epoch from x) / 3600.0";
        let (precision, lead, resolution, first_fix): (
            Option<f64>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
        ) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "with resolved as (
                 select t.* from tickets t
                 where t.resolved_at >= $1 and t.resolved_at < $2
             )
             select
                 (count(*) filter (where kind = 'proactive' and outcome = 'fault_confirmed'))::float8
                   / nullif(count(*) filter (where kind = 'proactive'
                              and outcome in ('fault_confirmed', 'no_fault_found')), 0),
                 (select percentile_cont(0.5) within group (order by {lead})
                  from (select (select min(f.time) from failures f
                                where f.device_id = r.device_id
                                  and f.component = coalesce(r.outcome_component,
                                                             split_part(r.failure_mode, '/', 2))
                                  and f.time >= r.opened_at) - r.opened_at as x
                        from resolved r where r.kind = 'proactive') lead
                  where x is not null),
                 (select percentile_cont(0.5) within group (order by {res})
                  from (select resolved_at - opened_at as x from resolved) res),
                 (count(*) filter (where outcome = 'fault_confirmed'
                      and (select count(*) from ticket_events e
                           where e.ticket_id = resolved.id and e.to_status = 'on_site') <= 1
                      and not exists (select 1 from tickets later
                           where later.device_id = resolved.device_id
                             and later.failure_mode = resolved.failure_mode
                             and later.id <> resolved.id
                             and later.opened_at > resolved.resolved_at
                             and later.opened_at <= resolved.resolved_at + interval '30 days')))::float8
                   / nullif(count(*) filter (where outcome = 'fault_confirmed'), 0)
             from resolved",
            lead = hours,
            res = hours,
        )))
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        let first_contact: Option<f64> = sqlx::query_scalar(
            "select percentile_cont(0.5) within group (order by extract(epoch from x) / 3600.0)
             from (select (select min(o.sent_at) from outreach o
                           where o.ticket_id = t.id and o.status = 'sent') - t.written_at as x
                   from tickets t where t.opened_at >= $1 and t.opened_at < $2) c
             where x is not null",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        let (confirmations, reschedules, declines): (i64, i64, i64) = sqlx::query_as(
            "select count(*) filter (where action = 'confirm'),
                    count(*) filter (where action = 'reschedule'),
                    count(*) filter (where action = 'decline')
             from link_answers where at >= $1 and at < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        let (messages_sent, stale_devices, open_incidents): (i64, i64, i64) = sqlx::query_as(
            "select (select count(*) from outreach
                     where status = 'sent' and event_at >= $1 and event_at < $2),
                    (select count(*) from devices where stale_since is not null),
                    (select count(*) from incidents where status = 'open')",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        let total = tickets.proactive + tickets.reactive + tickets.incident;
        #[allow(clippy::cast_precision_loss)]
        let proactive_share = (total > 0).then(|| tickets.proactive as f64 / total as f64);
        Ok(Kpis {
            from,
            to,
            tickets,
            proactive_share,
            proactive_precision: precision,
            median_lead_time_hours: lead,
            median_time_to_first_contact_hours: first_contact,
            median_time_to_resolution_hours: resolution,
            first_time_fix_rate: first_fix,
            confirmations,
            reschedules,
            declines,
            messages_sent,
            stale_devices,
            open_incidents,
        })
    }
}

/// Running totals for the demo's `kpi:` line (all time, not a period).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct Totals {
    pub proactive: i64,
    pub reactive: i64,
    pub incidents: i64,
    /// Tickets that have had a visit booked.
    pub booked: i64,
    /// Messages delivered to a customer.
    pub messages: i64,
    /// Proactive visits that found the predicted fault and replaced the part before the
    /// device reported a failure (no critical event between opening and resolution).
    pub prevented: i64,
    /// Failures that happened: devices' critical events.
    pub missed: i64,
}

impl Store {
    /// The demo's running totals, in one statement.
    pub async fn totals(&self) -> Result<Totals, StoreError> {
        Ok(sqlx::query_as(
            "select
                 (select count(*) from tickets where kind = 'proactive') as proactive,
                 (select count(*) from tickets where kind = 'reactive') as reactive,
                 (select count(*) from incidents) as incidents,
                 (select count(distinct ticket_id) from bookings) as booked,
                 (select count(*) from outreach where status = 'sent') as messages,
                 (select count(*) from tickets t where kind = 'proactive'
                    and outcome = 'fault_confirmed'
                    and not exists (select 1 from device_events e
                                    where e.device_id = t.device_id
                                      and e.severity = 'critical'
                                      and e.time >= t.opened_at
                                      and e.time <= t.resolved_at)) as prevented,
                 (select count(*) from device_events where severity = 'critical') as missed",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

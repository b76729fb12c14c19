//! What the API shows of devices (`/api/v1/devices…`): the fleet-risk list (each device's
//! highest current score, from `device_risk`), a device's detail, its telemetry in time
//! buckets (from `telemetry_hourly` when the bucket is whole hours, else from
//! `telemetry`), its events and its scores over time. Lists page by keyset, never offset.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Store, StoreError};

/// A device's highest current score.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Risk {
    pub failure_mode: String,
    /// The model's probability of a failure within its horizon.
    pub probability: f64,
    /// Above the model's threshold: what dispatch acts on.
    pub above_threshold: bool,
    /// Event time the score is as of.
    pub time: DateTime<Utc>,
    pub model_version: String,
}

/// A device in a list.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DeviceItem {
    pub external_id: String,
    pub kind: String,
    pub model: Option<String>,
    /// The customer's external id.
    pub customer: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The device's last status message (`null`: never sent one).
    pub online: Option<bool>,
    /// Set while its telemetry has stopped: since when.
    pub stale_since: Option<DateTime<Utc>>,
    /// Its highest current score over its failure modes (`null`: never scored).
    pub risk: Option<Risk>,
    /// Tickets not resolved, closed or cancelled.
    pub open_tickets: i64,
    #[serde(skip)]
    pub(crate) id: i32,
    #[serde(skip)]
    pub(crate) installed_at: Option<DateTime<Utc>>,
}

/// A current score of one failure mode, with why.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct ModeRisk {
    pub failure_mode: String,
    pub probability: f64,
    pub above_threshold: bool,
    pub time: DateTime<Utc>,
    pub model_version: String,
    /// The features that pushed the score most, as the model explains it.
    pub top_factors: serde_json::Value,
}

/// Which order a device list comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSort {
    /// Highest current risk first (never scored last), then by id.
    Risk,
    ExternalId,
    /// Most recently seen first (never seen last), then by id.
    LastSeen,
}

/// A device list's filters and page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceFilter {
    pub kind: Option<String>,
    pub model: Option<String>,
    pub customer: Option<String>,
    pub min_risk: Option<f64>,
    /// External ids starting with this.
    pub prefix: Option<String>,
    /// Only devices with a ticket of this technician (a technician's key).
    pub technician_id: Option<i32>,
    /// Only this device (a detail).
    pub external_id: Option<String>,
}

/// Where the next page starts: the last item's sort key.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceCursor {
    Risk(f64, i32),
    ExternalId(String),
    LastSeen(i64, i32),
}

impl DeviceCursor {
    /// The cursor after `item` in `sort`'s order.
    pub fn after(sort: DeviceSort, item: &DeviceItem) -> DeviceCursor {
        match sort {
            DeviceSort::Risk => {
                DeviceCursor::Risk(item.risk.as_ref().map_or(-1.0, |r| r.probability), item.id)
            }
            DeviceSort::ExternalId => DeviceCursor::ExternalId(item.external_id.clone()),
            DeviceSort::LastSeen => DeviceCursor::LastSeen(
                item.last_seen_at.map_or(i64::MIN, |t| t.timestamp_micros()),
                item.id,
            ),
        }
    }

    pub fn encode(&self) -> String {
        match self {
            DeviceCursor::Risk(risk, id) => format!("r:{risk:?}:{id}"),
            DeviceCursor::ExternalId(external_id) => format!("e:{external_id}"),
            DeviceCursor::LastSeen(micros, id) => format!("s:{micros}:{id}"),
        }
    }

    /// The cursor `text` made for `sort`, `None` when it is not one.
    pub fn decode(sort: DeviceSort, text: &str) -> Option<DeviceCursor> {
        let (tag, rest) = text.split_once(':')?;
        match (sort, tag) {
            (DeviceSort::Risk, "r") => {
                let (risk, id) = rest.rsplit_once(':')?;
                let risk: f64 = risk.parse().ok().filter(|r: &f64| r.is_finite())?;
                Some(DeviceCursor::Risk(risk, id.parse().ok()?))
            }
            (DeviceSort::ExternalId, "e") => Some(DeviceCursor::ExternalId(rest.to_string())),
            (DeviceSort::LastSeen, "s") => {
                let (micros, id) = rest.split_once(':')?;
                Some(DeviceCursor::LastSeen(
                    micros.parse().ok()?,
                    id.parse().ok()?,
                ))
            }
            _ => None,
        }
    }
}

/// A time as chrono writes it (`to_rfc3339_opts(AutoSi, true)`), made in one piece:
/// chrono's own `Serialize` writes through `collect_str`, which escapes it a character at a
/// time (5 % of `forewarn bench api`, hundreds of buckets an answer).
fn rfc3339<S: serde::Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// Telemetry of one metric in time buckets.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct Bucket {
    /// The bucket's start.
    #[serde(serialize_with = "rfc3339")]
    pub time: DateTime<Utc>,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    /// Readings in the bucket.
    pub count: i64,
}

/// A device event.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct EventItem {
    pub time: DateTime<Utc>,
    pub code: String,
    /// `info`, `warning`, `error` or `critical`.
    pub severity: String,
    pub message: String,
}

/// A score of a device.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct PredictionItem {
    pub time: DateTime<Utc>,
    pub failure_mode: String,
    pub probability: f64,
    pub above_threshold: bool,
    pub model_version: String,
}

#[derive(sqlx::FromRow)]
struct DeviceRow {
    id: i32,
    external_id: String,
    kind: String,
    model: Option<String>,
    customer: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
    last_seen_at: Option<DateTime<Utc>>,
    online: Option<bool>,
    stale_since: Option<DateTime<Utc>>,
    installed_at: Option<DateTime<Utc>>,
    risk_mode: Option<String>,
    risk: Option<f64>,
    risk_above: Option<bool>,
    risk_time: Option<DateTime<Utc>>,
    risk_model: Option<String>,
    open_tickets: i64,
}

fn device_item(row: DeviceRow) -> DeviceItem {
    let risk = match (
        row.risk_mode,
        row.risk,
        row.risk_above,
        row.risk_time,
        row.risk_model,
    ) {
        (Some(failure_mode), Some(probability), Some(above), Some(time), Some(model_version)) => {
            Some(Risk {
                failure_mode,
                probability,
                above_threshold: above,
                time,
                model_version,
            })
        }
        _ => None,
    };
    DeviceItem {
        id: row.id,
        external_id: row.external_id,
        kind: row.kind,
        model: row.model,
        customer: row.customer,
        latitude: row.latitude,
        longitude: row.longitude,
        last_seen_at: row.last_seen_at,
        online: row.online,
        stale_since: row.stale_since,
        installed_at: row.installed_at,
        risk,
        open_tickets: row.open_tickets,
    }
}

/// `like` pattern matching text that starts with `prefix` literally.
pub(super) fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Where a device never seen sorts by last seen.
fn never_seen() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("1900-01-01T00:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// What a telemetry query reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelemetrySource {
    /// `telemetry_hourly`: buckets of whole hours.
    Hourly,
    /// `telemetry`: any bucket.
    Raw,
}

impl Store {
    /// Devices matching `filter`, a page of `limit` (+1, to tell a next page) after `cursor`.
    pub async fn device_items(
        &self,
        filter: &DeviceFilter,
        sort: DeviceSort,
        cursor: Option<&DeviceCursor>,
        limit: i64,
    ) -> Result<Vec<DeviceItem>, StoreError> {
        let (keyset, order) = match sort {
            DeviceSort::Risk => (
                "($9::float8 is null or coalesce(r.probability, -1) < $9
                  or (coalesce(r.probability, -1) = $9 and d.id > $10))",
                "coalesce(r.probability, -1) desc, d.id",
            ),
            DeviceSort::ExternalId => (
                "($11::text is null or d.external_id > $11)",
                "d.external_id",
            ),
            DeviceSort::LastSeen => (
                "($12::timestamptz is null
                  or coalesce(d.last_seen_at, timestamptz '1900-01-01 00:00:00+00') < $12
                  or (coalesce(d.last_seen_at, timestamptz '1900-01-01 00:00:00+00') = $12 and d.id > $10))",
                "coalesce(d.last_seen_at, timestamptz '1900-01-01 00:00:00+00') desc, d.id",
            ),
        };
        let (risk_after, id_after, external_after, seen_after) = match cursor {
            Some(DeviceCursor::Risk(risk, id)) => (Some(*risk), Some(*id), None, None),
            Some(DeviceCursor::ExternalId(e)) => (None, None, Some(e.clone()), None),
            Some(DeviceCursor::LastSeen(micros, id)) => (
                None,
                Some(*id),
                None,
                // Never seen sorts as 1900, before any time a device reports.
                Some(
                    DateTime::from_timestamp_micros(*micros)
                        .filter(|_| *micros != i64::MIN)
                        .unwrap_or_else(never_seen),
                ),
            ),
            None => (None, None, None, None),
        };
        let sql = format!(
            "select d.id, d.external_id, d.kind, d.model, c.external_id as customer,
                    d.latitude, d.longitude, d.last_seen_at, d.online, d.stale_since,
                    d.installed_at, r.failure_mode as risk_mode, r.probability as risk,
                    r.above_threshold as risk_above, r.time as risk_time,
                    r.model_version as risk_model,
                    (select count(*) from tickets t where t.device_id = d.id
                       and t.status in ('open', 'booked', 'en_route', 'on_site')) as open_tickets
             from devices d
             left join customers c on c.id = d.customer_id
             left join lateral (
                 select * from device_risk r where r.device_id = d.id
                 order by r.probability desc, r.failure_mode limit 1
             ) r on true
             where ($1::text is null or d.kind = $1)
               and ($2::text is null or d.model = $2)
               and ($3::text is null or c.external_id = $3)
               and ($4::float8 is null or r.probability >= $4)
               and ($5::text is null or d.external_id like $5)
               and ($6::int4 is null or exists (
                   select 1 from tickets t where t.device_id = d.id and t.technician_id = $6))
               and ($7::text is null or d.external_id = $7)
               and {keyset}
             order by {order}
             limit $8"
        );
        // The keyset and order are one of the fixed texts above, never input.
        let rows: Vec<DeviceRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&filter.kind)
            .bind(&filter.model)
            .bind(&filter.customer)
            .bind(filter.min_risk)
            .bind(filter.prefix.as_deref().map(prefix_pattern))
            .bind(filter.technician_id)
            .bind(&filter.external_id)
            .bind(limit + 1)
            .bind(risk_after)
            .bind(id_after)
            .bind(external_after)
            .bind(seen_after)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(device_item).collect())
    }

    /// A device's current score of each failure mode, highest first.
    pub async fn device_risks(&self, device_id: i32) -> Result<Vec<ModeRisk>, StoreError> {
        Ok(sqlx::query_as(
            "select failure_mode, probability, above_threshold, time, model_version, top_factors
             from device_risk where device_id = $1 order by probability desc, failure_mode",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The metrics a device has reported (in the hourly rollup).
    pub async fn device_metrics(&self, device_id: i32) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "select m.name from metrics m
             where exists (select 1 from telemetry_hourly h
                           where h.device_id = $1 and h.metric_id = m.id)
             order by m.name",
        )
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A metric's id by name.
    pub async fn metric_id(&self, name: &str) -> Result<Option<i16>, StoreError> {
        Ok(sqlx::query_scalar("select id from metrics where name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// One metric (by name) of one device (by external id, if a caller bound to
    /// `technician_id` may see it: [`Store::visible_device_id`]) in `[from, to)`, in buckets
    /// of `bucket_seconds` aligned to the Unix epoch: average (weighted by readings),
    /// minimum, maximum and count. One statement, device and metric found inside it; an
    /// empty answer may mean no such device or metric (the caller asks which). Hour buckets
    /// are the rollup's own rows, read in key order from its primary key (which holds the
    /// values, migration 0016) with nothing to group.
    pub async fn telemetry_buckets(
        &self,
        external_id: &str,
        technician_id: Option<i32>,
        metric: &str,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
        bucket_seconds: i64,
        source: TelemetrySource,
    ) -> Result<Vec<Bucket>, StoreError> {
        let (table, time) = match source {
            TelemetrySource::Hourly => ("telemetry_hourly", "bucket"),
            TelemetrySource::Raw => ("telemetry", "time"),
        };
        let select = match source {
            TelemetrySource::Hourly if bucket_seconds == 3_600 => {
                "select x.bucket as time, x.avg::float8 as avg, x.min::float8 as min,
                        x.max::float8 as max, x.count::int8 as count"
            }
            TelemetrySource::Hourly => {
                "select date_bin(make_interval(secs => $5), x.bucket, timestamptz '1970-01-01') as time,
                        (sum(x.avg * x.count) / nullif(sum(x.count), 0))::float8 as avg,
                        min(x.min)::float8 as min, max(x.max)::float8 as max,
                        sum(x.count)::int8 as count"
            }
            TelemetrySource::Raw => {
                "select date_bin(make_interval(secs => $5), x.time, timestamptz '1970-01-01') as time,
                        avg(x.value)::float8 as avg, min(x.value)::float8 as min,
                        max(x.value)::float8 as max, count(*)::int8 as count"
            }
        };
        let grouped = select.contains("$5");
        let scoped = if technician_id.is_some() {
            " and exists (select 1 from tickets t where t.device_id = d.id and t.technician_id = $6)"
        } else {
            ""
        };
        let sql = format!(
            "{select}
             from {table} x
             where x.device_id = (select d.id from devices d where d.external_id = $1{scoped})
               and x.metric_id = (select id from metrics where name = $2)
               and x.{time} >= $3 and x.{time} < $4
             {}",
            if grouped {
                "group by 1 order by 1"
            } else {
                "order by 1"
            }
        );
        #[allow(clippy::cast_precision_loss)]
        let seconds = bucket_seconds as f64;
        // Every piece of the statement is one of the fixed texts above, never input.
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(external_id)
            .bind(metric)
            .bind(from)
            .bind(to)
            // Unused by the hour rows, but typed so the statement takes it.
            .bind(seconds);
        if let Some(technician_id) = technician_id {
            query = query.bind(technician_id);
        }
        Ok(query.fetch_all(&self.pool).await?)
    }

    /// The id of the device `external_id` if a caller bound to `technician_id` (a
    /// technician's key: devices with one of their tickets) may see it.
    pub async fn visible_device_id(
        &self,
        external_id: &str,
        technician_id: Option<i32>,
    ) -> Result<Option<i32>, StoreError> {
        Ok(sqlx::query_scalar(
            "select d.id from devices d
             where d.external_id = $1
               and ($2::int4 is null or exists (
                   select 1 from tickets t where t.device_id = d.id and t.technician_id = $2))",
        )
        .bind(external_id)
        .bind(technician_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A device's events in `[from, to)`, newest first, after the cursor `(time, code)`.
    pub async fn device_event_items(
        &self,
        device_id: i32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<(DateTime<Utc>, String)>,
        limit: i64,
    ) -> Result<Vec<EventItem>, StoreError> {
        let (after_time, after_code) = after.unzip();
        Ok(sqlx::query_as(
            "select time, code, severity, message from device_events
             where device_id = $1 and time >= $2 and time < $3
               and ($4::timestamptz is null or (time, code) < ($4, $5))
             order by time desc, code desc
             limit $6",
        )
        .bind(device_id)
        .bind(from)
        .bind(to)
        .bind(after_time)
        .bind(after_code)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A device's scores in `[from, to)`, oldest first, after the cursor
    /// `(time, failure_mode, model_version)`.
    pub async fn prediction_items(
        &self,
        device_id: i32,
        failure_mode: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<(DateTime<Utc>, String, String)>,
        limit: i64,
    ) -> Result<Vec<PredictionItem>, StoreError> {
        let (after_time, after_mode, after_version) = match after {
            Some((t, m, v)) => (Some(t), Some(m), Some(v)),
            None => (None, None, None),
        };
        Ok(sqlx::query_as(
            "select time, failure_mode, probability, above_threshold, model_version
             from predictions
             where device_id = $1 and ($2::text is null or failure_mode = $2)
               and time >= $3 and time < $4
               and ($5::timestamptz is null
                    or (time, failure_mode, model_version) > ($5, $6, $7))
             order by time, failure_mode, model_version
             limit $8",
        )
        .bind(device_id)
        .bind(failure_mode)
        .bind(from)
        .bind(to)
        .bind(after_time)
        .bind(after_mode)
        .bind(after_version)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// A device as `PUT /api/v1/devices/{id}` writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePut {
    pub external_id: String,
    pub kind: String,
    pub model: Option<String>,
    /// A customer's external id; must exist.
    pub customer: Option<String>,
    pub position: Option<(f64, f64)>,
    pub installed_at: Option<DateTime<Utc>>,
}

/// What a device write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceWritten {
    Created,
    Updated,
    /// The customer named does not exist: nothing written.
    NoSuchCustomer,
}

impl Store {
    /// Registers a device (`registered_by = 'api'`) or replaces its registry facts; its
    /// telemetry, status and metadata stay.
    pub async fn put_device(&self, device: &DevicePut) -> Result<DeviceWritten, StoreError> {
        let mut tx = self.pool.begin().await?;
        let customer_id: Option<i64> = match &device.customer {
            Some(customer) => {
                let found: Option<i64> =
                    sqlx::query_scalar("select id from customers where external_id = $1")
                        .bind(customer)
                        .fetch_optional(&mut *tx)
                        .await?;
                match found {
                    Some(id) => Some(id),
                    None => return Ok(DeviceWritten::NoSuchCustomer),
                }
            }
            None => None,
        };
        let (latitude, longitude) = device.position.unzip();
        let created: bool = sqlx::query_scalar(
            "insert into devices (external_id, kind, model, customer_id, latitude, longitude,
                                  installed_at, registered_by)
             values ($1, $2, $3, $4, $5, $6, $7, 'api')
             on conflict (external_id) do update set kind = excluded.kind,
                 model = excluded.model, customer_id = excluded.customer_id,
                 latitude = excluded.latitude, longitude = excluded.longitude,
                 installed_at = excluded.installed_at
             returning xmax = 0",
        )
        .bind(&device.external_id)
        .bind(&device.kind)
        .bind(&device.model)
        .bind(customer_id)
        .bind(latitude)
        .bind(longitude)
        .bind(device.installed_at)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(if created {
            DeviceWritten::Created
        } else {
            DeviceWritten::Updated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_others() {
        for (sort, cursor) in [
            (
                DeviceSort::Risk,
                DeviceCursor::Risk(0.123_456_789_012_345_67, 42),
            ),
            (DeviceSort::Risk, DeviceCursor::Risk(-1.0, 7)),
            (
                DeviceSort::ExternalId,
                DeviceCursor::ExternalId("wm:00:01".into()),
            ),
            (DeviceSort::LastSeen, DeviceCursor::LastSeen(i64::MIN, 3)),
        ] {
            assert_eq!(DeviceCursor::decode(sort, &cursor.encode()), Some(cursor));
        }
        assert_eq!(DeviceCursor::decode(DeviceSort::Risk, "e:x"), None);
        assert_eq!(DeviceCursor::decode(DeviceSort::Risk, "r:NaN:1"), None);
        assert_eq!(DeviceCursor::decode(DeviceSort::LastSeen, "garbage"), None);
    }

    #[test]
    fn prefixes_match_literally() {
        assert_eq!(prefix_pattern("a_b%"), "a\\_b\\%%");
    }

    #[test]
    fn bucket_times_are_written_as_chrono_writes_them() {
        for micros in [
            0,
            1_795_000_000_000_000,
            1_795_000_000_123_000,
            1_795_000_000_000_001,
        ] {
            let time = DateTime::from_timestamp_micros(micros).unwrap();
            let bucket = Bucket {
                time,
                avg: 1.0,
                min: 0.5,
                max: 2.0,
                count: 3,
            };
            let written = serde_json::to_value(&bucket).unwrap();
            assert_eq!(written["time"], serde_json::to_value(time).unwrap());
        }
    }
}

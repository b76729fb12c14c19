//! Technicians, customers and incidents as the API shows and changes them
//! (`/api/v1/technicians…`, `/customers…`, `/incidents`). A technician is never deleted
//! (bookings and keys refer to them): deactivated, planning leaves them out.

use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Store, StoreError};

/// A technician, as listed, created and replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TechnicianItem {
    /// 1-64 visible characters; unique.
    pub external_id: String,
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    /// What they repair: `kind/component`, or `kind/*` for every component of a kind.
    #[serde(default)]
    pub skills: Vec<String>,
    pub home_latitude: f64,
    pub home_longitude: f64,
    #[serde(default)]
    pub home_city: Option<String>,
    /// IANA time zone of their shifts (`Europe/Warsaw`).
    #[serde(default = "utc")]
    pub timezone: String,
    /// ISO weekdays they work (1 = Monday).
    #[serde(default = "weekdays")]
    pub shift_days: Vec<i16>,
    /// Local `HH:MM`.
    #[serde(default = "shift_start")]
    pub shift_start: String,
    #[serde(default = "shift_end")]
    pub shift_end: String,
    #[serde(default = "max_travel_km")]
    pub max_travel_km: f64,
    #[serde(default = "active")]
    pub active: bool,
}

fn utc() -> String {
    "UTC".to_string()
}
fn weekdays() -> Vec<i16> {
    vec![1, 2, 3, 4, 5]
}
fn shift_start() -> String {
    "08:00".to_string()
}
fn shift_end() -> String {
    "16:00".to_string()
}
fn max_travel_km() -> f64 {
    80.0
}
fn active() -> bool {
    true
}

type TechnicianDbRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Vec<String>,
    f64,
    f64,
    Option<String>,
    String,
    Vec<i16>,
    NaiveTime,
    NaiveTime,
    f64,
    bool,
);

fn technician_item(row: TechnicianDbRow) -> TechnicianItem {
    TechnicianItem {
        external_id: row.0,
        name: row.1,
        email: row.2,
        phone: row.3,
        skills: row.4,
        home_latitude: row.5,
        home_longitude: row.6,
        home_city: row.7,
        timezone: row.8,
        shift_days: row.9,
        shift_start: row.10.format("%H:%M").to_string(),
        shift_end: row.11.format("%H:%M").to_string(),
        max_travel_km: row.12,
        active: row.13,
    }
}

const TECHNICIAN_COLUMNS: &str = "external_id, name, email, phone, skills, home_latitude,
    home_longitude, home_city, timezone, shift_days, shift_start, shift_end, max_travel_km,
    active";

/// A customer in a list.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct CustomerItem {
    pub external_id: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// `email`, `sms`, `push` or `webhook`.
    pub preferred_channel: String,
    /// BCP 47.
    pub language: String,
    pub timezone: String,
    pub city: Option<String>,
    pub devices: i64,
    pub open_tickets: i64,
    #[serde(skip)]
    pub(crate) id: i64,
}

/// An incident: many devices of one area failing alike.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct IncidentItem {
    pub id: i64,
    /// The failure mode, or `silence` (a power cut, a network outage).
    pub failure_mode: String,
    /// `open`, `triaged` or `resolved`.
    pub status: String,
    pub opened_at: DateTime<Utc>,
    pub center_latitude: Option<f64>,
    pub center_longitude: Option<f64>,
    pub radius_km: Option<f64>,
    pub device_count: i32,
    /// Tickets linked to it.
    pub tickets: i64,
}

impl Store {
    /// Technicians by external id (with `only`: that one).
    pub async fn technician_items(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<TechnicianItem>, StoreError> {
        let rows: Vec<TechnicianDbRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {TECHNICIAN_COLUMNS} from technicians
             where $1::text is null or external_id = $1 order by external_id"
        )))
        .bind(only)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(technician_item).collect())
    }

    /// Adds a technician; `false` when the external id is taken.
    pub async fn create_technician(
        &self,
        item: &TechnicianItem,
        start: NaiveTime,
        end: NaiveTime,
    ) -> Result<bool, StoreError> {
        let created: Option<i32> = sqlx::query_scalar(
            "insert into technicians (external_id, name, email, phone, skills, home_latitude,
                 home_longitude, home_city, timezone, shift_days, shift_start, shift_end,
                 max_travel_km, active)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             on conflict (external_id) do nothing
             returning id",
        )
        .bind(&item.external_id)
        .bind(&item.name)
        .bind(&item.email)
        .bind(&item.phone)
        .bind(&item.skills)
        .bind(item.home_latitude)
        .bind(item.home_longitude)
        .bind(&item.home_city)
        .bind(&item.timezone)
        .bind(&item.shift_days)
        .bind(start)
        .bind(end)
        .bind(item.max_travel_km)
        .bind(item.active)
        .fetch_optional(&self.pool)
        .await?;
        Ok(created.is_some())
    }

    /// Replaces a technician's facts (not their external id); `false` when there is none.
    /// Visits already booked stay: a shift or skill change applies to planning from now.
    pub async fn replace_technician(
        &self,
        external_id: &str,
        item: &TechnicianItem,
        start: NaiveTime,
        end: NaiveTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "update technicians set name = $2, email = $3, phone = $4, skills = $5,
                 home_latitude = $6, home_longitude = $7, home_city = $8, timezone = $9,
                 shift_days = $10, shift_start = $11, shift_end = $12, max_travel_km = $13,
                 active = $14
             where external_id = $1",
        )
        .bind(external_id)
        .bind(&item.name)
        .bind(&item.email)
        .bind(&item.phone)
        .bind(&item.skills)
        .bind(item.home_latitude)
        .bind(item.home_longitude)
        .bind(&item.home_city)
        .bind(&item.timezone)
        .bind(&item.shift_days)
        .bind(start)
        .bind(end)
        .bind(item.max_travel_km)
        .bind(item.active)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A technician's internal id and time zone, by external id.
    pub async fn technician_ref(
        &self,
        external_id: &str,
    ) -> Result<Option<(i32, String)>, StoreError> {
        Ok(
            sqlx::query_as("select id, timezone from technicians where external_id = $1")
                .bind(external_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// External ids and names of technicians by internal id.
    pub async fn technician_names(
        &self,
        ids: &[i32],
    ) -> Result<std::collections::HashMap<i32, (String, String)>, StoreError> {
        let rows: Vec<(i32, String, String)> =
            sqlx::query_as("select id, external_id, name from technicians where id = any($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id, e, n)| (id, (e, n))).collect())
    }

    /// Customers by external id, after `after`, with `q` a prefix of their external id or
    /// name (case-insensitive); with `only`: that one.
    pub async fn customer_items(
        &self,
        q: Option<&str>,
        only: Option<&str>,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<CustomerItem>, StoreError> {
        Ok(sqlx::query_as(
            "select c.id, c.external_id, c.name, c.email, c.phone, c.preferred_channel,
                    c.language, c.timezone, c.city,
                    (select count(*) from devices d where d.customer_id = c.id) as devices,
                    (select count(*) from tickets t join devices d on d.id = t.device_id
                     where d.customer_id = c.id
                       and t.status in ('open', 'booked', 'en_route', 'on_site')) as open_tickets
             from customers c
             where c.external_id is not null
               and ($1::text is null or c.external_id ilike $1 or c.name ilike $1)
               and ($2::text is null or c.external_id = $2)
               and ($3::text is null or c.external_id > $3)
             order by c.external_id limit $4",
        )
        .bind(q.map(super::views::prefix_pattern))
        .bind(only)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Incidents, newest first, of a status, with ids below `before`.
    pub async fn incident_items(
        &self,
        status: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<IncidentItem>, StoreError> {
        Ok(sqlx::query_as(
            "select i.id, i.failure_mode, i.status, i.opened_at, i.center_latitude,
                    i.center_longitude, i.radius_km, i.device_count,
                    (select count(*) from tickets t where t.incident_id = i.id) as tickets
             from incidents i
             where ($1::text is null or i.status = $1) and ($2::int8 is null or i.id < $2)
             order by i.id desc limit $3",
        )
        .bind(status)
        .bind(before)
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?)
    }
}

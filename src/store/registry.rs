//! The fleet registry and ground truth: customers, devices, technicians, the metric
//! catalogue, failures and maintenance. Written by imports and the simulator's history
//! mode; later by the API and closed tickets.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRow {
    pub external_id: String,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub preferred_channel: String,
    pub language: String,
    pub timezone: String,
    /// Local hours (start, end) during which only safety-critical messages go out.
    pub quiet_hours: Option<(u32, u32)>,
    pub tier: String,
    pub address: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    pub external_id: String,
    pub kind: String,
    pub model: Option<String>,
    pub customer_external_id: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub installed_at: Option<DateTime<Utc>>,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TechnicianRow {
    pub external_id: String,
    pub name: String,
    pub email: Option<String>,
    pub skills: Vec<String>,
    pub home_latitude: f64,
    pub home_longitude: f64,
    pub home_city: Option<String>,
    pub timezone: String,
    pub shift_days: Vec<i16>,
    pub shift_start_hour: u32,
    pub shift_end_hour: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub name: String,
    pub unit: String,
    pub device_kinds: Vec<String>,
}

/// Kinds that only say the kind was not known when the device was registered: ingest's
/// auto-registration (`unknown`, the column's default) and imports of failures or
/// maintenance without `--kind` (`imported`). A kind from an import replaces them.
pub const PLACEHOLDER_KINDS: [&str; 2] = ["unknown", "imported"];

/// What [`Store::import_devices`] does to a device that is already registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingDevices {
    /// Fill in what it lacks (a placeholder kind, an empty model, installation time,
    /// customer or position); never change a value it has.
    FillIn,
    /// Replace every attribute the imported row has; keep the ones it lacks.
    Overwrite,
}

/// A failure or a maintenance action of a device's component.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentRecord {
    pub time: DateTime<Utc>,
    pub device_id: i32,
    pub component: String,
    /// `failures.source` or `maintenance.action`.
    pub detail: String,
}

fn hour(h: u32) -> chrono::NaiveTime {
    chrono::NaiveTime::from_hms_opt(h % 24, 0, 0).unwrap_or_default()
}

impl Store {
    /// Inserts or updates customers by external id.
    pub async fn upsert_customers(&self, rows: &[CustomerRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for row in rows {
            sqlx::query(
                "insert into customers (external_id, name, email, phone, preferred_channel, language, timezone,
                     quiet_hours_start, quiet_hours_end, tier, address, city, country)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 on conflict (external_id) do update set name = excluded.name, email = excluded.email,
                     phone = excluded.phone, preferred_channel = excluded.preferred_channel,
                     language = excluded.language, timezone = excluded.timezone,
                     quiet_hours_start = excluded.quiet_hours_start, quiet_hours_end = excluded.quiet_hours_end,
                     tier = excluded.tier, address = excluded.address, city = excluded.city, country = excluded.country",
            )
            .bind(&row.external_id)
            .bind(&row.name)
            .bind(&row.email)
            .bind(&row.phone)
            .bind(&row.preferred_channel)
            .bind(&row.language)
            .bind(&row.timezone)
            .bind(row.quiet_hours.map(|(start, _)| hour(start)))
            .bind(row.quiet_hours.map(|(_, end)| hour(end)))
            .bind(&row.tier)
            .bind(&row.address)
            .bind(&row.city)
            .bind(&row.country)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Inserts or updates devices by external id; returns `(external_id, id)`.
    pub async fn upsert_devices(
        &self,
        rows: &[DeviceRow],
    ) -> Result<Vec<(String, i32)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i32 = sqlx::query_scalar(
                "insert into devices (external_id, kind, model, customer_id, latitude, longitude, installed_at, metadata, registered_by)
                 values ($1, $2, $3, (select id from customers where external_id = $4), $5, $6, $7, $8, 'import')
                 on conflict (external_id) do update set kind = excluded.kind, model = excluded.model,
                     customer_id = excluded.customer_id, latitude = excluded.latitude, longitude = excluded.longitude,
                     installed_at = excluded.installed_at, metadata = excluded.metadata
                 returning id",
            )
            .bind(&row.external_id)
            .bind(&row.kind)
            .bind(&row.model)
            .bind(&row.customer_external_id)
            .bind(row.latitude)
            .bind(row.longitude)
            .bind(row.installed_at)
            .bind(&row.metadata)
            .fetch_one(&mut *tx)
            .await?;
            ids.push((row.external_id.clone(), id));
        }
        tx.commit().await?;
        Ok(ids)
    }

    /// Registers imported devices and returns `(external_id, id)` of every row. A device
    /// already registered keeps its metadata; its other attributes follow `existing`. New
    /// devices are registered by `import`. Customers named by the rows must exist
    /// ([`Store::register_customers`]); an unknown one leaves the device without a customer.
    pub async fn import_devices(
        &self,
        rows: &[DeviceRow],
        existing: ExistingDevices,
    ) -> Result<Vec<(String, i32)>, StoreError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let external_ids: Vec<String> = rows.iter().map(|r| r.external_id.clone()).collect();
        // Each attribute of a registered device: with `$9` (overwrite) the imported value
        // unless it is null, else the registered value unless it is null (fill in); the
        // kind also when the registered one is a placeholder. Without overwrite, the
        // `where` leaves rows that would not change untouched, so that re-importing
        // rewrites (and locks) nothing.
        sqlx::query(
            "insert into devices (external_id, kind, model, customer_id, latitude, longitude,
                 installed_at, metadata, registered_by)
             select r.external_id, r.kind, r.model, c.id, r.latitude, r.longitude, r.installed_at,
                    r.metadata, 'import'
             from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[],
                         $6::float8[], $7::timestamptz[], $8::jsonb[])
                  as r (external_id, kind, model, customer, latitude, longitude, installed_at, metadata)
             left join customers c on c.external_id = r.customer
             on conflict (external_id) do update set
                 kind = case when $9 or devices.kind = any($10) then excluded.kind else devices.kind end,
                 model = case when $9 then coalesce(excluded.model, devices.model)
                              else coalesce(devices.model, excluded.model) end,
                 customer_id = case when $9 then coalesce(excluded.customer_id, devices.customer_id)
                                    else coalesce(devices.customer_id, excluded.customer_id) end,
                 latitude = case when $9 then coalesce(excluded.latitude, devices.latitude)
                                 else coalesce(devices.latitude, excluded.latitude) end,
                 longitude = case when $9 then coalesce(excluded.longitude, devices.longitude)
                                  else coalesce(devices.longitude, excluded.longitude) end,
                 installed_at = case when $9 then coalesce(excluded.installed_at, devices.installed_at)
                                     else coalesce(devices.installed_at, excluded.installed_at) end
             where $9
                or (devices.kind = any($10) and devices.kind <> excluded.kind)
                or (devices.model is null and excluded.model is not null)
                or (devices.customer_id is null and excluded.customer_id is not null)
                or (devices.latitude is null and excluded.latitude is not null)
                or (devices.longitude is null and excluded.longitude is not null)
                or (devices.installed_at is null and excluded.installed_at is not null)",
        )
        .bind(&external_ids)
        .bind(rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.model.as_deref()).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.customer_external_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.latitude).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.longitude).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.installed_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.metadata.clone()).collect::<Vec<_>>())
        .bind(existing == ExistingDevices::Overwrite)
        .bind(&PLACEHOLDER_KINDS[..])
        .execute(&self.pool)
        .await?;
        self.lookup_devices(&external_ids).await
    }

    /// The registered attributes of those of `external_ids` that are registered (to
    /// compare with a device register).
    pub async fn registered_devices(
        &self,
        external_ids: &[String],
    ) -> Result<Vec<DeviceRow>, StoreError> {
        let rows = sqlx::query(
            "select d.external_id, d.kind, d.model, c.external_id as customer, d.latitude,
                    d.longitude, d.installed_at, d.metadata
             from devices d left join customers c on c.id = d.customer_id
             where d.external_id = any($1) order by d.external_id",
        )
        .bind(external_ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DeviceRow {
                    external_id: row.try_get("external_id")?,
                    kind: row.try_get("kind")?,
                    model: row.try_get("model")?,
                    customer_external_id: row.try_get("customer")?,
                    latitude: row.try_get("latitude")?,
                    longitude: row.try_get("longitude")?,
                    installed_at: row.try_get("installed_at")?,
                    metadata: row.try_get("metadata")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// Registers customers known only by their external id (a device register names
    /// them); existing ones are left as they are.
    pub async fn register_customers(&self, external_ids: &[String]) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "insert into customers (external_id) select unnest($1::text[])
             on conflict (external_id) do nothing",
        )
        .bind(external_ids)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub async fn upsert_technicians(&self, rows: &[TechnicianRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for row in rows {
            sqlx::query(
                "insert into technicians (external_id, name, email, skills, home_latitude, home_longitude, home_city,
                     timezone, shift_days, shift_start, shift_end)
                 values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 on conflict (external_id) do update set name = excluded.name, email = excluded.email,
                     skills = excluded.skills, home_latitude = excluded.home_latitude,
                     home_longitude = excluded.home_longitude, home_city = excluded.home_city,
                     timezone = excluded.timezone, shift_days = excluded.shift_days,
                     shift_start = excluded.shift_start, shift_end = excluded.shift_end",
            )
            .bind(&row.external_id)
            .bind(&row.name)
            .bind(&row.email)
            .bind(&row.skills)
            .bind(row.home_latitude)
            .bind(row.home_longitude)
            .bind(&row.home_city)
            .bind(&row.timezone)
            .bind(&row.shift_days)
            .bind(hour(row.shift_start_hour))
            .bind(hour(row.shift_end_hour))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds metrics to the catalogue (or updates their unit and kinds); returns name → id.
    pub async fn upsert_metrics(
        &self,
        rows: &[MetricRow],
    ) -> Result<Vec<(String, i16)>, StoreError> {
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i16 = sqlx::query_scalar(
                "insert into metrics (name, unit, device_kinds) values ($1, $2, $3)
                 on conflict (name) do update set unit = excluded.unit,
                     device_kinds = (select array_agg(distinct k) from unnest(metrics.device_kinds || excluded.device_kinds) k)
                 returning id",
            )
            .bind(&row.name)
            .bind(&row.unit)
            .bind(&row.device_kinds)
            .fetch_one(&self.pool)
            .await?;
            ids.push((row.name.clone(), id));
        }
        Ok(ids)
    }

    /// Records failures (ground truth; `detail` is the source); an existing (device,
    /// component, time) is kept.
    pub async fn insert_failures(&self, rows: &[ComponentRecord]) -> Result<u64, StoreError> {
        self.insert_component_records(
            "insert into failures (time, device_id, component, source)
             select * from unnest($1::timestamptz[], $2::int[], $3::text[], $4::text[])
             on conflict do nothing",
            rows,
        )
        .await
    }

    /// Records maintenance (`detail` is the action); an existing (device, component, time)
    /// is kept.
    pub async fn insert_maintenance(&self, rows: &[ComponentRecord]) -> Result<u64, StoreError> {
        self.insert_component_records(
            "insert into maintenance (time, device_id, component, action)
             select * from unnest($1::timestamptz[], $2::int[], $3::text[], $4::text[])
             on conflict do nothing",
            rows,
        )
        .await
    }

    async fn insert_component_records(
        &self,
        sql: &'static str,
        rows: &[ComponentRecord],
    ) -> Result<u64, StoreError> {
        Ok(sqlx::query(sql)
            .bind(rows.iter().map(|r| r.time).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.device_id).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.component.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.detail.as_str()).collect::<Vec<_>>())
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// Counts rows of a contract table (tests, tools, the simulator's report).
    pub async fn count_rows(&self, table: CountedTable) -> Result<i64, StoreError> {
        let sql = match table {
            CountedTable::Telemetry => "select count(*) from telemetry",
            CountedTable::DeviceEvents => "select count(*) from device_events",
            CountedTable::Devices => "select count(*) from devices",
            CountedTable::Customers => "select count(*) from customers",
            CountedTable::Technicians => "select count(*) from technicians",
            CountedTable::Failures => "select count(*) from failures",
            CountedTable::Maintenance => "select count(*) from maintenance",
            CountedTable::DeadLetters => "select count(*) from dead_letters",
        };
        Ok(sqlx::query(sql).fetch_one(&self.pool).await?.get(0))
    }
}

/// Tables [`Store::count_rows`] can count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountedTable {
    Telemetry,
    DeviceEvents,
    Devices,
    Customers,
    Technicians,
    Failures,
    Maintenance,
    DeadLetters,
}

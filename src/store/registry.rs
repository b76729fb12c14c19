//! The fleet registry: customers, devices (ingest's id lookup and registration, imports'
//! registers, live scoring's stale marks), technicians and the metric catalogue. Written by
//! ingest, imports and the simulator's history mode; later by the API.

use std::collections::HashMap;

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

/// A device as the registry knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    pub id: i32,
    pub external_id: String,
    pub kind: String,
    pub last_seen_at: Option<chrono::DateTime<chrono::Utc>>,
    pub online: Option<bool>,
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

fn hour(h: u32) -> chrono::NaiveTime {
    chrono::NaiveTime::from_hms_opt(h % 24, 0, 0).unwrap_or_default()
}

impl Store {
    /// Maps external ids to surrogate ids, registering the missing ones when `register`.
    /// Ids that stay unknown are absent from the answer.
    pub async fn resolve_devices(
        &self,
        external_ids: &[String],
        register: bool,
    ) -> Result<Vec<(String, i32)>, StoreError> {
        let mut found = self.lookup_devices(external_ids).await?;
        if register && found.len() < external_ids.len() {
            found.extend(
                self.register_devices(&missing_names(external_ids, &found))
                    .await?,
            );
        }
        Ok(found)
    }

    /// Maps external ids to surrogate ids; unknown ones are absent from the answer.
    pub async fn lookup_devices(
        &self,
        external_ids: &[String],
    ) -> Result<Vec<(String, i32)>, StoreError> {
        let rows = sqlx::query("select external_id, id from devices where external_id = any($1)")
            .bind(external_ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Registers devices the caller found missing and returns their ids. Only the names
    /// asked for are inserted (a lookup comes first), so a sequence value is spent only
    /// when two writers race for the same new device.
    pub async fn register_devices(
        &self,
        external_ids: &[String],
    ) -> Result<Vec<(String, i32)>, StoreError> {
        sqlx::query(
            "insert into devices (external_id, registered_by)
             select unnest($1::text[]), 'auto'
             on conflict (external_id) do nothing",
        )
        .bind(external_ids)
        .execute(&self.pool)
        .await?;
        self.lookup_devices(external_ids).await
    }

    /// Maps metric names to catalogue ids, adding the missing ones when `register`.
    pub async fn resolve_metrics(
        &self,
        names: &[String],
        register: bool,
    ) -> Result<Vec<(String, i16)>, StoreError> {
        let mut found = self.lookup_metrics(names).await?;
        if register && found.len() < names.len() {
            found.extend(self.register_metrics(&missing_names(names, &found)).await?);
        }
        Ok(found)
    }

    /// Maps metric names to catalogue ids; unknown ones are absent from the answer.
    pub async fn lookup_metrics(&self, names: &[String]) -> Result<Vec<(String, i16)>, StoreError> {
        let rows = sqlx::query("select name, id from metrics where name = any($1)")
            .bind(names)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Adds metric names the caller found missing (`metrics.id` is a smallint: a lookup
    /// comes first so that no sequence value is spent on a name that exists).
    pub async fn register_metrics(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, i16)>, StoreError> {
        sqlx::query(
            "insert into metrics (name) select unnest($1::text[]) on conflict (name) do nothing",
        )
        .bind(names)
        .execute(&self.pool)
        .await?;
        self.lookup_metrics(names).await
    }

    /// Registers (or updates) a device with its kind and model; returns its id.
    pub async fn upsert_device(
        &self,
        external_id: &str,
        kind: &str,
        model: Option<&str>,
    ) -> Result<i32, StoreError> {
        let id = sqlx::query_scalar(
            "insert into devices (external_id, kind, model, registered_by) values ($1, $2, $3, 'import')
             on conflict (external_id) do update set kind = excluded.kind, model = excluded.model
             returning id",
        )
        .bind(external_id)
        .bind(kind)
        .bind(model)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    pub async fn device(&self, external_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let row = sqlx::query("select id, external_id, kind, last_seen_at, online from devices where external_id = $1")
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| DeviceRecord {
            id: row.get(0),
            external_id: row.get(1),
            kind: row.get(2),
            last_seen_at: row.get(3),
            online: row.get(4),
        }))
    }

    /// Marks devices stale since the given times (a device already stale keeps its time),
    /// and clears the mark of `reporting` ones.
    pub async fn set_stale(
        &self,
        stale: &[(i32, DateTime<Utc>)],
        reporting: &[i32],
    ) -> Result<(), StoreError> {
        if !stale.is_empty() {
            sqlx::query(
                "update devices d set stale_since = s.since
                 from unnest($1::int4[], $2::timestamptz[]) as s (id, since)
                 where d.id = s.id and d.stale_since is null",
            )
            .bind(stale.iter().map(|s| s.0).collect::<Vec<_>>())
            .bind(stale.iter().map(|s| s.1).collect::<Vec<_>>())
            .execute(&self.pool)
            .await?;
        }
        if !reporting.is_empty() {
            sqlx::query(
                "update devices set stale_since = null
                 where id = any($1) and stale_since is not null",
            )
            .bind(reporting)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

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

    /// The metric catalogue: id → name.
    pub async fn metric_names(&self) -> Result<HashMap<i16, String>, StoreError> {
        let rows: Vec<(i16, String)> = sqlx::query_as("select id, name from metrics")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().collect())
    }
}

/// The names in `asked` that `found` has no id for.
pub(crate) fn missing_names<T>(asked: &[String], found: &[(String, T)]) -> Vec<String> {
    let known: std::collections::HashSet<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    asked
        .iter()
        .filter(|name| !known.contains(name.as_str()))
        .cloned()
        .collect()
}

//! All PostgreSQL access: the pool, migrations and TimescaleDB policies, and the queries of
//! every stage. Architecture invariant: only this module imports `sqlx`.

pub mod config;
mod copy;
mod migrate;
mod prediction;
mod registry;
mod write;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool, Row};

use crate::config::{DatabaseConfig, StorageConfig};

pub use migrate::{MIGRATION_LOCK_KEY, MigrationReport};
pub use prediction::{DeviceSummary, ModelRow, PredictionRow, PromotionOutcome};
pub use registry::{
    ComponentRecord, CountedTable, CustomerRow, DeviceRow, ExistingDevices, MetricRow,
    PLACEHOLDER_KINDS, TechnicianRow,
};
pub use write::{DeadLetterRow, EventRow, StatusRow, TelemetryColumns, WriteBatch, WriteReport};

/// Errors of the storage layer, classified so that callers know whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database url is invalid: {0}")]
    BadUrl(#[source] sqlx::Error),
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database rejected the data: {0}")]
    Rejected(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("no model {version} of failure mode {failure_mode} to promote")]
    NoSuchModel {
        version: String,
        failure_mode: String,
    },
    #[error("not supported on this storage: {0}")]
    Unsupported(&'static str),
}

impl StoreError {
    /// A failure of the connection or the server (connection lost, server restarting,
    /// pool exhausted): the same write may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// The database refused the data itself (SQLSTATE class 22, data exception, or 23,
    /// integrity): the only failure that may turn a message into a dead letter. Every
    /// other failure (a read-only server after a failover, a missing privilege, an
    /// internal error…) says nothing about the data and is retried.
    pub fn is_data_rejection(&self) -> bool {
        matches!(self, StoreError::Rejected(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        classify(error)
    }
}

/// Maps an sqlx error to its class. SQLSTATE classes 22 (data exception) and 23
/// (integrity) mean the data itself was refused; 08 (connection), 53 (resources), 57
/// (operator intervention: shutdown, restart), 40 (serialization, deadlock) and IO-level
/// failures are transient; the rest is `Other`.
fn classify(error: sqlx::Error) -> StoreError {
    match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(error),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            // 53400 (configuration_limit_exceeded, e.g. TimescaleDB's
            // max_tuples_decompressed_per_dml_transaction) is a limit the same write hits
            // every time until an operator changes it: not a passing shortage like the rest
            // of class 53. Ingest still retries it (it is not the data's fault), but reports
            // it as a failing write, not as the database being unavailable.
            if code == "53400" {
                return StoreError::Other(error);
            }
            match code.get(..2) {
                Some("08" | "53" | "57" | "40") => StoreError::Unavailable(error),
                Some("22" | "23") => StoreError::Rejected(error),
                _ => StoreError::Other(error),
            }
        }
        _ => StoreError::Other(error),
    }
}

/// TimescaleDB refuses a DML statement that decompresses more than
/// `timescaledb.max_tuples_decompressed_per_dml_transaction` tuples (default 100,000) with
/// SQLSTATE 53400. Late data (`ingest.max_age` reaches far past `storage.compress_after`) lands in
/// compressed chunks, and a batch refused for that would be refused again on every retry, so
/// each connection of the store lifts the limit (0 = unlimited). `set_config` of a dotted name
/// is a harmless placeholder on plain PostgreSQL, and applies if TimescaleDB is loaded into the
/// session later; where it fails (an old TimescaleDB that reserves the prefix without this
/// setting) the exception is swallowed, since there is no limit to lift there.
async fn lift_decompression_limit(connection: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "do $$ begin
             perform set_config('timescaledb.max_tuples_decompressed_per_dml_transaction', '0', false);
         exception when others then null;
         end $$",
    )
    .execute(connection)
    .await?;
    Ok(())
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
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

/// Connections the readiness probe may hold at once, whatever the number of probes.
pub const HEALTH_MAX_CONNECTIONS: u32 = 2;
/// How long a probe waits for one of them before it answers "unavailable".
pub const HEALTH_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// `application_name` of the probe's connections (what `pg_stat_activity` shows).
pub const HEALTH_APPLICATION_NAME: &str = "forewarn-health";

/// The readiness probe's round trip to the database, on a pool of its own: at most
/// [`HEALTH_MAX_CONNECTIONS`] connections, each probe waiting at most
/// [`HEALTH_ACQUIRE_TIMEOUT`]. A flood of probes queues here and never takes a connection
/// from the store's pool, which ingest and the other stages need to commit.
#[derive(Clone, Debug)]
pub struct HealthCheck {
    pool: PgPool,
}

impl HealthCheck {
    /// One `select 1`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Connections the probe holds open now (at most [`HEALTH_MAX_CONNECTIONS`]).
    pub fn size(&self) -> u32 {
        self.pool.size()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The connection pool and what the schema was created with.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    timescaledb: bool,
    use_copy: bool,
}

impl Store {
    /// Connects lazily-checked: the first query fails if the server is unreachable.
    pub async fn connect(
        url: &str,
        database: &DatabaseConfig,
        storage: &StorageConfig,
    ) -> Result<Store, StoreError> {
        let options: PgConnectOptions = url.parse().map_err(StoreError::BadUrl)?;
        let options = options
            .application_name("forewarn")
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        let pool = PgPoolOptions::new()
            .max_connections(database.max_connections)
            .acquire_timeout(database.acquire_timeout)
            .after_connect(|connection, _| Box::pin(lift_decompression_limit(connection)))
            .connect_with(options)
            .await?;
        let timescaledb = read_flavour(&mut *pool.acquire().await?)
            .await?
            .unwrap_or(false);
        Ok(Store {
            pool,
            timescaledb,
            use_copy: storage.use_copy,
        })
    }

    /// Whether the schema uses TimescaleDB (hypertables, continuous aggregate).
    pub fn is_timescaledb(&self) -> bool {
        self.timescaledb
    }

    /// The readiness probe's own connections to the same database (see [`HealthCheck`]).
    /// Opens nothing until the first probe.
    pub fn health_check(&self) -> HealthCheck {
        let options = (*self.pool.connect_options())
            .clone()
            .application_name(HEALTH_APPLICATION_NAME);
        let pool = PgPoolOptions::new()
            .max_connections(HEALTH_MAX_CONNECTIONS)
            .min_connections(0)
            .acquire_timeout(HEALTH_ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        HealthCheck { pool }
    }

    /// The pool itself, for tests that check rows directly (the TimescaleDB test lane
    /// serves a single connection, so checks must share it).
    pub fn pg_pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

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

    /// Recomputes the hours of `telemetry_hourly` that ingest marked dirty (plain
    /// PostgreSQL; a no-op on TimescaleDB). Returns the number of hours recomputed.
    pub async fn refresh_rollup(&self) -> Result<i32, StoreError> {
        Ok(
            sqlx::query_scalar("select forewarn_refresh_telemetry_hourly()")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Materialises the continuous aggregate now (TimescaleDB) or recomputes dirty hours.
    /// Queries give the same answer on both flavours after this.
    pub async fn refresh_rollup_now(&self) -> Result<(), StoreError> {
        if self.timescaledb {
            sqlx::query("call refresh_continuous_aggregate('telemetry_hourly', null, null)")
                .execute(&self.pool)
                .await?;
        } else {
            self.refresh_rollup().await?;
        }
        Ok(())
    }

    /// Deletes raw rows older than `retention` (plain PostgreSQL; TimescaleDB drops whole
    /// chunks through its retention policy instead).
    pub async fn apply_retention(&self, retention: Duration) -> Result<u64, StoreError> {
        if self.timescaledb {
            return Ok(0);
        }
        let interval = interval_literal(retention);
        let mut deleted = 0;
        for statement in [
            "delete from telemetry where time < now() - $1::interval",
            "delete from device_events where time < now() - $1::interval",
            "delete from telemetry_hourly where bucket < now() - $1::interval",
        ] {
            deleted += sqlx::query(statement)
                .bind(&interval)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }
}

impl Store {
    /// Deletes dead letters received more than `retention` ago, `batch_rows` at a time, each
    /// batch its own statement (locks, WAL and the time an autovacuum waits stay bounded
    /// however far behind it is). `dead_letters` is a plain table on both flavours, so this
    /// is the retention on TimescaleDB too. Returns the number deleted.
    pub async fn delete_dead_letters_older_than(
        &self,
        retention: Duration,
        batch_rows: i64,
    ) -> Result<u64, StoreError> {
        debug_assert!(batch_rows > 0);
        let interval = interval_literal(retention);
        let mut deleted = 0;
        loop {
            // The cut-off is computed once per batch; a letter crossing it between batches
            // is taken by the next pass.
            let n_rows = sqlx::query(
                "delete from dead_letters where id in (
                     select id from dead_letters
                     where received_at < now() - $1::interval
                     limit $2)",
            )
            .bind(&interval)
            .bind(batch_rows)
            .execute(&self.pool)
            .await?
            .rows_affected();
            deleted += n_rows;
            if n_rows < batch_rows.max(1) as u64 {
                return Ok(deleted);
            }
        }
    }
}

/// `None` before the first migration.
async fn read_flavour(connection: &mut sqlx::PgConnection) -> Result<Option<bool>, StoreError> {
    let exists: bool = sqlx::query_scalar("select to_regclass('forewarn_storage') is not null")
        .fetch_one(&mut *connection)
        .await?;
    if !exists {
        return Ok(None);
    }
    Ok(
        sqlx::query_scalar("select timescaledb from forewarn_storage")
            .fetch_optional(&mut *connection)
            .await?,
    )
}

fn interval_literal(duration: Duration) -> String {
    format!("{} seconds", duration.as_secs())
}

/// Creates database `name` on the server of `admin_url` when it does not exist (tests,
/// benchmarks and the private cluster use one database per purpose).
pub async fn create_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    let options: PgConnectOptions = admin_url.parse().map_err(StoreError::BadUrl)?;
    let mut connection = options.connect().await?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(name)
            .fetch_one(&mut connection)
            .await?;
    if !exists {
        let statement = format!("create database \"{}\"", name.replace('"', ""));
        match sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut connection)
            .await
        {
            Ok(_) => {}
            // Another process created it between the check and the create.
            Err(error) if matches!(&error, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P04")) =>
                {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// Drops database `name` (benchmarks start from an empty one).
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), StoreError> {
    let options: PgConnectOptions = admin_url.parse().map_err(StoreError::BadUrl)?;
    let mut connection = options.connect().await?;
    let statement = format!(
        "drop database if exists \"{}\" with (force)",
        name.replace('"', "")
    );
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&mut connection)
        .await?;
    Ok(())
}

/// Replaces the database name in a `postgres://` url.
pub fn url_with_database(url: &str, database: &str) -> Result<String, StoreError> {
    let mut parsed = url::Url::parse(url)
        .map_err(|e| StoreError::BadUrl(sqlx::Error::Configuration(Box::new(e))))?;
    parsed.set_path(&format!("/{database}"));
    Ok(parsed.to_string())
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

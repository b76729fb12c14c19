//! Schema migrations (`migrations/`, embedded at build time) and the TimescaleDB policies
//! whose values come from configuration.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

use super::{Store, StoreError, interval_literal, read_flavour};
use crate::config::{StorageConfig, TimescaleMode};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Key of the session-level advisory lock that `Store::migrate` holds from start to end
/// ("forewarn" in ASCII). sqlx locks around the migrations alone; this lock also covers the
/// TimescaleDB policies and the report of what was applied, so that replicas starting
/// together migrate one after the other.
pub const MIGRATION_LOCK_KEY: i64 = 0x666f_7265_7761_726e;

/// What `forewarn migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub timescaledb: bool,
    pub applied_versions: Vec<i64>,
}

impl Store {
    /// Applies pending migrations and sets the TimescaleDB policies from `storage`, all on
    /// one connection that holds [`MIGRATION_LOCK_KEY`]: N processes may run it at once (the
    /// later ones wait, then find nothing to do). The connection is taken out of the pool and
    /// closed at the end, on success, error or cancellation alike, so no session lock (ours,
    /// or sqlx's, which sqlx leaves held when a migration fails) outlives the call.
    pub async fn migrate(
        &mut self,
        storage: &StorageConfig,
    ) -> Result<MigrationReport, StoreError> {
        let mut connection = self.pool.acquire().await?.detach();
        sqlx::query("select pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK_KEY)
            .execute(&mut connection)
            .await?;
        let report = migrate_locked(&mut connection, storage).await?;
        // Closing the session releases the lock; a failed close drops the socket, which
        // releases it too.
        if let Err(error) = connection.close().await {
            tracing::debug!(%error, "closing the migration connection failed");
        }
        self.timescaledb = report.timescaledb;
        Ok(report)
    }
}

async fn migrate_locked(
    connection: &mut PgConnection,
    storage: &StorageConfig,
) -> Result<MigrationReport, StoreError> {
    let applied_before: Vec<i64> = applied_versions(connection).await?;
    let edition =
        if storage.timescaledb == TimescaleMode::Off || read_flavour(connection).await?.is_some() {
            // Off, or the flavour of this database was decided when it was created.
            Edition::NotAsked
        } else {
            timescale_edition(connection).await?
        };
    let mode = migration_mode(storage.timescaledb, edition)?;
    // Read by the migrations through current_setting('forewarn.timescaledb').
    sqlx::query("select set_config('forewarn.timescaledb', $1, false)")
        .bind(mode)
        .execute(&mut *connection)
        .await?;
    // `run_direct` is `run` without the `Acquire` bound, whose lifetime makes the future of
    // every caller fail to be `Send` ("Acquire is not general enough"); sqlx is pinned.
    MIGRATOR.run_direct(None, connection, false).await?;
    sqlx::query("reset forewarn.timescaledb")
        .execute(&mut *connection)
        .await?;
    let applied_after = applied_versions(connection).await?;

    let timescaledb = read_flavour(connection).await?.unwrap_or(false);
    if timescaledb {
        apply_timescale_policies(connection, storage).await?;
    }
    Ok(MigrationReport {
        timescaledb,
        applied_versions: applied_after
            .into_iter()
            .filter(|v| !applied_before.contains(v))
            .collect(),
    })
}

/// What the server's TimescaleDB can do, as far as the migrations care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Edition {
    /// Not probed: storage is off, or the database's flavour is already recorded.
    NotAsked,
    /// No TimescaleDB on this server.
    Absent,
    /// Compression works (the Community edition).
    Community,
    /// Hypertables only: the Apache-2 edition, or a server whose license refuses the
    /// Community features.
    ApacheOnly,
}

/// Asks the server whether TimescaleDB's compression works: `timescaledb.license = apache`
/// says no at once; otherwise the extension is created (as migration 0001 would) and, in a
/// transaction that is rolled back, a scratch hypertable made and compression switched on. The answer is the capability itself,
/// not a version or a license name, so a build or a service that refuses it in another way
/// is caught too.
async fn timescale_edition(connection: &mut PgConnection) -> Result<Edition, StoreError> {
    let available: bool = sqlx::query_scalar(
        "select exists (select 1 from pg_available_extensions where name = 'timescaledb')",
    )
    .fetch_one(&mut *connection)
    .await?;
    if !available {
        return Ok(Edition::Absent);
    }
    let license: Option<String> =
        sqlx::query_scalar("select nullif(current_setting('timescaledb.license', true), '')")
            .fetch_one(&mut *connection)
            .await?;
    if license.is_some_and(|license| license.eq_ignore_ascii_case("apache")) {
        return Ok(Edition::ApacheOnly);
    }
    // Created for good, outside the probe: TimescaleDB cannot be created again in a
    // session where a rolled-back CREATE EXTENSION loaded it, and migration 0001 would
    // create it next anyway.
    sqlx::query("create extension if not exists timescaledb")
        .execute(&mut *connection)
        .await?;
    let mut probe = sqlx::Connection::begin(&mut *connection).await?;
    for statement in [
        "create table forewarn_edition_probe (time timestamptz not null)",
        "select create_hypertable('forewarn_edition_probe', 'time')",
    ] {
        sqlx::query(statement).execute(&mut *probe).await?;
    }
    let compression = sqlx::query("alter table forewarn_edition_probe set (timescaledb.compress)")
        .execute(&mut *probe)
        .await;
    probe.rollback().await?;
    match compression {
        Ok(_) => Ok(Edition::Community),
        // feature_not_supported: "functionality not supported under the current … license".
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("0A000") => {
            tracing::debug!(%error, "TimescaleDB refuses compression");
            Ok(Edition::ApacheOnly)
        }
        Err(error) => Err(error.into()),
    }
}

/// The `forewarn.timescaledb` mode the migrations run with. TimescaleDB's Apache-2 edition
/// (`timescaledb.license = apache`, what several managed services offer) has hypertables but
/// refuses compression and continuous aggregates, which forewarn's TimescaleDB path needs:
/// there `auto` takes the plain PostgreSQL path (with a warning) instead of failing
/// half-way, and `require` stops with a sentence. The flavour is recorded when the database
/// is created (migration 0001), so this only decides for a new database.
pub(crate) fn migration_mode(
    configured: TimescaleMode,
    edition: Edition,
) -> Result<&'static str, StoreError> {
    let apache = edition == Edition::ApacheOnly;
    Ok(match configured {
        TimescaleMode::Off => "off",
        TimescaleMode::Require if apache => return Err(StoreError::ApacheEdition),
        TimescaleMode::Require => "require",
        TimescaleMode::Auto if apache => {
            tracing::warn!(
                "TimescaleDB here refuses compression (the Apache-2 edition, timescaledb.license = \
                 apache): no compression or continuous aggregates, so a new database gets \
                 plain PostgreSQL tables (storage.timescaledb = auto)"
            );
            "off"
        }
        TimescaleMode::Auto => "auto",
    })
}

/// A TimescaleDB policy whose setting comes from configuration.
#[derive(Debug, Clone, Copy)]
enum Policy {
    Compression,
    Retention,
}

impl Policy {
    /// `timescaledb_information.jobs.proc_name` of the policy's job.
    fn proc_name(self) -> &'static str {
        match self {
            Policy::Compression => "policy_compression",
            Policy::Retention => "policy_retention",
        }
    }

    /// The key of the job's `config` that holds the setting.
    fn config_key(self) -> &'static str {
        match self {
            Policy::Compression => "compress_after",
            Policy::Retention => "drop_after",
        }
    }

    fn remove_sql(self) -> &'static str {
        match self {
            Policy::Compression => {
                "select remove_compression_policy($1::regclass, if_exists => true)"
            }
            Policy::Retention => "select remove_retention_policy($1::regclass, if_exists => true)",
        }
    }

    fn add_sql(self) -> &'static str {
        match self {
            Policy::Compression => {
                "select add_compression_policy($1::regclass, compress_after => $2::interval,
                     if_not_exists => true)"
            }
            Policy::Retention => {
                "select add_retention_policy($1::regclass, drop_after => $2::interval,
                     if_not_exists => true)"
            }
        }
    }
}

/// Sets the continuous-aggregate refresh, compression and retention policies. A policy is
/// replaced only when its setting differs from the configuration (so a restart neither
/// churns jobs nor resets their schedules), and every add is `if_not_exists`: running this
/// again, or from an older replica that does not take the migration lock, fails nothing.
async fn apply_timescale_policies(
    connection: &mut PgConnection,
    storage: &StorageConfig,
) -> Result<(), StoreError> {
    // start_offset => null: refresh every invalidated range, however old, so that
    // backfills and replays (event time in the past) reach the aggregate too.
    sqlx::query(
        "select add_continuous_aggregate_policy('telemetry_hourly',
             start_offset => null, end_offset => interval '1 hour',
             schedule_interval => interval '5 minutes', if_not_exists => true)",
    )
    .execute(&mut *connection)
    .await?;
    for table in ["telemetry", "predictions"] {
        set_policy(
            connection,
            Policy::Compression,
            table,
            storage.compress_after,
        )
        .await?;
    }
    for table in ["telemetry", "device_events", "predictions"] {
        set_policy(connection, Policy::Retention, table, storage.retention).await?;
    }
    Ok(())
}

/// Makes `policy` of `table` have `setting` (`None`: no policy), touching nothing when it
/// already has.
async fn set_policy(
    connection: &mut PgConnection,
    policy: Policy,
    table: &str,
    setting: Option<Duration>,
) -> Result<(), StoreError> {
    let interval = setting.map(interval_literal);
    // One row per job of this policy on this table (normally at most one); each says
    // whether its setting equals the wanted one (null when no policy is wanted).
    let jobs: Vec<Option<bool>> = sqlx::query_scalar(
        "select (config ->> $2)::interval = $3::interval
         from timescaledb_information.jobs
         where proc_name = $1 and hypertable_name = $4",
    )
    .bind(policy.proc_name())
    .bind(policy.config_key())
    .bind(&interval)
    .bind(table)
    .fetch_all(&mut *connection)
    .await?;
    let up_to_date = match &interval {
        Some(_) => jobs.len() == 1 && jobs[0] == Some(true),
        None => jobs.is_empty(),
    };
    if up_to_date {
        return Ok(());
    }
    sqlx::query(policy.remove_sql())
        .bind(table)
        .execute(&mut *connection)
        .await?;
    if let Some(interval) = &interval {
        sqlx::query(policy.add_sql())
            .bind(table)
            .bind(interval)
            .execute(&mut *connection)
            .await?;
    }
    tracing::info!(
        policy = policy.proc_name(),
        table,
        setting = interval.as_deref().unwrap_or("off"),
        "timescaledb policy set"
    );
    Ok(())
}

async fn applied_versions(connection: &mut PgConnection) -> Result<Vec<i64>, StoreError> {
    let exists: bool = sqlx::query_scalar("select to_regclass('_sqlx_migrations') is not null")
        .fetch_one(&mut *connection)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("select version from _sqlx_migrations where success order by version")
            .fetch_all(&mut *connection)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apache_edition_takes_the_plain_path_under_auto_and_stops_require() {
        let community = Edition::Community;
        let apache = Edition::ApacheOnly;
        assert_eq!(
            migration_mode(TimescaleMode::Auto, Edition::Absent).unwrap(),
            "auto"
        );
        assert_eq!(
            migration_mode(TimescaleMode::Auto, Edition::NotAsked).unwrap(),
            "auto"
        );
        assert_eq!(
            migration_mode(TimescaleMode::Auto, community).unwrap(),
            "auto"
        );
        assert_eq!(migration_mode(TimescaleMode::Auto, apache).unwrap(), "off");
        assert_eq!(
            migration_mode(TimescaleMode::Off, community).unwrap(),
            "off"
        );
        assert_eq!(
            migration_mode(TimescaleMode::Require, community).unwrap(),
            "require"
        );
        assert!(matches!(
            migration_mode(TimescaleMode::Require, apache),
            Err(StoreError::ApacheEdition)
        ));
        assert!(
            StoreError::ApacheEdition
                .to_string()
                .contains("storage.timescaledb = auto")
        );
    }
}

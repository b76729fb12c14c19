//! All PostgreSQL access: the pool, migrations and TimescaleDB policies, and the queries of
//! every stage, one file per table family, each opening with its row types:
//!
//! - `telemetry`: the ingest batch write (`telemetry`, `device_events`, status and last-seen
//!   times, `dead_letters`, the rollup's dirty hours), rollup refresh, retention, dead-letter
//!   retention; `copy` is its binary-COPY encoder and decoder;
//! - `registry`: customers, devices (id lookup and registration, stale marks), technicians,
//!   the metric catalogue;
//! - `history`: what features and labels read (hourly and daily rollup rows, events,
//!   component history, event codes, failure modes, rollup range) and the ground truth
//!   written (`failures`, `maintenance`);
//! - `models`: the model registry and its promotions;
//! - `predictions`: `predictions` and the device summaries live scoring reads;
//! - `tickets`: opening or merging tickets with their audit, bookings; `lifecycle`: the
//!   later steps, their labels and the `outreach` outbox rows;
//! - `views`, `board`, `people`, `insight`: what the HTTP API reads — devices with their
//!   risk (`device_risk`), telemetry buckets, events and scores; tickets with their audit,
//!   bookings, messages and replies, technicians' days; technicians (created, replaced),
//!   customers, incidents; models, dead letters and the service KPIs;
//! - `keys`: API keys (only their hashes), and what a technician's key may see;
//! - `links`: signed links' key, what a link's message is about now, and an answer's writes;
//! - `dispatch`: what the dispatch stage reads and locks to turn signals into tickets;
//!   `planning`: triage, incidents, bookable tickets, calendars, unavailability;
//! - `transaction`: [`StoreTx`], how a caller writes several families in one transaction;
//! - `admin`: creating and dropping databases, URL helpers, statistics, row counts;
//! - `migrate`: migrations and TimescaleDB policies.
//!
//! Architecture invariants: only this module imports `sqlx`, and the pool never leaves it
//! (the integration tests' row checks get theirs from [`testing`]).

mod admin;
mod board;
mod changes;
pub mod config;
mod copy;
mod dispatch;
mod history;
mod insight;
mod keys;
mod lifecycle;
mod links;
mod migrate;
mod models;
mod outreach;
mod people;
mod planning;
mod predictions;
mod proposals;
mod registry;
mod replies;
mod seed;
mod telemetry;
pub mod testing;
mod tickets;
mod transaction;
mod views;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::config::{DatabaseConfig, StorageConfig};

pub use admin::{CountedTable, create_database, drop_database, url_with_database};
pub use board::{
    BookingItem, OutreachItem, ReplyItem, RouteStop, TICKET_KINDS, TICKET_STATUSES, TicketDetail,
    TicketEventItem, TicketFilter, TicketItem,
};
pub use changes::{CHANGES_CHANNEL, ChangeListener, KEYS_CHANNEL};
pub use dispatch::{
    CriticalEvent, DeviceContext, ModeFacts, OpenTicketRow, PredictionSignal, SilentDevice,
    StreakRow,
};
pub use history::ComponentRecord;
pub use insight::{
    DeadLetterItem, Kpis, ModelCard, ModelItem, PromotionItem, ReasonCount, TicketCounts, Totals,
};
pub use keys::{ApiKeyRow, NewApiKey};
pub use lifecycle::{Message, MessageType, NOT_COMPONENTS, Outcome, Transition, Transitioned};
pub use links::{LinkAnswer, LinkContext, LinkTicket, LiveBooking};
pub use migrate::{MIGRATION_LOCK_KEY, MigrationReport};
pub use models::{ModelRow, PromotionOutcome};
pub use outreach::{Attempt, AttemptOutcome, ClaimedMessage};
pub use people::{CustomerItem, IncidentItem, TechnicianItem};
pub use planning::{
    BookableTicket, CalendarRow, DispatchFigures, NewIncident, OpenIncident, TechnicianPlanRow,
    TriageTicket,
};
pub use predictions::{DeviceSummary, PredictionRow};
pub use proposals::{BookingMove, HeldBooking};
pub(crate) use registry::missing_names;
pub use registry::{
    CustomerRow, DeviceRecord, DeviceRow, ExistingDevices, MetricRow, PLACEHOLDER_KINDS,
    TechnicianRow,
};
pub use replies::{InboundReply, Reference, ReplyQueue, StoredReply};
pub use seed::Seeded;
pub use telemetry::{
    DeadLetterRow, EventRow, StatusRow, TelemetryColumns, WriteBatch, WriteReport,
};
pub use tickets::{Booked, BookingRequest, Opened, PlannedOn, TicketKind, TicketSignal};
pub use transaction::StoreTx;
pub use views::{
    Bucket, DeviceCursor, DeviceFilter, DeviceItem, DevicePut, DeviceSort, DeviceWritten,
    EventItem, ModeRisk, PredictionItem, Risk, TelemetrySource,
};

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
    #[error(
        "storage.timescaledb = require, but this server's TimescaleDB is the Apache-2 edition \
         (timescaledb.license = apache), which refuses the compression and continuous \
         aggregates forewarn's TimescaleDB path uses; set storage.timescaledb = auto (plain \
         PostgreSQL tables) or use a server with the Community edition"
    )]
    ApacheEdition,
}

impl StoreError {
    /// The bookings exclusion constraint refused a slot (exclusion_violation).
    pub fn is_double_booking(&self) -> bool {
        match self {
            StoreError::Rejected(sqlx::Error::Database(db)) => {
                db.code().as_deref() == Some("23P01")
            }
            _ => false,
        }
    }

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

    pub async fn close(&self) {
        self.pool.close().await;
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

/// Microseconds since the Unix epoch, the time unit of `features` and `dispatch`.
fn micros(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
}

/// The time of `micros` (since the Unix epoch), or an error for one outside chrono's range.
fn timestamp(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros)
        .ok_or(StoreError::Unsupported("a time outside chrono's range"))
}

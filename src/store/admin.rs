//! Administration: creating and dropping databases (tests, benchmarks and the private
//! cluster use one database per purpose), URL helpers, the planner's statistics and row
//! counts for tests, tools and reports.

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Row};

use super::{Store, StoreError};

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

impl Store {
    /// Refreshes the planner's statistics and summarizes BRIN ranges (after a bulk load,
    /// as autovacuum would in service).
    pub async fn analyze(&self) -> Result<(), StoreError> {
        sqlx::query("vacuum analyze").execute(&self.pool).await?;
        Ok(())
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

//! The storage suite: run against plain PostgreSQL (the default lane) and against
//! TimescaleDB (the PGlite lane, `TEST_TIMESCALEDB=require TEST_SHARED_DATABASE=1
//! TEST_USE_COPY=false`). The same queries must give the same answers on both.

use std::time::Duration;

use forewarn::config::StorageConfig;
use forewarn::store::{
    Booked, BookingRequest, ComponentRecord, DeadLetterRow, EventRow, MIGRATION_LOCK_KEY,
    MigrationReport, Opened, PlannedOn, Store, TelemetryColumns, TicketKind, TicketSignal,
    WriteBatch,
};
use sqlx::{Connection, Row};

use crate::support::*;

const HOUR: i64 = 3_600_000_000;

/// A device of this test's own and a metric: the ids of one time series.
async fn new_series(db: &TestDb, device_prefix: &str, metric: &str) -> (i32, i16) {
    let device = unique(device_prefix);
    let device_id = db.store.resolve_devices(&[device], true).await.unwrap()[0].1;
    let metric_id = db
        .store
        .resolve_metrics(&[metric.to_string()], true)
        .await
        .unwrap()[0]
        .1;
    (device_id, metric_id)
}

/// One series' readings, `(time, value)`, as a batch.
fn series_batch(
    device_id: i32,
    metric_id: i16,
    readings: impl IntoIterator<Item = (i64, f64)>,
) -> WriteBatch {
    let mut rows = TelemetryColumns::default();
    for (time, value) in readings {
        rows.push(time, device_id, metric_id, value, false);
    }
    WriteBatch {
        telemetry: rows,
        ..WriteBatch::default()
    }
}

fn base_time() -> i64 {
    // A whole hour a day ago, so rows fall in known buckets.
    let now = chrono::Utc::now().timestamp_micros();
    now - now.rem_euclid(HOUR) - 24 * HOUR
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_flavour_is_what_was_asked_for() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    match std::env::var("TEST_TIMESCALEDB").as_deref() {
        Ok("require") => {
            assert!(db.store.is_timescaledb());
            let hypertables: Vec<String> = sqlx::query_scalar(
                "select hypertable_name::text from timescaledb_information.hypertables order by 1",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            assert!(
                hypertables.contains(&"telemetry".to_string())
                    && hypertables.contains(&"device_events".to_string()),
                "{hypertables:?}"
            );
            let caggs = count(&pool, "select count(*) from timescaledb_information.continuous_aggregates where view_name = 'telemetry_hourly'").await;
            assert_eq!(caggs, 1);
            let policies = count(&pool, "select count(*) from timescaledb_information.jobs where proc_name in ('policy_refresh_continuous_aggregate', 'policy_compression', 'policy_retention')").await;
            assert!(
                policies >= 3,
                "refresh, compression and retention policies set ({policies})"
            );
        }
        _ => {
            if !db.store.is_timescaledb() {
                let kind: String = sqlx::query_scalar(
                    "select relkind::text from pg_class where relname = 'telemetry_hourly'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                assert_eq!(kind, "r", "plain PostgreSQL: the rollup is a table");
            }
        }
    }
    // Migrating again is a no-op.
    let mut store = db.store.clone();
    let report = store.migrate(&storage_config()).await.unwrap();
    assert!(report.applied_versions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_idempotent() {
    let db = TestDb::new().await;
    let (device_id, metric_id) = new_series(&db, "IDEM-", "idem_metric").await;
    let start = base_time();
    let mut rows = TelemetryColumns::default();
    for step in 0..500 {
        rows.push(
            start + step * 1_000_000,
            device_id,
            metric_id,
            step as f64,
            false,
        );
    }
    let batch = WriteBatch {
        telemetry: rows.clone(),
        events: vec![EventRow {
            time: start,
            unstamped_redelivery: false,
            device_id,
            code: "E42".into(),
            severity: "warning",
            message: "door lock retry".into(),
            time_estimated: false,
        }],
        ..WriteBatch::default()
    };
    let first = db.store.write_batch(&batch).await.unwrap();
    assert_eq!(first.readings_inserted, 500);
    assert_eq!(first.events_inserted, 1);
    assert!(!first.copy_fell_back);

    // A redelivery of the whole batch inserts nothing.
    let again = db.store.write_batch(&batch).await.unwrap();
    assert_eq!(again.readings_inserted, 0);
    assert_eq!(again.events_inserted, 0);
    assert_eq!(
        again.copy_fell_back,
        storage_config().use_copy,
        "COPY hit the unique index and fell back"
    );

    // Half old, half new: only the new half is inserted.
    let mut mixed = TelemetryColumns::default();
    for step in 250..750 {
        mixed.push(
            start + step * 1_000_000,
            device_id,
            metric_id,
            step as f64,
            false,
        );
    }
    let report = db
        .store
        .write_batch(&WriteBatch {
            telemetry: mixed,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    assert_eq!(report.readings_inserted, 250);

    let pool = db.query().await;
    let stored: i64 = sqlx::query_scalar("select count(*) from telemetry where device_id = $1")
        .bind(device_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 750);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_rollup_gives_the_same_answer_on_both_flavours() {
    let db = TestDb::new().await;
    let (device_id, metric_id) = new_series(&db, "ROLL-", "roll_metric").await;
    let start = base_time();
    // Hour 0: values 1..=4; hour 1: values 10, 20.
    let mut rows = TelemetryColumns::default();
    for (offset, value) in [(0, 1.0), (10, 2.0), (20, 3.0), (30, 4.0)] {
        rows.push(
            start + offset * 60_000_000,
            device_id,
            metric_id,
            value,
            false,
        );
    }
    rows.push(
        start + HOUR + 5 * 60_000_000,
        device_id,
        metric_id,
        10.0,
        false,
    );
    rows.push(
        start + HOUR + 6 * 60_000_000,
        device_id,
        metric_id,
        20.0,
        false,
    );
    db.store
        .write_batch(&WriteBatch {
            telemetry: rows,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    db.store.refresh_rollup_now().await.unwrap();

    let pool = db.query().await;
    let query = "select extract(epoch from bucket)::bigint, avg, min, max, stddev, count
                 from telemetry_hourly where device_id = $1 and metric_id = $2 order by bucket";
    let hours = sqlx::query(query)
        .bind(device_id)
        .bind(metric_id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(hours.len(), 2);
    assert_eq!(hours[0].get::<i64, _>(0), start / 1_000_000);
    assert_eq!(hours[0].get::<f64, _>(1), 2.5);
    assert_eq!(hours[0].get::<f64, _>(2), 1.0);
    assert_eq!(hours[0].get::<f64, _>(3), 4.0);
    assert!(
        (hours[0].get::<f64, _>(4) - 1.290_994_448_735_805_6).abs() < 1e-9,
        "sample stddev"
    );
    assert_eq!(hours[0].get::<i64, _>(5), 4);
    assert_eq!(hours[1].get::<f64, _>(1), 15.0);
    assert_eq!(hours[1].get::<i64, _>(5), 2);

    // A backfill into an hour already rolled up shows after the next refresh.
    let mut late = TelemetryColumns::default();
    late.push(start + 40 * 60_000_000, device_id, metric_id, 100.0, false);
    db.store
        .write_batch(&WriteBatch {
            telemetry: late,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    db.store.refresh_rollup_now().await.unwrap();
    let hour0 = sqlx::query(query)
        .bind(device_id)
        .bind(metric_id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(hour0[0].get::<i64, _>(5), 5);
    assert_eq!(hour0[0].get::<f64, _>(3), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_registers_or_refuses() {
    let db = TestDb::new().await;
    let known = unique("REG-");
    let stranger = unique("STRANGER-");
    db.store
        .upsert_device(&known, "fridge", Some("FR-200"))
        .await
        .unwrap();
    let found = db
        .store
        .resolve_devices(&[known.clone(), stranger.clone()], false)
        .await
        .unwrap();
    assert_eq!(
        found.len(),
        1,
        "auto-registration off: the stranger stays unknown"
    );
    assert_eq!(found[0].0, known);
    let found = db
        .store
        .resolve_devices(&[known.clone(), stranger.clone()], true)
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    let record = db.store.device(&known).await.unwrap().unwrap();
    assert_eq!(record.kind, "fridge");
    let metrics = db
        .store
        .resolve_metrics(&["closed_metric".to_string()], false)
        .await
        .unwrap();
    assert!(metrics.is_empty());
}

/// SQLSTATE 53400 (configuration_limit_exceeded) is a limit the same write hits every time:
/// not transient, unlike the rest of class 53 (e.g. 53300, too many connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_limit_is_not_retried_but_a_resource_shortage_is() {
    let db = TestDb::new().await;
    let raise = |sqlstate: &str| {
        format!("do $$ begin raise exception 'test' using errcode = '{sqlstate}'; end $$")
    };
    let limit = sqlx::raw_sql(sqlx::AssertSqlSafe(raise("53400")))
        .execute(db.store_pool())
        .await
        .unwrap_err();
    assert!(!forewarn::store::StoreError::from(limit).is_transient());
    let shortage = sqlx::raw_sql(sqlx::AssertSqlSafe(raise("53300")))
        .execute(db.store_pool())
        .await
        .unwrap_err();
    assert!(forewarn::store::StoreError::from(shortage).is_transient());
}

/// Late data (within `ingest.max_age`, older than `storage.compress_after`) lands in a
/// compressed chunk: the store's connections lift TimescaleDB's decompression limit, which
/// would otherwise refuse the write (53400) every time it is retried.
/// Plain PostgreSQL has no compression: there only the harmless setting is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_data_lands_in_a_compressed_chunk() {
    let db = TestDb::new().await;
    let pool = db.store_pool();
    let limit: Option<String> = sqlx::query_scalar(
        "select current_setting('timescaledb.max_tuples_decompressed_per_dml_transaction', true)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        limit.as_deref(),
        Some("0"),
        "the store's connections lift the limit"
    );
    if !db.store.is_timescaledb() {
        eprintln!("plain PostgreSQL: no compressed chunks to write into");
        return;
    }
    let (device_id, metric_id) = new_series(&db, "LATE-", "late_metric").await;
    let start = base_time() - 20 * 24 * HOUR;
    let series = |steps: std::ops::Range<i64>, offset: i64| {
        series_batch(
            device_id,
            metric_id,
            steps.map(|step| (start + step * 1_000_000 + offset, step as f64)),
        )
    };
    let first = db.store.write_batch(&series(0..300, 0)).await.unwrap();
    assert_eq!(first.readings_inserted, 300);
    let n_compressed = count(
        pool,
        "select count(compress_chunk(c, if_not_compressed => true))
         from show_chunks('telemetry', older_than => interval '10 days') c",
    )
    .await;
    assert!(n_compressed >= 1, "the late rows' chunk is compressed");

    // Redelivered rows and new rows between them, into the compressed chunk.
    let late = db.store.write_batch(&series(0..300, 0)).await.unwrap();
    assert_eq!(late.readings_inserted, 0);
    let late = db
        .store
        .write_batch(&series(0..300, 500_000))
        .await
        .unwrap();
    assert_eq!(late.readings_inserted, 300);
    let stored: i64 = sqlx::query_scalar("select count(*) from telemetry where device_id = $1")
        .bind(device_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stored, 600);

    // With the limit in force, DML that decompresses the chunk is refused with 53400, and
    // the store does not call that transient.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("set local timescaledb.max_tuples_decompressed_per_dml_transaction = 10")
        .execute(&mut *tx)
        .await
        .unwrap();
    let refused = sqlx::query("update telemetry set value = value + 1 where device_id = $1")
        .bind(device_id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    tx.rollback().await.unwrap();
    let code = match &refused {
        sqlx::Error::Database(db_error) => db_error.code().map(|c| c.into_owned()),
        _ => None,
    };
    assert_eq!(code.as_deref(), Some("53400"), "{refused}");
    assert!(!forewarn::store::StoreError::from(refused).is_transient());
}

/// The TimescaleDB lane serves one connection at a time: replicas cannot overlap there.
fn one_connection_lane() -> bool {
    std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1")
}

/// A transaction handle (`Store::begin`) writes several families at once: another
/// connection sees none of its rows before the commit and all of them after; a rolled-back
/// or dropped handle leaves nothing. (On the one-connection lane the handle holds the only
/// connection, so there the rows are checked only once it is gone.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_handle_commits_its_writes_together_or_not_at_all() {
    let db = TestDb::new().await;
    let device_id = db
        .store
        .resolve_devices(&[unique("TX-")], true)
        .await
        .unwrap()[0]
        .1;
    let record = |hours_before: i64, detail: &str| ComponentRecord {
        time: chrono::DateTime::from_timestamp_micros(base_time() - hours_before * HOUR).unwrap(),
        device_id,
        component: "pump".into(),
        detail: detail.into(),
    };
    let pool = db.query().await;
    let count_ours = async || -> (i64, i64) {
        let mut counts = Vec::new();
        for table in ["failures", "maintenance"] {
            let n_rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "select count(*) from {table} where device_id = $1"
            )))
            .bind(device_id)
            .fetch_one(&pool)
            .await
            .unwrap();
            counts.push(n_rows);
        }
        (counts[0], counts[1])
    };

    let mut tx = db.store.begin().await.unwrap();
    assert_eq!(
        tx.insert_failures(&[record(3, "imported")]).await.unwrap(),
        1
    );
    assert_eq!(
        tx.insert_maintenance(&[record(2, "replaced")])
            .await
            .unwrap(),
        1
    );
    if !one_connection_lane() {
        assert_eq!(count_ours().await, (0, 0), "invisible before the rollback");
    }
    tx.rollback().await.unwrap();
    assert_eq!(
        count_ours().await,
        (0, 0),
        "a rolled-back handle leaves nothing"
    );

    let mut tx = db.store.begin().await.unwrap();
    tx.insert_failures(&[record(3, "imported")]).await.unwrap();
    tx.insert_maintenance(&[record(2, "replaced")])
        .await
        .unwrap();
    drop(tx);
    assert_eq!(
        count_ours().await,
        (0, 0),
        "a dropped handle leaves nothing"
    );

    let mut tx = db.store.begin().await.unwrap();
    tx.insert_failures(&[record(3, "imported")]).await.unwrap();
    tx.insert_maintenance(&[record(2, "replaced")])
        .await
        .unwrap();
    if !one_connection_lane() {
        assert_eq!(count_ours().await, (0, 0), "invisible before the commit");
    }
    tx.commit().await.unwrap();
    assert_eq!(count_ours().await, (1, 1), "both rows at the commit");

    // The pool's version runs the same statement: an existing (device, component, time)
    // is kept.
    assert_eq!(
        db.store
            .insert_failures(&[record(3, "imported"), record(1, "imported")])
            .await
            .unwrap(),
        1
    );
    assert_eq!(count_ours().await, (2, 1));
}

/// Replicas starting together on a fresh database: every `migrate` succeeds, the
/// migrations are applied once (each reported by exactly one replica), and a second wave
/// finds nothing to do. Without the migration lock around the whole step, replicas read
/// "applied before" while another was migrating and claimed its versions, and on
/// TimescaleDB removed and re-added the same policies at once ("already exists").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_migrating_one_fresh_database_together_all_succeed() {
    if one_connection_lane() {
        eprintln!("one connection at a time: replicas cannot migrate concurrently here");
        return;
    }
    let server = tokio::task::spawn_blocking(test_server).await.unwrap();
    let name = unique("fw_race_");
    forewarn::store::drop_database(&server.admin_url, &name)
        .await
        .unwrap();
    forewarn::store::create_database(&server.admin_url, &name)
        .await
        .unwrap();
    let url = forewarn::store::url_with_database(&server.admin_url, &name).unwrap();
    let database = forewarn::config::DatabaseConfig {
        max_connections: 2,
        ..Default::default()
    };
    const REPLICAS: usize = 4;
    for wave in 0..2 {
        let mut stores = Vec::new();
        for _ in 0..REPLICAS {
            stores.push(
                Store::connect(&url, &database, &storage_config())
                    .await
                    .unwrap(),
            );
        }
        let mut migrations = tokio::task::JoinSet::new();
        for mut store in stores {
            migrations.spawn(async move { store.migrate(&storage_config()).await });
        }
        let mut reports: Vec<MigrationReport> = Vec::new();
        while let Some(result) = migrations.join_next().await {
            reports.push(result.unwrap().expect("every replica migrates"));
        }
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let versions: Vec<i64> =
            sqlx::query_scalar("select version from _sqlx_migrations where success order by 1")
                .fetch_all(&pool)
                .await
                .unwrap();
        let mut reported: Vec<i64> = reports
            .iter()
            .flat_map(|r| r.applied_versions.clone())
            .collect();
        reported.sort_unstable();
        if wave == 0 {
            assert!(!versions.is_empty());
            assert_eq!(reported, versions, "each migration applied by one replica");
        } else {
            assert!(reported.is_empty(), "nothing left to apply: {reported:?}");
        }
        assert!(
            reports
                .iter()
                .all(|r| r.timescaledb == reports[0].timescaledb)
        );
        pool.close().await;
    }
}

/// `migrate` holds forewarn's migration lock from start to end: while another session
/// holds it, a migration waits, and it finishes once the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_waits_for_the_migration_lock() {
    if one_connection_lane() {
        eprintln!("one connection at a time: the lock cannot be held from a second session");
        return;
    }
    let db = TestDb::new().await;
    let mut holder = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("select pg_advisory_lock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let mut store = db.store.clone();
    let migration = tokio::spawn(async move { store.migrate(&storage_config()).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !migration.is_finished(),
        "migrate ran while another session held the migration lock"
    );
    sqlx::query("select pg_advisory_unlock($1)")
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut holder)
        .await
        .unwrap();
    let report = tokio::time::timeout(Duration::from_secs(20), migration)
        .await
        .expect("migrate finishes once the lock is free")
        .unwrap()
        .unwrap();
    assert!(report.applied_versions.is_empty());
    // The migration connection was closed: its session lock went with it.
    let held: i64 = sqlx::query_scalar(
        "select count(*) from pg_locks
         where locktype = 'advisory' and granted and pid <> pg_backend_pid()
           and database = (select oid from pg_database where datname = current_database())",
    )
    .fetch_one(&mut holder)
    .await
    .unwrap();
    assert_eq!(held, 0, "no advisory lock outlives migrate");
}

/// TimescaleDB policies: migrating again with the same configuration leaves every policy
/// job as it was (no remove and re-add, which two replicas could interleave); a changed
/// setting replaces only its own policy, and "off" removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrating_again_replaces_only_the_policies_whose_setting_changed() {
    let db = TestDb::new().await;
    if !db.store.is_timescaledb() {
        eprintln!("plain PostgreSQL: no TimescaleDB policies");
        return;
    }
    let pool = db.query().await;
    async fn jobs(pool: &sqlx::PgPool) -> Vec<(i32, String, String, String)> {
        sqlx::query_as(
            "select job_id, proc_name::text, hypertable_name::text, config::text
             from timescaledb_information.jobs
             where proc_name in ('policy_compression', 'policy_retention')
             order by proc_name, hypertable_name",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    }
    let mut store = db.store.clone();
    let before = jobs(&pool).await;
    // Compression of telemetry and predictions; retention of those and device_events.
    assert_eq!(before.len(), 5, "{before:?}");
    assert_eq!(
        before
            .iter()
            .filter(|job| job.2 == "predictions")
            .map(|job| job.1.as_str())
            .collect::<Vec<_>>(),
        vec!["policy_compression", "policy_retention"],
        "predictions follow telemetry's policies"
    );
    store.migrate(&storage_config()).await.unwrap();
    assert_eq!(jobs(&pool).await, before, "same settings: jobs untouched");

    let changed = StorageConfig {
        compress_after: Some(Duration::from_secs(3 * 86_400)),
        retention: None,
        ..storage_config()
    };
    store.migrate(&changed).await.unwrap();
    let after = jobs(&pool).await;
    assert_eq!(
        after.len(),
        2,
        "retention off removes its policies: {after:?}"
    );
    assert!(after.iter().all(|job| job.1 == "policy_compression"));
    assert!(
        after
            .iter()
            .all(|job| before.iter().all(|old| old.0 != job.0)),
        "compression policies replaced"
    );
    let compress_after: Vec<bool> = sqlx::query_scalar(
        "select (config ->> 'compress_after')::interval = interval '3 days'
         from timescaledb_information.jobs where proc_name = 'policy_compression'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(compress_after, vec![true, true]);
    store.migrate(&changed).await.unwrap();
    assert_eq!(jobs(&pool).await, after, "same settings again: untouched");

    // Back to the defaults, which the other tests of a shared database expect.
    store.migrate(&storage_config()).await.unwrap();
    assert_eq!(jobs(&pool).await.len(), 5);
}

fn dead_letter(topic: &str, received_at: chrono::DateTime<chrono::Utc>) -> DeadLetterRow {
    DeadLetterRow {
        received_at: received_at.timestamp_micros(),
        topic: topic.to_string(),
        payload: b"{not json".to_vec(),
        truncated: false,
        reason: "invalid_json",
        detail: String::new(),
    }
}

/// `storage.dead_letter_retention`: the maintenance pass deletes dead letters received
/// before it, in bounded batches, on both flavours (`dead_letters` is a plain table on
/// TimescaleDB too), and keeps the newer ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_past_retention_are_deleted_and_newer_ones_kept() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    let topic = unique("devices/DL-");
    let now = chrono::Utc::now();
    let mut letters = Vec::new();
    for _ in 0..20 {
        letters.push(dead_letter(&topic, now - chrono::Duration::days(40)));
    }
    for _ in 0..5 {
        letters.push(dead_letter(&topic, now - chrono::Duration::days(29)));
        letters.push(dead_letter(&topic, now));
    }
    db.store
        .write_batch(&WriteBatch {
            dead_letters: letters,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    let count_ours = async |older_than_days: i32| -> i64 {
        sqlx::query_scalar(
            "select count(*) from dead_letters
             where topic = $1 and received_at < now() - make_interval(days => $2)",
        )
        .bind(&topic)
        .bind(older_than_days)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(count_ours(0).await, 30);

    // Batches of 7: three full ones and a short one.
    let retention = Duration::from_secs(30 * 86_400);
    let deleted = db
        .store
        .delete_dead_letters_older_than(retention, 7)
        .await
        .unwrap();
    assert_eq!(deleted, 20);
    assert_eq!(count_ours(30).await, 0, "letters past retention deleted");
    assert_eq!(count_ours(-1).await, 10, "newer letters kept");

    // The maintenance job does it on either flavour.
    db.store
        .write_batch(&WriteBatch {
            dead_letters: vec![dead_letter(&topic, now - chrono::Duration::days(31)); 3],
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    let storage = StorageConfig {
        dead_letter_retention: Some(retention),
        ..storage_config()
    };
    let report = forewarn::maintenance::maintenance_pass(&db.store, &storage).await;
    assert_eq!(report.n_dead_letters_deleted, 3);
    assert_eq!(count_ours(-1).await, 10);
    let kept_all = StorageConfig {
        dead_letter_retention: None,
        ..storage_config()
    };
    db.store
        .write_batch(&WriteBatch {
            dead_letters: vec![dead_letter(&topic, now - chrono::Duration::days(400))],
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    let report = forewarn::maintenance::maintenance_pass(&db.store, &kept_all).await;
    assert_eq!(
        report.n_dead_letters_deleted, 0,
        "\"off\" keeps every letter"
    );
    assert_eq!(count_ours(-1).await, 11);
}

/// Rows of `telemetry` the current transaction has read so far (sequential and through
/// indexes).
async fn telemetry_rows_read(connection: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "select coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
         from pg_stat_xact_user_tables where relname = 'telemetry'",
    )
    .fetch_one(connection)
    .await
    .unwrap()
}

/// One reading 300 days old and one from now, both dirty, with 300,000 clean readings
/// between them: the refresh reads the two dirty hours, not the 300 days between (the old
/// function read every row from the oldest dirty hour to the newest).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollup_refresh_reads_only_the_dirty_hours() {
    let db = TestDb::new().await;
    if db.store.is_timescaledb() {
        eprintln!("TimescaleDB: the continuous aggregate refreshes itself");
        return;
    }
    let (device_id, metric_id) = new_series(&db, "SCAN-", "scan_metric").await;
    let now = chrono::Utc::now().timestamp_micros();
    let old_hour = now - now.rem_euclid(HOUR) - 300 * 24 * HOUR;
    // Clean history in time order, from 299 days ago to a day ago.
    const N_BETWEEN: i64 = 300_000;
    let first = old_hour + 24 * HOUR;
    let step = (298 * 24 * HOUR) / N_BETWEEN;
    let mut between = TelemetryColumns::default();
    for index in 0..N_BETWEEN {
        between.push(
            first + index * step,
            device_id,
            metric_id,
            index as f64,
            false,
        );
    }
    db.store
        .write_batch(&WriteBatch {
            telemetry: between,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    db.store.refresh_rollup().await.unwrap();
    let pool = db.query().await;
    // What autovacuum does to an insert-only table: summarize the BRIN ranges, analyze.
    sqlx::query("vacuum (analyze) telemetry")
        .execute(&pool)
        .await
        .unwrap();

    let mut late = TelemetryColumns::default();
    late.push(old_hour + 60_000_000, device_id, metric_id, -1.0, false);
    late.push(now, device_id, metric_id, -2.0, false);
    db.store
        .write_batch(&WriteBatch {
            telemetry: late,
            ..WriteBatch::default()
        })
        .await
        .unwrap();

    let mut tx = pool.begin().await.unwrap();
    let read_before = telemetry_rows_read(&mut tx).await;
    let n_hours: i32 = sqlx::query_scalar("select forewarn_refresh_telemetry_hourly()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let read = telemetry_rows_read(&mut tx).await - read_before;
    tx.commit().await.unwrap();
    assert_eq!(n_hours, 2);
    // Each dirty hour costs at most the BRIN range its rows lie in (128 pages, about
    // 20,000 readings); the old function read all 300,000 between.
    assert!(
        read < N_BETWEEN / 6,
        "the refresh read {read} telemetry rows for two dirty hours"
    );
    let hours: Vec<(i64, f64, i64)> = sqlx::query_as(
        "select extract(epoch from bucket)::bigint * 1000000, avg, count from telemetry_hourly
         where device_id = $1 and (bucket = to_timestamp($2 / 1e6) or bucket = to_timestamp($3 / 1e6))
         order by bucket",
    )
    .bind(device_id)
    .bind(old_hour as f64)
    .bind((now - now.rem_euclid(HOUR)) as f64)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        hours,
        vec![(old_hour, -1.0, 1), (now - now.rem_euclid(HOUR), -2.0, 1)]
    );
}

/// A series whose aggregate overflows (stddev of 1e200 and 0 raises 22003 in PostgreSQL)
/// loses only its own hour: the other series of that hour, its own other hours and the
/// other dirty hours are refreshed (the old function failed as a whole, so nothing was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_series_that_breaks_its_aggregate_does_not_stop_the_others() {
    let db = TestDb::new().await;
    if db.store.is_timescaledb() {
        eprintln!("TimescaleDB: the continuous aggregate refreshes itself");
        return;
    }
    let (bad_device, metric_id) = new_series(&db, "HUGE-", "huge_metric").await;
    let (good_device, _) = new_series(&db, "FINE-", "huge_metric").await;
    let start = base_time();
    let minute = 60_000_000;
    let mut rows = TelemetryColumns::default();
    // Hours 0, 1, 2 are one run of consecutive dirty hours; hour 10 is another.
    rows.push(start + minute, bad_device, metric_id, 1.0, false);
    rows.push(start + 2 * minute, bad_device, metric_id, 3.0, false);
    rows.push(start + HOUR + minute, bad_device, metric_id, 1e200, false);
    rows.push(start + HOUR + 2 * minute, bad_device, metric_id, 0.0, false);
    rows.push(start + 2 * HOUR + minute, bad_device, metric_id, 7.0, false);
    for hour in [0, 1, 2, 10] {
        rows.push(
            start + hour * HOUR + minute,
            good_device,
            metric_id,
            2.0,
            false,
        );
        rows.push(
            start + hour * HOUR + 2 * minute,
            good_device,
            metric_id,
            4.0,
            false,
        );
    }
    db.store
        .write_batch(&WriteBatch {
            telemetry: rows,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    let n_hours = db
        .store
        .refresh_rollup()
        .await
        .expect("the refresh succeeds");
    assert_eq!(n_hours, 4);

    let pool = db.query().await;
    let rollup = async |device_id: i32| -> Vec<(i64, f64, i64)> {
        sqlx::query_as(
            "select (extract(epoch from bucket)::bigint * 1000000 - $2) / 3600000000, avg, count
             from telemetry_hourly where device_id = $1 order by bucket",
        )
        .bind(device_id)
        .bind(start)
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    assert_eq!(
        rollup(good_device).await,
        vec![(0, 3.0, 2), (1, 3.0, 2), (2, 3.0, 2), (10, 3.0, 2)],
        "every hour of the healthy series"
    );
    assert_eq!(
        rollup(bad_device).await,
        vec![(0, 2.0, 2), (2, 7.0, 1)],
        "the broken series loses only the hour it cannot aggregate"
    );
    let dirty = count(&pool, "select count(*) from telemetry_hourly_dirty").await;
    assert_eq!(dirty, 0);
}

/// A caller that stops waiting on a write (a timeout, a session that dies, a shutdown grace
/// spent) must not leave a connection inside the write's transaction: the write ends on its
/// own, no connection stays idle in a transaction holding the rows' locks, and the next
/// write of the same rows commits at once. (A cancelled sqlx transaction did leave one: a
/// restarted ingest then waited for good on the locks of the rows the broker redelivered.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_caller_stops_waiting_still_ends_and_holds_no_locks() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    let (device_id, metric_id) = new_series(&db, "CANCEL-", "cancel_metric").await;
    let start = base_time() - 48 * HOUR;
    let n_rows: i64 = 2_000;
    let series = |series_idx: i64| {
        series_batch(
            device_id,
            metric_id,
            (0..n_rows).map(|step| {
                (
                    start + (series_idx * n_rows + step) * 1_000_000,
                    step as f64,
                )
            }),
        )
    };
    let n_series = 3;
    for attempt in 0..60_i64 {
        // Gives up after 0.2 to 3 ms: inside BEGIN, the COPY, the rollup rows or COMMIT.
        let patience = Duration::from_micros(200 + (attempt as u64 * 97) % 2_800);
        let _ =
            tokio::time::timeout(patience, db.store.write_batch(&series(attempt % n_series))).await;
    }
    tokio::time::timeout(Duration::from_secs(20), db.store.write_batch(&series(0)))
        .await
        .expect("the next write of the same rows does not wait on an abandoned one's locks")
        .unwrap();
    wait_until(
        "every abandoned write ended (committed: nothing made them fail)",
        Duration::from_secs(10),
        || async {
            let stored: i64 = sqlx::query_scalar(
                "select count(*) from telemetry where device_id = $1 and metric_id = $2",
            )
            .bind(device_id)
            .bind(metric_id)
            .fetch_one(&pool)
            .await
            .unwrap();
            stored == n_series * n_rows
        },
    )
    .await;
    if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
        return; // one connection: the write above could not have run past a stuck one
    }
    wait_until(
        "no connection is left idle in a transaction",
        Duration::from_secs(5),
        || async {
            let stuck: i64 = sqlx::query_scalar(
                "select count(*) from pg_stat_activity
                 where datname = current_database() and state like 'idle in transaction%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            stuck == 0
        },
    )
    .await;
}

/// Predictions follow `storage.retention` like raw telemetry: on plain PostgreSQL the
/// maintenance job deletes those older than it (TimescaleDB's retention policy does it
/// there, see `migrating_again_replaces_only_the_policies_whose_setting_changed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predictions_past_retention_are_deleted_and_newer_ones_kept() {
    let db = TestDb::new().await;
    if db.store.is_timescaledb() {
        eprintln!("TimescaleDB: its retention policy drops whole chunks");
        return;
    }
    let (device_id, _) = new_series(&db, "RET-", "ret_metric").await;
    let now = chrono::Utc::now();
    let prediction = |age_days: i64| forewarn::store::PredictionRow {
        time: now - chrono::Duration::days(age_days),
        device_id,
        failure_mode: "retention_test".into(),
        probability: 0.5,
        horizon_hours: 168.0,
        model_version: "v-test".into(),
        above_threshold: false,
        top_factors: serde_json::json!([]),
    };
    db.store
        .insert_predictions(&[prediction(500), prediction(1)])
        .await
        .unwrap();
    db.store
        .apply_retention(Duration::from_secs(400 * 86_400))
        .await
        .unwrap();
    let pool = db.query().await;
    let kept: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "select time from predictions where device_id = $1 and failure_mode = 'retention_test'",
    )
    .bind(device_id)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(kept.len(), 1);
    assert!(kept[0] > now - chrono::Duration::days(2));
}

/// The lane of a TimescaleDB that refuses compression and continuous aggregates (what the
/// Apache-2 edition of managed services does): `serve.mjs --refuse-compression`, run with
/// `TEST_TIMESCALE_EDITION=refuses_compression` by `.ci/run`. Elsewhere it says so and
/// checks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timescaledb_that_refuses_compression_takes_the_plain_path_under_auto() {
    if std::env::var("TEST_TIMESCALE_EDITION").as_deref() != Ok("refuses_compression") {
        eprintln!("not the refusing-compression lane (TEST_TIMESCALE_EDITION): nothing to check");
        return;
    }
    let server = test_server();
    let storage = |timescaledb| StorageConfig {
        timescaledb,
        use_copy: false,
        ..StorageConfig::default()
    };
    let database = forewarn::config::DatabaseConfig {
        max_connections: 1,
        ..Default::default()
    };
    let require = storage(forewarn::config::TimescaleMode::Require);
    let (mut store, pool) =
        forewarn::store::testing::connect_sharing_pool(&server.admin_url, &database, &require)
            .await
            .unwrap();
    // The extension is there and makes hypertables, but its licensed features are refused.
    let available = count(
        &pool,
        "select count(*) from pg_extension where extname = 'timescaledb'",
    )
    .await;
    assert_eq!(available, 1, "the lane's server has TimescaleDB");

    // `require` stops before anything is created, with the sentence.
    let error = store.migrate(&require).await.unwrap_err();
    assert!(
        matches!(error, forewarn::store::StoreError::ApacheEdition),
        "{error}"
    );
    assert!(error.to_string().contains("storage.timescaledb = auto"));
    assert_eq!(
        count(
            &pool,
            "select count(*) from pg_class where relname = 'forewarn_storage'"
        )
        .await,
        0
    );

    // `auto` takes the plain path and finishes: plain tables, a rollup table, no probe left.
    let auto = storage(forewarn::config::TimescaleMode::Auto);
    let report = store.migrate(&auto).await.unwrap();
    assert!(!report.timescaledb && !store.is_timescaledb());
    assert_eq!(
        count(
            &pool,
            "select count(*) from timescaledb_information.hypertables"
        )
        .await,
        0
    );
    let rollup: String =
        sqlx::query_scalar("select relkind::text from pg_class where relname = 'telemetry_hourly'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(rollup, "r", "the rollup is a table refreshed by forewarn");
    assert_eq!(
        count(
            &pool,
            "select count(*) from pg_class where relname = 'forewarn_edition_probe'"
        )
        .await,
        0
    );
    // And it stores.
    let device = store
        .register_devices(&["apache-1".to_string()])
        .await
        .unwrap()[0]
        .1;
    let metric = store.register_metrics(&["temp".to_string()]).await.unwrap()[0].1;
    let batch = series_batch(device, metric, [(1_700_000_000_000_000, 21.5)]);
    store.write_batch(&batch).await.unwrap();
    assert_eq!(count(&pool, "select count(*) from telemetry").await, 1);
    // Migrating again is a no-op, and the flavour stays what it was created with.
    let again = store.migrate(&auto).await.unwrap();
    assert!(again.applied_versions.is_empty() && !again.timescaledb);
}

fn signal(device_id: i32, at: i64, priority: u8, risk: f64) -> TicketSignal {
    TicketSignal {
        kind: TicketKind::Proactive,
        device_id,
        failure_mode: "washer/drum_bearing".into(),
        at,
        first_at: at,
        occurrences: 1,
        priority,
        risk: Some(risk),
        model_version: Some("test".into()),
        top_factors: serde_json::json!(["drum vibration 3.1σ above this machine's baseline"]),
        expected_failure_at: None,
        due_at: None,
        actor: "dispatch".into(),
        reason: "risk above threshold for 2 scores".into(),
    }
}

/// A device of this test's own and the ticket its first signal (priority 2) opens.
async fn new_ticket(db: &TestDb, device_prefix: &str, at: i64) -> (i32, i64) {
    let device_id = db
        .store
        .resolve_devices(&[unique(device_prefix)], true)
        .await
        .unwrap()[0]
        .1;
    let Opened::Created { ticket_id } = db
        .store
        .open_or_merge_ticket(&signal(device_id, at, 2, 0.8))
        .await
        .unwrap()
    else {
        panic!("a new device's first signal creates its ticket");
    };
    (device_id, ticket_id)
}

async fn new_technician(pool: &sqlx::PgPool, name: &str) -> i32 {
    sqlx::query_scalar(
        "insert into technicians (external_id, name, home_latitude, home_longitude)
         values ($1, $2, 52.23, 21.01) returning id",
    )
    .bind(unique("tech-"))
    .bind(name)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Dispatch replicas racing on the same signals: one open ticket per (device, failure
/// mode), every signal kept as an occurrence on it, one `created` audit row; a later
/// higher risk escalates it. Run many times over (rounds × tasks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_signals_open_one_ticket_and_keep_every_occurrence() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    for round in 0..10 {
        let device = unique("race-");
        let device_id = db.store.resolve_devices(&[device], true).await.unwrap()[0].1;
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let store = db.store.clone();
                tokio::spawn(async move {
                    let mut created = 0;
                    for n in 0..5 {
                        let at = (round * 100 + task * 10 + n) as i64 * HOUR;
                        let opened = store
                            .open_or_merge_ticket(&signal(device_id, at, 3, 0.6))
                            .await
                            .unwrap();
                        created += usize::from(matches!(opened, Opened::Created { .. }));
                    }
                    created
                })
            })
            .collect();
        let mut created = 0;
        for task in tasks {
            created += task.await.unwrap();
        }
        assert_eq!(
            created, 1,
            "round {round}: exactly one signal created the ticket"
        );
        let (n_open, occurrences): (i64, i64) = sqlx::query_as(
            "select count(*), coalesce(sum(occurrences), 0)::bigint from tickets
             where device_id = $1 and status = 'open'",
        )
        .bind(device_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((n_open, occurrences), (1, 40), "round {round}");
        let events: i64 = sqlx::query_scalar(
            "select count(*) from ticket_events e join tickets t on t.id = e.ticket_id
             where t.device_id = $1",
        )
        .bind(device_id)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(events, 40, "every signal is in the audit");
        // A higher risk escalates.
        let escalated = db
            .store
            .open_or_merge_ticket(&signal(device_id, 10_000 * HOUR, 1, 0.95))
            .await
            .unwrap();
        assert!(
            matches!(
                escalated,
                Opened::Merged {
                    escalated_from: Some(3),
                    ..
                }
            ),
            "{escalated:?}"
        );
    }
}

/// Two bookings of one technician that overlap cannot both exist, even when booked at the
/// same time by two replicas (whose inserts can deadlock on the constraint check:
/// PostgreSQL fails one, which retries); a cancelled booking frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_technician_cannot_be_double_booked() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let technician = new_technician(&pool, "Ada").await;
    for round in 0..30i64 {
        let mut tickets = Vec::new();
        for _ in 0..2 {
            tickets.push(new_ticket(&db, "booked-", round * HOUR).await.1);
        }
        // Two replicas book the same technician for overlapping slots at once.
        let start = (1_000 + round * 10) * HOUR;
        let attempts: Vec<_> = tickets
            .iter()
            .enumerate()
            .map(|(idx, &ticket_id)| {
                let store = db.store.clone();
                let offset = idx as i64 * HOUR / 2;
                tokio::spawn(async move {
                    store
                        .book(&BookingRequest {
                            ticket_id,
                            technician_id: technician,
                            start: start + offset,
                            end: start + offset + HOUR,
                            site: None,
                            at: round * HOUR,
                            actor: "dispatch",
                            hold_until: None,
                            planned_on: None,
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for attempt in attempts {
            outcomes.push(attempt.await.unwrap());
        }
        let booked = outcomes
            .iter()
            .filter(|o| matches!(o, Booked::Booked { .. }))
            .count();
        assert_eq!(booked, 1, "round {round}: {outcomes:?}");
        assert!(outcomes.contains(&Booked::SlotTaken));
    }
    let overlapping: i64 = sqlx::query_scalar(
        "select count(*) from bookings a join bookings b
           on a.technician_id = b.technician_id and a.id < b.id and a.slot && b.slot
         where a.cancelled_at is null and b.cancelled_at is null",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(overlapping, 0);
    // Cancelling a booking frees its slot.
    sqlx::query("update bookings set cancelled_at = now()")
        .execute(&pool)
        .await
        .unwrap();
    let (device_id, ticket_id) = new_ticket(&db, "freed-", 0).await;
    let request = BookingRequest {
        ticket_id,
        technician_id: technician,
        start: 1_000 * HOUR,
        end: 1_001 * HOUR,
        site: None,
        at: 0,
        actor: "dispatch",
        hold_until: None,
        planned_on: None,
    };
    let rebooked = db.store.book(&request).await.unwrap();
    assert!(matches!(rebooked, Booked::Booked { .. }));
    // A ticket is booked once: a second booking of it is refused, whatever the slot.
    let again = BookingRequest {
        start: 2_000 * HOUR,
        end: 2_001 * HOUR,
        site: None,
        ..request
    };
    assert_eq!(db.store.book(&again).await.unwrap(), Booked::NotBookable);
    // A signal on the booked ticket is an occurrence on it, not a second ticket.
    let merged = db
        .store
        .open_or_merge_ticket(&signal(device_id, HOUR, 2, 0.85))
        .await
        .unwrap();
    assert_eq!(
        merged,
        Opened::Merged {
            ticket_id,
            escalated_from: None
        }
    );
    let status: String = sqlx::query_scalar("select status from tickets where id = $1")
        .bind(ticket_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "booked");
    // A booking planned on a calendar without the visit another replica made meanwhile
    // (the drive to or from it unknown) is refused as stale, and nothing is written.
    let (_, first) = new_ticket(&db, "routed-", 0).await;
    let (_, second) = new_ticket(&db, "stale-", 0).await;
    let visit = |ticket_id, start| BookingRequest {
        ticket_id,
        start,
        end: start + HOUR,
        site: Some((52.2, 21.0)),
        ..request
    };
    let routed = db.store.book(&visit(first, 3_000 * HOUR)).await.unwrap();
    assert!(matches!(routed, Booked::Booked { .. }), "{routed:?}");
    let blind = PlannedOn {
        from: 2_990 * HOUR,
        to: 3_010 * HOUR,
        visits: vec![],
    };
    let stale = BookingRequest {
        planned_on: Some(&blind),
        ..visit(second, 3_002 * HOUR)
    };
    assert_eq!(db.store.book(&stale).await.unwrap(), Booked::Stale);
    let seeing = PlannedOn {
        visits: vec![(3_000 * HOUR, 3_001 * HOUR)],
        ..blind.clone()
    };
    let fresh = BookingRequest {
        planned_on: Some(&seeing),
        ..visit(second, 3_002 * HOUR)
    };
    assert!(matches!(
        db.store.book(&fresh).await.unwrap(),
        Booked::Booked { .. }
    ));
}

/// Signals that escalate, racing: each escalation is reported once, from the priority the
/// ticket really had (a stale read would report two escalations from the same priority).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_escalations_are_each_reported_once() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    for round in 0..10 {
        let device_id = db
            .store
            .resolve_devices(&[unique("escalate-")], true)
            .await
            .unwrap()[0]
            .1;
        db.store
            .open_or_merge_ticket(&signal(device_id, 0, 4, 0.5))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|task| {
                let store = db.store.clone();
                tokio::spawn(async move {
                    let mut escalations = Vec::new();
                    for (n, priority) in [3u8, 2, 1].into_iter().enumerate() {
                        let at = (1 + task * 3 + n as i64) * HOUR;
                        let risk = 1.0 - f64::from(priority) * 0.1;
                        if let Opened::Merged {
                            escalated_from: Some(from),
                            ..
                        } = store
                            .open_or_merge_ticket(&signal(device_id, at, priority, risk))
                            .await
                            .unwrap()
                        {
                            escalations.push((from, priority));
                        }
                    }
                    escalations
                })
            })
            .collect();
        let mut escalations = Vec::new();
        for task in tasks {
            escalations.extend(task.await.unwrap());
        }
        // The escalations chain from 4 down to 1 without repeating a step.
        escalations.sort_unstable_by(|a, b| b.cmp(a));
        let mut expected_from = 4;
        for (from, to) in &escalations {
            assert_eq!(*from, expected_from, "round {round}: {escalations:?}");
            assert!(*to < *from);
            expected_from = *to;
        }
        assert_eq!(expected_from, 1, "round {round}: ends at priority 1");
        let priority: i16 = sqlx::query_scalar("select priority from tickets where device_id = $1")
            .bind(device_id)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(priority, 1);
    }
}

/// One dispatcher transaction tries candidates in turn: a technician whose slot is taken
/// leaves the transaction usable, the next one is booked, and the commit keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_slot_leaves_the_transaction_usable_for_the_next_candidate() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let technicians = [
        new_technician(&pool, "Ada").await,
        new_technician(&pool, "Ben").await,
    ];
    let tickets = [
        new_ticket(&db, "candidate-", 0).await.1,
        new_ticket(&db, "candidate-", 0).await.1,
    ];
    let request = |ticket_id, technician_id| BookingRequest {
        ticket_id,
        technician_id,
        start: 100 * HOUR,
        end: 101 * HOUR,
        site: None,
        at: HOUR,
        actor: "dispatch",
        hold_until: None,
        planned_on: None,
    };
    // Ada is booked for the first ticket.
    let first = db
        .store
        .book(&request(tickets[0], technicians[0]))
        .await
        .unwrap();
    assert!(matches!(first, Booked::Booked { .. }));
    // The second ticket tries Ada, then Ben, in one transaction.
    let mut tx = db.store.begin().await.unwrap();
    assert_eq!(
        tx.book(&request(tickets[1], technicians[0])).await.unwrap(),
        Booked::SlotTaken
    );
    assert!(matches!(
        tx.book(&request(tickets[1], technicians[1])).await.unwrap(),
        Booked::Booked { .. }
    ));
    tx.commit().await.unwrap();
    let (technician, status): (i32, String) =
        sqlx::query_as("select technician_id, status from tickets where id = $1")
            .bind(tickets[1])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((technician, status.as_str()), (technicians[1], "booked"));
    // This test's tickets only: the TimescaleDB lane shares its database.
    let live: i64 = sqlx::query_scalar(
        "select count(*) from bookings where cancelled_at is null and ticket_id = any($1)",
    )
    .bind(&tickets[..])
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(live, 2);
}

/// A dispatch pass on this storage flavour: two scores above threshold open a proactive
/// ticket, it settles, is booked with a technician, and its customer's message is queued
/// in the same transaction (`outreach`).
#[tokio::test]
async fn a_dispatch_pass_opens_books_and_queues_the_message() {
    use forewarn::dispatch::{DispatchConfig, Dispatcher};
    use forewarn::store::PredictionRow;
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    // A failure mode of this test's own: the lane shares one database between tests.
    let mode = format!("washer/{}", unique("lane_"));
    sqlx::query(
        "insert into models (version, failure_mode, algorithm, horizon_hours, features,
                             metrics, threshold, artifact_path, data_from, data_to, active)
         values ('lane', $1, 'logistic', 168, '[]',
                 '{\"events\": {\"lead_times_hours\": [96, 96, 96, 96, 96]}}', 0.5, '', now(),
                 now(), true)",
    )
    .bind(&mode)
    .execute(&pool)
    .await
    .unwrap();
    let customer: i64 = sqlx::query_scalar(
        "insert into customers (external_id, language) values ($1, 'pl') returning id",
    )
    .bind(unique("lane-customer-"))
    .fetch_one(&pool)
    .await
    .unwrap();
    let device: i32 = sqlx::query_scalar(
        "insert into devices (external_id, kind, customer_id, latitude, longitude)
         values ($1, 'washer', $2, 52.23, 21.01) returning id",
    )
    .bind(unique("lane-washer-"))
    .bind(customer)
    .fetch_one(&pool)
    .await
    .unwrap();
    let technician = new_technician(&pool, "Lane Tech").await;
    sqlx::query("update technicians set skills = '{washer/*}' where id = $1")
        .bind(technician)
        .execute(&pool)
        .await
        .unwrap();
    // Monday 2 March 2026, 06:00 UTC.
    let monday = 1_772_431_200_000_000i64;
    let rows: Vec<PredictionRow> = [0.7, 0.8]
        .iter()
        .enumerate()
        .map(|(i, p)| PredictionRow {
            time: chrono::DateTime::from_timestamp_micros(monday + i as i64 * HOUR).unwrap(),
            device_id: device,
            failure_mode: mode.clone(),
            probability: *p,
            horizon_hours: 168.0,
            model_version: "lane".into(),
            above_threshold: true,
            top_factors: serde_json::json!(["drum vibration 3.1σ above this machine's baseline"]),
        })
        .collect();
    db.store.insert_predictions(&rows).await.unwrap();
    let mut dispatcher = Dispatcher::new(db.store.clone(), DispatchConfig::default());
    dispatcher.pass(Some(monday + 2 * HOUR)).await.unwrap();
    let (status, booked_with, message): (String, Option<i32>, Option<String>) = sqlx::query_as(
        "select t.status, b.technician_id, o.message_type
         from tickets t
         left join bookings b on b.ticket_id = t.id and b.cancelled_at is null
         left join outreach o on o.ticket_id = t.id
         where t.device_id = $1",
    )
    .bind(device)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "booked");
    assert!(booked_with.is_some());
    assert_eq!(message.as_deref(), Some("booking_proposed"));
}

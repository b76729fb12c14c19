//! Restarts (issue 15): the broker restarted mid-stream (fault 3), and `forewarn
//! dispatch` and `forewarn outreach`, real processes, SIGKILLed at random moments (a seeded
//! RNG; the seed is printed, `FAULTS_SEED` repeats it) 60 times while risk scores arrive in
//! waves, then left to finish (fault 4). Exactly one ticket per (device, mode) with a
//! sustained signal, none for a noisy one; one incident for the surge; one live booking per
//! ticket and no technician booked twice at once; every message queued once, sent, and
//! delivered under its own key.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::Utc;
use forewarn::embedded::mosquitto::Mosquitto;
use forewarn::store::PredictionRow;
use rand::{Rng, SeedableRng};
use sqlx::PgPool;

use crate::dispatch::{Tech, WARSAW, model, technician};
use crate::faults::a_past_monday;
use crate::ingest::metric_value;
use crate::outreach::{Provider, customer, stage_process};
use crate::support::*;

const MODES: [&str; 4] = [
    "washer/drum_bearing",
    "washer/drain_pump",
    "fridge/compressor",
    "fridge/refrigerant_leak",
];
/// Devices with a sustained signal, in waves of 15 per mode (a surge needs 20).
const SUSTAINED: usize = 600;
const WAVE: usize = 60;
/// Devices of one square kilometre raising `washer/motor` together: one incident.
const SURGE: usize = 24;
const SURGE_MODE: &str = "washer/motor";
/// Devices with one high score then a low one: no ticket.
const NOISY: usize = 60;
const TECHNICIANS: usize = 30;
const KILLS: usize = 60;

/// The device of index `i`: its external id, kind and mode.
fn device(i: usize) -> (String, &'static str, &'static str) {
    let mode = if (SUSTAINED..SUSTAINED + SURGE).contains(&i) {
        SURGE_MODE
    } else {
        MODES[i % 4]
    };
    (format!("K-{i}"), mode.split('/').next().unwrap(), mode)
}

async fn seed(db: &TestDb, pool: &PgPool) {
    let n = SUSTAINED + SURGE + NOISY;
    let owner = |i: usize| match i {
        i if (SUSTAINED..SUSTAINED + SURGE).contains(&i) => format!("c-s{}", (i - SUSTAINED) / 3),
        i => format!("c-{i}"),
    };
    let mut owners: Vec<String> = (0..n).map(owner).collect();
    owners.dedup();
    let customers: Vec<_> = owners
        .iter()
        .enumerate()
        .map(|(i, id)| customer(id, ["en", "pl", "uk", "sk"][i % 4], "sms", "Europe/Warsaw"))
        .collect();
    db.store.upsert_customers(&customers).await.unwrap();
    let (mut ids, mut kinds, mut owners, mut latitudes, mut longitudes) =
        (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let (id, kind, _) = device(i);
        let (dlat, dlon) = if (SUSTAINED..SUSTAINED + SURGE).contains(&i) {
            (0.002 * (i % 5) as f64, 0.002 * (i % 25 / 5) as f64)
        } else {
            (0.01 * (i % 41) as f64 - 0.2, 0.015 * (i % 37) as f64 - 0.27)
        };
        ids.push(id);
        kinds.push(kind.to_string());
        owners.push(owner(i));
        latitudes.push(WARSAW.0 + dlat);
        longitudes.push(WARSAW.1 + dlon);
    }
    // Every device last reported five hours after the first scores: the fleet's clock,
    // which stands still (dispatch works in event time).
    sqlx::query(
        "insert into devices (external_id, kind, model, customer_id, latitude, longitude,
                              last_seen_at)
         select d.id, d.kind, 'M-' || d.id, c.id, d.lat, d.lon, $6
         from unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[])
              as d(id, kind, owner, lat, lon)
         join customers c on c.external_id = d.owner",
    )
    .bind(&ids)
    .bind(&kinds)
    .bind(&owners)
    .bind(&latitudes)
    .bind(&longitudes)
    .bind(a_past_monday() + chrono::Duration::hours(5))
    .execute(pool)
    .await
    .unwrap();
    for t in 0..TECHNICIANS {
        let name = format!("Tech {t}");
        let home = (
            WARSAW.0 + 0.02 * (t % 6) as f64 - 0.05,
            WARSAW.1 + 0.03 * (t / 6) as f64 - 0.06,
        );
        technician(
            pool,
            Tech {
                name: &name,
                home,
                ..Tech::default()
            },
        )
        .await;
    }
    for mode in MODES.into_iter().chain([SURGE_MODE]) {
        model(pool, mode, 168.0, &[96.0; 10]).await;
    }
}

/// Wave `w` of the risk scores, as the predict stage writes them: the sustained devices of
/// that wave (15 per mode, 15 minutes after the previous wave), with the surge in wave 9
/// and the noisy devices in wave 0.
async fn scores(db: &TestDb, ids: &HashMap<String, i32>, wave: usize) {
    let t0 = a_past_monday();
    let mut rows = Vec::new();
    let mut add = |i: usize, first_at: chrono::DateTime<chrono::Utc>, probabilities: [f64; 2]| {
        let (id, _, mode) = device(i);
        for (k, probability) in probabilities.into_iter().enumerate() {
            rows.push(PredictionRow {
                time: first_at + chrono::Duration::minutes(k as i64),
                device_id: ids[&id],
                failure_mode: mode.to_string(),
                probability,
                horizon_hours: 168.0,
                model_version: "v1".into(),
                above_threshold: probability >= 0.5,
                top_factors: serde_json::json!([]),
            });
        }
    };
    let at = |minutes: usize, seconds: usize| {
        t0 + chrono::Duration::seconds((minutes * 60 + seconds) as i64)
    };
    for i in wave * WAVE..(wave + 1) * WAVE {
        add(i, at(15 * wave, 2 * (i % WAVE / 4)), [0.7, 0.8]);
    }
    if wave == 9 {
        for i in SUSTAINED..SUSTAINED + SURGE {
            add(i, at(200, 5 * (i - SUSTAINED)), [0.7, 0.8]);
        }
    }
    if wave == 0 {
        for i in SUSTAINED + SURGE..SUSTAINED + SURGE + NOISY {
            add(i, at(5, 0), [0.7, 0.2]);
        }
    }
    db.store.insert_predictions(&rows).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatchers_and_outreach_workers_killed_60_times_double_and_lose_nothing() {
    let started = Instant::now();
    let db = TestDb::new().await;
    let pool = db.query().await;
    let provider = Provider::start().await;
    {
        let mut state = provider.state.lock().unwrap();
        state.delay = Duration::from_millis(20);
        state.jitter = Duration::from_millis(100);
    }
    seed(&db, &pool).await;
    let ids: HashMap<String, i32> = sqlx::query_as("select external_id, id from devices")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    // Nested keys are set in a file: visits told at once (a held one is told on a clock
    // that stands still here), a pass every 200 ms.
    let config = std::env::temp_dir()
        .join(unique("forewarn-faults-"))
        .with_extension("toml");
    std::fs::write(
        &config,
        "[dispatch]\ninterval = \"200ms\"\n[dispatch.proposal]\nhold = \"0s\"\n",
    )
    .unwrap();
    let spawn = |stage: &str| {
        stage_process(stage, &db.url, &provider)
            .env("FOREWARN_CONFIG", &config)
            .env("RUST_LOG", "error")
            .spawn()
            .unwrap()
    };
    let seed: u64 = std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill loop seed {seed} (FAULTS_SEED={seed} repeats it)");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut dispatcher = spawn("dispatch");
    let mut worker = spawn("outreach");
    let (mut dispatcher_kills, mut worker_kills) = (0, 0);
    let mut waves = 0;
    while dispatcher_kills + worker_kills < KILLS {
        // A wave of scores every sixth kill: dispatch has work all along the loop.
        if (dispatcher_kills + worker_kills) % 6 == 0 && waves < SUSTAINED / WAVE {
            scores(&db, &ids, waves).await;
            waves += 1;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..700))).await;
        // SIGKILL: no chance to finish a transaction, a send or its write.
        if rng.gen_bool(0.5) {
            dispatcher.kill().unwrap();
            dispatcher.wait().unwrap();
            dispatcher = spawn("dispatch");
            dispatcher_kills += 1;
        } else {
            worker.kill().unwrap();
            worker.wait().unwrap();
            worker = spawn("outreach");
            worker_kills += 1;
        }
    }
    assert_eq!(waves, SUSTAINED / WAVE);
    let at_loop_end = (
        count(&pool, "select count(*) from bookings").await,
        provider.state.lock().unwrap().requests.len(),
    );
    // One clean run finishes: every visit booked, every message sent (a killed worker's
    // claims come back after their 12 s lease).
    // (At least: more — a doubled ticket, booking or message — is found by the checks after.)
    let expected_messages = (SUSTAINED + SURGE / 3) as i64;
    let sql_live = "select count(*) from bookings where cancelled_at is null";
    wait_until(
        "every visit booked and every message sent",
        Duration::from_secs(90),
        || async {
            count(&pool, sql_live).await >= SUSTAINED as i64
                && count(&pool, "select count(*) from outreach where status = 'sent'").await
                    >= expected_messages
                && count(
                    &pool,
                    "select count(*) from outreach where status <> 'sent'",
                )
                .await
                    == 0
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await; // a few more passes change nothing
    sigterm(&dispatcher);
    sigterm(&worker);
    assert!(dispatcher.wait().unwrap().success());
    assert!(worker.wait().unwrap().success());
    let _ = std::fs::remove_file(&config);

    // Exactly one ticket per (device, mode) with a sustained signal, none for a noisy one.
    let tickets: Vec<(String, String, String, bool, i64)> = sqlx::query_as(
        "select d.external_id, t.failure_mode, string_agg(t.status, ',' order by t.id),
                bool_or(t.incident_id is not null), count(*)
         from tickets t join devices d on d.id = t.device_id group by 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let found: BTreeMap<(String, String), (String, bool, i64)> = tickets
        .into_iter()
        .map(|(device, mode, status, held, n)| ((device, mode), (status, held, n)))
        .collect();
    let expected: BTreeMap<(String, String), (String, bool, i64)> = (0..SUSTAINED + SURGE)
        .map(|i| {
            let (id, _, mode) = device(i);
            let surge = i >= SUSTAINED;
            let status = if surge { "open" } else { "booked" };
            ((id, mode.to_string()), (status.to_string(), surge, 1))
        })
        .collect();
    assert_eq!(
        found, expected,
        "one ticket per device and mode: booked, or held in the incident"
    );
    assert_eq!(
        sqlx::query_scalar::<_, i64>(
            "select count(*) from tickets where incident_id is not null group by incident_id"
        )
        .fetch_all(&pool)
        .await
        .unwrap(),
        vec![SURGE as i64],
        "one incident holds the surge"
    );
    // One live booking per ticket, never cancelled or made twice, no technician double-booked.
    let bookings: (i64, i64, i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where cancelled_at is null), count(distinct ticket_id),
                (select count(*) from bookings a join bookings b
                   on a.technician_id = b.technician_id and a.id < b.id and a.slot && b.slot
                 where a.cancelled_at is null and b.cancelled_at is null)
         from bookings",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let n = SUSTAINED as i64;
    assert_eq!(
        bookings,
        (n, n, n, 0),
        "(rows, live, tickets, overlapping pairs)"
    );
    // Each message queued once: one per booking (its key names the booking), one notice
    // per surge customer, nothing else; all sent.
    let messages: Vec<(String, String, i64)> = sqlx::query_as(
        "select message_type, status, count(*) from outreach group by 1, 2 order by 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = vec![
        ("booking_proposed".to_string(), "sent".to_string(), n),
        (
            "incident_notice".to_string(),
            "sent".to_string(),
            (SURGE / 3) as i64,
        ),
    ];
    assert_eq!(messages, expected);
    let keyed: i64 = count(
        &pool,
        "select count(*) from outreach o join bookings b on b.ticket_id = o.ticket_id
         where o.idempotency_key = 'ticket:' || o.ticket_id || ':booking:' || b.id",
    )
    .await;
    assert_eq!(keyed, n);
    // Delivery is at least once with the message's idempotency key, the documented
    // contract (README, Outreach: "sent again with the same idempotency key, which providers
    // dedupe on"): so the provider saw every key, no key carrying another message, and no
    // message new twice — a key that came again (sent, then the worker killed before
    // writing so) came with the same message.
    let outbox: Vec<String> = sqlx::query_scalar("select idempotency_key from outreach")
        .fetch_all(&pool)
        .await
        .unwrap();
    let mut per_key: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for (key, body) in provider.requests("sms") {
        assert_eq!(body["id"], serde_json::json!(key));
        per_key.entry(key).or_default().push(body);
    }
    assert_eq!(
        per_key.len(),
        outbox.len(),
        "new to the provider: each message once"
    );
    for key in &outbox {
        let bodies = &per_key[key];
        assert!(
            bodies
                .iter()
                .all(|b| b["text"] == bodies[0]["text"] && b["to"] == bodies[0]["to"]),
            "{key}"
        );
    }
    assert_eq!(provider.state.lock().unwrap().bad_signatures, 0);
    let resent = per_key.values().filter(|b| b.len() > 1).count();
    eprintln!(
        "{dispatcher_kills} dispatcher and {worker_kills} worker kills; at the loop's end {} bookings and {} requests; {} requests for {} messages, {resent} re-sent under their own key; {:?}",
        at_loop_end.0,
        at_loop_end.1,
        provider.state.lock().unwrap().requests.len(),
        outbox.len(),
        started.elapsed()
    );
    assert!(dispatcher_kills > 0 && worker_kills > 0);
}

/// Mosquitto (persistence on) restarted mid-stream while ingest cannot commit: of the
/// readings the broker had acknowledged to the device, some were held by ingest, most
/// queued at the broker for ingest's session. After the restart the device and ingest
/// reconnect, and every acknowledged reading is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_mid_stream_loses_nothing_it_had_accepted() {
    init_logs();
    let db = TestDb::new().await;
    let mosquitto = Mosquitto::start_persistent(1000).expect("this test needs Mosquitto");
    let mut broker = TestBroker::Mosquitto(mosquitto);
    let prefix = unique("restart");
    let mut settings = ingest_settings(&broker, &prefix);
    // A small window: most of a burst waits at the broker, not in ingest.
    settings.ingest.max_pending_messages = 200;
    let ingest = RunningIngest::start(settings, db.store.clone()).await;
    let mut device = Publisher::connect_persistent(&broker).await;
    let pool = db.query().await;
    let t0 = Utc::now() - chrono::Duration::minutes(10);
    const N: usize = 3000;
    let message = |i: usize| {
        let ts = (t0 + chrono::Duration::milliseconds(i as i64)).to_rfc3339();
        (
            format!("{prefix}/R-{}/telemetry", i % 13),
            format!(r#"{{"ts": "{ts}", "metrics": {{"v": {i}}}}}"#),
        )
    };
    for i in 0..1000 {
        let (topic, payload) = message(i);
        device.publish(&topic, payload).await;
    }
    device.flush().await;
    wait_for_count(&pool, "select count(*) from telemetry", 1000).await;
    // Ingest's commits wait on this lock: what it receives stays unacknowledged.
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("lock table telemetry in share mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    for i in 1000..2000 {
        let (topic, payload) = message(i);
        device.publish(&topic, payload).await;
    }
    device.flush().await;
    let accepted = device.acked();
    for i in 2000..2300 {
        let (topic, payload) = message(i);
        device.publish(&topic, payload).await;
    }
    let TestBroker::Mosquitto(mosquitto) = &mut broker else {
        unreachable!()
    };
    tokio::task::block_in_place(|| mosquitto.restart()).expect("mosquitto restarts");
    for i in 2300..N {
        let (topic, payload) = message(i);
        device.publish(&topic, payload).await;
    }
    let stored_while_locked = count(&pool, "select count(*) from telemetry").await;
    blocker.rollback().await.unwrap();
    device.flush().await;
    assert_eq!(device.acked(), N, "the device's every message acknowledged");
    assert!(
        accepted as i64 - stored_while_locked >= 700,
        "the broker went down holding accepted, unstored messages: {accepted} accepted, {stored_while_locked} stored"
    );
    wait_for_count(&pool, "select count(*) from telemetry", N as i64).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (
            count(&pool, "select count(*) from telemetry").await,
            count(
                &pool,
                "select count(distinct (device_id, metric_id, time)) from telemetry"
            )
            .await,
            count(&pool, "select count(*) from dead_letters").await,
        ),
        (N as i64, N as i64, 0)
    );
    let text = ingest.metrics.render();
    let errors = metric_value(&text, "forewarn_ingest_mqtt_connection_errors_total");
    let duplicates = metric_value(&text, "forewarn_ingest_duplicate_readings_total");
    eprintln!(
        "{accepted} accepted before the restart, {stored_while_locked} stored; {errors} connection errors, {duplicates} redelivered readings absorbed"
    );
    assert!(errors >= 1.0, "ingest saw its connection end");
    assert_eq!(ingest.metrics.mqtt_ready(), Some(true), "and reconnected");
    ingest.stop().await;
}

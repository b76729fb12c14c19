//! The dispatch stage against real PostgreSQL: predictions, critical events and silent
//! devices become tickets; surges become incidents; technicians are booked inside the
//! predicted window; outcomes become labels. Every pass is given its event-time clock.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use forewarn::dispatch::config::ProposalSettings;
use forewarn::dispatch::plan::Strategy;
use forewarn::dispatch::{CustomerCall, DispatchConfig, Dispatcher, PassReport, customer_call};
use forewarn::store::{Opened, Outcome, PredictionRow, Store, Transition, Transitioned};
use sqlx::PgPool;

use crate::support::*;

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 3_600_000_000;

/// Monday 2 March 2026, 07:00 UTC: before every shift of the week.
fn t0() -> i64 {
    Utc.with_ymd_and_hms(2026, 3, 2, 7, 0, 0)
        .unwrap()
        .timestamp_micros()
}

fn at(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap()
}

/// Customers told at once: the tests of held proposals set their own hold.
fn config() -> DispatchConfig {
    DispatchConfig {
        settle: Duration::from_secs(15 * 60),
        proposal: ProposalSettings {
            hold: Duration::ZERO,
            ..ProposalSettings::default()
        },
        ..DispatchConfig::default()
    }
}

async fn pass(store: &Store, config: &DispatchConfig, now: i64) -> PassReport {
    Dispatcher::new(store.clone(), config.clone())
        .pass(Some(now))
        .await
        .expect("dispatch pass")
}

async fn customer(pool: &PgPool, language: &str, tier: &str) -> i64 {
    sqlx::query_scalar(
        "insert into customers (external_id, name, language, tier) values ($1, $2, $3, $4)
         returning id",
    )
    .bind(unique("cust-"))
    .bind("Ola Nowak")
    .bind(language)
    .bind(tier)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn device(pool: &PgPool, kind: &str, model: &str, customer: i64, at: (f64, f64)) -> i32 {
    sqlx::query_scalar(
        "insert into devices (external_id, kind, model, customer_id, latitude, longitude)
         values ($1, $2, $3, $4, $5, $6) returning id",
    )
    .bind(unique(&format!("{kind}-")))
    .bind(kind)
    .bind(model)
    .bind(customer)
    .bind(at.0)
    .bind(at.1)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub(crate) struct Tech<'a> {
    pub(crate) name: &'a str,
    pub(crate) skills: &'a [&'a str],
    pub(crate) home: (f64, f64),
    pub(crate) range_km: f64,
    pub(crate) timezone: &'a str,
    pub(crate) days: &'a [i16],
}

impl Default for Tech<'_> {
    fn default() -> Self {
        Tech {
            name: "Ada Lovelace",
            skills: &["washer/*", "fridge/*"],
            home: WARSAW,
            range_km: 80.0,
            timezone: "UTC",
            days: &[1, 2, 3, 4, 5],
        }
    }
}

pub(crate) async fn technician(pool: &PgPool, tech: Tech<'_>) -> i32 {
    let skills: Vec<String> = tech.skills.iter().map(|s| s.to_string()).collect();
    sqlx::query_scalar(
        "insert into technicians (external_id, name, skills, home_latitude, home_longitude,
                                  max_travel_km, timezone, shift_days, shift_start, shift_end)
         values ($1, $2, $3, $4, $5, $6, $7, $8, '08:00', '16:00') returning id",
    )
    .bind(unique("tech-"))
    .bind(tech.name)
    .bind(&skills)
    .bind(tech.home.0)
    .bind(tech.home.1)
    .bind(tech.range_km)
    .bind(tech.timezone)
    .bind(tech.days)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub(crate) const WARSAW: (f64, f64) = (52.2297, 21.0122);
const KRAKOW: (f64, f64) = (50.0647, 19.9450);

/// An active model of `mode` with threshold 0.5 whose card measured these lead times.
pub(crate) async fn model(pool: &PgPool, mode: &str, horizon_hours: f64, leads: &[f64]) {
    sqlx::query(
        "insert into models (version, failure_mode, algorithm, horizon_hours, features,
                             metrics, threshold, artifact_path, data_from, data_to, active)
         values ('v1', $1, 'logistic', $2, '[]', $3, 0.5, '/nowhere', now(), now(), true)",
    )
    .bind(mode)
    .bind(horizon_hours)
    .bind(serde_json::json!({ "events": { "lead_times_hours": leads } }))
    .execute(pool)
    .await
    .unwrap();
}

async fn scores(store: &Store, device_id: i32, mode: &str, from: i64, probabilities: &[f64]) {
    let rows: Vec<PredictionRow> = probabilities
        .iter()
        .enumerate()
        .map(|(i, p)| PredictionRow {
            time: at(from + i as i64 * HOUR),
            device_id,
            failure_mode: mode.to_string(),
            probability: *p,
            horizon_hours: 168.0,
            model_version: "v1".into(),
            above_threshold: *p >= 0.5,
            top_factors: serde_json::json!([
                "drum vibration 24h mean 3.1σ above this machine's baseline"
            ]),
        })
        .collect();
    store.insert_predictions(&rows).await.unwrap();
}

async fn scalar(pool: &PgPool, sql: &str, id: i64) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Hysteresis, repeats, escalation and cancellation through the stage: a noisy device
/// opens nothing; a sustained one opens one ticket that keeps its repeats, escalates as
/// risk rises, survives a flapping signal, and is cancelled when risk stays low.
#[tokio::test]
async fn scores_open_one_ticket_keep_its_repeats_escalate_and_cancel() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let config = config();
    model(&pool, "washer/drum_bearing", 168.0, &[72.0; 10]).await;
    let owner = customer(&pool, "pl", "standard").await;
    let noisy = device(&pool, "washer", "W1", owner, WARSAW).await;
    let rising = device(&pool, "washer", "W1", owner, WARSAW).await;
    let mode = "washer/drum_bearing";
    scores(
        &db.store,
        noisy,
        mode,
        t0(),
        &[0.2, 0.8, 0.2, 0.7, 0.1, 0.9],
    )
    .await;
    scores(&db.store, rising, mode, t0(), &[0.3, 0.6, 0.6, 0.8, 0.95]).await;
    let report = pass(&db.store, &config, t0() + 5 * HOUR).await;
    assert_eq!(report.signals, 11, "{report:?}");
    assert_eq!(report.opened, 1, "{report:?}");
    let noisy_tickets = scalar(
        &pool,
        "select count(*) from tickets where device_id = $1",
        noisy.into(),
    )
    .await;
    assert_eq!(noisy_tickets, 0);
    let (ticket_id, occurrences, highest, priority, factors, status): (
        i64,
        i32,
        f64,
        i16,
        serde_json::Value,
        String,
    ) = sqlx::query_as(
        "select id, occurrences, highest_risk, priority, top_factors, status
             from tickets where device_id = $1",
    )
    .bind(rising)
    .fetch_one(&pool)
    .await
    .unwrap();
    // Opened by the second 0.6; 0.8 and 0.95 are its repeats.
    assert_eq!((occurrences, highest, status.as_str()), (3, 0.95, "open"));
    assert_eq!(priority, 1, "0.95 is risk priority 1");
    assert!(factors.to_string().contains("drum vibration"), "{factors}");
    let escalations = scalar(
        &pool,
        "select count(*) from ticket_events where ticket_id = $1 and reason like 'escalated%'",
        ticket_id,
    )
    .await;
    assert_eq!(escalations, 1, "one merge of two repeats escalating 3 → 1");
    // The same times scored again by another model version are replays: nothing changes.
    let replayed: Vec<PredictionRow> = [0.3, 0.6, 0.6, 0.8, 0.95]
        .iter()
        .enumerate()
        .map(|(i, p)| PredictionRow {
            time: at(t0() + i as i64 * HOUR),
            device_id: rising,
            failure_mode: mode.to_string(),
            probability: *p,
            horizon_hours: 168.0,
            model_version: "v2".into(),
            above_threshold: *p >= 0.5,
            top_factors: serde_json::json!([]),
        })
        .collect();
    db.store.insert_predictions(&replayed).await.unwrap();
    let again = pass(&db.store, &config, t0() + 5 * HOUR).await;
    assert_eq!(
        (again.opened, again.merged, again.escalated),
        (0, 0, 0),
        "{again:?}"
    );
    let occurrences_after: i32 =
        sqlx::query_scalar("select occurrences from tickets where id = $1")
            .bind(ticket_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(occurrences_after, 3);
    // Flapping between the thresholds (close: 0.3) keeps the ticket; three low scores
    // cancel it (no technician exists, so it was never booked).
    scores(
        &db.store,
        rising,
        mode,
        t0() + 5 * HOUR,
        &[0.45, 0.55, 0.35, 0.4],
    )
    .await;
    pass(&db.store, &config, t0() + 9 * HOUR).await;
    let status: String = sqlx::query_scalar("select status from tickets where id = $1")
        .bind(ticket_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "open");
    scores(&db.store, rising, mode, t0() + 9 * HOUR, &[0.1, 0.2, 0.1]).await;
    let report = pass(&db.store, &config, t0() + 12 * HOUR).await;
    assert_eq!(report.cancelled, 1, "{report:?}");
    let (status, tickets): (String, i64) =
        sqlx::query_as("select max(status), count(*) from tickets where device_id = $1")
            .bind(rising)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), tickets), ("cancelled", 1));
}

/// After a visit found nothing, the same risk opens nothing for the cool-down; a risk
/// rising past what the visit judged harmless opens a new ticket.
#[tokio::test]
async fn after_no_fault_found_the_cooldown_holds_unless_risk_rises() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let config = config();
    model(&pool, "washer/drum_bearing", 168.0, &[72.0; 10]).await;
    technician(&pool, Tech::default()).await;
    let owner = customer(&pool, "en", "standard").await;
    let washer = device(&pool, "washer", "W1", owner, WARSAW).await;
    let mode = "washer/drum_bearing";
    scores(&db.store, washer, mode, t0(), &[0.7, 0.7]).await;
    pass(&db.store, &config, t0() + 2 * HOUR).await;
    let ticket_id: i64 =
        sqlx::query_scalar("select id from tickets where device_id = $1 and status = 'booked'")
            .bind(washer)
            .fetch_one(&pool)
            .await
            .expect("booked");
    let visit = t0() + 6 * HOUR;
    for step in [
        Transition::OnSite,
        Transition::Resolve {
            outcome: Outcome::NoFaultFound,
            component: None,
            action: None,
        },
    ] {
        let done = db
            .store
            .transition(ticket_id, &step, visit, "technician:1", "visit")
            .await
            .unwrap();
        assert!(matches!(done, Transitioned::Done { .. }), "{done:?}");
    }
    scores(&db.store, washer, mode, visit + HOUR, &[0.7, 0.72, 0.7]).await;
    let held = pass(&db.store, &config, visit + 4 * HOUR).await;
    assert_eq!(held.opened, 0, "{held:?}");
    assert!(held.held_by_cooldown >= 1, "{held:?}");
    scores(&db.store, washer, mode, visit + 4 * HOUR, &[0.9, 0.9]).await;
    let risen = pass(&db.store, &config, visit + 6 * HOUR).await;
    assert_eq!(risen.opened, 1, "above 0.7 + 0.5 × 0.3 = 0.85: {risen:?}");
}

/// Two dispatchers on the same signals, many rounds: one ticket per device and mode,
/// every ticket booked at most once, no technician double-booked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_racing_open_one_ticket_per_device_and_never_double_book() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let config = config();
    model(&pool, "washer/drum_bearing", 168.0, &[96.0; 10]).await;
    for name in ["Ada A", "Ben B", "Cy C"] {
        technician(
            &pool,
            Tech {
                name,
                ..Tech::default()
            },
        )
        .await;
    }
    let owner = customer(&pool, "en", "standard").await;
    for round in 0..10i64 {
        let start = t0() + round * 24 * HOUR;
        let mut devices = Vec::new();
        for i in 0..12 {
            let spot = (WARSAW.0 + 0.01 * i as f64, WARSAW.1 - 0.01 * round as f64);
            let d = device(&pool, "washer", "W1", owner, spot).await;
            scores(
                &db.store,
                d,
                "washer/drum_bearing",
                start,
                &[0.7, 0.8, 0.85],
            )
            .await;
            devices.push(d);
        }
        let now = start + 3 * HOUR;
        let (a, b) = tokio::join!(
            tokio::spawn({
                let (store, config) = (db.store.clone(), config.clone());
                async move { pass(&store, &config, now).await }
            }),
            tokio::spawn({
                let (store, config) = (db.store.clone(), config.clone());
                async move { pass(&store, &config, now).await }
            }),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        // What one left, the next pass of either finishes.
        pass(&db.store, &config, now).await;
        assert_eq!(a.opened + b.opened, 12, "round {round}: {a:?} {b:?}");
        let per_device: Vec<(i32, i64, i64)> = sqlx::query_as(
            "select device_id, count(*), sum(occurrences)::bigint from tickets
             where device_id = any($1) group by device_id",
        )
        .bind(&devices)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(per_device.len(), 12, "round {round}");
        for (device_id, tickets, occurrences) in per_device {
            assert_eq!(
                (tickets, occurrences),
                (1, 2),
                "round {round}, device {device_id}"
            );
        }
    }
    let double: i64 = sqlx::query_scalar(
        "select count(*) from bookings a join bookings b
           on a.technician_id = b.technician_id and a.id < b.id and a.slot && b.slot
         where a.cancelled_at is null and b.cancelled_at is null",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let twice: i64 = sqlx::query_scalar(
        "select count(*) from (select ticket_id from bookings where cancelled_at is null
                               group by ticket_id having count(*) > 1) x",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let booked: i64 = sqlx::query_scalar("select count(*) from bookings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((double, twice), (0, 0));
    assert_eq!(booked, 120, "every ticket booked, once");
}

/// Only a technician with the skill, in range and on shift is booked; the visit is inside
/// the predicted window and the shift, and the customer is told who comes when.
#[tokio::test]
async fn booking_respects_skills_range_and_shift_and_lands_inside_the_window() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let config = config();
    // The card's lead times: failures came 48–120 h after the first flag.
    model(
        &pool,
        "washer/drum_bearing",
        168.0,
        &[48.0, 60.0, 72.0, 84.0, 96.0, 108.0, 120.0],
    )
    .await;
    technician(
        &pool,
        Tech {
            name: "Far Away",
            skills: &["washer/*"],
            home: KRAKOW,
            ..Tech::default()
        },
    )
    .await;
    technician(
        &pool,
        Tech {
            name: "Sunday Only",
            skills: &["washer/drum_bearing"],
            days: &[7],
            ..Tech::default()
        },
    )
    .await;
    technician(
        &pool,
        Tech {
            name: "Fridge Person",
            skills: &["fridge/compressor"],
            ..Tech::default()
        },
    )
    .await;
    let cid = technician(
        &pool,
        Tech {
            name: "Cid Kowalski",
            skills: &["washer/*"],
            home: (WARSAW.0 + 0.2, WARSAW.1),
            timezone: "Europe/Warsaw",
            ..Tech::default()
        },
    )
    .await;
    let owner = customer(&pool, "pl", "premium").await;
    let washer = device(&pool, "washer", "W1", owner, WARSAW).await;
    scores(&db.store, washer, "washer/drum_bearing", t0(), &[0.6, 0.65]).await;
    let now = t0() + 2 * HOUR;
    let report = pass(&db.store, &config, now).await;
    assert_eq!(report.booked, 1, "{report:?}");
    let (technician_id, start, end, due, expected): (
        i32,
        DateTime<Utc>,
        DateTime<Utc>,
        DateTime<Utc>,
        DateTime<Utc>,
    ) = sqlx::query_as(
        "select b.technician_id, lower(b.slot), upper(b.slot), t.due_at, t.expected_failure_at
             from bookings b join tickets t on t.id = b.ticket_id where t.device_id = $1",
    )
    .bind(washer)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(technician_id, cid);
    // Expected failure: the early fifth of 48…120 h after the flag (rank round(0.2 × 6) = 1:
    // 60 h less the hour already elapsed), due 12 h before it.
    assert_eq!(expected, at(t0() + HOUR + 59 * HOUR));
    assert!(
        end <= due && due <= expected - chrono::Duration::hours(12),
        "{end} {due} {expected}"
    );
    assert!(start >= at(now));
    // On Cid's shift, 08:00–16:00 in Warsaw (UTC+1 in March).
    let local = start.with_timezone(&chrono_tz::Europe::Warsaw);
    let local_end = end.with_timezone(&chrono_tz::Europe::Warsaw);
    assert!(
        local.time() >= chrono::NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        "{local}"
    );
    assert!(
        local_end.time() <= chrono::NaiveTime::from_hms_opt(16, 0, 0).unwrap(),
        "{local_end}"
    );
    let (kind, payload, language): (String, serde_json::Value, String) = sqlx::query_as(
        "select message_type, payload, language from outreach where customer_id = $1",
    )
    .bind(owner)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (kind.as_str(), language.as_str()),
        ("booking_proposed", "pl")
    );
    assert_eq!(payload["technician"], "Cid");
    assert!(
        payload["top_factors"]
            .to_string()
            .contains("drum vibration")
    );
}

/// A technician off sick: their bookings are re-planned with another, and each customer
/// is told of the new time.
#[tokio::test]
async fn a_technician_off_sick_has_their_visits_re_planned_and_customers_told() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let config = config();
    model(&pool, "washer/drum_bearing", 168.0, &[96.0; 10]).await;
    let near = technician(
        &pool,
        Tech {
            name: "Near N",
            ..Tech::default()
        },
    )
    .await;
    let other = technician(
        &pool,
        Tech {
            name: "Other O",
            home: (WARSAW.0 + 0.3, WARSAW.1),
            ..Tech::default()
        },
    )
    .await;
    let owner = customer(&pool, "uk", "standard").await;
    for i in 0..3 {
        let d = device(
            &pool,
            "washer",
            "W1",
            owner,
            (WARSAW.0 + 0.001 * f64::from(i), WARSAW.1),
        )
        .await;
        scores(&db.store, d, "washer/drum_bearing", t0(), &[0.7, 0.7]).await;
    }
    let now = t0() + 2 * HOUR;
    assert_eq!(pass(&db.store, &config, now).await.booked, 3);
    let with_near: i64 =
        sqlx::query_scalar("select count(*) from bookings where technician_id = $1")
            .bind(near)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(with_near, 3, "the nearest technician takes the cluster");
    let replanned = db
        .store
        .mark_unavailable(
            near,
            now,
            Some(now + 30 * 24 * HOUR),
            "sick",
            now,
            "api:dispatcher",
        )
        .await
        .unwrap();
    assert_eq!(replanned.len(), 3);
    let report = pass(&db.store, &config, now + MINUTE).await;
    assert_eq!(report.booked, 3, "{report:?}");
    let live: Vec<i32> =
        sqlx::query_scalar("select technician_id from bookings where cancelled_at is null")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(live, vec![other; 3]);
    let told: i64 =
        sqlx::query_scalar("select count(*) from outreach where message_type = 'rescheduled'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(told, 3);
}

/// The business-continuity case: 300 fridges in one city go silent within 5 minutes —
/// one incident, no silence ticket booked, one notice per customer; 3 silent fridges in
/// other cities are 3 ordinary tickets, booked.
#[tokio::test]
async fn three_hundred_silent_fridges_in_one_city_are_one_incident_and_three_elsewhere_are_tickets()
{
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let config = config();
    let elsewhere = [(54.352, 18.6466), (51.1079, 17.0385), (52.4064, 16.9252)];
    for home in elsewhere.iter().copied().chain([KRAKOW]) {
        technician(
            &pool,
            Tech {
                skills: &["fridge/*"],
                home,
                ..Tech::default()
            },
        )
        .await;
    }
    let mut state = 7u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let silent_at = t0() - 2 * HOUR;
    let mut city = Vec::new();
    for i in 0..300 {
        // 150 customers with two fridges each (a shop, a home), within ~3 km.
        let owner = if i % 2 == 0 {
            customer(&pool, "sk", "standard").await
        } else {
            0
        };
        let owner = if owner == 0 {
            *city.last().map(|(_, o)| o).unwrap()
        } else {
            owner
        };
        let spot = (
            KRAKOW.0 + (next() - 0.5) * 0.05,
            KRAKOW.1 + (next() - 0.5) * 0.07,
        );
        let d = device(&pool, "fridge", "F1", owner, spot).await;
        city.push((d, owner));
    }
    for (i, (d, _)) in city.iter().enumerate() {
        sqlx::query("update devices set stale_since = $2, last_seen_at = $2 where id = $1")
            .bind(d)
            .bind(at(silent_at + (i as i64 % 5) * MINUTE))
            .execute(&pool)
            .await
            .unwrap();
    }
    let mut lonely = Vec::new();
    for spot in elsewhere {
        let owner = customer(&pool, "en", "standard").await;
        let d = device(&pool, "fridge", "F1", owner, spot).await;
        sqlx::query("update devices set stale_since = $2 where id = $1")
            .bind(d)
            .bind(at(silent_at))
            .execute(&pool)
            .await
            .unwrap();
        lonely.push(d);
    }
    let report = pass(&db.store, &config, t0() + 20 * MINUTE).await;
    assert_eq!(report.silent_devices, 303, "{report:?}");
    assert_eq!((report.incidents, report.held), (1, 300), "{report:?}");
    // Settled: the three elsewhere are released and booked; the city stays held.
    let again = pass(&db.store, &config, t0() + 40 * MINUTE).await;
    assert_eq!(
        (again.silent_devices, again.incidents, again.booked),
        (0, 0, 3),
        "{again:?}"
    );
    let (incidents, devices): (i64, i64) =
        sqlx::query_as("select count(*), sum(device_count)::bigint from incidents")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((incidents, devices), (1, 300));
    let city_ids: Vec<i32> = city.iter().map(|(d, _)| *d).collect();
    let (linked, booked): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where t.incident_id is not null),
                count(*) filter (where t.status <> 'open')
         from tickets t where t.device_id = any($1)",
    )
    .bind(&city_ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((linked, booked), (300, 0));
    let bookings_in_city: i64 = sqlx::query_scalar(
        "select count(*) from bookings b join tickets t on t.id = b.ticket_id where t.device_id = any($1)",
    )
    .bind(&city_ids)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(bookings_in_city, 0);
    let (notices, customers): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct customer_id) from outreach
         where message_type = 'incident_notice'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (notices, customers),
        (150, 150),
        "one notice per customer, not per fridge"
    );
    let ordinary: Vec<(String, Option<i64>, String)> = sqlx::query_as(
        "select status, incident_id, failure_mode from tickets where device_id = any($1)",
    )
    .bind(&lonely)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ordinary.len(), 3);
    for (status, incident, mode) in ordinary {
        assert_eq!(
            (status.as_str(), incident, mode.as_str()),
            ("booked", None, "fridge/silence")
        );
    }
    // The dispatcher triages: the held tickets are released and booked.
    let incident_id: i64 = sqlx::query_scalar("select id from incidents")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        db.store
            .triage_incident(incident_id, t0() + HOUR, "api:dispatcher")
            .await
            .unwrap(),
        300
    );
    let after = pass(&db.store, &config, t0() + HOUR).await;
    assert!(after.booked > 0, "{after:?}");
}

/// A critical event, a customer's call and the model's own signal about the same device
/// and failure mode are one reactive ticket with three occurrences; silence is a ticket
/// of its own, once.
#[tokio::test]
async fn critical_events_calls_and_silence_open_reactive_tickets_that_merge() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let config = config();
    model(&pool, "washer/drum_bearing", 168.0, &[96.0; 10]).await;
    let owner = customer(&pool, "en", "standard").await;
    let washer = device(&pool, "washer", "W1", owner, WARSAW).await;
    sqlx::query(
        "insert into device_events (time, device_id, code, severity, message)
         values ($1, $2, 'FAIL', 'critical', 'drum_bearing failure')",
    )
    .bind(at(t0()))
    .bind(washer)
    .execute(&pool)
    .await
    .unwrap();
    let report = pass(&db.store, &config, t0() + MINUTE).await;
    assert_eq!(report.critical_events, 1, "{report:?}");
    // A device that was offline sends its critical event five hours late: still heard.
    let late = device(&pool, "washer", "W1", owner, WARSAW).await;
    sqlx::query(
        "insert into device_events (time, device_id, code, severity, message)
         values ($1, $2, 'FAIL', 'critical', 'drum_bearing failure')",
    )
    .bind(at(t0() - 5 * HOUR))
    .bind(late)
    .execute(&pool)
    .await
    .unwrap();
    let report = pass(&db.store, &config, t0() + MINUTE).await;
    assert_eq!(report.critical_events, 1, "{report:?}");
    let merged = customer_call(
        &db.store,
        &CustomerCall {
            device_id: washer,
            failure_mode: "washer/drum_bearing".into(),
            at: t0() + 2 * MINUTE,
            priority: 2,
            actor: "api:key-1".into(),
            note: "it grinds when spinning".into(),
        },
    )
    .await
    .unwrap();
    assert!(matches!(merged, Opened::Merged { .. }), "{merged:?}");
    scores(
        &db.store,
        washer,
        "washer/drum_bearing",
        t0() + 3 * MINUTE,
        &[0.9],
    )
    .await;
    // Read again (a second replica, a restart): the event acts once.
    sqlx::query("update dispatch_progress set events_time = null")
        .execute(&pool)
        .await
        .unwrap();
    pass(&db.store, &config, t0() + 5 * MINUTE).await;
    let (kind, mode, occurrences): (String, String, i32) =
        sqlx::query_as("select kind, failure_mode, occurrences from tickets where device_id = $1")
            .bind(washer)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (kind.as_str(), mode.as_str(), occurrences),
        ("reactive", "washer/drum_bearing", 3)
    );
    sqlx::query("update devices set stale_since = $2 where id = $1")
        .bind(washer)
        .bind(at(t0() + 10 * MINUTE))
        .execute(&pool)
        .await
        .unwrap();
    for minutes in [30, 45] {
        pass(&db.store, &config, t0() + minutes * MINUTE).await;
    }
    let silence: Vec<i32> = sqlx::query_scalar(
        "select occurrences from tickets where device_id = $1 and failure_mode = 'washer/silence'",
    )
    .bind(washer)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(silence, vec![1]);
}

/// The life of a ticket to its labels: booked → en route → on site → resolved with a
/// confirmed fault writes the `failures` and `maintenance` rows the next training reads;
/// a step out of order is refused; a silence confirmed as a fault must name what failed.
#[tokio::test]
async fn a_confirmed_fault_becomes_a_label_the_next_training_reads() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let config = config();
    model(&pool, "washer/drum_bearing", 168.0, &[96.0; 10]).await;
    technician(&pool, Tech::default()).await;
    let owner = customer(&pool, "en", "standard").await;
    let washer = device(&pool, "washer", "W1", owner, WARSAW).await;
    scores(&db.store, washer, "washer/drum_bearing", t0(), &[0.8, 0.8]).await;
    pass(&db.store, &config, t0() + 2 * HOUR).await;
    let ticket_id: i64 = sqlx::query_scalar("select id from tickets where device_id = $1")
        .bind(washer)
        .fetch_one(&pool)
        .await
        .unwrap();
    let visit = t0() + 8 * HOUR;
    let refused = db
        .store
        .transition(
            ticket_id,
            &Transition::Close,
            visit,
            "technician:1",
            "early",
        )
        .await
        .unwrap();
    assert_eq!(
        refused,
        Transitioned::Refused {
            from: "booked".into()
        }
    );
    for step in [
        Transition::EnRoute,
        Transition::OnSite,
        Transition::Resolve {
            outcome: Outcome::FaultConfirmed,
            component: None,
            action: Some("replaced".into()),
        },
        Transition::Close,
    ] {
        let done = db
            .store
            .transition(ticket_id, &step, visit, "technician:1", "visit")
            .await
            .unwrap();
        assert!(
            matches!(done, Transitioned::Done { .. }),
            "{step:?}: {done:?}"
        );
    }
    let statuses: Vec<String> =
        sqlx::query_scalar("select to_status from ticket_events where ticket_id = $1 order by id")
            .bind(ticket_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        [
            "open", "booked", "en_route", "on_site", "resolved", "closed"
        ]
    );
    let (_, failures) = db
        .store
        .component_history(&[washer], at(visit + HOUR))
        .await
        .unwrap();
    assert_eq!(
        failures.get(&(washer, "drum_bearing".to_string())),
        Some(&vec![visit])
    );
    let seen = db.store.failure_modes_seen(at(visit + HOUR)).await.unwrap();
    assert!(
        seen.contains(&("washer".into(), "drum_bearing".into(), 1)),
        "{seen:?}"
    );
    let messages: Vec<String> =
        sqlx::query_scalar("select message_type from outreach where ticket_id = $1 order by id")
            .bind(ticket_id)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        messages,
        ["booking_proposed", "technician_en_route", "resolved"]
    );
    // A silence confirmed as a fault names what failed.
    sqlx::query("update devices set stale_since = $2 where id = $1")
        .bind(washer)
        .bind(at(visit + 2 * HOUR))
        .execute(&pool)
        .await
        .unwrap();
    for minutes in [180, 200] {
        pass(&db.store, &config, visit + minutes * MINUTE).await;
    }
    let silence: i64 =
        sqlx::query_scalar("select id from tickets where failure_mode = 'washer/silence'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let resolve = |component: Option<&str>| Transition::Resolve {
        outcome: Outcome::FaultConfirmed,
        component: component.map(str::to_string),
        action: None,
    };
    let status: String = sqlx::query_scalar("select status from tickets where id = $1")
        .bind(silence)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "booked");
    assert_eq!(
        db.store
            .transition(
                silence,
                &resolve(None),
                visit + 4 * HOUR,
                "technician:1",
                "visit"
            )
            .await
            .unwrap(),
        Transitioned::ComponentRequired
    );
    assert!(matches!(
        db.store
            .transition(
                silence,
                &resolve(Some("power_supply")),
                visit + 4 * HOUR,
                "technician:1",
                "visit"
            )
            .await
            .unwrap(),
        Transitioned::Done { .. }
    ));
    let _ = Strategy::Insertion;
}

/// A device that reports again ends its silence: the silence ticket not booked yet is
/// cancelled, with the reason in its audit.
#[tokio::test]
async fn a_silence_ticket_is_cancelled_when_telemetry_returns() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let config = config();
    let owner = customer(&pool, "en", "standard").await;
    let camera = device(&pool, "camera", "C1", owner, WARSAW).await;
    sqlx::query("update devices set stale_since = $2 where id = $1")
        .bind(camera)
        .bind(at(t0()))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        pass(&db.store, &config, t0() + MINUTE).await.silent_devices,
        1
    );
    sqlx::query("update devices set stale_since = null where id = $1")
        .bind(camera)
        .execute(&pool)
        .await
        .unwrap();
    let report = pass(&db.store, &config, t0() + 10 * MINUTE).await;
    assert_eq!(report.cancelled, 1, "{report:?}");
    let (status, reason): (String, String) = sqlx::query_as(
        "select t.status, e.reason from tickets t join ticket_events e on e.ticket_id = t.id
         where t.device_id = $1 order by e.id desc limit 1",
    )
    .bind(camera)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("cancelled", "telemetry returned")
    );
    // The silence is no longer remembered as handled: a new one will act again.
    let remembered: i64 = sqlx::query_scalar(
        "select count(*) from dispatch_handled where source = 'silence' and device_id = $1",
    )
    .bind(camera)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(remembered, 0);
}

/// A booking is held before its customer is told: a technician who joins nearby meanwhile
/// takes the visit, nobody hears of the move, and once the hold is over the customer is
/// told once, of where the visit ended up.
#[tokio::test]
async fn a_held_booking_moves_to_a_nearer_technician_and_its_customer_is_told_once() {
    let db = TestDb::new().await;
    let pool = db.store_pool().clone();
    let config = DispatchConfig {
        proposal: ProposalSettings {
            hold: Duration::from_secs(6 * 3600),
            min_notice: Duration::from_secs(12 * 3600),
            ..ProposalSettings::default()
        },
        ..config()
    };
    model(&pool, "washer/drum_bearing", 168.0, &[96.0; 10]).await;
    let far = technician(
        &pool,
        Tech {
            name: "Far F",
            home: (WARSAW.0 + 0.5, WARSAW.1),
            ..Tech::default()
        },
    )
    .await;
    let owner = customer(&pool, "sk", "standard").await;
    let washer = device(&pool, "washer", "W1", owner, WARSAW).await;
    scores(&db.store, washer, "washer/drum_bearing", t0(), &[0.7, 0.7]).await;
    // 16:00 UTC: today's shift is over, so the visit is tomorrow, more than the minimum
    // notice away: held (until 12 h before it, at most 6 h).
    let now = t0() + 9 * HOUR;
    let report = pass(&db.store, &config, now).await;
    assert_eq!((report.booked, report.messages), (1, 0), "{report:?}");
    let outreach = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("select count(*) from outreach")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let near = technician(
        &pool,
        Tech {
            name: "Nina Near",
            home: WARSAW,
            ..Tech::default()
        },
    )
    .await;
    let report = pass(&db.store, &config, now + HOUR).await;
    assert_eq!(report.improved, 1, "{report:?}");
    let (booked_with, ticket_with, booking_id): (i32, i32, i64) = sqlx::query_as(
        "select b.technician_id, t.technician_id, b.id from bookings b
         join tickets t on t.id = b.ticket_id where b.cancelled_at is null",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((booked_with, ticket_with), (near, near), "far was {far}");
    assert_eq!(outreach(pool.clone()).await, 0, "nobody hears of a move");
    // The hold is over: told once, of the nearer technician.
    let report = pass(&db.store, &config, now + 6 * HOUR + MINUTE).await;
    assert_eq!(report.proposed, 1, "{report:?}");
    pass(&db.store, &config, now + 7 * HOUR).await;
    let (kind, payload): (String, serde_json::Value) =
        sqlx::query_as("select message_type, payload from outreach where customer_id = $1")
            .bind(owner)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(kind, "booking_proposed");
    assert_eq!(payload["technician"], "Nina");
    assert_eq!(payload["booking_id"], booking_id);
    let audited = scalar(
        &pool,
        "select count(*) from ticket_events e join bookings b on b.ticket_id = e.ticket_id
         where b.id = $1 and e.reason like 're-planned before proposing%'",
        booking_id,
    )
    .await;
    assert_eq!(audited, 1);
    // Told, it no longer moves: a third technician at the door changes nothing.
    technician(
        &pool,
        Tech {
            name: "Late L",
            home: WARSAW,
            ..Tech::default()
        },
    )
    .await;
    let report = pass(&db.store, &config, now + 8 * HOUR).await;
    assert_eq!(report.improved, 0, "{report:?}");
    assert_eq!(outreach(pool.clone()).await, 1);
}

/// The database stops between passes: the pass fails with an error (no panic, nothing
/// half-written), and once it is back the next passes give what one pass without the
/// outage gives — one ticket, one booking and one message per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_fails_a_pass_and_loses_or_doubles_nothing() {
    if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
        return; // the outage needs a cluster this test owns
    }
    let owned = OwnedCluster::start().await;
    let cluster = owned.cluster.clone();
    let db = TestDb::on(&cluster.url("postgres"), false).await;
    let pool = db.store_pool().clone();
    let config = config();
    model(&pool, "washer/drum_bearing", 168.0, &[96.0; 10]).await;
    technician(&pool, Tech::default()).await;
    let owner = customer(&pool, "pl", "standard").await;
    let mut devices = Vec::new();
    for i in 0..5 {
        let d = device(
            &pool,
            "washer",
            "W1",
            owner,
            (WARSAW.0 + 0.01 * f64::from(i), WARSAW.1),
        )
        .await;
        scores(&db.store, d, "washer/drum_bearing", t0(), &[0.7, 0.7]).await;
        devices.push(d);
    }
    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop().unwrap())
        .await
        .unwrap();
    let failed = Dispatcher::new(db.store.clone(), config.clone())
        .pass(Some(t0() + 2 * HOUR))
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let restart = cluster.clone();
    tokio::task::spawn_blocking(move || restart.restart().unwrap())
        .await
        .unwrap();
    let mut booked = 0;
    for minute in 1..=3 {
        booked += pass(&db.store, &config, t0() + 2 * HOUR + minute * MINUTE)
            .await
            .booked;
    }
    assert_eq!(booked, 5);
    let counts: (i64, i64, i64) = sqlx::query_as(
        "select (select count(*) from tickets), (select count(*) from bookings),
                (select count(*) from outreach where message_type = 'booking_proposed')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counts, (5, 5, 5));
    db.store.close().await;
    drop(owned);
}

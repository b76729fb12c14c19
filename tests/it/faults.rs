//! Faults through the whole pipeline (issue 15), each judged by exact counts: PostgreSQL
//! stopped for 30 s mid-stream under ingest, dispatch and outreach; two replicas of those
//! stages against one database and one broker giving the results of one. (The broker
//! restarted, and dispatchers and outreach workers killed in a loop: `faults_restarts.rs`.)
//!
//! Both run one scenario, the field ([`Field`]): 80 washers publishing a reading
//! set a minute (event time) for two hours, through Mosquitto into ingest; 24 of them in one
//! square kilometre raise a critical event within four minutes (a surge: one incident, a
//! notice to each of their 8 customers, no visit); 24 more raise a critical event mapped to
//! their door lock, in two waves 44 minutes apart (a ticket and a visit each); 20 get two
//! high risk scores, in two waves (a ticket and a visit each); 4 get one high score and one
//! low (nothing); 8 only report. Every visit is told to its customer by SMS through a local
//! provider that keeps every request's idempotency key.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Utc};
use forewarn::app::{App, StageKind};
use forewarn::config::Config;
use forewarn::dispatch::DispatchConfig;
use forewarn::dispatch::config::ProposalSettings;
use forewarn::outreach::{OutreachConfig, Secret};
use forewarn::shutdown::{Shutdown, ShutdownTrigger};
use forewarn::store::{PredictionRow, Store};
use sqlx::PgPool;

use crate::dispatch::{Tech, WARSAW, model, technician};
use crate::ingest::metric_value;
use crate::outreach::{Provider, SECRET, customer};
use crate::support::*;

/// The field's groups: (external id prefix, devices).
const SURGE: (&str, usize) = ("S", 24);
const DOOR_FIRST: (&str, usize) = ("A", 12);
const DOOR_LATE: (&str, usize) = ("B", 12);
const RISK_FIRST: (&str, usize) = ("P", 12);
const RISK_LATE: (&str, usize) = ("L", 8);
const NOISY: (&str, usize) = ("N", 4);
const QUIET: (&str, usize) = ("Q", 8);
const GROUPS: [(&str, usize); 7] = [
    SURGE, DOOR_FIRST, DOOR_LATE, RISK_FIRST, RISK_LATE, NOISY, QUIET,
];
/// Minutes of event time each device reports (a reading set of 2 metrics a minute).
const MINUTES: i64 = 120;
const DEVICES: usize = 80;
const READINGS: i64 = DEVICES as i64 * MINUTES * 2;
const EVENTS: i64 = 48;
/// Visits: both door-lock waves and both risk waves.
const VISITS: i64 = 44;
/// Surge customers (3 devices each), each told once.
const NOTICES: i64 = 8;

/// Monday 07:00 UTC, three to four weeks ago: inside retention, before the week's shifts.
pub(crate) fn a_past_monday() -> DateTime<Utc> {
    let day = (Utc::now() - chrono::Duration::days(21)).date_naive();
    let monday = day - chrono::Duration::days(i64::from(day.weekday().num_days_from_monday()));
    monday.and_hms_opt(7, 0, 0).unwrap().and_utc()
}

struct Field {
    prefix: String,
    t0: DateTime<Utc>,
    devices: Vec<String>,
}

impl Field {
    fn new() -> Field {
        let devices = GROUPS
            .iter()
            .flat_map(|(group, n)| (0..*n).map(move |i| format!("{group}-{i}")))
            .collect::<Vec<_>>();
        assert_eq!(devices.len(), DEVICES);
        Field {
            prefix: unique("field"),
            t0: a_past_monday(),
            devices,
        }
    }

    fn at(&self, minute: i64, second: i64) -> DateTime<Utc> {
        self.t0 + chrono::Duration::seconds(minute * 60 + second)
    }

    /// Customers (one per device, the surge's 3 devices each), devices at their places,
    /// four technicians around Warsaw, and the risk model's card.
    async fn seed(&self, store: &Store, pool: &PgPool) {
        let owner = |device: &str| match device.strip_prefix("S-") {
            Some(i) => format!("c-S{}", i.parse::<usize>().unwrap() / 3),
            None => format!("c-{device}"),
        };
        let mut owners: Vec<String> = self.devices.iter().map(|d| owner(d)).collect();
        owners.dedup();
        let languages = ["en", "pl", "uk", "sk"];
        let customers: Vec<_> = owners
            .iter()
            .enumerate()
            .map(|(i, id)| customer(id, languages[i % 4], "sms", "Europe/Warsaw"))
            .collect();
        store.upsert_customers(&customers).await.unwrap();
        let (mut latitudes, mut longitudes) = (Vec::new(), Vec::new());
        for (i, device) in self.devices.iter().enumerate() {
            // The surge within a square kilometre; the rest spread over some 30 km.
            let (dlat, dlon) = if i < SURGE.1 {
                (0.002 * (i % 5) as f64, 0.002 * (i / 5) as f64)
            } else {
                let j = i - SURGE.1;
                (0.04 * ((j % 7) as f64 - 3.0), 0.06 * ((j / 7) as f64 - 4.0))
            };
            assert!(device.starts_with('S') == (i < SURGE.1));
            latitudes.push(WARSAW.0 + dlat);
            longitudes.push(WARSAW.1 + dlon);
        }
        let owners: Vec<String> = self.devices.iter().map(|d| owner(d)).collect();
        sqlx::query(
            "insert into devices (external_id, kind, model, customer_id, latitude, longitude)
             select d.id, 'washer', 'W-' || d.id, c.id, d.lat, d.lon
             from unnest($1::text[], $2::text[], $3::float8[], $4::float8[])
                  as d(id, owner, lat, lon)
             join customers c on c.external_id = d.owner",
        )
        .bind(&self.devices)
        .bind(&owners)
        .bind(&latitudes)
        .bind(&longitudes)
        .execute(pool)
        .await
        .unwrap();
        for name in ["Ada A", "Ben B", "Cy C", "Dora D"] {
            let tech = Tech {
                name,
                ..Tech::default()
            };
            technician(pool, tech).await;
        }
        model(pool, "washer/drum_bearing", 168.0, &[96.0; 10]).await;
    }

    /// Every device's readings of `minutes`, and the critical events that fall in them.
    /// `pace`: the time each minute takes to publish.
    async fn publish(
        &self,
        device: &mut Publisher,
        minutes: RangeInclusive<i64>,
        pace: Option<Duration>,
    ) {
        let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        for minute in minutes {
            let started = Instant::now();
            for (i, id) in self.devices.iter().enumerate() {
                let payload = format!(
                    r#"{{"ts": "{}", "metrics": {{"motor_temp_c": {}, "drum_vibration_rms": {}}}}}"#,
                    ts(self.at(minute, 0)),
                    40 + (i as i64 + minute) % 7,
                    0.1 * ((i as i64 * minute) % 10) as f64
                );
                device
                    .publish(&format!("{}/{id}/telemetry", self.prefix), payload)
                    .await;
            }
            for (i, id) in self.devices.iter().enumerate() {
                let (group, n) = id.split_once('-').unwrap();
                let n: i64 = n.parse().unwrap();
                let (event_minute, code, text) = match group {
                    "S" => (5 + n / 6, "E99", "motor stalled"),
                    "A" => (6, "E42", "door lock jammed"),
                    "B" => (50, "E42", "door lock jammed"),
                    _ => continue,
                };
                if event_minute == minute {
                    let payload = format!(
                        r#"{{"ts": "{}", "code": "{code}", "severity": "critical", "message": "{text}"}}"#,
                        ts(self.at(minute, 5 * (i as i64 % 6) + 1))
                    );
                    device
                        .publish(&format!("{}/{id}/events", self.prefix), payload)
                        .await;
                }
            }
            if let Some(pace) = pace {
                tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
            }
        }
    }

    /// The risk scores of a wave, as the predict stage writes them: two high scores for
    /// each device of the wave (a ticket), one high and one low for the noisy ones.
    async fn scores(&self, store: &Store, pool: &PgPool, late: bool) {
        let ids: HashMap<String, i32> = sqlx::query_as("select external_id, id from devices")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let (group, minute) = if late { ("L-", 60) } else { ("P-", 2) };
        let mut rows = Vec::new();
        for id in &self.devices {
            let probabilities = if id.starts_with(group) {
                [0.7, 0.8]
            } else if id.starts_with("N-") && !late {
                [0.7, 0.2]
            } else {
                continue;
            };
            for (k, probability) in probabilities.into_iter().enumerate() {
                rows.push(PredictionRow {
                    time: self.at(minute + k as i64, 0),
                    device_id: ids[id],
                    failure_mode: "washer/drum_bearing".into(),
                    probability,
                    horizon_hours: 168.0,
                    model_version: "v1".into(),
                    above_threshold: probability >= 0.5,
                    top_factors: serde_json::json!([{
                        "feature": "drum_vibration_rms.z_short", "value": 3.1,
                        "contribution": 0.5, "text": "drum vibration 3.1σ above its baseline"}]),
                });
            }
        }
        store.insert_predictions(&rows).await.unwrap();
    }

    /// The first 13 minutes, wholly stored before anything later is published (so the
    /// surge is complete before its first member has settled), then the first scores.
    async fn first_phase(&self, device: &mut Publisher, store: &Store, pool: &PgPool) {
        self.publish(device, 0..=12, None).await;
        device.flush().await;
        wait_for_count(
            pool,
            "select count(*) from telemetry",
            DEVICES as i64 * 13 * 2,
        )
        .await;
        wait_for_count(pool, "select count(*) from device_events", 36).await;
        self.scores(store, pool, false).await;
    }

    /// The late scores and the rest of the stream, then, once the field has settled, the
    /// results checked: what was observed, and how many keys came again.
    async fn last_phase_checked(
        &self,
        device: &mut Publisher,
        store: &Store,
        pool: &PgPool,
        provider: &Provider,
    ) -> (Observed, usize) {
        self.scores(store, pool, true).await;
        self.publish(device, 91..=MINUTES - 1, None).await;
        device.flush().await;
        wait_for_the_field(pool).await;
        let observed = observe(pool).await;
        assert_field_results(&observed);
        let resent = assert_delivered_once_per_key(pool, provider).await;
        (observed, resent)
    }
}

/// ingest, dispatch and outreach of one forewarn in this process, composed by `App` as
/// `forewarn serve` composes them (predict, retraining and maintenance left out: the field's
/// scores are written as the predict stage writes them).
struct Replica {
    trigger: ShutdownTrigger,
    task: tokio::task::JoinHandle<Result<(), forewarn::app::AppError>>,
    metrics: std::sync::Arc<forewarn::observability::Metrics>,
}

impl Replica {
    async fn start(
        db: &TestDb,
        broker: &TestBroker,
        field: &Field,
        group: Option<&str>,
        provider: &Provider,
    ) -> Replica {
        let mut config = Config::default();
        config.http.addr = "127.0.0.1:0".parse().unwrap();
        config.mqtt.url = Some(broker.url());
        config.mqtt.client_id = unique(INGEST_CLIENT_ID_PREFIX);
        config.mqtt.topic_prefix = field.prefix.clone();
        config.mqtt.keep_alive = Duration::from_secs(5);
        config.ingest.sessions = 1;
        config.ingest.shared_group = group.map(str::to_string);
        config.dispatch = DispatchConfig {
            interval: Some(Duration::from_millis(300)),
            // Told at once: a held visit would be told on a clock the field stops moving.
            proposal: ProposalSettings {
                hold: Duration::ZERO,
                ..ProposalSettings::default()
            },
            critical_codes: [("E42".to_string(), "door_lock".to_string())].into(),
            ..DispatchConfig::default()
        };
        config.outreach = OutreachConfig {
            interval: Some(Duration::from_millis(100)),
            sms_url: Some(Secret::new(provider.url("sms"))),
            signing_secret: Some(Secret::new(SECRET)),
            send_timeout: Duration::from_secs(1),
            lease: Duration::from_secs(12),
            batch: 20,
            backoff_base: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
            ..OutreachConfig::default()
        };
        config.validate().unwrap();
        let store = forewarn::app::open_store(&config, &db.url).await.unwrap();
        let app = App::new(&config, store).await.unwrap();
        let metrics = app.metrics.clone();
        let (trigger, shutdown) = Shutdown::new();
        let mqtt_url = broker.url();
        let task = tokio::spawn(async move {
            let stages = [StageKind::Ingest, StageKind::Dispatch, StageKind::Outreach];
            app.run(&config, &mqtt_url, &stages, shutdown).await
        });
        wait_until("ingest connected", Duration::from_secs(10), || async {
            metrics.mqtt_ready() == Some(true)
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Replica {
            trigger,
            task,
            metrics,
        }
    }

    async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("stops within 20 s")
            .unwrap()
            .expect("no stage failed");
    }
}

/// What the field left in the database, in terms that do not depend on ids or on which
/// replica did what.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    readings: i64,
    distinct_readings: i64,
    /// md5 of every reading (device, metric, time, value) in order.
    readings_digest: String,
    events: i64,
    dead_letters: i64,
    /// (device, failure mode, kind, status, in an incident), in order.
    tickets: Vec<(String, String, String, String, bool)>,
    incident_sizes: Vec<i64>,
    /// (rows, live, tickets with a live booking, overlapping live pairs of a technician).
    bookings: (i64, i64, i64, i64),
    /// (customer, message type, status, device of its ticket), in order.
    messages: Vec<(String, String, String, String)>,
    /// Visit messages whose key names their ticket's live booking.
    keyed_to_their_booking: i64,
}

async fn observe(pool: &PgPool) -> Observed {
    let one = |sql: &'static str| async move { count(pool, sql).await };
    let (readings, distinct_readings, readings_digest): (i64, i64, String) = sqlx::query_as(
        "select count(*), count(distinct (t.device_id, t.metric_id, t.time)),
                md5(string_agg(d.external_id || m.name || t.time::text || t.value::text, ','
                               order by d.external_id, m.name, t.time))
         from telemetry t join devices d on d.id = t.device_id join metrics m on m.id = t.metric_id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    Observed {
        readings,
        distinct_readings,
        readings_digest,
        events: one("select count(*) from device_events").await,
        dead_letters: one("select count(*) from dead_letters").await,
        tickets: sqlx::query_as(
            "select d.external_id, t.failure_mode, t.kind, t.status, t.incident_id is not null
             from tickets t join devices d on d.id = t.device_id order by 1, 2, 4",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        incident_sizes: sqlx::query_scalar(
            "select count(*) from tickets where incident_id is not null
             group by incident_id order by 1",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        bookings: sqlx::query_as(
            "select count(*), count(*) filter (where cancelled_at is null),
                    count(distinct ticket_id) filter (where cancelled_at is null),
                    (select count(*) from bookings a join bookings b
                       on a.technician_id = b.technician_id and a.id < b.id and a.slot && b.slot
                     where a.cancelled_at is null and b.cancelled_at is null)
             from bookings",
        )
        .fetch_one(pool)
        .await
        .unwrap(),
        messages: sqlx::query_as(
            "select c.external_id, o.message_type, o.status, coalesce(d.external_id, '')
             from outreach o join customers c on c.id = o.customer_id
             left join tickets t on t.id = o.ticket_id left join devices d on d.id = t.device_id
             order by 1, 2, 4",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
        keyed_to_their_booking: one(
            "select count(*) from outreach o join bookings b on b.ticket_id = o.ticket_id
             where o.message_type = 'booking_proposed' and b.cancelled_at is null
               and o.idempotency_key = 'ticket:' || o.ticket_id || ':booking:' || b.id",
        )
        .await,
    }
}

/// Exactly what the field must leave, however it was run.
fn assert_field_results(observed: &Observed) {
    assert_eq!(
        (
            observed.readings,
            observed.distinct_readings,
            observed.events,
            observed.dead_letters
        ),
        (READINGS, READINGS, EVENTS, 0),
        "every reading and event stored exactly once"
    );
    let mut per_kind: BTreeMap<(String, String, String, bool), i64> = BTreeMap::new();
    let mut per_device_mode: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (device, mode, kind, status, held) in &observed.tickets {
        *per_kind
            .entry((device[..1].to_string(), mode.clone(), status.clone(), *held))
            .or_default() += 1;
        *per_device_mode.entry((device, mode)).or_default() += 1;
        assert_eq!(
            kind,
            if mode == "washer/drum_bearing" {
                "proactive"
            } else {
                "reactive"
            }
        );
    }
    assert!(
        per_device_mode.values().all(|n| *n == 1),
        "one ticket per device and mode"
    );
    let expected: BTreeMap<(String, String, String, bool), i64> = [
        ("A", "washer/door_lock", "booked", false, 12),
        ("B", "washer/door_lock", "booked", false, 12),
        ("L", "washer/drum_bearing", "booked", false, 8),
        ("P", "washer/drum_bearing", "booked", false, 12),
        ("S", "washer/critical", "open", true, 24),
    ]
    .into_iter()
    .map(|(g, m, s, h, n)| ((g.to_string(), m.to_string(), s.to_string(), h), n))
    .collect();
    assert_eq!(per_kind, expected, "tickets per group, mode and status");
    assert_eq!(
        observed.incident_sizes,
        vec![24],
        "the surge is one incident"
    );
    assert_eq!(
        observed.bookings,
        (VISITS, VISITS, VISITS, 0),
        "one live booking per visit ticket, none cancelled or doubled, no overlap"
    );
    let mut per_type: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for (_, message_type, status, _) in &observed.messages {
        *per_type.entry((message_type, status)).or_default() += 1;
    }
    let expected = [
        (("booking_proposed", "sent"), VISITS),
        (("incident_notice", "sent"), NOTICES),
    ];
    assert_eq!(
        per_type,
        expected.into_iter().collect(),
        "messages, all sent"
    );
    assert_eq!(observed.keyed_to_their_booking, VISITS);
}

/// Every outbox row reached the provider, under its own key, and a key that came twice
/// (a send whose outcome was not written: re-sent after its lease) carried the same
/// message both times, which the provider dedupes on. Returns the keys sent more than once.
async fn assert_delivered_once_per_key(pool: &PgPool, provider: &Provider) -> usize {
    let keys: Vec<(String, Option<i64>)> =
        sqlx::query_as("select idempotency_key, ticket_id from outreach")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut seen: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for (key, body) in provider.requests("sms") {
        seen.entry(key).or_default().push(body);
    }
    assert_eq!(
        seen.len(),
        keys.len(),
        "as many keys delivered as messages queued"
    );
    for (key, ticket) in &keys {
        let bodies = seen
            .get(key)
            .unwrap_or_else(|| panic!("{key} never delivered"));
        for body in bodies {
            assert_eq!(
                body["id"],
                serde_json::json!(key),
                "{key} carried another message"
            );
            assert_eq!(body["ticket_id"], serde_json::json!(ticket), "{key}");
            assert_eq!(
                (&body["to"], &body["text"]),
                (&bodies[0]["to"], &bodies[0]["text"]),
                "{key}"
            );
        }
    }
    assert_eq!(provider.state.lock().unwrap().bad_signatures, 0);
    seen.values().filter(|b| b.len() > 1).count()
}

/// Waits until every visit is booked and every message sent, then for a second more.
async fn wait_for_the_field(pool: &PgPool) {
    // At least: more (a doubled ticket, booking or message) is found by the checks after.
    let done = || async {
        count(
            pool,
            "select count(*) from bookings where cancelled_at is null",
        )
        .await
            >= VISITS
            && count(pool, "select count(*) from outreach where status = 'sent'").await
                >= VISITS + NOTICES
            && count(pool, "select count(*) from outreach where status <> 'sent'").await == 0
            && count(pool, "select count(*) from telemetry").await >= READINGS
    };
    wait_until(
        "every visit booked and told",
        Duration::from_secs(120),
        done,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// PostgreSQL stopped for 30 s mid-stream, under ingest, dispatch and outreach, the moment
/// the first message reaches the provider (visits being booked and told): the broker and
/// ingest hold the readings and events published meanwhile, dispatch and outreach fail
/// their passes and batches and go on; afterwards every reading is stored once, every
/// ticket, booking and message exists once, and every message reached the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_30_s_mid_stream_loses_and_doubles_no_reading_ticket_or_message() {
    init_logs();
    if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
        return; // the outage needs a cluster this test owns
    }
    let started = Instant::now();
    let owned = OwnedCluster::start().await;
    let cluster = owned.cluster.clone();
    let db = TestDb::on(&cluster.url("postgres"), false).await;
    let broker = TestBroker::start(true).await;
    let provider = Provider::start().await;
    {
        let mut state = provider.state.lock().unwrap();
        state.delay = Duration::from_millis(50);
        state.jitter = Duration::from_millis(150);
    }
    let field = Field::new();
    let pool = db.query().await;
    field.seed(&db.store, &pool).await;
    let replica = Replica::start(&db, &broker, &field, None, &provider).await;
    let mut device = Publisher::connect(&broker).await;
    field.first_phase(&mut device, &db.store, &pool).await;
    field.publish(&mut device, 13..=40, None).await;
    device.flush().await;
    wait_until("a first message sent", Duration::from_secs(60), || async {
        !provider.state.lock().unwrap().requests.is_empty()
    })
    .await;
    let stopping = cluster.clone();
    tokio::task::spawn_blocking(move || stopping.stop().unwrap())
        .await
        .unwrap();
    let outage = Instant::now();
    let sent_at_stop = provider.state.lock().unwrap().requests.len();
    // The stream goes on while the database is down (the late door-lock wave with it).
    field
        .publish(&mut device, 41..=90, Some(Duration::from_millis(500)))
        .await;
    device.flush().await;
    tokio::time::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed())).await;
    let held = metric_value(
        &replica.metrics.render(),
        "forewarn_ingest_pending_messages",
    );
    assert!(held > 0.0, "ingest holds what it received, unacknowledged");
    let restart = cluster.clone();
    tokio::task::spawn_blocking(move || restart.restart().unwrap())
        .await
        .unwrap();
    let outage = outage.elapsed();
    let (_, resent) = field
        .last_phase_checked(&mut device, &db.store, &pool, &provider)
        .await;
    replica.stop().await;
    eprintln!(
        "database down {outage:?} after {sent_at_stop} sends; {resent} keys re-sent after it; test {:?}",
        started.elapsed()
    );
    assert!(outage >= Duration::from_secs(30));
    pool.close().await;
    db.store.close().await;
    drop(owned);
}

/// The field through one replica of ingest, dispatch and outreach, and through two of
/// each against one database and one broker (ingest's shared subscription splitting the
/// stream): the same readings, tickets, incident, bookings and messages, each message
/// delivered under its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_every_stage_give_the_results_of_one() {
    init_logs();
    if std::env::var("TEST_SHARED_DATABASE").is_ok_and(|v| v == "1") {
        return; // two databases
    }
    let broker = TestBroker::start(true).await;
    let mut results = Vec::new();
    for replicas in [1, 2] {
        let started = Instant::now();
        let db = TestDb::new().await;
        let provider = Provider::start().await;
        provider.state.lock().unwrap().jitter = Duration::from_millis(50);
        let field = Field::new();
        let pool = db.query().await;
        field.seed(&db.store, &pool).await;
        let group = unique("field-group");
        let mut running = Vec::new();
        for _ in 0..replicas {
            running.push(Replica::start(&db, &broker, &field, Some(&group), &provider).await);
        }
        let mut device = Publisher::connect(&broker).await;
        field.first_phase(&mut device, &db.store, &pool).await;
        field.publish(&mut device, 13..=90, None).await;
        device.flush().await;
        let (observed, resent) = field
            .last_phase_checked(&mut device, &db.store, &pool, &provider)
            .await;
        // Who did what: (readings stored, visits booked, messages sent) per replica.
        let work: Vec<(f64, f64, f64)> = running
            .iter()
            .map(|r| {
                let text = r.metrics.render();
                let sent = "forewarn_outreach_attempts_total{outcome=\"sent\",channel=\"sms\"}";
                (
                    metric_value(&text, "forewarn_ingest_readings_total"),
                    metric_value(&text, "forewarn_dispatch_actions_total{action=\"booked\"}"),
                    metric_value(&text, sent),
                )
            })
            .collect();
        for replica in running {
            replica.stop().await;
        }
        eprintln!(
            "{replicas} replica(s): (readings, bookings, sends) per replica {work:?}, {resent} keys re-sent, {:?}",
            started.elapsed()
        );
        let readings: Vec<f64> = work.iter().map(|w| w.0).collect();
        assert_eq!(readings.iter().sum::<f64>(), READINGS as f64);
        assert_eq!(work.iter().map(|w| w.1).sum::<f64>(), VISITS as f64);
        assert!(
            readings.iter().all(|r| *r > 0.0),
            "every ingest replica took a share"
        );
        results.push(observed);
        pool.close().await;
    }
    assert_eq!(
        results[0], results[1],
        "two replicas give the results of one"
    );
}

//! `forewarn import` as users run it (the binary, against a real database): events are
//! stored once however often they are imported, a bad row names its file, row and column
//! and writes nothing, a device register fills in but never silently overwrites, and a
//! fleet shaped like the Azure Predictive Maintenance dataset goes through
//! `scripts/import-azure-pdm.sh` into training, its error codes becoming features.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use forewarn::config::TrainConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::support::*;

/// A directory of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let path = std::env::temp_dir().join(unique("forewarn-import-"));
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `program args…` with the test's database as `DATABASE_URL`.
async fn run(db: &TestDb, program: &str, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(program)
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("FOREWARN", env!("CARGO_BIN_EXE_forewarn"))
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn forewarn(db: &TestDb, args: &[&str]) -> Run {
    run(db, env!("CARGO_BIN_EXE_forewarn"), args).await
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

async fn device(pool: &sqlx::PgPool, external_id: &str) -> (String, Option<String>) {
    sqlx::query_as("select kind, model from devices where external_id = $1")
        .bind(external_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_imported_twice_are_stored_once() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    let scratch = Scratch::new();
    let file = scratch.write(
        "events.csv",
        "machine,time,code,level,text\n\
         p1,2026-01-01T00:00:00Z,E42,error,door lock retry\n\
         p1,2026-01-01T01:00:00Z,E42,,\n\
         p2,2026-01-01T00:00:00Z,E7,critical,overheat\n",
    );
    let args = [
        "import",
        "events",
        text(&file),
        "--device-column",
        "machine",
        "--device-prefix",
        "ev-",
        "--severity-column",
        "level",
        "--message-column",
        "text",
        "--kind",
        "pump",
    ];
    let first = forewarn(&db, &args).await;
    assert!(first.success, "{}", first.stderr);
    assert!(
        first.stdout.contains("3 events (3 new)"),
        "{}",
        first.stdout
    );
    let again = forewarn(&db, &args).await;
    assert!(again.success, "{}", again.stderr);
    assert!(
        again.stdout.contains("3 events (0 new)"),
        "{}",
        again.stdout
    );

    let events: Vec<(String, String, String, String)> = sqlx::query_as(
        "select d.external_id, e.code, e.severity, e.message
         from device_events e join devices d on d.id = e.device_id order by 1, e.time",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = [
        ("ev-p1", "E42", "error", "door lock retry"),
        // An empty severity cell takes `--severity` (default `warning`).
        ("ev-p1", "E42", "warning", ""),
        ("ev-p2", "E7", "critical", "overheat"),
    ];
    assert_eq!(
        events,
        expected.map(|(d, c, s, m)| (d.into(), c.into(), s.into(), m.into()))
    );
    assert_eq!(device(&pool, "ev-p1").await.0, "pump");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_severity_or_time_names_the_file_row_and_column_and_writes_nothing() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    let scratch = Scratch::new();
    let bad_severity = scratch.write(
        "severity.csv",
        "device,time,code,severity\n\
         b1,2026-01-01T00:00:00Z,E1,warning\n\
         b1,2026-01-01T01:00:00Z,E1,fatal\n",
    );
    let run = forewarn(
        &db,
        &[
            "import",
            "events",
            text(&bad_severity),
            "--severity-column",
            "severity",
        ],
    )
    .await;
    assert!(!run.success);
    for part in [
        text(&bad_severity),
        "row 2, column `severity`",
        "`fatal` is not one of info, warning, error, critical",
    ] {
        assert!(run.stderr.contains(part), "{part}: {}", run.stderr);
    }

    let bad_time = scratch.write(
        "time.csv",
        "device,time,code\n\
         b1,2026-01-01T00:00:00Z,E1\n\
         b1,2026-01-01T01:00:00Z,E2\n\
         b1,yesterday,E3\n",
    );
    let run = forewarn(&db, &["import", "events", text(&bad_time)]).await;
    assert!(!run.success);
    for part in [text(&bad_time), "row 3, column `time`", "`yesterday`"] {
        assert!(run.stderr.contains(part), "{part}: {}", run.stderr);
    }

    let bad_default = forewarn(
        &db,
        &["import", "events", text(&bad_time), "--severity", "fatal"],
    )
    .await;
    assert!(!bad_default.success);
    assert!(
        bad_default.stderr.contains("--severity"),
        "{}",
        bad_default.stderr
    );

    assert_eq!(count(&pool, "select count(*) from device_events").await, 0);
    assert_eq!(count(&pool, "select count(*) from devices").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_register_fills_in_and_never_overwrites_silently() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    let scratch = Scratch::new();
    // `r-a` is first seen in an events file without `--kind`: a placeholder kind.
    let events = scratch.write(
        "events.csv",
        "device,time,code\nr-a,2026-01-01T00:00:00Z,E1\n",
    );
    assert!(
        forewarn(&db, &["import", "events", text(&events)])
            .await
            .success
    );
    assert_eq!(device(&pool, "r-a").await, ("imported".into(), None));

    let register = scratch.write(
        "register.csv",
        "id,type,model,installed,customer,lat,lon\n\
         r-a,pump,P2,2024-03-01,c-1,50.06,19.94\n\
         r-b,pump,P1,,,,\n\
         r-c,fan,,,c-1,,\n",
    );
    let args = [
        "import",
        "devices",
        text(&register),
        "--device-column",
        "id",
        "--kind-column",
        "type",
        "--model-column",
        "model",
        "--installed-at-column",
        "installed",
        "--time-format",
        "pattern",
        "--time-pattern",
        "%Y-%m-%d",
        "--customer-column",
        "customer",
        "--latitude-column",
        "lat",
        "--longitude-column",
        "lon",
    ];
    let first = forewarn(&db, &args).await;
    assert!(first.success, "{}", first.stderr);
    assert_eq!(
        device(&pool, "r-a").await,
        ("pump".into(), Some("P2".into()))
    );
    let (installed, customer, latitude): (Option<DateTime<Utc>>, Option<String>, Option<f64>) =
        sqlx::query_as(
            "select d.installed_at, c.external_id, d.latitude
             from devices d left join customers c on c.id = d.customer_id
             where d.external_id = 'r-a'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        installed,
        Some("2024-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap())
    );
    assert_eq!(customer.as_deref(), Some("c-1"));
    assert_eq!(latitude, Some(50.06));
    // The same register again changes nothing and is no conflict.
    assert!(forewarn(&db, &args).await.success);

    // A later history import keeps registered kinds: `--kind` is for new devices only.
    let more_events = scratch.write(
        "more.csv",
        "device,time,code\nr-b,2026-01-02T00:00:00Z,E1\n",
    );
    assert!(
        forewarn(
            &db,
            &["import", "events", text(&more_events), "--kind", "fridge"]
        )
        .await
        .success
    );
    assert_eq!(
        device(&pool, "r-b").await,
        ("pump".into(), Some("P1".into()))
    );

    let changed = scratch.write(
        "changed.csv",
        "id,type,model\n\
         r-b,pump,P9\n\
         r-c,pump,F1\n",
    );
    let changed_args = [
        "import",
        "devices",
        text(&changed),
        "--device-column",
        "id",
        "--kind-column",
        "type",
        "--model-column",
        "model",
    ];
    let refused = forewarn(&db, &changed_args).await;
    assert!(!refused.success);
    for part in [
        text(&changed),
        "2 registered value(s) differ",
        "r-b model: registered `P1`, register `P9`",
        "r-c kind: registered `fan`, register `pump`",
        "--overwrite",
    ] {
        assert!(refused.stderr.contains(part), "{part}: {}", refused.stderr);
    }
    // Nothing of the refused file was written, not even r-c's missing model.
    assert_eq!(
        device(&pool, "r-b").await,
        ("pump".into(), Some("P1".into()))
    );
    assert_eq!(device(&pool, "r-c").await, ("fan".into(), None));

    let mut overwrite_args = changed_args.to_vec();
    overwrite_args.push("--overwrite");
    let overwrite = forewarn(&db, &overwrite_args).await;
    assert!(overwrite.success, "{}", overwrite.stderr);
    assert!(
        overwrite.stdout.contains("2 values overwritten"),
        "{}",
        overwrite.stdout
    );
    assert_eq!(
        device(&pool, "r-b").await,
        ("pump".into(), Some("P9".into()))
    );
    assert_eq!(
        device(&pool, "r-c").await,
        ("pump".into(), Some("F1".into()))
    );
    assert_eq!(count(&pool, "select count(*) from devices").await, 3);
    assert_eq!(count(&pool, "select count(*) from customers").await, 1);
}

/// The files of the Azure Predictive Maintenance dataset, for a smaller fleet: machines
/// with model and age; hourly volt, rotate, pressure and vibration; errors error1..error5;
/// maintenance and failures of comp1..comp4. A failure of `compN` is preceded by `errorN`
/// codes and a drift of one metric over two days; `error5` is noise. Ends at the last
/// whole day before now (event time, inside the default retention).
struct AzureFleet {
    machines: usize,
    errors: usize,
    failures: usize,
    maintenance: usize,
}

fn write_azure_fleet(directory: &Path, machines: usize, days: i64, seed: u64) -> AzureFleet {
    const HOUR: i64 = 3600;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let now = Utc::now().timestamp();
    let end = now - now.rem_euclid(24 * HOUR) - 24 * HOUR;
    let start = end - days * 24 * HOUR;
    let hours = days * 24;
    let stamp = |hour: i64| {
        DateTime::from_timestamp(start + hour * HOUR, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    };
    // Box-Muller: one standard normal draw.
    fn normal(rng: &mut ChaCha8Rng) -> f64 {
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        let v: f64 = rng.r#gen();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    let (mut telemetry, mut errors, mut maint, mut failures, mut register) = (
        String::from("datetime,machineID,volt,rotate,pressure,vibration\n"),
        String::from("datetime,machineID,errorID\n"),
        String::from("datetime,machineID,comp\n"),
        String::from("datetime,machineID,failure\n"),
        String::from("machineID,model,age\n"),
    );
    let mut fleet = AzureFleet {
        machines,
        errors: 0,
        failures: 0,
        maintenance: 0,
    };
    let base = [170.0, 450.0, 100.0, 40.0];
    let spread = [15.0, 50.0, 10.0, 5.0];
    // comp1 raises volt, comp2 lowers rotation, comp3 raises pressure, comp4 vibration.
    let drift = [4.0, -4.0, 4.0, 4.0];
    for machine in 1..=machines {
        writeln!(
            register,
            "{machine},model{},{}",
            machine % 4 + 1,
            rng.gen_range(0..=20)
        )
        .unwrap();
        // Failure hours per component: the first after 5-20 days, then every 10-25 days.
        let mut failing: Vec<(usize, i64)> = Vec::new();
        for component in 0..4 {
            let mut hour = rng.gen_range(5 * 24..20 * 24);
            while hour < hours {
                failing.push((component, hour));
                hour += rng.gen_range(10 * 24..25 * 24);
            }
            // Scheduled maintenance every 15 days, between failures.
            let offset = rng.gen_range(0..15 * 24);
            for scheduled in (offset..hours).step_by(15 * 24) {
                if !failing
                    .iter()
                    .any(|&(c, h)| c == component && h == scheduled)
                {
                    writeln!(
                        maint,
                        "{},{machine},comp{}",
                        stamp(scheduled),
                        component + 1
                    )
                    .unwrap();
                    fleet.maintenance += 1;
                }
            }
        }
        let mut error_hours = std::collections::BTreeSet::new();
        for &(component, hour) in &failing {
            writeln!(failures, "{},{machine},comp{}", stamp(hour), component + 1).unwrap();
            // The failed component is replaced at once, as in the dataset.
            writeln!(maint, "{},{machine},comp{}", stamp(hour), component + 1).unwrap();
            fleet.failures += 1;
            fleet.maintenance += 1;
            for _ in 0..rng.gen_range(2..=3) {
                let before = rng.gen_range(1..48);
                error_hours.insert((hour - before, component + 1));
            }
        }
        for hour in 0..hours {
            if rng.gen_bool(1.0 / 240.0) {
                error_hours.insert((hour, 5));
            }
        }
        for &(hour, error) in error_hours.iter().filter(|(hour, _)| *hour >= 0) {
            writeln!(errors, "{},{machine},error{error}", stamp(hour)).unwrap();
            fleet.errors += 1;
        }
        for hour in 0..hours {
            let mut values = [0.0; 4];
            for (metric, value) in values.iter_mut().enumerate() {
                let ramp: f64 = failing
                    .iter()
                    .filter(|&&(c, h)| c == metric && hour < h && hour >= h - 48)
                    .map(|&(_, h)| 1.0 - (h - hour) as f64 / 48.0)
                    .sum();
                *value =
                    base[metric] + spread[metric] * (0.3 * normal(&mut rng) + drift[metric] * ramp);
            }
            writeln!(
                telemetry,
                "{},{machine},{:.4},{:.4},{:.4},{:.4}",
                stamp(hour),
                values[0],
                values[1],
                values[2],
                values[3]
            )
            .unwrap();
        }
    }
    for (name, contents) in [
        ("PdM_telemetry.csv", telemetry),
        ("PdM_errors.csv", errors),
        ("PdM_maint.csv", maint),
        ("PdM_failures.csv", failures),
        ("PdM_machines.csv", register),
    ] {
        std::fs::write(directory.join(name), contents).unwrap();
    }
    fleet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_shaped_fleet_imports_with_the_script_and_its_error_codes_become_features() {
    let db = TestDb::new().await;
    let pool = db.query().await;
    let scratch = Scratch::new();
    let fleet = write_azure_fleet(&scratch.0, 24, 60, 7);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/import-azure-pdm.sh");
    let imported = run(&db, "bash", &[script, text(&scratch.0)]).await;
    assert!(imported.success, "{}\n{}", imported.stdout, imported.stderr);
    // Run twice: every file is stored once.
    let again = run(&db, "bash", &[script, text(&scratch.0)]).await;
    assert!(again.success, "{}\n{}", again.stdout, again.stderr);

    let machines = fleet.machines as i64;
    assert_eq!(
        count(&pool, "select count(*) from devices where kind = 'machine' and model like 'model_' and installed_at is not null").await,
        machines
    );
    assert_eq!(count(&pool, "select count(*) from devices").await, machines);
    assert_eq!(
        count(&pool, "select count(*) from telemetry").await,
        machines * 60 * 24 * 4
    );
    assert_eq!(
        count(&pool, "select count(*) from device_events").await,
        fleet.errors as i64
    );
    assert_eq!(
        count(&pool, "select count(*) from failures").await,
        fleet.failures as i64
    );
    assert_eq!(
        count(&pool, "select count(*) from maintenance").await,
        fleet.maintenance as i64
    );

    let model_dir = std::env::temp_dir().join(unique("models"));
    let config = TrainConfig {
        model_dir: model_dir.clone(),
        ..TrainConfig::default()
    };
    let (artifact, _report) = forewarn::training::train(&db.store, &config, None, None)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&model_dir);
    assert!(!artifact.modes.is_empty(), "no failure mode was trained");
    let codes: Vec<String> = (1..=5).map(|n| format!("error{n}")).collect();
    for mode in &artifact.modes {
        // What the model made of it (`--no-capture` shows it): not asserted, the data is
        // small and synthetic.
        let test = mode.test.as_ref().map(|t| &t.events);
        eprintln!(
            "{}: {} (horizon {}), test recall {:?} precision {:?}, top features {:?}",
            mode.mode.name(),
            mode.choice,
            mode.horizon_source,
            test.map(|e| e.recall),
            test.map(|e| e.precision),
            mode.importances.iter().take(4).collect::<Vec<_>>()
        );
        assert_eq!(mode.mode.kind, "machine");
        let mut learned = mode.schema.event_codes.clone();
        learned.sort();
        assert_eq!(learned, codes, "{}", mode.mode.name());
        for code in &codes {
            assert!(
                mode.feature_names
                    .iter()
                    .any(|name| name.starts_with(&format!("events.code_{code}."))),
                "{} has no feature of {code}: {:?}",
                mode.mode.name(),
                mode.feature_names
            );
        }
        assert_eq!(
            mode.schema.models,
            ["model1", "model2", "model3", "model4"],
            "{}",
            mode.mode.name()
        );
    }
}

//! Prediction against a real database: the live feature path equals the training path,
//! and train → evaluate → live scoring → hot model swap work end to end.

use std::time::Duration;

use chrono::{DateTime, Utc};
use forewarn::config::{FailureModeConfig, TrainConfig};
use forewarn::features::{self, FeatureSpec, HOUR_MICROS};
use forewarn::store::{
    ComponentRecord, DeviceRow, EventRow, MetricRow, TelemetryColumns, WriteBatch,
};

use crate::support::*;

const DAY: i64 = 24 * HOUR_MICROS;

/// A fleet of `devices` machines of kind `kind` over `days` days ending at the last whole
/// day before now: vibration and temperature every 20 min; devices with index % 3 == 0
/// fail (component `bearing`) at staggered times, their vibration ramping up over the 5
/// days before, with warning events; each failure is repaired a day later.
struct Fleet {
    start: i64,
    end: i64,
    ids: Vec<i32>,
}

async fn write_fleet(db: &TestDb, kind: &str, devices: usize, days: i64) -> Fleet {
    write_fleet_with(db, kind, devices, days, None).await
}

/// [`write_fleet`], plus a rarer second mode when `seal_days` is given: devices with index
/// % 10 == 4 fail component `seal` on a day in that range (days from the start), their
/// temperature rising over the 4 days before, with `S05` warnings.
async fn write_fleet_with(
    db: &TestDb,
    kind: &str,
    devices: usize,
    days: i64,
    seal_days: Option<std::ops::Range<i64>>,
) -> Fleet {
    let now = Utc::now().timestamp_micros();
    let end = now - now.rem_euclid(DAY) - DAY;
    let start = end - days * DAY;
    let metrics = db
        .store
        .upsert_metrics(&[
            MetricRow {
                name: "vibration".into(),
                unit: "mm/s".into(),
                device_kinds: vec![kind.into()],
            },
            MetricRow {
                name: "temp".into(),
                unit: "°C".into(),
                device_kinds: vec![kind.into()],
            },
        ])
        .await
        .unwrap();
    let metric = |name: &str| metrics.iter().find(|(n, _)| n == name).unwrap().1;
    let rows: Vec<DeviceRow> = (0..devices)
        .map(|i| DeviceRow {
            external_id: unique(&format!("{kind}-{i}")),
            kind: kind.into(),
            model: Some(if i % 2 == 0 { "M-1" } else { "M-2" }.into()),
            customer_external_id: None,
            latitude: None,
            longitude: None,
            installed_at: DateTime::from_timestamp_micros(start - 300 * DAY),
            metadata: serde_json::json!({}),
        })
        .collect();
    let ids: Vec<i32> = db
        .store
        .upsert_devices(&rows)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let mut failures = Vec::new();
    let mut repairs = Vec::new();
    for (index, &device) in ids.iter().enumerate() {
        let fails_at = (index % 3 == 0)
            .then(|| start + (12 + (index as i64 * 5) % (days - 14)) * DAY + 7 * HOUR_MICROS);
        // Device 1 is degrading right now: it will fail two days after the data ends.
        let ramps_to = fails_at.or((index == 1).then_some(end + 2 * DAY));
        let seal_fails_at = seal_days.as_ref().filter(|_| index % 10 == 4).map(|range| {
            let span = (range.end - range.start).max(1);
            start + (range.start + (index as i64 / 10 * 3) % span) * DAY + 13 * HOUR_MICROS
        });
        let mut batch = WriteBatch::default();
        let mut columns = TelemetryColumns::default();
        let mut t = start;
        let unit_level = 2.0 + (index % 5) as f64 * 0.2;
        while t < end {
            let broken = fails_at.is_some_and(|f| t >= f && t < f + DAY)
                || seal_fails_at.is_some_and(|f| t >= f && t < f + DAY);
            if !broken {
                let ramp = match ramps_to {
                    Some(f) if t < f && t >= f - 5 * DAY => {
                        let x = (t - (f - 5 * DAY)) as f64 / (5 * DAY) as f64;
                        3.0 * x * x
                    }
                    _ => 0.0,
                };
                let wobble = ((t / (20 * 60 * 1_000_000) + index as i64) % 7) as f64 * 0.03;
                columns.push(
                    t,
                    device,
                    metric("vibration"),
                    unit_level + ramp + wobble,
                    false,
                );
                let hour_of_day = (t.rem_euclid(DAY) / HOUR_MICROS) as f64;
                let heat = match seal_fails_at {
                    Some(f) if t < f && t >= f - 4 * DAY => {
                        (t - (f - 4 * DAY)) as f64 / (4 * DAY) as f64 * 6.0
                    }
                    _ => 0.0,
                };
                columns.push(
                    t,
                    device,
                    metric("temp"),
                    40.0 + (hour_of_day / 24.0 * std::f64::consts::TAU).sin() + wobble + heat,
                    false,
                );
            }
            t += 20 * 60 * 1_000_000;
        }
        if let Some(f) = seal_fails_at {
            for hours_before in [40, 20, 5] {
                batch.events.push(EventRow {
                    time: f - hours_before * HOUR_MICROS,
                    unstamped_redelivery: false,
                    device_id: device,
                    code: "S05".into(),
                    severity: "warning",
                    message: "seal temperature".into(),
                    time_estimated: false,
                });
            }
            failures.push(ComponentRecord {
                time: DateTime::from_timestamp_micros(f).unwrap(),
                device_id: device,
                component: "seal".into(),
                detail: "technician_confirmed".into(),
            });
            repairs.push(ComponentRecord {
                time: DateTime::from_timestamp_micros(f + DAY).unwrap(),
                device_id: device,
                component: "seal".into(),
                detail: "replaced".into(),
            });
        }
        if let Some(f) = fails_at {
            for hours_before in [30, 10, 3] {
                batch.events.push(EventRow {
                    time: f - hours_before * HOUR_MICROS,
                    unstamped_redelivery: false,
                    device_id: device,
                    code: "E31".into(),
                    severity: "warning",
                    message: "bearing noise".into(),
                    time_estimated: false,
                });
            }
            failures.push(ComponentRecord {
                time: DateTime::from_timestamp_micros(f).unwrap(),
                device_id: device,
                component: "bearing".into(),
                detail: "technician_confirmed".into(),
            });
            repairs.push(ComponentRecord {
                time: DateTime::from_timestamp_micros(f + DAY).unwrap(),
                device_id: device,
                component: "bearing".into(),
                detail: "replaced".into(),
            });
        }
        batch.last_seen.push((device, end - 20 * 60 * 1_000_000));
        batch.telemetry = columns;
        db.store.write_batch(&batch).await.unwrap();
    }
    db.store.insert_failures(&failures).await.unwrap();
    db.store.insert_maintenance(&repairs).await.unwrap();
    db.store.refresh_rollup_now().await.unwrap();
    Fleet { start, end, ids }
}

fn time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_features_equal_the_training_features_at_the_same_time() {
    let db = TestDb::new().await;
    let kind = unique("fkind");
    let fleet = write_fleet(&db, &kind, 6, 40).await;
    let spec = FeatureSpec::default();

    // The training path: the whole history, every 4 hours.
    let data = forewarn::training::load_kind(
        &db.store,
        &kind,
        vec!["bearing".into()],
        time(fleet.start),
        time(fleet.end),
        &spec,
    )
    .await
    .unwrap();
    let requests = data.requests(fleet.start + 25 * DAY, fleet.end, 4 * HOUR_MICROS);
    assert!(requests.len() > 100);
    let training = features::compute(&spec, &data.schema, &data.inputs, &requests).unwrap();

    // The live path: the scorer's lookback query over the whole kind (as the scorer loads
    // it: the fleet reference is the median of every device of the kind), one device
    // asked for at a time, at sampled t.
    let mut compared = 0;
    for (index, &(device, as_of)) in requests.iter().enumerate().step_by(37) {
        let inputs =
            forewarn::predict::live_inputs(&db.store, &spec, &data.devices, &[(device, as_of)])
                .await
                .unwrap();
        let live = features::compute(&spec, &data.schema, &inputs, &[(device, as_of)]).unwrap();
        assert_eq!(live.names, training.names);
        for (column, name) in live.names.iter().enumerate() {
            let (a, b) = (live.row(0)[column], training.row(index)[column]);
            let same =
                (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
            assert!(
                same,
                "{name} of device {device} at {as_of}: live {a}, training {b}"
            );
        }
        compared += 1;
    }
    assert!(compared >= 5, "{compared}");
    let defined = training.values.iter().filter(|v| !v.is_nan()).count();
    assert!(
        defined > training.values.len() * 9 / 10,
        "features are mostly defined"
    );
}

/// Training on `[from, until)` reads nothing at or after `until`: no failure, repair or
/// event code from later time can help choose a threshold, a winner or a feature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_reads_nothing_at_or_after_its_end() {
    let db = TestDb::new().await;
    let kind = unique("until");
    let fleet = write_fleet(&db, &kind, 9, 40).await;
    let until = fleet.start + 20 * DAY;
    let pool = db.query().await;
    let later: i64 = sqlx::query_scalar(
        "select count(*) from failures where device_id = any($1) and time >= $2",
    )
    .bind(&fleet.ids)
    .bind(time(until))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(later > 0, "the fleet fails after `until` too");

    let data = forewarn::training::load_kind(
        &db.store,
        &kind,
        vec!["bearing".into()],
        time(fleet.start),
        time(until),
        &FeatureSpec::default(),
    )
    .await
    .unwrap();
    let latest = |history: &std::collections::HashMap<(i32, String), Vec<i64>>| {
        history
            .values()
            .flatten()
            .copied()
            .max()
            .unwrap_or(i64::MIN)
    };
    assert!(latest(&data.inputs.failures) < until);
    assert!(latest(&data.inputs.maintenance) < until);
    assert!(data.inputs.events.iter().all(|e| e.time < until));
    let seen = db
        .store
        .failure_modes_seen(time(fleet.start))
        .await
        .unwrap();
    assert!(
        !seen.iter().any(|(k, _, _)| *k == kind),
        "no failure of this fleet lies before its start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_evaluate_score_and_swap_models() {
    let db = TestDb::new().await;
    let kind = unique("tkind");
    let fleet = write_fleet(&db, &kind, 30, 75).await;
    let model_dir = std::env::temp_dir().join(unique("models"));
    let config = TrainConfig {
        tuning_window: Some(Duration::from_secs(25 * 86_400)),
        test_window: Some(Duration::from_secs(15 * 86_400)),
        example_stride: Duration::from_secs(2 * 3600),
        negative_sample: 0.5,
        model_dir: model_dir.clone(),
        failure_modes: vec![FailureModeConfig {
            kind: kind.clone(),
            component: "bearing".into(),
            horizon: Some(Duration::from_secs(72 * 3600)),
            cost_false_alarm: None,
            cost_missed_failure: None,
        }],
        ..TrainConfig::default()
    };
    let (artifact, report) = forewarn::training::train(
        &db.store,
        &config,
        Some((time(fleet.start), time(fleet.end))),
        Some("v-test-1".into()),
    )
    .await
    .unwrap();
    assert_eq!(artifact.modes.len(), 1);
    let mode = &artifact.modes[0];
    assert_eq!(
        mode.candidates.len(),
        3,
        "the per-mode candidates were compared (pooled needs two modes)"
    );
    assert!(!mode.choice.is_empty());
    assert!(report.card.exists());
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report.card).unwrap()).unwrap();
    for key in [
        "pr_auc",
        "threshold",
        "class_balance",
        "events",
        "feature_importances",
    ] {
        assert!(!card["modes"][0][key].is_null(), "card lacks {key}: {card}");
    }
    // The ramp is obvious: the validation window's failures are caught a day ahead.
    let events = &mode.validation.events;
    assert!(events.failures >= 3, "{events:?}");
    assert!(
        events.flagged_24h_ahead * 10 >= events.failures * 8,
        "{events:?}"
    );

    // Evaluate on the validation window (what `forewarn evaluate --json` prints).
    let evaluation = forewarn::training::evaluate(
        &db.store,
        &artifact,
        mode.validation.from,
        mode.validation.to,
        HOUR_MICROS,
    )
    .await
    .unwrap();
    let json = serde_json::to_value(&evaluation).unwrap();
    for key in [
        "failures",
        "flagged_24h_ahead",
        "precision",
        "recall",
        "false_alarms_per_1000_device_days",
        "median_lead_time_hours",
    ] {
        assert!(json["overall"].get(key).is_some(), "overall lacks {key}");
        assert!(
            json["failure_modes"][0].get(key).is_some(),
            "mode lacks {key}"
        );
    }
    assert!(evaluation.failure_modes[0].flagged_24h_ahead >= 1);

    // What ships was refitted through the end of the data, the test window included; the
    // classifier the test window judged is kept, and the card says which ships.
    assert_eq!(mode.refitted_until, Some(time(fleet.end)));
    let tested = mode
        .tested_classifier
        .as_ref()
        .expect("the tested classifier is kept");
    let test = mode.test.as_ref().unwrap();
    assert!(
        serde_json::to_string(tested).unwrap() != serde_json::to_string(&mode.classifier).unwrap(),
        "the shipped classifier learnt from the test window too"
    );
    assert!(
        card["modes"][0]["shipped"]
            .as_str()
            .unwrap()
            .starts_with("refitted")
    );

    // First model: promoted. Promotion judges each model as tested on a window new to
    // both, never the shipped classifier that was fitted on it: with a tested classifier
    // that never flags swapped in (read back from disk), the recorded comparison flags
    // nothing where the shipped classifier catches the ramp.
    let mut judged = forewarn::training::read_artifact(&report.artifact).unwrap();
    let width = mode.feature_names.len();
    judged.modes[0].tested_classifier = Some(forewarn::model::Classifier::Logistic {
        means: vec![0.0; width],
        scales: vec![1.0; width],
        weights: vec![0.0; width],
        intercept: -1e6,
        few_features: false,
    });
    let decisions = forewarn::training::promote_if_better(&db.store, &judged, 2 * HOUR_MICROS)
        .await
        .unwrap();
    assert!(decisions[0].promoted, "{decisions:?}");
    let (recorded,): (serde_json::Value,) =
        sqlx::query_as("select comparison from model_promotions where to_version = 'v-test-1'")
            .fetch_one(&db.query().await)
            .await
            .unwrap();
    assert_eq!(recorded["challenger"]["flagged_24h_ahead"], 0, "{recorded}");
    let shipped = forewarn::training::evaluate(
        &db.store,
        &artifact,
        test.from,
        time(fleet.end),
        2 * HOUR_MICROS,
    )
    .await
    .unwrap();
    assert!(
        shipped.failure_modes[0].flagged_24h_ahead >= 1,
        "{shipped:?}"
    );
    let mut scorer = forewarn::predict::Scorer::default();
    let cycle = scorer.cycle(&db.store, 3).await.unwrap();
    assert!(cycle.predictions >= fleet.ids.len(), "{cycle:?}");
    let pool = db.query().await;
    // Every written probability is the model's over the training path's features at the
    // same time: the model compares each device with the kind's median device, so a
    // scorer that loaded only some of the kind's devices would write other numbers.
    assert!(
        mode.spec.fleet_reference,
        "the defaults train with the fleet reference"
    );
    let written: Vec<(i32, DateTime<Utc>, f64)> =
        sqlx::query_as("select device_id, time, probability from predictions")
            .fetch_all(&pool)
            .await
            .unwrap();
    let requests: Vec<(i32, i64)> = written
        .iter()
        .map(|(device, time, _)| (*device, time.timestamp_micros()))
        .collect();
    let newest = requests.iter().map(|r| r.1).max().unwrap();
    let data = forewarn::training::load_kind(
        &db.store,
        &kind,
        vec!["bearing".into()],
        time(fleet.start),
        time(newest + HOUR_MICROS),
        &mode.spec,
    )
    .await
    .unwrap();
    let table = features::compute(&mode.spec, &mode.schema, &data.inputs, &requests).unwrap();
    assert_ne!(
        mode.probabilities(&table).unwrap(),
        mode.tested_probabilities(&table).unwrap(),
        "the shipped classifier learnt from the test window too"
    );
    for ((device, _, live), training) in written.iter().zip(mode.probabilities(&table).unwrap()) {
        assert!(
            (live - training).abs() < 1e-9,
            "device {device}: written {live}, training path {training}"
        );
    }
    let (device, version, probability, above, factors): (
        i32,
        String,
        f64,
        bool,
        serde_json::Value,
    ) = sqlx::query_as(
        "select device_id, model_version, probability, above_threshold, top_factors
             from predictions order by probability desc limit 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(version, "v-test-1");
    assert_eq!(device, fleet.ids[1], "the degrading device is the riskiest");
    assert!(above && probability > 0.5, "{probability}");
    let text = factors[0]["text"].as_str().unwrap_or_default();
    assert!(text.starts_with("vibration"), "{factors}");

    // Nothing new: a second cycle writes nothing.
    let again = scorer.cycle(&db.store, 3).await.unwrap();
    assert_eq!(again.predictions, 0);

    // A second version trained and activated by hand is picked up without a restart.
    let (second, _) = forewarn::training::train(
        &db.store,
        &config,
        Some((time(fleet.start), time(fleet.end))),
        Some("v-test-2".into()),
    )
    .await
    .unwrap();
    // The same data trains the same model: no better, so it is not promoted.
    let decisions = forewarn::training::promote_if_better(&db.store, &second, 2 * HOUR_MICROS)
        .await
        .unwrap();
    assert!(!decisions[0].promoted, "{decisions:?}");
    assert_eq!(decisions[0].active.as_deref(), Some("v-test-1"));
    // Both as tested on the same window: the same model, the same cost (the active side
    // judged as shipped would have seen the window).
    assert_eq!(
        decisions[0].active_cost,
        Some(decisions[0].challenger_cost),
        "{decisions:?}"
    );
    assert!(scorer.refresh_models(&db.store).await.unwrap().is_empty());
    db.store
        .promote_model(
            &second.version,
            &second.modes[0].mode.name(),
            "test",
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    let changed = scorer.refresh_models(&db.store).await.unwrap();
    assert_eq!(changed, vec![second.modes[0].mode.name()]);
    let promotions = count(&pool, "select count(*) from model_promotions").await;
    assert!(promotions >= 2);
    let _ = std::fs::remove_dir_all(&model_dir);
}

/// `models` rows of `failure_mode`, one per cost, versions `v0`, `v1`, …; the cost (lower
/// is better) stands in for the evaluation a real comparison runs, in `metrics.cost`.
async fn insert_models_with_costs(db: &TestDb, failure_mode: &str, costs: &[f64]) -> Vec<String> {
    let now = Utc::now();
    let rows: Vec<forewarn::store::ModelRow> = costs
        .iter()
        .enumerate()
        .map(|(index, cost)| forewarn::store::ModelRow {
            version: format!("v{index}"),
            failure_mode: failure_mode.to_string(),
            algorithm: "test".into(),
            horizon_hours: 72.0,
            features: serde_json::json!([]),
            metrics: serde_json::json!({ "cost": cost }),
            threshold: 0.5,
            artifact_path: String::new(),
            data_from: now,
            data_to: now,
            active: false,
        })
        .collect();
    db.store.insert_models(&rows).await.unwrap();
    rows.into_iter().map(|row| row.version).collect()
}

/// `(from_version, to_version)` of every promotion of `failure_mode`, in commit order.
async fn promotion_chain(db: &TestDb, failure_mode: &str) -> Vec<(Option<String>, String)> {
    sqlx::query_as(
        "select from_version, to_version from model_promotions
         where failure_mode = $1 order by id",
    )
    .bind(failure_mode)
    .fetch_all(&db.query().await)
    .await
    .unwrap()
}

async fn active_versions(db: &TestDb, failure_mode: &str) -> Vec<String> {
    sqlx::query_scalar("select version from models where failure_mode = $1 and active")
        .bind(failure_mode)
        .fetch_all(&db.query().await)
        .await
        .unwrap()
}

/// Replicas promoting the same failure mode at once (`serve` retraining on several
/// machines, `train --promote always`, the default model at start): every promotion
/// succeeds one after another — none fails on `models_one_active` — exactly one model is
/// active after, and each recorded promotion replaced the one recorded before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_promotions_of_one_mode_all_succeed_in_turn() {
    let db = TestDb::new().await;
    let mode = unique("always/bearing");
    let versions = insert_models_with_costs(&db, &mode, &[1.0; 8]).await;
    let mut promotions = tokio::task::JoinSet::new();
    for version in versions.clone() {
        let store = db.store.clone();
        let mode = mode.clone();
        promotions.spawn(async move {
            store
                .promote_model(&version, &mode, "test", &serde_json::json!({}))
                .await
        });
    }
    while let Some(result) = promotions.join_next().await {
        result.unwrap().expect("a concurrent promotion succeeds");
    }
    let active = active_versions(&db, &mode).await;
    assert_eq!(active.len(), 1, "{active:?}");
    let chain = promotion_chain(&db, &mode).await;
    assert_eq!(chain.len(), versions.len(), "{chain:?}");
    assert_eq!(chain[0].0, None, "the first promotion replaced nothing");
    for pair in chain.windows(2) {
        assert_eq!(pair[1].0.as_ref(), Some(&pair[0].1), "{chain:?}");
    }
    assert_eq!(chain.last().unwrap().1, active[0]);

    // The shipped default only fills a mode that has no active model.
    let outcome = db
        .store
        .promote_model_if_active_is(&versions[0], &mode, None, "default", &serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        forewarn::store::PromotionOutcome::ActiveChanged {
            active: Some(active[0].clone())
        }
    );
}

/// Challengers of one mode judged and promoted at the same time, each "if better than
/// the active model" (lower cost): every decision is the rule applied to the model it
/// replaced, read in the promotion's own transaction, so the best challenger ends active
/// whatever the interleaving, and every recorded promotion lowered the cost. Reading the
/// active model outside the transaction let a slow, worse challenger replace a better
/// model promoted meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_promotions_if_better_keep_the_best_model_active() {
    use forewarn::training::{Comparison, JudgeFuture, TrainingError, Verdict};
    let db = TestDb::new().await;
    let mode = unique("race/bearing");
    let costs = [50.0, 20.0, 80.0, 10.0, 60.0, 30.0, 70.0, 40.0, 90.0, 15.0];
    let versions = insert_models_with_costs(&db, &mode, &costs).await;
    let mut challengers = tokio::task::JoinSet::new();
    for (index, version) in versions.clone().into_iter().enumerate() {
        let store = db.store.clone();
        let mode = mode.clone();
        let cost = costs[index];
        challengers.spawn(async move {
            let judge = move |active: Option<forewarn::store::ModelRow>| -> JudgeFuture<'static> {
                Box::pin(async move {
                    // An evaluation takes a while: long enough for others to promote meanwhile.
                    tokio::time::sleep(Duration::from_millis(10 + 7 * (index as u64 % 5))).await;
                    let active_cost = active.map(|row| row.metrics["cost"].as_f64().unwrap());
                    Ok(Verdict {
                        promote: active_cost.is_none_or(|theirs| cost < theirs),
                        reason: format!("cost {cost} vs {active_cost:?}"),
                        challenger_cost: cost,
                        active_cost,
                        comparison: Comparison {
                            active_cost,
                            ..Comparison::default()
                        },
                    })
                })
            };
            let (judged_against, verdict) =
                forewarn::training::promote_when_better(&store, &version, &mode, judge).await?;
            Ok::<_, TrainingError>((cost, judged_against, verdict))
        });
    }
    let cost_of = |version: &str| costs[version[1..].parse::<usize>().unwrap()];
    while let Some(result) = challengers.join_next().await {
        let (cost, judged_against, verdict) = result.unwrap().expect("no promotion fails");
        let judged_cost = judged_against.as_deref().map(cost_of);
        assert_eq!(verdict.active_cost, judged_cost);
        if verdict.promote {
            assert!(
                judged_cost.is_none_or(|theirs| cost < theirs),
                "{verdict:?}"
            );
        } else {
            assert!(
                judged_cost.is_some_and(|theirs| theirs <= cost),
                "{verdict:?}"
            );
        }
    }
    assert_eq!(active_versions(&db, &mode).await, vec!["v3".to_string()]);
    let chain = promotion_chain(&db, &mode).await;
    assert_eq!(chain[0].0, None);
    for pair in chain.windows(2) {
        assert_eq!(pair[1].0.as_ref(), Some(&pair[0].1), "{chain:?}");
        assert!(cost_of(&pair[1].1) < cost_of(&pair[0].1), "{chain:?}");
    }
    assert_eq!(chain.last().unwrap().1, "v3");
}

/// The same data trains the same model, bit for bit: the negatives kept are chosen by a
/// hash of (device, time), forust's trees are seeded and its parallel histogram sums add
/// up in a fixed order whatever the thread count, and the folds are fixed by time. (The
/// promotion check above relies on it: an identical challenger is never "better".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_is_repeatable() {
    let db = TestDb::new().await;
    let kind = unique("repeat");
    let fleet = write_fleet(&db, &kind, 24, 60).await;
    let model_dir = std::env::temp_dir().join(unique("models"));
    let config = TrainConfig {
        example_stride: Duration::from_secs(2 * 3600),
        model_dir: model_dir.clone(),
        failure_modes: vec![FailureModeConfig {
            kind: kind.clone(),
            component: "bearing".into(),
            horizon: Some(Duration::from_secs(72 * 3600)),
            cost_false_alarm: None,
            cost_missed_failure: None,
        }],
        ..TrainConfig::default()
    };
    let mut artifacts = Vec::new();
    for version in ["same-1", "same-2"] {
        let (artifact, _) = forewarn::training::train(
            &db.store,
            &config,
            Some((time(fleet.start), time(fleet.end))),
            Some(version.into()),
        )
        .await
        .unwrap();
        let mut json = serde_json::to_value(&artifact).unwrap();
        json["version"] = serde_json::Value::Null;
        json["created_at"] = serde_json::Value::Null;
        for mode in json["modes"].as_array_mut().unwrap() {
            for candidate in mode["candidates"].as_array_mut().unwrap() {
                candidate["fit_seconds"] = serde_json::Value::Null;
            }
        }
        artifacts.push(json);
    }
    assert!(
        artifacts[0] == artifacts[1],
        "two trainings on the same data differ"
    );
    let _ = std::fs::remove_dir_all(&model_dir);
}

/// A short history trains with the defaults: examples start as soon as devices report
/// (no three-week warm-up), and the windows shrink with the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_history_trains_with_the_defaults() {
    let db = TestDb::new().await;
    let kind = unique("short");
    let fleet = write_fleet(&db, &kind, 60, 45).await;
    let model_dir = std::env::temp_dir().join(unique("models"));
    let config = TrainConfig {
        model_dir: model_dir.clone(),
        ..TrainConfig::default()
    };
    let (artifact, report) = forewarn::training::train(
        &db.store,
        &config,
        Some((time(fleet.start), time(fleet.end))),
        Some("short-1".into()),
    )
    .await
    .unwrap();
    assert_eq!(
        report.tuning_folds, 3,
        "a short history is tuned on rolling-origin folds"
    );
    assert!(report.test_from < report.data_to && report.tuning_from < report.test_from);
    let mode = &artifact.modes[0];
    // Not configured: the horizon comes from the data (the ramp starts 5 days out).
    assert!(
        mode.horizon_source.starts_with("learned"),
        "{}",
        mode.horizon_source
    );
    assert!(mode.test.is_some());
    assert!(!mode.baselines.is_empty());
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report.card).unwrap()).unwrap();
    assert_eq!(card["modes"][0]["headline"], "test window");
    for key in [
        "test_window",
        "tuning_window",
        "baselines",
        "no_skill_positive_share",
    ] {
        assert!(!card["modes"][0][key].is_null(), "card lacks {key}: {card}");
    }
    let _ = std::fs::remove_dir_all(&model_dir);
}

/// The defaults, writing to `model_dir`, with `kind`/`component` given a 14-day horizon:
/// too long for the automatic windows on 60 days (they need 63).
fn with_a_14_day_mode(kind: &str, component: &str, model_dir: &std::path::Path) -> TrainConfig {
    TrainConfig {
        model_dir: model_dir.to_path_buf(),
        failure_modes: vec![FailureModeConfig {
            kind: kind.into(),
            component: component.into(),
            horizon: Some(Duration::from_secs(14 * 86_400)),
            cost_false_alarm: None,
            cost_missed_failure: None,
        }],
        ..TrainConfig::default()
    }
}

/// On a 60-day history a mode with a 14-day horizon (the automatic windows would need 63
/// days) trains on its own, shorter windows; the other mode keeps the common ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mode_too_long_for_a_short_history_trains_on_its_own_windows() {
    let db = TestDb::new().await;
    let kind = unique("longmode");
    let fleet = write_fleet_with(&db, &kind, 80, 60, Some(20..57)).await;
    let model_dir = std::env::temp_dir().join(unique("models"));
    let config = with_a_14_day_mode(&kind, "seal", &model_dir);
    let range = Some((time(fleet.start), time(fleet.end)));
    let trained = forewarn::training::train(&db.store, &config, range, None).await;
    let (artifact, report) = trained.unwrap();
    let mode = |component: &str| {
        artifact
            .modes
            .iter()
            .find(|m| m.mode.component == component)
            .unwrap_or_else(|| {
                panic!(
                    "{component} is trained: {:?}",
                    artifact
                        .modes
                        .iter()
                        .map(|m| &m.mode.component)
                        .collect::<Vec<_>>()
                )
            })
    };
    let (bearing, seal) = (mode("bearing"), mode("seal"));
    assert_eq!(
        bearing.validation.from, report.tuning_from,
        "the common windows"
    );
    assert!(bearing.mode.horizon_hours < 14.0 * 24.0);
    assert!(
        seal.validation.from < report.tuning_from,
        "its own tuning window starts earlier: {} vs {}",
        seal.validation.from,
        report.tuning_from
    );
    let test = seal.test.as_ref().expect("judged on its own test window");
    assert!(test.from < report.test_from && test.to == report.data_to);
    assert!(test.to - test.from >= chrono::Duration::days(15));
    assert!(
        seal.choice.contains("own, shorter windows"),
        "{}",
        seal.choice
    );
    assert!(
        !seal
            .candidates
            .iter()
            .any(|c| c.algorithm == forewarn::model::Algorithm::PooledGradientBoostedTrees),
        "the pooled candidate is fitted on the common windows"
    );
    let _ = std::fs::remove_dir_all(&model_dir);
}

/// When every mode is too long for the automatic windows (a single 14-day mode on 60
/// days), they share the shorter ones instead of the run failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_all_too_long_for_the_automatic_windows_share_shorter_ones() {
    let db = TestDb::new().await;
    let kind = unique("alllong");
    let fleet = write_fleet(&db, &kind, 30, 60).await;
    let model_dir = std::env::temp_dir().join(unique("models"));
    let config = with_a_14_day_mode(&kind, "bearing", &model_dir);
    let range = Some((time(fleet.start), time(fleet.end)));
    let (artifact, report) = forewarn::training::train(&db.store, &config, range, None)
        .await
        .expect("trains on shorter windows");
    let mode = &artifact.modes[0];
    assert_eq!(mode.mode.component, "bearing");
    // The shrunk windows: 19.5 days each on 60 days (the automatic ones, 21 each, need 63).
    let window = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_hours();
    assert_eq!(window(report.test_from, report.data_to), 468);
    assert_eq!(window(report.tuning_from, report.test_from), 468);
    assert_eq!(mode.validation.from, report.tuning_from);
    let _ = std::fs::remove_dir_all(&model_dir);
}

/// A kind with a common and a rare mode: each is judged with the pooled kind-level
/// candidate beside its own, and whichever wins scores live like any other model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rare_mode_is_judged_with_the_pooled_kind_model() {
    let db = TestDb::new().await;
    let kind = unique("pooled");
    let fleet = write_fleet_with(&db, &kind, 80, 60, Some(3..57)).await;
    let model_dir = std::env::temp_dir().join(unique("models"));
    let config = TrainConfig {
        model_dir: model_dir.clone(),
        ..TrainConfig::default()
    };
    let (artifact, _) = forewarn::training::train(
        &db.store,
        &config,
        Some((time(fleet.start), time(fleet.end))),
        Some("pooled-1".into()),
    )
    .await
    .unwrap();
    let pooled = forewarn::model::Algorithm::PooledGradientBoostedTrees;
    for mode in &artifact.modes {
        assert!(
            mode.candidates.iter().any(|c| c.algorithm == pooled),
            "{}: the pooled candidate is judged beside the per-mode ones: {:?}",
            mode.mode.component,
            mode.candidates
        );
    }
    assert!(artifact.modes.iter().any(|m| m.mode.component == "seal"));

    // Only the pooled candidate: every mode ships it, and it scores live like any other
    // (the kind's feature columns in, probabilities in (0, 1) out, contributions folded
    // back onto the kind's columns).
    let config = TrainConfig {
        candidates: vec![pooled],
        ..config
    };
    let (artifact, _) = forewarn::training::train(
        &db.store,
        &config,
        Some((time(fleet.start), time(fleet.end))),
        Some("pooled-2".into()),
    )
    .await
    .unwrap();
    assert_eq!(artifact.modes.len(), 2);
    let data = forewarn::training::load_kind(
        &db.store,
        &kind,
        vec!["bearing".into(), "seal".into()],
        time(fleet.start),
        time(fleet.end),
        &artifact.modes[0].spec,
    )
    .await
    .unwrap();
    let requests: Vec<(i32, i64)> = fleet.ids.iter().map(|&d| (d, fleet.end)).collect();
    for model in &artifact.modes {
        assert_eq!(model.classifier.algorithm(), pooled);
        let table = features::compute(&model.spec, &model.schema, &data.inputs, &requests).unwrap();
        let probabilities = model.probabilities(&table).unwrap();
        assert_eq!(probabilities.len(), requests.len());
        assert!(probabilities.iter().all(|p| *p > 0.0 && *p < 1.0));
        let factors = model.top_factors(&table, 3);
        assert_eq!(factors.len(), requests.len());
        assert!(
            factors
                .iter()
                .flatten()
                .all(|f| table.names.contains(&f.feature) && f.contribution > 0.0)
        );
    }
    let _ = std::fs::remove_dir_all(&model_dir);
}

/// The shipped default model, with `edit` applied to its JSON, written as version
/// `version` under a fresh directory; every mode of `kinds` registered and activated.
async fn activate_edited_default(
    db: &TestDb,
    version: &str,
    kinds: &[&str],
    edit: impl FnOnce(&mut serde_json::Value),
) -> std::path::PathBuf {
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/model.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped).unwrap()).unwrap();
    json["version"] = serde_json::json!(version);
    json["modes"]
        .as_array_mut()
        .unwrap()
        .retain(|m| kinds.contains(&m["mode"]["kind"].as_str().unwrap()));
    edit(&mut json);
    let dir = std::env::temp_dir().join(unique("edited-model"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    let artifact = forewarn::training::read_artifact(&path).unwrap();
    db.store
        .insert_models(&forewarn::training::model_rows(&artifact, &path))
        .await
        .unwrap();
    for mode in &artifact.modes {
        db.store
            .promote_model(version, &mode.mode.name(), "test", &serde_json::json!({}))
            .await
            .unwrap();
    }
    path
}

/// Devices of `kind` reporting `metrics` once an hour over `[from, to)`; returns their ids.
async fn register(db: &TestDb, kind: &str, n: usize, installed_at: i64) -> Vec<i32> {
    let rows: Vec<DeviceRow> = (0..n)
        .map(|i| DeviceRow {
            external_id: unique(&format!("{kind}-{i}")),
            kind: kind.into(),
            model: Some("WM-7000".into()),
            customer_external_id: None,
            latitude: None,
            longitude: None,
            installed_at: DateTime::from_timestamp_micros(installed_at),
            metadata: serde_json::json!({}),
        })
        .collect();
    db.store
        .upsert_devices(&rows)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

/// Hourly readings of `metrics` for `device` over `[from, to)`: `level(metric, t)`.
async fn report_hourly(
    db: &TestDb,
    kind: &str,
    metrics: &[&str],
    device: i32,
    (from, to): (i64, i64),
    level: impl Fn(usize, i64) -> f64,
) {
    let ids = db
        .store
        .upsert_metrics(
            &metrics
                .iter()
                .map(|name| MetricRow {
                    name: (*name).into(),
                    unit: "u".into(),
                    device_kinds: vec![kind.into()],
                })
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let mut batch = WriteBatch::default();
    let mut t = from;
    while t < to {
        for (index, name) in metrics.iter().enumerate() {
            let metric = ids.iter().find(|(n, _)| n == name).unwrap().1;
            batch.telemetry.push(
                t + 10 * 60 * 1_000_000,
                device,
                metric,
                level(index, t),
                false,
            );
        }
        t += HOUR_MICROS;
    }
    batch.last_seen.push((device, to - HOUR_MICROS));
    db.store.write_batch(&batch).await.unwrap();
}

const WASHER_METRICS: [&str; 5] = [
    "drain_time_s",
    "drum_vibration_rms",
    "motor_current_a",
    "motor_temp_c",
    "water_temp_c",
];

fn washer_level(metric: usize, t: i64) -> f64 {
    [60.0, 0.5, 2.0, 45.0, 40.0][metric] + ((t / HOUR_MICROS) % 5) as f64 * 0.01
}

/// The last whole hour before now, minus `days`.
fn hour_ago(days: i64) -> i64 {
    let now = Utc::now().timestamp_micros();
    now - now.rem_euclid(HOUR_MICROS) - days * DAY
}

async fn predictions_of(pool: &sqlx::PgPool, device: i32) -> Vec<(DateTime<Utc>, String)> {
    sqlx::query_as("select time, failure_mode from predictions where device_id = $1 order by 1, 2")
        .bind(device)
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn stale_since(pool: &sqlx::PgPool, device: i32) -> Option<DateTime<Utc>> {
    sqlx::query_scalar("select stale_since from devices where id = $1")
        .bind(device)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Issue 9: a device whose telemetry stopped while its events (and status) still move
/// `last_seen_at` would be scored on missing hourly features, which no training example
/// has. It is not scored; it is marked stale from the end of its last hour of telemetry,
/// counted in `forewarn_predict_stale_devices`, and unmarked (and scored again) once its
/// telemetry is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_telemetry_stopped_is_marked_stale_not_scored_and_unmarked_when_it_returns()
{
    let db = TestDb::new().await;
    activate_edited_default(&db, "v-stale", &["washer"], |_| {}).await;
    let t0 = hour_ago(2);
    let ids = register(&db, "washer", 2, t0 - 400 * DAY).await;
    let (reporting, silent) = (ids[0], ids[1]);
    report_hourly(
        &db,
        "washer",
        &WASHER_METRICS,
        reporting,
        (t0 - 3 * DAY, t0),
        washer_level,
    )
    .await;
    report_hourly(
        &db,
        "washer",
        &WASHER_METRICS,
        silent,
        (t0 - 3 * DAY, t0 - 10 * HOUR_MICROS),
        washer_level,
    )
    .await;
    // The silent one still raises events and moves `last_seen_at` up to the last hour.
    let mut batch = WriteBatch::default();
    for hours_before in [8, 4, 1] {
        batch.events.push(EventRow {
            time: t0 - hours_before * HOUR_MICROS,
            unstamped_redelivery: false,
            device_id: silent,
            code: "E21".into(),
            severity: "warning",
            message: "drain slow".into(),
            time_estimated: false,
        });
    }
    batch.last_seen.push((silent, t0 - HOUR_MICROS + 1));
    db.store.write_batch(&batch).await.unwrap();
    db.store.refresh_rollup_now().await.unwrap();

    let mut scorer = forewarn::predict::Scorer::default();
    let cycle = scorer.cycle(&db.store, 3).await.unwrap();
    let pool = db.query().await;
    assert_eq!(cycle.as_of, Some(time(t0 - HOUR_MICROS)), "{cycle:?}");
    assert_eq!(
        predictions_of(&pool, reporting).await.len(),
        2,
        "both washer modes"
    );
    assert!(predictions_of(&pool, silent).await.is_empty(), "{cycle:?}");
    assert_eq!(
        stale_since(&pool, silent).await,
        Some(time(t0 - 10 * HOUR_MICROS)),
        "stale since the end of its last hour of telemetry"
    );
    assert_eq!(stale_since(&pool, reporting).await, None);
    assert!(cycle.newly_stale >= 1 && cycle.stale >= 1, "{cycle:?}");
    let metrics = scorer.metrics().render();
    assert!(
        metrics.contains(&format!("forewarn_predict_stale_devices {}", cycle.stale)),
        "{metrics}"
    );

    // Telemetry returns for two hours: the mark is cleared, and the device is scored as of
    // the second (training needs telemetry in an hour before `t`).
    for device in [reporting, silent] {
        report_hourly(
            &db,
            "washer",
            &WASHER_METRICS,
            device,
            (t0, t0 + 2 * HOUR_MICROS),
            washer_level,
        )
        .await;
    }
    db.store.refresh_rollup_now().await.unwrap();
    let cycle = scorer.cycle(&db.store, 3).await.unwrap();
    assert_eq!(cycle.as_of, Some(time(t0 + HOUR_MICROS)), "{cycle:?}");
    assert_eq!(stale_since(&pool, silent).await, None, "{cycle:?}");
    assert!(cycle.reporting_again >= 1, "{cycle:?}");
    let scored = predictions_of(&pool, silent).await;
    assert_eq!(scored.len(), 2, "{scored:?}");
    assert!(scored.iter().all(|(t, _)| *t == time(t0 + HOUR_MICROS)));
}

/// A component with a failure recorded and no repair since is down: training builds no
/// example of its device then, and live scoring scores none either; once the repair is
/// recorded the device is scored again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_a_broken_component_is_not_scored_until_it_is_repaired() {
    let db = TestDb::new().await;
    activate_edited_default(&db, "v-broken", &["washer"], |_| {}).await;
    let t0 = hour_ago(2);
    let ids = register(&db, "washer", 2, t0 - 400 * DAY).await;
    let (healthy, broken) = (ids[0], ids[1]);
    for device in [healthy, broken] {
        report_hourly(
            &db,
            "washer",
            &WASHER_METRICS,
            device,
            (t0 - 3 * DAY, t0),
            washer_level,
        )
        .await;
    }
    db.store.refresh_rollup_now().await.unwrap();
    db.store
        .insert_failures(&[ComponentRecord {
            time: time(t0 - 5 * HOUR_MICROS),
            device_id: broken,
            component: "drain_pump".into(),
            detail: "technician_confirmed".into(),
        }])
        .await
        .unwrap();

    let mut scorer = forewarn::predict::Scorer::default();
    let cycle = scorer.cycle(&db.store, 3).await.unwrap();
    let pool = db.query().await;
    assert_eq!(predictions_of(&pool, healthy).await.len(), 2, "{cycle:?}");
    assert!(predictions_of(&pool, broken).await.is_empty(), "{cycle:?}");
    assert!(cycle.broken >= 1, "{cycle:?}");
    assert_eq!(
        stale_since(&pool, broken).await,
        None,
        "broken is not silent"
    );
    assert!(
        scorer
            .metrics()
            .render()
            .contains(&format!("forewarn_predict_broken_devices {}", cycle.broken))
    );

    // Repaired two hours before the newest hour: scored as of that hour.
    db.store
        .insert_maintenance(&[ComponentRecord {
            time: time(t0 - 2 * HOUR_MICROS),
            device_id: broken,
            component: "drain_pump".into(),
            detail: "replaced".into(),
        }])
        .await
        .unwrap();
    let cycle = scorer.cycle(&db.store, 3).await.unwrap();
    assert_eq!(predictions_of(&pool, broken).await.len(), 2, "{cycle:?}");
}

/// One kind whose model cannot score (its artifact names columns its schema never makes)
/// fails alone: it is logged and counted in `forewarn_predict_kind_errors_total`, and the
/// other kinds are scored and written in the same cycle. A kind with devices and no
/// model is counted in `forewarn_predict_devices_without_model`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_that_fails_to_score_does_not_stop_the_others() {
    let db = TestDb::new().await;
    activate_edited_default(&db, "v-mixed", &["washer", "fridge"], |json| {
        for mode in json["modes"].as_array_mut().unwrap() {
            if mode["mode"]["kind"] == "fridge" {
                mode["feature_names"]
                    .as_array_mut()
                    .unwrap()
                    .push(serde_json::json!("no_such_feature"));
            }
        }
    })
    .await;
    let t0 = hour_ago(2);
    let washers = register(&db, "washer", 2, t0 - 400 * DAY).await;
    let fridges = register(&db, "fridge", 2, t0 - 400 * DAY).await;
    let toasters = register(&db, "toaster", 1, t0 - 400 * DAY).await;
    let fridge_metrics = [
        "cabinet_temp_c",
        "compressor_duty_pct",
        "door_open_count",
        "evaporator_temp_c",
    ];
    for &device in &washers {
        report_hourly(
            &db,
            "washer",
            &WASHER_METRICS,
            device,
            (t0 - 2 * DAY, t0),
            washer_level,
        )
        .await;
    }
    for &device in &fridges {
        report_hourly(
            &db,
            "fridge",
            &fridge_metrics,
            device,
            (t0 - 2 * DAY, t0),
            |m, _| [4.0, 40.0, 2.0, -20.0][m],
        )
        .await;
    }
    report_hourly(
        &db,
        "toaster",
        &["coil_temp_c"],
        toasters[0],
        (t0 - 2 * DAY, t0),
        |_, _| 200.0,
    )
    .await;
    db.store.refresh_rollup_now().await.unwrap();

    let mut scorer = forewarn::predict::Scorer::default();
    // The fridge sorts before the washer: an error that stopped the cycle would stop it
    // before the washers.
    let cycle = scorer.cycle(&db.store, 3).await.unwrap();
    assert_eq!(cycle.failed_kinds, vec!["fridge".to_string()], "{cycle:?}");
    let pool = db.query().await;
    for &device in &washers {
        assert_eq!(predictions_of(&pool, device).await.len(), 2, "{cycle:?}");
    }
    for &device in &fridges {
        assert!(predictions_of(&pool, device).await.is_empty());
    }
    assert!(cycle.without_model >= 1, "{cycle:?}");
    let metrics = scorer.metrics().render();
    assert!(
        metrics.contains("forewarn_predict_kind_errors_total{kind=\"fridge\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "forewarn_predict_devices_without_model {}",
            cycle.without_model
        )),
        "{metrics}"
    );
    // Every cycle counts again; the other kinds keep being scored.
    let again = scorer.cycle(&db.store, 3).await.unwrap();
    assert_eq!(again.failed_kinds, vec!["fridge".to_string()]);
    assert!(
        scorer
            .metrics()
            .render()
            .contains("forewarn_predict_kind_errors_total{kind=\"fridge\"} 2")
    );
}

/// The lookback loaded for a kind is the longest any of its active modes needs: a mode
/// whose baseline reaches 40 days back scores on 40 days, whichever mode comes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookback_is_the_longest_any_active_mode_of_the_kind_needs() {
    let db = TestDb::new().await;
    // drum_bearing sorts after drain_pump: the longer baseline is not the first mode's.
    activate_edited_default(&db, "v-lookback", &["washer"], |json| {
        for mode in json["modes"].as_array_mut().unwrap() {
            if mode["mode"]["component"] == "drum_bearing" {
                mode["spec"]["baseline_until_days"] = serde_json::json!(40);
            }
        }
    })
    .await;
    let t0 = hour_ago(1);
    let ids = register(&db, "washer", 1, t0 - 400 * DAY).await;
    // Vibration was much higher 30-40 days ago: only a 40-day baseline sees it.
    report_hourly(
        &db,
        "washer",
        &WASHER_METRICS,
        ids[0],
        (t0 - 45 * DAY, t0),
        |m, t| {
            let old = t < t0 - 28 * DAY;
            washer_level(m, t) + if m == 1 && old { 5.0 } else { 0.0 }
        },
    )
    .await;
    db.store.refresh_rollup_now().await.unwrap();
    let mut scorer = forewarn::predict::Scorer::default();
    let cycle = scorer.cycle(&db.store, 0).await.unwrap();
    let as_of = t0 - HOUR_MICROS;
    assert_eq!(cycle.as_of, Some(time(as_of)));
    let pool = db.query().await;
    let written: f64 = sqlx::query_scalar(
        "select probability from predictions where device_id = $1 and failure_mode = 'washer/drum_bearing'",
    )
    .bind(ids[0])
    .fetch_one(&pool)
    .await
    .unwrap();

    // The same request over the whole history, and over the first mode's lookback only.
    scorer.refresh_models(&db.store).await.unwrap();
    let artifact = forewarn::training::read_artifact(&std::path::PathBuf::from(
        db.store.model_rows(true).await.unwrap()[0]
            .artifact_path
            .clone(),
    ))
    .unwrap();
    let drum = artifact
        .modes
        .iter()
        .find(|m| m.mode.component == "drum_bearing")
        .unwrap();
    let devices = db.store.device_summaries(Some("washer")).await.unwrap();
    let probability = |inputs: &features::FeatureInputs| {
        let table =
            features::compute(&drum.spec, &drum.schema, inputs, &[(ids[0], as_of)]).unwrap();
        (drum.probabilities(&table).unwrap()[0], table)
    };
    let whole = forewarn::training::load_inputs(
        &db.store,
        &devices,
        &drum.spec,
        time(t0 - 50 * DAY),
        time(as_of),
    )
    .await
    .unwrap();
    let short = forewarn::predict::live_inputs(
        &db.store,
        &FeatureSpec::default(),
        &devices,
        &[(ids[0], as_of)],
    )
    .await
    .unwrap();
    let (from_whole, whole_table) = probability(&whole);
    let (_, short_table) = probability(&short);
    assert_ne!(
        whole_table.values, short_table.values,
        "the first mode's lookback misses the 40-day baseline (the test's premise)"
    );
    assert!(
        (written - from_whole).abs() < 1e-9,
        "written {written}, whole history {from_whole}"
    );
}

/// `forewarn evaluate`'s choice of models: by default the active model of every mode, each
/// from its own artifact, merged into one evaluation; or one version; or one file. An
/// unknown version and "no active model" are errors of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_models_judges_the_active_modes_a_version_or_a_file() {
    use forewarn::training::{TrainingError, evaluate_models, read_artifact};
    let db = TestDb::new().await;
    let t0 = hour_ago(0);
    let (from, to) = (time(t0 - DAY), time(t0));
    let none = evaluate_models(&db.store, None, from, to, HOUR_MICROS, None).await;
    assert!(
        matches!(none, Err(TrainingError::NoActiveModel)),
        "{none:?}"
    );

    let washer_path = activate_edited_default(&db, "v-washer", &["washer"], |_| {}).await;
    let fridge_path = activate_edited_default(&db, "v-fridge", &["fridge"], |_| {}).await;
    let washer_modes: Vec<String> = read_artifact(&washer_path)
        .unwrap()
        .modes
        .iter()
        .map(|m| m.mode.name())
        .collect();
    let fridge_modes: Vec<String> = read_artifact(&fridge_path)
        .unwrap()
        .modes
        .iter()
        .map(|m| m.mode.name())
        .collect();
    assert!(!washer_modes.is_empty() && !fridge_modes.is_empty());
    for &device in &register(&db, "washer", 2, t0 - 400 * DAY).await {
        report_hourly(
            &db,
            "washer",
            &WASHER_METRICS,
            device,
            (t0 - 2 * DAY, t0),
            washer_level,
        )
        .await;
    }
    db.store.refresh_rollup_now().await.unwrap();

    let judged = |evaluation: &forewarn::training::Evaluation| -> Vec<(String, String)> {
        let mut modes: Vec<(String, String)> = evaluation
            .failure_modes
            .iter()
            .map(|m| (m.failure_mode.clone(), m.model_version.clone()))
            .collect();
        modes.sort();
        modes
    };
    let expected = |modes: &[String], version: &str| -> Vec<(String, String)> {
        let mut modes: Vec<(String, String)> = modes
            .iter()
            .map(|m| (m.clone(), version.to_string()))
            .collect();
        modes.sort();
        modes
    };

    let active = evaluate_models(&db.store, None, from, to, HOUR_MICROS, Some(0.25))
        .await
        .unwrap();
    let mut both = expected(&washer_modes, "v-washer");
    both.extend(expected(&fridge_modes, "v-fridge"));
    both.sort();
    assert_eq!(judged(&active), both);
    assert!(active.failure_modes.iter().all(|m| m.threshold == 0.25));
    assert_eq!(
        serde_json::to_value(&active.overall).unwrap(),
        serde_json::to_value(forewarn::training::overall(&active.failure_modes)).unwrap(),
        "overall covers every artifact's modes"
    );

    let version = evaluate_models(&db.store, Some("v-washer"), from, to, HOUR_MICROS, None)
        .await
        .unwrap();
    assert_eq!(judged(&version), expected(&washer_modes, "v-washer"));

    let file = evaluate_models(
        &db.store,
        Some(fridge_path.to_str().unwrap()),
        from,
        to,
        HOUR_MICROS,
        None,
    )
    .await
    .unwrap();
    assert_eq!(judged(&file), expected(&fridge_modes, "v-fridge"));

    let unknown = evaluate_models(&db.store, Some("v-nope"), from, to, HOUR_MICROS, None).await;
    assert!(
        matches!(&unknown, Err(TrainingError::UnknownModel(v)) if v == "v-nope"),
        "{unknown:?}"
    );
    for path in [washer_path, fridge_path] {
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}

/// `forewarn train --promote always` activates every mode of the artifact and records why;
/// `--from`/`--until` with one end missing take it from the rollup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_all_activates_every_mode_and_a_range_end_comes_from_the_rollup() {
    use forewarn::training::{TrainingError, promote_all, read_artifact, training_range};
    let db = TestDb::new().await;
    let t0 = hour_ago(0);
    assert!(matches!(
        training_range(&db.store, None, None).await,
        Ok(None)
    ));
    let empty = training_range(&db.store, Some(time(t0 - DAY)), None).await;
    assert!(
        matches!(empty, Err(TrainingError::EmptyRollup)),
        "{empty:?}"
    );

    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/model.json");
    let artifact = read_artifact(&shipped).unwrap();
    db.store
        .insert_models(&forewarn::training::model_rows(&artifact, &shipped))
        .await
        .unwrap();
    assert!(db.store.model_rows(true).await.unwrap().is_empty());
    promote_all(&db.store, &artifact, "promoted by hand (--promote always)")
        .await
        .unwrap();
    let mut active: Vec<(String, String)> = db
        .store
        .model_rows(true)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.failure_mode, r.version))
        .collect();
    active.sort();
    let mut expected: Vec<(String, String)> = artifact
        .modes
        .iter()
        .map(|m| (m.mode.name(), artifact.version.clone()))
        .collect();
    expected.sort();
    assert_eq!(active, expected);
    let pool = db.query().await;
    let reasons: Vec<(String,)> = sqlx::query_as("select distinct reason from model_promotions")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(
        reasons,
        vec![("promoted by hand (--promote always)".to_string(),)]
    );

    let device = register(&db, "washer", 1, t0 - 400 * DAY).await[0];
    report_hourly(
        &db,
        "washer",
        &WASHER_METRICS,
        device,
        (t0 - 2 * DAY, t0),
        washer_level,
    )
    .await;
    db.store.refresh_rollup_now().await.unwrap();
    let (first, last) = db.store.rollup_range().await.unwrap().unwrap();
    let from = time(t0 - DAY);
    assert_eq!(
        training_range(&db.store, Some(from), None).await.unwrap(),
        Some((from, last + chrono::Duration::hours(1)))
    );
    assert_eq!(
        training_range(&db.store, None, Some(from)).await.unwrap(),
        Some((first, from))
    );
}

/// The scorer keeps day buckets across cycles and midnights: each cycle's predictions equal
/// the training path's (the whole history loaded, day buckets aggregated from it), while
/// only the first cycle reads day buckets from the database, and later only those of a new
/// device and of a device reporting again after being marked stale (with a late reading in
/// a past day).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_day_buckets_score_like_the_whole_history_across_midnight() {
    let db = TestDb::new().await;
    let path = activate_edited_default(&db, "v-days", &["washer"], |_| {}).await;
    let artifact = forewarn::training::read_artifact(&path).unwrap();
    let now = Utc::now().timestamp_micros();
    // 22:00 the day before yesterday: five cycles run to 02:00 yesterday, all in the past.
    let first_hour = now - now.rem_euclid(DAY) - DAY - 2 * HOUR_MICROS;
    let history_from = first_hour - 27 * DAY;
    // Levels that move from day to day, so that every day bucket matters.
    let level = |device: i32| {
        move |m: usize, t: i64| {
            washer_level(m, t)
                + ((t / DAY + i64::from(device)) % 7) as f64 * [3.0, 0.2, 0.1, 0.5, 0.4][m]
                + ((t / HOUR_MICROS) % 24) as f64 * 0.01
        }
    };
    let mut ids = register(&db, "washer", 3, history_from - 300 * DAY).await;
    for &id in &ids {
        report_hourly(
            &db,
            "washer",
            &WASHER_METRICS,
            id,
            (history_from, first_hour),
            level(id),
        )
        .await;
    }
    let mut scorer = forewarn::predict::Scorer::default();
    let mut day_rows_read = Vec::new();
    for cycle in 0..5 {
        let hour = first_hour + cycle * HOUR_MICROS;
        if cycle == 3 {
            // A washer registered with its past: its day buckets are read, the others kept.
            let new = register(&db, "washer", 1, history_from - 300 * DAY).await[0];
            report_hourly(
                &db,
                "washer",
                &WASHER_METRICS,
                new,
                (history_from, hour),
                level(new),
            )
            .await;
            ids.push(new);
        }
        if cycle == 4 {
            // A washer marked stale uploads a late reading into a day 12 days back: its days
            // are read again, the others kept.
            report_hourly(
                &db,
                "washer",
                &WASHER_METRICS,
                ids[0],
                (hour - 12 * DAY, hour - 12 * DAY + HOUR_MICROS),
                |m, t| level(ids[0])(m, t) + 40.0,
            )
            .await;
            db.store
                .set_stale(&[(ids[0], time(hour - 2 * HOUR_MICROS))], &[])
                .await
                .unwrap();
        }
        for &id in &ids {
            report_hourly(
                &db,
                "washer",
                &WASHER_METRICS,
                id,
                (hour, hour + HOUR_MICROS),
                level(id),
            )
            .await;
        }
        db.store.refresh_rollup_now().await.unwrap();
        let report = scorer.cycle(&db.store, 0).await.unwrap();
        assert_eq!(report.as_of, Some(time(hour)), "cycle {cycle}");
        assert_eq!(report.devices, ids.len(), "cycle {cycle}: {report:?}");
        day_rows_read.push(report.day_rows_read);

        // The training path at the same time: the whole history, day buckets from it.
        let devices = db.store.device_summaries(Some("washer")).await.unwrap();
        let whole = forewarn::training::load_inputs(
            &db.store,
            &devices,
            &FeatureSpec::default(),
            time(history_from),
            time(hour),
        )
        .await
        .unwrap();
        let pool = db.query().await;
        for mode in &artifact.modes {
            let requests: Vec<(i32, i64)> = ids.iter().map(|&id| (id, hour)).collect();
            let table = features::compute(&mode.spec, &mode.schema, &whole, &requests).unwrap();
            let expected = mode.probabilities(&table).unwrap();
            for (&id, expected) in ids.iter().zip(expected) {
                let written: f64 = sqlx::query_scalar(
                    "select probability from predictions
                     where device_id = $1 and failure_mode = $2 and time = $3",
                )
                .bind(id)
                .bind(mode.mode.name())
                .bind(time(hour))
                .fetch_one(&pool)
                .await
                .unwrap();
                assert!(
                    (written - expected).abs() < 1e-9,
                    "cycle {cycle}, {}, device {id}: written {written}, whole history {expected}",
                    mode.mode.name()
                );
            }
        }
    }
    // Day buckets per device and metric over the lookback (25 days and a bit).
    let per_device = WASHER_METRICS.len();
    assert!(day_rows_read[0] >= 3 * per_device * 24, "{day_rows_read:?}");
    assert_eq!(day_rows_read[1], 0, "same day: {day_rows_read:?}");
    assert_eq!(
        day_rows_read[2], 0,
        "midnight: the day just ended comes from the hourly rows: {day_rows_read:?}"
    );
    assert!(
        day_rows_read[3] >= per_device * 24 && day_rows_read[3] < 2 * per_device * 26,
        "only the new washer's days: {day_rows_read:?}"
    );
    assert!(
        day_rows_read[4] >= per_device * 24 && day_rows_read[4] < 2 * per_device * 26,
        "only the washer reporting again after being marked stale: {day_rows_read:?}"
    );
}

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

    // The live path: the scorer's lookback query, one device at a time, at sampled t.
    let mut compared = 0;
    for (index, &(device, as_of)) in requests.iter().enumerate().step_by(37) {
        let summary: Vec<_> = data
            .devices
            .iter()
            .filter(|d| d.id == device)
            .cloned()
            .collect();
        let inputs = forewarn::predict::live_inputs(&db.store, &spec, &summary, &[(device, as_of)])
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
            horizon: Duration::from_secs(72 * 3600),
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
    assert_eq!(mode.candidates.len(), 2, "both candidates were compared");
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

    // First model: promoted; the scorer writes predictions with factors in words.
    let decisions = forewarn::training::promote_if_better(&db.store, &artifact, 2 * HOUR_MICROS)
        .await
        .unwrap();
    assert!(decisions[0].promoted, "{decisions:?}");
    let mut scorer = forewarn::predict::Scorer::default();
    let cycle = scorer.cycle(&db.store, 3).await.unwrap();
    assert!(cycle.predictions >= fleet.ids.len(), "{cycle:?}");
    let pool = db.query().await;
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
    assert!(scorer.models.refresh(&db.store).await.unwrap().is_empty());
    db.store
        .promote_model(
            &second.version,
            &second.modes[0].mode.name(),
            "test",
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    let changed = scorer.models.refresh(&db.store).await.unwrap();
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
    use forewarn::training::{JudgeFuture, TrainingError, Verdict};
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
                        comparison: serde_json::json!({ "active_cost": active_cost }),
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
            horizon: Duration::from_secs(72 * 3600),
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

use super::*;

const T0: i64 = 1_780_000_000 * 1_000_000 / HOUR_MICROS * HOUR_MICROS;

fn schema() -> KindSchema {
    KindSchema {
        kind: "washer".into(),
        metrics: vec!["vibration".into(), "temp".into()],
        event_codes: vec!["E31".into()],
        components: vec!["drum_bearing".into()],
        models: vec!["WM-1".into(), "WM-2".into()],
    }
}

/// Three devices, 40 days of hourly rows: device 1's vibration ramps up over the last 10
/// days, temperature is a daily sine; every 5th hour of temp is missing. (Three: the
/// fleet's reference needs as many devices in an hour.)
fn inputs() -> FeatureInputs {
    let mut inputs = FeatureInputs::default();
    inputs.metric_names.insert(1, "vibration".into());
    inputs.metric_names.insert(2, "temp".into());
    inputs.metric_names.insert(3, "unrelated".into());
    for device in [1, 2, 3] {
        inputs.devices.insert(
            device,
            DeviceInfo {
                kind: "washer".into(),
                model: Some(if device == 1 { "WM-1" } else { "WM-2" }.into()),
                installed_at: Some(T0 - 400 * DAY_MICROS),
            },
        );
        for hour in 0..40 * 24 {
            let time = T0 + hour * HOUR_MICROS;
            let ramp = if device == 1 && hour > 30 * 24 {
                (hour - 30 * 24) as f64 * 0.01
            } else {
                0.0
            };
            let vibration = 1.0 + 0.05 * ((hour * 7919 % 13) as f64 / 13.0) + ramp;
            inputs.hourly.push(HourlyRow {
                device_id: device,
                metric_id: 1,
                bucket: time,
                avg: vibration,
                min: vibration - 0.1,
                max: vibration + 0.1,
            });
            if hour % 5 != 0 {
                let temp = 40.0 + 3.0 * (hour as f64 / 24.0 * std::f64::consts::TAU).sin();
                inputs.hourly.push(HourlyRow {
                    device_id: device,
                    metric_id: 2,
                    bucket: time,
                    avg: temp,
                    min: temp - 1.0,
                    max: temp + 1.0,
                });
            }
        }
        inputs.events.push(EventRecord {
            device_id: device,
            time: T0 + 39 * DAY_MICROS,
            code: "E31".into(),
            severity: "warning".into(),
        });
    }
    inputs
        .maintenance
        .insert((1, "drum_bearing".into()), vec![T0 + 2 * DAY_MICROS]);
    inputs.daily = daily_from_hourly(&inputs.hourly);
    inputs
}

/// What the store's day-bucket query computes.
fn daily_from_hourly(hourly: &[HourlyRow]) -> Vec<DailyRow> {
    let mut days: HashMap<(i32, i16, i64), DailyRow> = HashMap::new();
    for row in hourly {
        let day = row.bucket.div_euclid(DAY_MICROS) * DAY_MICROS;
        let entry = days
            .entry((row.device_id, row.metric_id, day))
            .or_insert(DailyRow {
                device_id: row.device_id,
                metric_id: row.metric_id,
                day,
                hours: 0.0,
                sum: 0.0,
                sum_squares: 0.0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
            });
        entry.hours += 1.0;
        entry.sum += row.avg;
        entry.sum_squares += row.avg * row.avg;
        entry.min = entry.min.min(row.min);
        entry.max = entry.max.max(row.max);
    }
    days.into_values().collect()
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn the_live_lookback_gives_the_same_features_as_the_whole_history() {
    let spec = FeatureSpec::default();
    let all = inputs();
    let as_of = T0 + 39 * DAY_MICROS + 5 * HOUR_MICROS;
    let whole_history = compute(
        &spec,
        &schema(),
        &all,
        &[(1, as_of), (2, as_of), (1, as_of - 240 * HOUR_MICROS)],
    )
    .unwrap();

    // The live scorer loads only its lookback.
    let mut trimmed = all.clone();
    trimmed
        .hourly
        .retain(|r| r.bucket >= as_of - spec.hourly_lookback_micros() && r.bucket < as_of);
    trimmed.daily = daily_from_hourly(&all.hourly);
    trimmed
        .daily
        .retain(|r| r.day >= as_of - spec.daily_lookback_micros() && r.day + DAY_MICROS <= as_of);
    let live = compute(&spec, &schema(), &trimmed, &[(1, as_of)]).unwrap();

    assert_eq!(live.names, whole_history.names);
    for (index, name) in live.names.iter().enumerate() {
        let (a, b) = (live.row(0)[index], whole_history.row(0)[index]);
        assert!(close(a, b), "{name}: live {a} vs training {b}");
    }
    let not_nan = live.row(0).iter().filter(|v| !v.is_nan()).count();
    assert_eq!(not_nan, live.n_columns(), "every feature is defined here");
}

#[test]
fn window_statistics_are_right() {
    let spec = FeatureSpec::default();
    let all = inputs();
    let names = feature_names(&spec, &schema());
    let column = |name: &str| names.iter().position(|n| n == name).unwrap();
    let as_of = T0 + 39 * DAY_MICROS + 5 * HOUR_MICROS;
    let table = compute(&spec, &schema(), &all, &[(1, as_of), (2, as_of)]).unwrap();
    let ramping = table.row(0);
    let flat = table.row(1);
    // Device 1 ramps 0.01 per hour: 0.24 per day over the short window.
    assert!(
        (ramping[column("vibration.slope_short")] - 0.24).abs() < 0.02,
        "{}",
        ramping[column("vibration.slope_short")]
    );
    assert!(ramping[column("vibration.z_short")] > 10.0);
    assert!(flat[column("vibration.z_short")].abs() < 3.0);
    assert!(flat[column("vibration.slope_long")].abs() < 0.01);
    // The last complete hour before as_of.
    let last_hour = 39 * 24 + 4;
    let expected = 1.0 + 0.05 * ((last_hour * 7919 % 13) as f64 / 13.0);
    assert!(close(flat[column("vibration.last")], expected));
    assert_eq!(flat[column("vibration.hours_since_last")], 0.0);
    // temp is missing every 5th hour: hour 39*24+5 is missing, hour +4 is not.
    assert!((flat[column("temp.mean_short")] - 40.0).abs() < 0.5);
    assert_eq!(ramping[column("events.warning.24h")], 1.0);
    assert_eq!(ramping[column("events.code_E31.168h")], 1.0);
    assert_eq!(ramping[column("events.error.24h")], 0.0);
    assert!(close(
        ramping[column("drum_bearing.hours_since_maintenance")],
        (37 * 24 + 5) as f64
    ));
    assert!(close(
        flat[column("drum_bearing.hours_since_maintenance")],
        (439 * 24 + 5) as f64
    ));
    assert_eq!(ramping[column("device.model_WM-1")], 1.0);
    assert_eq!(flat[column("device.model_WM-1")], 0.0);
}

#[test]
fn nothing_from_the_future_leaks_into_a_feature() {
    let spec = FeatureSpec::default();
    let mut all = inputs();
    let as_of = T0 + 20 * DAY_MICROS + 7 * HOUR_MICROS;
    let before = compute(&spec, &schema(), &all, &[(1, as_of)]).unwrap();
    // Rewrite everything at or after as_of: the features must not move.
    for row in all.hourly.iter_mut().filter(|r| r.bucket >= as_of) {
        row.avg += 100.0;
        row.max += 100.0;
    }
    all.daily = daily_from_hourly(&all.hourly);
    all.events.push(EventRecord {
        device_id: 1,
        time: as_of,
        code: "E31".into(),
        severity: "error".into(),
    });
    let after = compute(&spec, &schema(), &all, &[(1, as_of)]).unwrap();
    for (index, name) in before.names.iter().enumerate() {
        assert!(
            close(before.row(0)[index], after.row(0)[index]),
            "{name} saw the future"
        );
    }
}

#[test]
fn stale_metrics_are_missing() {
    let spec = FeatureSpec::default();
    let all = inputs();
    let as_of = T0 + 45 * DAY_MICROS; // five days after the data ends
    let table = compute(&spec, &schema(), &all, &[(1, as_of)]).unwrap();
    let names = feature_names(&spec, &schema());
    let column = |name: &str| names.iter().position(|n| n == name).unwrap();
    assert!(table.row(0)[column("vibration.mean_short")].is_nan());
    assert!(table.row(0)[column("vibration.mean_long")].is_nan());
    assert!(!table.row(0)[column("device.age_days")].is_nan());
}

#[test]
fn chunking_devices_changes_no_number() {
    let spec = FeatureSpec::default();
    let all = inputs();
    let requests: Vec<(i32, i64)> = (20..40)
        .flat_map(|day| {
            [
                (1, T0 + day * DAY_MICROS + 3 * HOUR_MICROS),
                (2, T0 + day * DAY_MICROS),
            ]
        })
        .collect();
    let one_chunk = compute_in_chunks(&spec, &schema(), &all, &requests, 1000).unwrap();
    let chunk_per_device = compute_in_chunks(&spec, &schema(), &all, &requests, 1).unwrap();
    assert_eq!(one_chunk.requests, chunk_per_device.requests);
    for (a, b) in one_chunk.values.iter().zip(&chunk_per_device.values) {
        assert!(close(*a, *b), "{a} vs {b}");
    }
}

/// Devices whose vibration all rise by 0.5 from day 30 (the season), device 1's by another
/// 0.5 (a failing part). Device `d` sits `0.1 × (count − d)` above the lowest: device 1 is
/// the highest, so its rise does not move the fleet's median.
fn a_season(device_count: i32) -> FeatureInputs {
    let mut inputs = FeatureInputs::default();
    inputs.metric_names.insert(1, "vibration".into());
    for device in 1..=device_count {
        inputs.devices.insert(
            device,
            DeviceInfo {
                kind: "washer".into(),
                model: Some("WM-1".into()),
                installed_at: Some(T0 - 400 * DAY_MICROS),
            },
        );
        for hour in 0..40 * 24 {
            let season = if hour >= 30 * 24 { 0.5 } else { 0.0 };
            let failing = if device == 1 && hour >= 30 * 24 {
                0.5
            } else {
                0.0
            };
            let noise = 0.05 * (((hour + device as i64 * 17) * 7919 % 13) as f64 / 13.0);
            let offset = 0.1 * (device_count - device) as f64;
            let vibration = 1.0 + offset + noise + season + failing;
            inputs.hourly.push(HourlyRow {
                device_id: device,
                metric_id: 1,
                bucket: T0 + hour * HOUR_MICROS,
                avg: vibration,
                min: vibration,
                max: vibration,
            });
        }
    }
    inputs.daily = daily_from_hourly(&inputs.hourly);
    inputs
}

#[test]
fn what_moves_every_device_cancels_against_the_fleet_and_one_device_stands_out() {
    let spec = FeatureSpec::default();
    let schema = KindSchema {
        metrics: vec!["vibration".into()],
        event_codes: vec![],
        components: vec![],
        models: vec![],
        ..schema()
    };
    let names = feature_names(&spec, &schema);
    let column = |name: &str| names.iter().position(|n| n == name).unwrap();
    let as_of = T0 + 36 * DAY_MICROS;
    let table = compute(&spec, &schema, &a_season(8), &[(1, as_of), (2, as_of)]).unwrap();
    let (failing, healthy) = (table.row(0), table.row(1));
    // Against its own past, the healthy device looks as changed as the failing one...
    assert!(healthy[column("vibration.z_long")] > 3.0);
    assert!(healthy[column("vibration.z_short")] > 3.0);
    // ...against the fleet it has not moved, and the failing one has.
    for stat in ["z_fleet_short", "z_fleet_long"] {
        let name = format!("vibration.{stat}");
        assert!(
            healthy[column(&name)].abs() < 1.0,
            "{name}: {}",
            healthy[column(&name)]
        );
        assert!(
            failing[column(&name)] > 3.0,
            "{name}: {}",
            failing[column(&name)]
        );
    }
    // The 24 h mean's distance from the fleet's median (of eight, 0.35 above the lowest):
    // device 1 sits 0.35 above it when healthy and 0.85 now, device 2 0.25 (noise aside).
    assert!((failing[column("vibration.vs_fleet_short")] - 0.85).abs() < 0.03);
    assert!((healthy[column("vibration.vs_fleet_short")] - 0.25).abs() < 0.03);

    // Fewer devices than a median needs: no reference, the features are missing.
    let two = compute(&spec, &schema, &a_season(2), &[(1, as_of)]).unwrap();
    for stat in FLEET_STATS {
        assert!(two.row(0)[column(&format!("vibration.{stat}"))].is_nan());
    }
    // Old artifacts (no fleet reference) keep their columns.
    let old = FeatureSpec {
        fleet_reference: false,
        ..spec.clone()
    };
    assert!(
        !feature_names(&old, &schema)
            .iter()
            .any(|n| n.contains("fleet"))
    );
}

/// One device's drain time, reported once a day at 08:00 as a washer reports it (only
/// while it runs): 53 or 57 s for 30 days, then 100, 150 and 200 s (a clogging pump).
fn a_daily_cycle() -> FeatureInputs {
    let mut inputs = FeatureInputs::default();
    inputs.metric_names.insert(1, "drain".into());
    inputs.devices.insert(
        1,
        DeviceInfo {
            kind: "washer".into(),
            model: None,
            installed_at: Some(T0 - 400 * DAY_MICROS),
        },
    );
    for day in 0..33 {
        let drain = match day {
            30 => 100.0,
            31 => 150.0,
            32 => 200.0,
            _ if day % 2 == 0 => 53.0,
            _ => 57.0,
        };
        inputs.hourly.push(HourlyRow {
            device_id: 1,
            metric_id: 1,
            bucket: T0 + day * DAY_MICROS + 8 * HOUR_MICROS,
            avg: drain,
            min: drain,
            max: drain,
        });
    }
    inputs.daily = daily_from_hourly(&inputs.hourly);
    inputs
}

#[test]
fn a_metric_reported_once_a_day_keeps_its_newest_reading() {
    // Longer than the default, so that the lookback must grow for it.
    let spec = FeatureSpec {
        recent_hours: 48,
        ..FeatureSpec::default()
    };
    let schema = KindSchema {
        kind: "washer".into(),
        metrics: vec!["drain".into()],
        event_codes: Vec::new(),
        components: Vec::new(),
        models: Vec::new(),
    };
    let all = a_daily_cycle();
    let names = feature_names(&spec, &schema);
    let column = |name: &str| names.iter().position(|n| n == name).unwrap();
    let last_cycle = T0 + 32 * DAY_MICROS + 8 * HOUR_MICROS;
    let as_of = last_cycle + 12 * HOUR_MICROS;
    let requests = [
        (1, as_of),
        (1, last_cycle + 47 * HOUR_MICROS),
        (1, last_cycle + 48 * HOUR_MICROS),
    ];
    let table = compute(&spec, &schema, &all, &requests).unwrap();
    let now = table.row(0);
    assert!(
        now[column("drain.last")].is_nan(),
        "the hourly features are stale"
    );
    assert!(now[column("drain.z_short")].is_nan());
    assert_eq!(now[column("drain.latest")], 200.0);
    assert_eq!(now[column("drain.latest_age_hours")], 11.0);
    // The baseline: 55 s, σ 2.
    let z = now[column("drain.z_latest")];
    assert!((z - 72.5).abs() < 3.0, "z_latest {z}");
    assert_eq!(table.row(1)[column("drain.latest")], 200.0);
    for stat in RECENT_STATS {
        let value = table.row(2)[column(&format!("drain.{stat}"))];
        assert!(
            value.is_nan(),
            "{stat} = {value} after {} h",
            spec.recent_hours
        );
    }

    // The live scorer's lookback holds it (47 h back: beyond the hourly windows' 30 h).
    let as_of = requests[1].1;
    let mut trimmed = all.clone();
    trimmed
        .hourly
        .retain(|r| r.bucket >= as_of - spec.hourly_lookback_micros() && r.bucket < as_of);
    trimmed
        .daily
        .retain(|r| r.day >= as_of - spec.daily_lookback_micros() && r.day + DAY_MICROS <= as_of);
    let live = compute(&spec, &schema, &trimmed, &[(1, as_of)]).unwrap();
    assert_eq!(live.row(0)[column("drain.latest")], 200.0);
    for (index, name) in live.names.iter().enumerate() {
        let (a, b) = (live.row(0)[index], table.row(1)[index]);
        assert!(close(a, b), "{name}: live {a} vs training {b}");
    }

    // Old artifacts keep their columns.
    let old = FeatureSpec {
        recent_hours: 0,
        ..spec.clone()
    };
    assert!(
        !feature_names(&old, &schema)
            .iter()
            .any(|n| n.contains("latest"))
    );
}

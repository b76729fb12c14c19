use super::*;

const NOW: EpochMicros = 1_795_351_200_000_000; // 2026-11-22T10:40:00Z

fn limits() -> ValidationLimits {
    ValidationLimits {
        max_payload_bytes: 1024,
        max_future_skew_micros: 300_000_000,
        max_age_micros: Some(86_400_000_000 * 30),
        max_abs_value: 1e12,
    }
}

fn reject(payload: &str) -> RejectReason {
    parse_telemetry(payload.as_bytes(), NOW, &limits())
        .unwrap_err()
        .reason
}

#[test]
fn topics_follow_the_contract() {
    let topic = parse_topic("devices", "devices/WM-0001/telemetry").unwrap();
    assert_eq!(topic.device_external_id, "WM-0001");
    assert_eq!(topic.kind, TopicKind::Telemetry);
    assert_eq!(
        parse_topic("a/b", "a/b/x.y:z_1/status").unwrap().kind,
        TopicKind::Status
    );
    for bad in [
        "devices/WM-0001/other",
        "devices//telemetry",
        "devices/WM 1/telemetry",
        "devicesX/WM/telemetry",
        "devices/a/b/telemetry",
        "other/WM/telemetry",
    ] {
        assert_eq!(
            parse_topic("devices", bad).unwrap_err().reason,
            RejectReason::InvalidTopic,
            "{bad}"
        );
    }
    let long = format!("devices/{}/events", "a".repeat(65));
    assert!(parse_topic("devices", &long).is_err());
    assert_eq!(
        device_topic("devices", "C-1", TopicKind::Events),
        "devices/C-1/events"
    );
}

#[test]
fn telemetry_accepts_rfc3339_epoch_millis_arrays_and_booleans() {
    let message = parse_telemetry(
        br#"{"ts": "2026-11-22T10:15:00.250Z", "metrics": {"drum_vibration_rms": 0.42, "door_open": true}}"#,
        NOW,
        &limits(),
    )
    .unwrap();
    assert_eq!(message.readings.len(), 2);
    let door = message
        .readings
        .iter()
        .find(|r| r.metric == "door_open")
        .unwrap();
    assert_eq!(door.value, 1.0);
    assert_eq!(format_timestamp(door.time), "2026-11-22T10:15:00.250000Z");
    assert!(!door.time_estimated);

    let message = parse_telemetry(
        br#"[{"ts": 1795351198000, "seq": 7, "metrics": {"a": 1}}, {"ts": 1795351199000, "seq": 8, "metrics": {"a": 2}}]"#,
        NOW,
        &limits(),
    )
    .unwrap();
    assert_eq!(message.readings.len(), 2);
    assert_eq!(message.readings[0].time, 1_795_351_198_000_000);
    assert_eq!(message.seq_range, Some((7, 8)));
}

#[test]
fn missing_ts_uses_receive_time_and_flags_it() {
    let message = parse_telemetry(br#"{"metrics": {"a": 1.5}}"#, NOW, &limits()).unwrap();
    assert_eq!(message.readings[0].time, NOW);
    assert!(message.readings[0].time_estimated);
    // An array without `ts` keeps its samples apart, in order.
    let message = parse_telemetry(
        br#"[{"metrics": {"a": 1}}, {"metrics": {"a": 2}}, {"metrics": {"a": 3}}]"#,
        NOW,
        &limits(),
    )
    .unwrap();
    let times: Vec<_> = message.readings.iter().map(|r| r.time).collect();
    assert_eq!(times, vec![NOW, NOW + 1, NOW + 2]);
}

#[test]
fn values_beyond_the_range_are_refused() {
    assert_eq!(
        reject(r#"{"metrics": {"a": 1e200}}"#),
        RejectReason::ValueOutOfRange
    );
    assert_eq!(
        reject(r#"{"metrics": {"a": -2e12}}"#),
        RejectReason::ValueOutOfRange
    );
    assert!(parse_telemetry(br#"{"metrics": {"a": -1e12}}"#, NOW, &limits()).is_ok());
}

#[test]
fn each_bad_input_has_its_reason() {
    assert_eq!(reject("{not json"), RejectReason::InvalidJson);
    assert_eq!(
        parse_telemetry(&[0xff, 0xfe, b'{'], NOW, &limits())
            .unwrap_err()
            .reason,
        RejectReason::InvalidUtf8
    );
    assert_eq!(
        reject(r#"{"metrics": {"a": "high"}}"#),
        RejectReason::InvalidPayload
    );
    assert_eq!(reject(r#"{"metrics": {}}"#), RejectReason::InvalidPayload);
    assert_eq!(
        reject(r#"{"metrics": [1, 2]}"#),
        RejectReason::InvalidPayload
    );
    assert_eq!(
        reject(r#"{"ts": true, "metrics": {"a": 1}}"#),
        RejectReason::InvalidPayload
    );
    assert_eq!(
        reject(r#"{"ts": 1.5, "metrics": {"a": 1}}"#),
        RejectReason::InvalidPayload
    );
    assert_eq!(
        reject(r#"{"ts": "yesterday", "metrics": {"a": 1}}"#),
        RejectReason::InvalidPayload
    );
    assert_eq!(reject("[]"), RejectReason::InvalidPayload);
    assert_eq!(
        reject(r#"{"ts": -5, "metrics": {"a": 1}}"#),
        RejectReason::InvalidPayload
    );
    assert_eq!(reject("42"), RejectReason::InvalidPayload);
    assert_eq!(
        reject(r#"{"metrics": {"a": "NaN"}}"#),
        RejectReason::NonFiniteValue
    );
    assert_eq!(
        reject(r#"{"metrics": {"a": 1e999}}"#),
        RejectReason::InvalidJson
    );
    assert_eq!(
        reject(r#"{"metrics": {"Motor Temp": 1}}"#),
        RejectReason::InvalidMetricName
    );
    assert_eq!(
        reject(r#"{"ts": "2030-01-01T00:00:00Z", "metrics": {"a": 1}}"#),
        RejectReason::TimestampInFuture
    );
    assert_eq!(
        reject(r#"{"ts": "2001-01-01T00:00:00Z", "metrics": {"a": 1}}"#),
        RejectReason::TimestampTooOld
    );
    assert_eq!(
        reject(&format!(
            r#"{{"metrics": {{"a": 1}}, "seq": 1, "x": "{}"}}"#,
            "y".repeat(2000)
        )),
        RejectReason::PayloadTooLarge
    );
    // A bad timestamp in one sample rejects the whole message (its readings' times cannot
    // be trusted); a bad field only skips that field.
    assert_eq!(
        reject(r#"[{"metrics": {"a": 1}}, {"ts": "soon", "metrics": {"a": 2}}]"#),
        RejectReason::InvalidPayload
    );
    assert_eq!(
        reject(r#"{"values": [1, 2]}"#),
        RejectReason::InvalidPayload,
        "`values` beside nothing but `ts` is ThingsBoard's form, and must be an object"
    );
    assert_eq!(
        reject(r#"{"fw": "1.2", "cfg": {"mode": 1}}"#),
        RejectReason::InvalidPayload,
        "no usable field"
    );
    assert_eq!(reject("{}"), RejectReason::InvalidPayload);
}

fn skipped(message: &TelemetryMessage) -> Vec<(&'static str, u32)> {
    message
        .skipped
        .iter()
        .map(|(reason, n)| (reason.as_str(), n))
        .collect()
}

/// One bad field costs only itself: `"fw": "1.2"` beside the readings is skipped and
/// counted, and so is every other field that cannot be a reading.
#[test]
fn a_bad_field_is_skipped_and_counted_and_the_rest_kept() {
    let message = parse_telemetry(
        br#"{"ts": 1795351198000, "seq": 4, "fw": "1.2", "metrics": {"a": 1, "b": "high", "c": {"x": 1}, "d": [1], "e": null, "f": "NaN", "g": 1e200, "Motor Temp": 3, "h": false}}"#,
        NOW,
        &limits(),
    )
    .unwrap();
    let names: Vec<&str> = message.readings.iter().map(|r| r.metric.as_str()).collect();
    assert_eq!(names, vec!["a", "h"]);
    assert_eq!(message.seq_range, Some((4, 4)));
    assert_eq!(
        skipped(&message),
        vec![
            ("not_numeric", 2),
            ("nested", 2),
            ("unknown_key", 1),
            ("invalid_name", 1),
            ("non_finite", 1),
            ("out_of_range", 1),
        ]
    );
    assert_eq!(
        message.skipped.first,
        Some((SkipReason::UnknownKey, "sample 0: `fw`".to_string()))
    );
    let message = parse_telemetry(
        br#"[{"metrics": {"a": 1}}, {"metrics": {"a": null}}]"#,
        NOW,
        &limits(),
    )
    .unwrap();
    assert_eq!(message.readings.len(), 1);
    assert_eq!(skipped(&message), vec![("not_numeric", 1)]);
}

/// ThingsBoard's documented telemetry payloads, verbatim (thingsboard.io/docs/reference/
/// mqtt-api/telemetry and http-api/telemetry), with its 2016 timestamps let through.
#[test]
fn thingsboards_documented_payloads() {
    let limits = ValidationLimits {
        max_age_micros: None,
        ..limits()
    };
    let parse = |payload: &str| parse_telemetry(payload.as_bytes(), NOW, &limits);
    // In time, then name order (a JSON object's keys have no order).
    let values = |message: &TelemetryMessage| -> Vec<(String, f64, bool)> {
        let mut readings = message.readings.clone();
        readings.sort_by(|a, b| (a.time, &a.metric).cmp(&(b.time, &b.metric)));
        readings
            .into_iter()
            .map(|r| (r.metric, r.value, r.time_estimated))
            .collect()
    };

    // Simple key-value: the receive time, flagged.
    let message = parse(r#"{"temperature": 42, "humidity": 73}"#).unwrap();
    assert_eq!(
        values(&message),
        vec![
            ("humidity".into(), 73.0, true),
            ("temperature".into(), 42.0, true)
        ]
    );
    assert!(message.readings.iter().all(|r| r.time == NOW));

    // With a client-side timestamp.
    let message =
        parse(r#"{"ts": 1451649600512, "values": {"temperature": 42, "humidity": 73}}"#).unwrap();
    assert_eq!(message.readings.len(), 2);
    assert!(message.readings.iter().all(|r| !r.time_estimated
        && format_timestamp(r.time) == "2016-01-01T12:00:00.512000Z"));

    // An array of timestamped objects.
    let message = parse(
        r#"[ {"ts": 1451649600000, "values": {"temperature": 22.5, "humidity": 61}}, {"ts": 1451649601000, "values": {"temperature": 22.7, "humidity": 60}}]"#,
    )
    .unwrap();
    assert_eq!(
        values(&message),
        vec![
            ("humidity".into(), 61.0, false),
            ("temperature".into(), 22.5, false),
            ("humidity".into(), 60.0, false),
            ("temperature".into(), 22.7, false)
        ]
    );
    assert_eq!(
        message.readings[2].time - message.readings[0].time,
        1_000_000
    );

    // The value types ThingsBoard takes: strings and JSON are not readings, each skipped on
    // its own; camel-case keys are taken in the catalogue's snake case.
    let message = parse(
        r#"{"stringKey":"value1", "booleanKey":true, "doubleKey":42.0, "longKey":73, "jsonKey": {"someNumber": 42, "someArray": [1,2,3], "someNestedObject": {"key": "value"}}}"#,
    )
    .unwrap();
    assert_eq!(
        values(&message),
        vec![
            ("boolean_key".into(), 1.0, true),
            ("double_key".into(), 42.0, true),
            ("long_key".into(), 73.0, true)
        ]
    );
    assert_eq!(skipped(&message), vec![("not_numeric", 1), ("nested", 1)]);

    // The simplest forms in ThingsBoard's docs carry only strings: nothing to store, so
    // the message is a dead letter that names why.
    for payload in [
        r#"{"key1":"value1", "key2":"value2"}"#,
        r#"[{"key1":"value1"}, {"key2":"value2"}]"#,
        r#"{"ts":1451649600512, "values":{"key1":"value1", "key2":"value2"}}"#,
    ] {
        let rejection = parse(payload).unwrap_err();
        assert_eq!(rejection.reason, RejectReason::InvalidPayload, "{payload}");
        assert!(
            rejection.detail.contains("not_numeric") && rejection.detail.contains("key1"),
            "{}",
            rejection.detail
        );
    }
}

#[test]
fn keys_devices_send_are_taken_in_snake_case() {
    for (key, name) in [
        ("batteryLevel", Some("battery_level")),
        ("HTTPStatus", Some("http_status")),
        ("Motor Temp", Some("motor_temp")),
        ("temp-c", Some("temp_c")),
        ("sensor.rpm", Some("sensor_rpm")),
        ("CO2", Some("co2")),
        ("pm2_5", Some("pm2_5")),
        ("temperatureC", Some("temperature_c")),
        ("_x__y_", Some("x_y")),
        ("température", None),
        ("---", None),
        ("", None),
    ] {
        assert_eq!(snake_case(key).as_deref(), name, "{key}");
    }
    assert_eq!(snake_case(&"a".repeat(65)), None);
    // `seq` in a flat object is the device's counter, not a metric.
    let message = parse_telemetry(br#"{"temperature": 1, "seq": 5}"#, NOW, &limits()).unwrap();
    assert_eq!(message.readings.len(), 1);
    assert_eq!(message.seq_range, Some((5, 5)));
    // forewarn's own form keeps the catalogue's rule: no renaming there.
    assert_eq!(
        reject(r#"{"metrics": {"batteryLevel": 1}}"#),
        RejectReason::InvalidMetricName
    );
}

#[test]
fn age_limit_can_be_lifted_for_replays() {
    let mut limits = limits();
    limits.max_age_micros = None;
    assert!(
        parse_telemetry(
            br#"{"ts": "2001-01-01T00:00:00Z", "metrics": {"a": 1}}"#,
            NOW,
            &limits
        )
        .is_ok()
    );
}

#[test]
fn events_and_status() {
    let event = parse_event(
        br#"{"ts": 1795351198000, "code": "E42", "severity": "warning", "message": "door lock retry"}"#,
        NOW,
        &limits(),
    )
    .unwrap();
    assert_eq!(event.code, "E42");
    assert_eq!(event.severity, Severity::Warning);
    // Imports name severities as the payload does, exactly.
    for severity in Severity::ALL {
        assert_eq!(severity.as_str().parse::<Severity>(), Ok(severity));
    }
    assert!("Warning".parse::<Severity>().is_err());
    assert!("fatal".parse::<Severity>().is_err());
    assert_eq!(
        parse_event(br#"{"code": "E42", "severity": "fatal"}"#, NOW, &limits())
            .unwrap_err()
            .reason,
        RejectReason::InvalidPayload
    );
    assert_eq!(
        parse_event(br#"{"severity": "info"}"#, NOW, &limits())
            .unwrap_err()
            .reason,
        RejectReason::InvalidPayload
    );
    assert_eq!(
        parse_status(b"online", &limits()).unwrap(),
        DeviceStatus::Online
    );
    assert_eq!(
        parse_status(b"\"offline\"\n", &limits()).unwrap(),
        DeviceStatus::Offline
    );
    assert_eq!(
        parse_status(b"maybe", &limits()).unwrap_err().reason,
        RejectReason::InvalidPayload
    );
}

#[test]
fn published_payload_round_trips() {
    let metrics = [("motor_temp_c", 61.5), ("drum_vibration_rms", 0.42)];
    let json = telemetry_json(NOW - 1_000_001, Some(3), &metrics);
    let message = parse_telemetry(json.as_bytes(), NOW, &limits()).unwrap();
    assert_eq!(message.readings.len(), 2);
    assert_eq!(message.readings[0].time, NOW - 1_000_001);
    assert_eq!(
        message
            .readings
            .iter()
            .find(|r| r.metric == "drum_vibration_rms")
            .unwrap()
            .value,
        0.42
    );
    assert_eq!(message.seq_range, Some((3, 3)));
}

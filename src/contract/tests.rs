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
    assert_eq!(
        reject(r#"{"metrics": {"a": 1}, "extra": 1}"#),
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
    // One bad sample rejects the whole message: a message is used whole or not at all.
    assert_eq!(
        reject(r#"[{"metrics": {"a": 1}}, {"metrics": {"a": null}}]"#),
        RejectReason::InvalidPayload
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

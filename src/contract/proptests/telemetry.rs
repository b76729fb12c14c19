//! JSON payloads: telemetry in every form, events and status.

use super::super::payload::LATEST_TIMESTAMP;
use super::*;

/// serde_json's recursion limit: at most this many arrays and objects inside each other.
const MAX_JSON_NESTING: usize = 127;

fn json_with_nesting(depth: usize, objects: bool) -> Vec<u8> {
    let (open, close) = if objects {
        (r#"{"x":"#, "}")
    } else {
        ("[", "]")
    };
    format!(
        r#"{{"metrics": {{"a": 1, "b": {}1{}}}}}"#,
        open.repeat(depth),
        close.repeat(depth)
    )
    .into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_payload_gets_an_answer_within_the_rules(payload in any_payload()) {
        check_every_parser(&payload)?;
    }

    #[test]
    fn any_json_value_is_read_or_refused_for_its_content_never_its_syntax(value in json_value()) {
        let payload = serde_json::to_vec(&value).unwrap();
        check_every_parser(&payload)?;
        let telemetry = parse_telemetry(&payload, NOW, &limits());
        prop_assert!(telemetry.is_ok() || !matches!(
            telemetry.unwrap_err().reason,
            RejectReason::InvalidJson | RejectReason::InvalidUtf8
        ));
    }

    #[test]
    fn valid_telemetry_is_read_back_exactly_in_every_form(
        samples in prop::collection::vec(sample(), 1..8),
        as_array in any::<bool>(),
    ) {
        let message = parse_telemetry(&payload(&samples, as_array), NOW, &limits())
            .map_err(|rejection| TestCaseError::fail(format!("{rejection:?}")))?;
        prop_assert_eq!(exact(&message.readings), expected_readings(&samples));
        let seqs = samples
            .iter()
            .filter(|s| !matches!(s.form, Form::Values))
            .filter_map(|s| s.seq);
        let seq_range = seqs.clone().min().zip(seqs.max());
        prop_assert_eq!(message.seq_range, seq_range);
        prop_assert!(message.skipped.is_empty(), "{:?}", message.skipped);
    }

    #[test]
    fn what_publishers_write_is_read_back_exactly(
        time in NOW - MAX_AGE..=NOW + SKEW,
        seq in any::<Option<u64>>(),
        metrics in prop::collection::btree_map("[a-z0-9_]{1,64}", number(), 1..16),
    ) {
        let metrics: Vec<(&str, f64)> =
            metrics.iter().map(|(name, number)| (name.as_str(), number.value())).collect();
        let payload = telemetry_json(time, seq, &metrics);
        let message = parse_telemetry(payload.as_bytes(), NOW, &limits())
            .map_err(|rejection| TestCaseError::fail(format!("{rejection:?}")))?;
        let mut expected: Vec<Exact> = metrics
            .iter()
            .map(|(name, value)| (time, name.to_string(), value.to_bits(), false))
            .collect();
        expected.sort();
        prop_assert_eq!(exact(&message.readings), expected);
        prop_assert_eq!(message.seq_range, seq.map(|seq| (seq, seq)));
    }

    #[test]
    fn a_value_beyond_the_limit_is_refused_and_one_at_it_kept(
        beyond in prop_oneof![Just(MAX_ABS.next_up()), MAX_ABS.next_up()..1e300],
        negative in any::<bool>(),
        beside_a_good_one in any::<bool>(),
    ) {
        let sign = if negative { -1.0 } else { 1.0 };
        let good = if beside_a_good_one { r#", "b": 1"# } else { "" };
        let payload = format!(r#"{{"metrics": {{"a": {}{good}}}}}"#, json!(sign * beyond));
        match parse_telemetry(payload.as_bytes(), NOW, &limits()) {
            Ok(message) => {
                prop_assert!(beside_a_good_one);
                let b = (NOW, "b".to_string(), 1f64.to_bits(), true);
                prop_assert_eq!(exact(&message.readings), vec![b]);
                let skipped: Vec<_> = message.skipped.iter().collect();
                prop_assert_eq!(skipped, vec![(SkipReason::OutOfRange, 1)]);
            }
            Err(rejection) => {
                prop_assert!(!beside_a_good_one);
                prop_assert_eq!(rejection.reason, RejectReason::ValueOutOfRange);
                prop_assert!(rejection.detail.contains("`a`"), "{}", rejection.detail);
            }
        }
        let at_limit = format!(r#"{{"metrics": {{"a": {}}}}}"#, json!(sign * MAX_ABS));
        let message = parse_telemetry(at_limit.as_bytes(), NOW, &limits()).unwrap();
        prop_assert_eq!(message.readings[0].value, sign * MAX_ABS);
    }

    #[test]
    fn a_timestamp_outside_the_window_is_refused_with_its_reason(
        beyond_millis in prop_oneof![Just(1i64), 1i64..=300_000_000_000_000],
        future in any::<bool>(),
        rfc3339 in any::<bool>(),
    ) {
        let time = match future {
            true => NOW + SKEW + beyond_millis * 1000,
            false => NOW - MAX_AGE - beyond_millis * 1000,
        };
        let ts = match rfc3339 {
            // Past year 9999 chrono writes `+10000-…`, which is not RFC 3339 either.
            true => {
                let time = chrono::Utc.timestamp_micros(time).unwrap();
                json!(time.to_rfc3339_opts(SecondsFormat::Micros, true))
            }
            false => json!(time / 1000),
        };
        let payload = json!({"ts": ts, "metrics": {"a": 1}}).to_string();
        let reason = parse_telemetry(payload.as_bytes(), NOW, &limits()).unwrap_err().reason;
        let expected = match (future, time) {
            (_, time) if !(0..=LATEST_TIMESTAMP).contains(&time) => RejectReason::InvalidPayload,
            (true, _) => RejectReason::TimestampInFuture,
            (false, _) => RejectReason::TimestampTooOld,
        };
        prop_assert_eq!(reason, expected, "{}", payload);
    }

    #[test]
    fn a_payload_at_the_size_limit_is_read_and_one_byte_more_refused(limit in 28usize..4096) {
        let limits = ValidationLimits { max_payload_bytes: limit, ..limits() };
        let padded = |n_bytes: usize| {
            let pad = "x".repeat(n_bytes - r#"{"metrics":{"a":1},"pad":""}"#.len());
            format!(r#"{{"metrics":{{"a":1}},"pad":"{pad}"}}"#)
        };
        let message = parse_telemetry(padded(limit).as_bytes(), NOW, &limits).unwrap();
        prop_assert_eq!(exact(&message.readings), vec![(NOW, "a".into(), 1f64.to_bits(), true)]);
        let rejection = parse_telemetry(padded(limit + 1).as_bytes(), NOW, &limits).unwrap_err();
        prop_assert_eq!(rejection.reason, RejectReason::PayloadTooLarge);
        prop_assert_eq!(rejection.detail, format!("{} bytes, limit {limit}", limit + 1));
    }

    #[test]
    fn valid_events_are_read_back_exactly(
        code in "[^\\x00]{1,16}",
        severity in prop::sample::select(Severity::ALL.to_vec()),
        message in prop::option::of("[^\\x00]{0,256}"),
        millis in prop::option::of((NOW - MAX_AGE) / 1000..=(NOW + SKEW) / 1000),
    ) {
        let mut payload = json!({"code": code, "severity": severity.as_str()});
        if let Some(message) = &message {
            payload["message"] = json!(message);
        }
        if let Some(millis) = millis {
            payload["ts"] = json!(millis);
        }
        let event = parse_event(payload.to_string().as_bytes(), NOW, &limits()).unwrap();
        let expected = DeviceEvent {
            time: millis.map_or(NOW, |millis| millis * 1000),
            time_estimated: millis.is_none(),
            code: code.clone(),
            severity,
            message: message.unwrap_or_default(),
        };
        prop_assert_eq!(event, expected);
        // One NUL, or one byte too many, and the event is refused.
        for bad in [
            json!({"code": format!("{code}\0"), "severity": "info"}),
            json!({"code": "x".repeat(65), "severity": "info"}),
            json!({"code": code, "severity": "info", "message": "m".repeat(1025)}),
        ] {
            let rejection = parse_event(bad.to_string().as_bytes(), NOW, &limits()).unwrap_err();
            prop_assert_eq!(rejection.reason, RejectReason::InvalidPayload);
        }
    }
}

proptest! {
    // Payloads of up to 900 kB each.
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A recursive parser would overflow its stack long before 150,000 levels.
    #[test]
    fn json_nested_to_any_depth_is_refused_or_read_without_deep_recursion(
        depth in prop_oneof![0usize..200, 0usize..150_000],
        objects in any::<bool>(),
    ) {
        let result = parse_telemetry(&json_with_nesting(depth, objects), NOW, &limits());
        // The payload's object and `metrics` hold the nested value.
        if depth + 2 <= MAX_JSON_NESTING {
            let message = result.unwrap();
            let b_is_a_reading = depth == 0;
            prop_assert_eq!(message.readings.len(), 1 + usize::from(b_is_a_reading));
            prop_assert_eq!(message.skipped.is_empty(), b_is_a_reading);
        } else {
            let rejection = result.unwrap_err();
            prop_assert_eq!(rejection.reason, RejectReason::InvalidJson);
            prop_assert!(rejection.detail.contains("recursion limit"), "{}", rejection.detail);
        }
    }
}

#[test]
fn the_ends_of_the_timestamp_range_are_exact() {
    let anything = ValidationLimits {
        max_age_micros: None,
        max_future_skew_micros: i64::MAX,
        ..limits()
    };
    let read = |ts: Value| {
        let payload = json!({"ts": ts, "metrics": {"a": 1}}).to_string();
        parse_telemetry(payload.as_bytes(), NOW, &anything).map(|m| m.readings[0].time)
    };
    assert_eq!(read(json!(0)), Ok(0));
    assert_eq!(read(json!("1970-01-01T00:00:00Z")), Ok(0));
    assert_eq!(
        read(json!("9999-12-31T23:59:59.999999Z")),
        Ok(LATEST_TIMESTAMP)
    );
    assert_eq!(
        read(json!(253_402_300_799_999i64)),
        Ok(253_402_300_799_999_000)
    );
    for beyond in [
        json!(-1),
        json!("1969-12-31T23:59:59.999999Z"),
        json!("0000-01-01T00:00:00Z"),
        json!(253_402_300_800_000i64),
        json!("+10000-01-01T00:00:00Z"),
        json!("9999-12-31T23:59:59.999999-00:01"),
    ] {
        let reason = read(beyond.clone()).unwrap_err().reason;
        assert_eq!(reason, RejectReason::InvalidPayload, "{beyond}");
    }
    // Within the window of the usual limits, both ends included.
    for time in [NOW + SKEW, NOW - MAX_AGE] {
        let payload = telemetry_json(time, None, &[("a", 1.0)]);
        let message = parse_telemetry(payload.as_bytes(), NOW, &limits()).unwrap();
        assert_eq!(message.readings[0].time, time);
    }
}

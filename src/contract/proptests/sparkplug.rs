//! Sparkplug B payloads and topics, and forewarn's device topics.

use super::super::sparkplug::{self, DataType, MessageType, Metric, MetricValue, Payload};
use super::*;

/// prost's recursion limit (100 messages deep): a Sparkplug template nests two (the template
/// and its metric) below the payload's metric, so 49 templates inside each other decode.
const MAX_TEMPLATE_NESTING: usize = 49;

/// A payload whose one metric holds a template holding a metric, `depth` times, written
/// byte by byte from the outside in (prost's own encoder recurses, and nesting by copying
/// would take quadratic time).
fn nested_templates(depth: usize) -> Vec<u8> {
    fn header(tag: u64, len: usize, out: &mut Vec<u8>) {
        prost::encoding::encode_varint(tag << 3 | 2, out);
        prost::encoding::encode_varint(len as u64, out);
    }
    let header_len = |tag: u64, len: usize| {
        prost::encoding::encoded_len_varint(tag << 3 | 2)
            + prost::encoding::encoded_len_varint(len as u64)
    };
    // A metric is its name (`t`, 3 bytes) and its template; a template, its metric.
    const INNERMOST: &[u8] = b"\x0a\x01m";
    const NAME: &[u8] = b"\x0a\x01t";
    let mut metric_lens = vec![INNERMOST.len()];
    let mut template_lens = vec![0];
    for level in 1..=depth {
        let template_len = header_len(2, metric_lens[level - 1]) + metric_lens[level - 1];
        template_lens.push(template_len);
        metric_lens.push(NAME.len() + header_len(18, template_len) + template_len);
    }
    let mut out = Vec::with_capacity(metric_lens[depth] + 16);
    header(2, metric_lens[depth], &mut out);
    for level in (1..=depth).rev() {
        out.extend_from_slice(NAME);
        header(18, template_lens[level], &mut out);
        header(2, metric_lens[level - 1], &mut out);
    }
    out.extend_from_slice(INNERMOST);
    out
}

#[derive(Debug, Clone, Copy)]
enum SparkplugNumber {
    /// A signed integer of 8 or 16 bits, its wire form sign-extended to 32 bits or not.
    Int8(i8, bool),
    Int16(i16, bool),
    Int32(i32),
    Int64(i64),
    UInt32(u32),
    UInt64(u64),
    Float(f32),
    Double(f64),
    Boolean(bool),
}

impl SparkplugNumber {
    fn wire(self) -> (DataType, MetricValue) {
        use MetricValue::{BooleanValue, DoubleValue, FloatValue, IntValue, LongValue};
        match self {
            SparkplugNumber::Int8(v, true) => (DataType::Int8, IntValue(i32::from(v) as u32)),
            SparkplugNumber::Int8(v, false) => (DataType::Int8, IntValue(u32::from(v as u8))),
            SparkplugNumber::Int16(v, true) => (DataType::Int16, IntValue(i32::from(v) as u32)),
            SparkplugNumber::Int16(v, false) => (DataType::Int16, IntValue(u32::from(v as u16))),
            SparkplugNumber::Int32(v) => (DataType::Int32, IntValue(v as u32)),
            SparkplugNumber::Int64(v) => (DataType::Int64, LongValue(v as u64)),
            SparkplugNumber::UInt32(v) => (DataType::UInt32, IntValue(v)),
            SparkplugNumber::UInt64(v) => (DataType::UInt64, LongValue(v)),
            SparkplugNumber::Float(v) => (DataType::Float, FloatValue(v)),
            SparkplugNumber::Double(v) => (DataType::Double, DoubleValue(v)),
            SparkplugNumber::Boolean(v) => (DataType::Boolean, BooleanValue(v)),
        }
    }

    fn value(self) -> f64 {
        match self {
            SparkplugNumber::Int8(v, _) => f64::from(v),
            SparkplugNumber::Int16(v, _) => f64::from(v),
            SparkplugNumber::Int32(v) => f64::from(v),
            SparkplugNumber::Int64(v) => v as f64,
            SparkplugNumber::UInt32(v) => f64::from(v),
            SparkplugNumber::UInt64(v) => v as f64,
            SparkplugNumber::Float(v) => f64::from(v),
            SparkplugNumber::Double(v) => v,
            SparkplugNumber::Boolean(v) => f64::from(u8::from(v)),
        }
    }
}

fn sparkplug_number() -> impl Strategy<Value = SparkplugNumber> {
    prop_oneof![
        any::<(i8, bool)>().prop_map(|(v, wide)| SparkplugNumber::Int8(v, wide)),
        any::<(i16, bool)>().prop_map(|(v, wide)| SparkplugNumber::Int16(v, wide)),
        any::<i32>().prop_map(SparkplugNumber::Int32),
        any::<i64>().prop_map(SparkplugNumber::Int64),
        any::<u32>().prop_map(SparkplugNumber::UInt32),
        any::<u64>().prop_map(SparkplugNumber::UInt64),
        any::<u32>().prop_map(|bits| SparkplugNumber::Float(f32::from_bits(bits))),
        any::<u64>().prop_map(|bits| SparkplugNumber::Double(f64::from_bits(bits))),
        any::<bool>().prop_map(SparkplugNumber::Boolean),
    ]
}

/// Epoch milliseconds within the window of [`limits`].
fn millis_in_window() -> impl Strategy<Value = u64> {
    (NOW - MAX_AGE) as u64 / 1000..=(NOW + SKEW) as u64 / 1000
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn sparkplug_metrics_are_read_at_their_type_and_width_exactly(
        metrics in prop::collection::vec(
            (device_key(), sparkplug_number(), prop::option::of(millis_in_window())),
            0..12,
        ),
        payload_millis in prop::option::of(millis_in_window()),
        seq in 0u64..256,
    ) {
        let payload = Payload {
            timestamp: payload_millis,
            seq: Some(seq),
            metrics: metrics
                .iter()
                .map(|((key, _), number, millis)| {
                    let (datatype, value) = number.wire();
                    Metric {
                        name: Some(key.clone()),
                        timestamp: *millis,
                        datatype: Some(datatype as u32),
                        value: Some(value),
                        ..Metric::default()
                    }
                })
                .collect(),
            ..Payload::default()
        };
        let bytes = payload.encode_to_vec();
        let decoded = sparkplug::decode(&bytes, &limits()).unwrap();
        prop_assert_eq!(decoded.encode_to_vec(), bytes);
        for (metric, ((key, name), number, millis)) in decoded.metrics.iter().zip(&metrics) {
            prop_assert_eq!(sparkplug::metric_name(key), Ok(name.clone()));
            let expected = match number.value() {
                v if !v.is_finite() => Err(SkipReason::NonFinite),
                v if v.abs() > MAX_ABS => Err(SkipReason::OutOfRange),
                v => Ok(v.to_bits()),
            };
            let datatype = metric.datatype.unwrap() as i32;
            let read = sparkplug::metric_value(metric, datatype, name, &limits()).map(f64::to_bits);
            prop_assert_eq!(read, expected, "{:?}", number);
            let time = sparkplug::metric_time(metric, &decoded, NOW, &limits(), "metric").unwrap();
            let expected_time = match millis.or(payload_millis) {
                Some(millis) => (millis as i64 * 1000, false),
                None => (NOW, true),
            };
            prop_assert_eq!(time, expected_time);
        }
    }

    #[test]
    fn sparkplug_topics_are_read_back_and_nothing_else_parses(
        parts in prop::collection::vec("[A-Za-z0-9_.-]{1,20}", 3),
        message_type in prop::sample::select(MessageType::ALL.to_vec()),
        other in "[a-zA-Z0-9/ +#:_.-]{0,80}",
    ) {
        let [group, edge, device] = [&parts[0], &parts[1], &parts[2]];
        let device = message_type.is_device().then_some(device.as_str());
        let suffix = device.map(|device| format!("/{device}")).unwrap_or_default();
        let topic = format!("spBv1.0/{group}/{}/{edge}{suffix}", message_type.as_str());
        let parsed = sparkplug::parse_topic(&topic).unwrap();
        prop_assert_eq!(
            (parsed.group, parsed.message_type, parsed.edge, parsed.device),
            (group.as_str(), message_type, edge.as_str(), device)
        );
        // Whatever parses is exactly the topic its parts make.
        let other = format!("spBv1.0/{other}");
        if let Ok(parsed) = sparkplug::parse_topic(&other) {
            prop_assert!(is_valid_device_external_id(&parsed.device_id()));
            let suffix = parsed.device.map(|device| format!("/{device}")).unwrap_or_default();
            let rebuilt = format!(
                "spBv1.0/{}/{}/{}{suffix}",
                parsed.group,
                parsed.message_type.as_str(),
                parsed.edge
            );
            prop_assert_eq!(rebuilt, other);
        }
    }

    #[test]
    fn device_topics_are_read_back_and_nothing_else_parses(
        device in "[A-Za-z0-9_.:-]{1,64}",
        kind in prop::sample::select(TopicKind::ALL.to_vec()),
        other in "[a-zA-Z0-9/ +#:_.-]{0,80}",
    ) {
        let topic = device_topic("devices/eu", &device, kind);
        let parsed = parse_topic("devices/eu", &topic).unwrap();
        prop_assert_eq!((parsed.device_external_id, parsed.kind), (device.as_str(), kind));
        let other = format!("devices/eu/{other}");
        if let Ok(parsed) = parse_topic("devices/eu", &other) {
            let rebuilt = device_topic("devices/eu", parsed.device_external_id, parsed.kind);
            prop_assert_eq!(rebuilt, other);
        }
    }
}

proptest! {
    // Payloads of up to 600 kB each.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sparkplug_templates_nested_to_any_depth_are_refused_or_read(
        depth in prop_oneof![0usize..100, 0usize..50_000],
    ) {
        let result = sparkplug::decode(&nested_templates(depth), &limits());
        if depth <= MAX_TEMPLATE_NESTING {
            prop_assert_eq!(result.unwrap().metrics.len(), 1);
        } else {
            let rejection = result.unwrap_err();
            prop_assert_eq!(rejection.reason, RejectReason::InvalidPayload);
            prop_assert!(rejection.detail.contains("recursion limit"));
        }
    }
}

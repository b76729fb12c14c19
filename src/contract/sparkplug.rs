//! Sparkplug B (Eclipse Tahu): the topics and protobuf payloads of industrial edge nodes
//! and gateways, and what one metric becomes in forewarn's contract.
//!
//! Topics are `spBv1.0/{group}/{NBIRTH|NDATA|NDEATH}/{edge node}` and
//! `spBv1.0/{group}/{DBIRTH|DDATA|DDEATH}/{edge node}/{device}`. Payloads are decoded with
//! prost from the Tahu schema (`proto/sparkplug_b.proto`). Pure code like the rest of the
//! contract: the host application's state (births, aliases, sequence numbers, rebirth
//! requests) lives in `ingest::sparkplug`.
//!
//! Names: an edge node is the device `{group}:{edge}`, a device behind it
//! `{group}:{edge}:{device}`; a metric's name takes the catalogue's form (`Inputs/Motor
//! Temp` → `inputs_motor_temp`, [`super::snake_case`]).

use prost::Message;

use super::payload::{check_size, parse_timestamp};
pub use super::sparkplug_proto::payload::Metric;
pub use super::sparkplug_proto::payload::metric::Value as MetricValue;
pub use super::sparkplug_proto::{DataType, Payload};
use super::telemetry::check_number;
use super::{
    EpochMicros, RejectReason, Rejection, SkipReason, ValidationLimits,
    is_valid_device_external_id, snake_case,
};
use MetricValue as Value;

/// The first topic level of Sparkplug B.
pub const NAMESPACE: &str = "spBv1.0";
/// The birth/death sequence metric of NBIRTH and NDEATH.
pub const BD_SEQ: &str = "bdSeq";
/// The node control metric that asks an edge node to publish its births again.
pub const REBIRTH: &str = "Node Control/Rebirth";

/// The message types a host application reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    NBirth,
    NData,
    NDeath,
    DBirth,
    DData,
    DDeath,
}

impl MessageType {
    pub const ALL: [MessageType; 6] = [
        MessageType::NBirth,
        MessageType::NData,
        MessageType::NDeath,
        MessageType::DBirth,
        MessageType::DData,
        MessageType::DDeath,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::NBirth => "NBIRTH",
            MessageType::NData => "NDATA",
            MessageType::NDeath => "NDEATH",
            MessageType::DBirth => "DBIRTH",
            MessageType::DData => "DDATA",
            MessageType::DDeath => "DDEATH",
        }
    }

    /// Whether the topic names a device behind the edge node.
    pub fn is_device(self) -> bool {
        matches!(
            self,
            MessageType::DBirth | MessageType::DData | MessageType::DDeath
        )
    }
}

/// A parsed Sparkplug B topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    pub group: &'a str,
    pub message_type: MessageType,
    pub edge: &'a str,
    pub device: Option<&'a str>,
}

impl Topic<'_> {
    /// forewarn's device id for the edge node (`{group}:{edge}`).
    pub fn node_id(&self) -> String {
        format!("{}:{}", self.group, self.edge)
    }

    /// forewarn's device id for what the topic names: the device, or the edge node.
    pub fn device_id(&self) -> String {
        match self.device {
            Some(device) => format!("{}:{}:{device}", self.group, self.edge),
            None => self.node_id(),
        }
    }
}

/// The subscriptions of a host application: every message type it reads, of every group.
pub fn topic_filters() -> Vec<String> {
    MessageType::ALL
        .iter()
        .map(|kind| match kind.is_device() {
            true => format!("{NAMESPACE}/+/{}/+/+", kind.as_str()),
            false => format!("{NAMESPACE}/+/{}/+", kind.as_str()),
        })
        .collect()
}

/// Parses a topic of the namespace. The ids must make valid device ids (`[A-Za-z0-9_.:-]`,
/// at most 64 characters in forewarn's `{group}:{edge}:{device}` form).
pub fn parse_topic(topic: &str) -> Result<Topic<'_>, Rejection> {
    let bad = |what: &str| {
        Rejection::new(
            RejectReason::InvalidTopic,
            format!(
                "Sparkplug B topic `{}`: {what}",
                topic.chars().take(200).collect::<String>()
            ),
        )
    };
    let levels: Vec<&str> = topic.split('/').collect();
    if levels.first() != Some(&NAMESPACE) {
        return Err(bad("not in the spBv1.0 namespace"));
    }
    let message_type = match levels.get(2).copied() {
        Some("NBIRTH") => MessageType::NBirth,
        Some("NDATA") => MessageType::NData,
        Some("NDEATH") => MessageType::NDeath,
        Some("DBIRTH") => MessageType::DBirth,
        Some("DDATA") => MessageType::DData,
        Some("DDEATH") => MessageType::DDeath,
        _ => {
            return Err(bad(
                "not an NBIRTH, NDATA, NDEATH, DBIRTH, DDATA or DDEATH topic",
            ));
        }
    };
    let expected_levels = if message_type.is_device() { 5 } else { 4 };
    if levels.len() != expected_levels {
        return Err(bad("wrong number of levels"));
    }
    let parsed = Topic {
        group: levels[1],
        message_type,
        edge: levels[3],
        device: levels.get(4).copied(),
    };
    // `:` joins the parts of forewarn's id, so it may not be inside one: `g/NDATA/a:b`
    // and `g/DDATA/a/b` would be the same device.
    let parts = [Some(parsed.group), Some(parsed.edge), parsed.device];
    if parts.iter().flatten().any(|part| part.contains(':'))
        || !is_valid_device_external_id(&parsed.device_id())
    {
        return Err(bad(
            "group, edge node and device ids must be [A-Za-z0-9_.-], at most 64 characters together",
        ));
    }
    Ok(parsed)
}

/// Decodes a payload (size limit first).
pub fn decode(payload: &[u8], limits: &ValidationLimits) -> Result<Payload, Rejection> {
    check_size(payload, limits)?;
    Payload::decode(payload).map_err(|error| {
        Rejection::new(
            RejectReason::InvalidPayload,
            format!("not a Sparkplug B payload: {error}"),
        )
    })
}

/// Metrics that describe the protocol or the node, not the machine: the birth/death
/// sequence, node and device controls, properties.
pub fn is_protocol_metric(name: &str) -> bool {
    name == BD_SEQ
        || name.starts_with("Node Control/")
        || name.starts_with("Device Control/")
        || name.starts_with("Properties/")
        || name.starts_with("Node Info/")
}

/// The catalogue name of a Sparkplug metric name, or why it has none.
pub fn metric_name(name: &str) -> Result<String, SkipReason> {
    snake_case(name).ok_or(SkipReason::InvalidName)
}

/// A metric's value as a reading's, given its datatype (from the metric, or from its
/// birth certificate when a data message leaves it out). Integers are stored in Tahu's
/// unsigned fields as two's complement of their width; booleans become 0 and 1.
pub fn metric_value(
    metric: &Metric,
    datatype: i32,
    name: &str,
    limits: &ValidationLimits,
) -> Result<f64, SkipReason> {
    if metric.is_null == Some(true) {
        return Err(SkipReason::NotNumeric);
    }
    let datatype = DataType::try_from(datatype).unwrap_or(DataType::Unknown);
    let value = match (&metric.value, datatype) {
        (None, _) => return Err(SkipReason::NotNumeric),
        (Some(Value::IntValue(v)), DataType::Int8) => f64::from(*v as u8 as i8),
        (Some(Value::IntValue(v)), DataType::Int16) => f64::from(*v as u16 as i16),
        (Some(Value::IntValue(v)), DataType::Int32) => f64::from(*v as i32),
        (Some(Value::IntValue(v)), _) => f64::from(*v),
        (Some(Value::LongValue(_)), DataType::DateTime) => return Err(SkipReason::NotNumeric),
        (Some(Value::LongValue(v)), DataType::Int64) => *v as i64 as f64,
        (Some(Value::LongValue(v)), _) => *v as f64,
        (Some(Value::FloatValue(v)), _) => f64::from(*v),
        (Some(Value::DoubleValue(v)), _) => *v,
        (Some(Value::BooleanValue(v)), _) => f64::from(u8::from(*v)),
        (Some(Value::StringValue(_) | Value::BytesValue(_)), _) => {
            return Err(SkipReason::NotNumeric);
        }
        (Some(Value::DatasetValue(_) | Value::TemplateValue(_) | Value::ExtensionValue(_)), _) => {
            return Err(SkipReason::Nested);
        }
    };
    check_number(Some(name), value, limits)
}

/// A metric's time: its own timestamp, else the payload's (both epoch milliseconds), else
/// the receive time (flagged as estimated). Checked against the skew and age limits.
pub fn metric_time(
    metric: &Metric,
    payload: &Payload,
    received_at: EpochMicros,
    limits: &ValidationLimits,
    at: &str,
) -> Result<(EpochMicros, bool), Rejection> {
    let millis = metric.timestamp.or(payload.timestamp);
    let value = millis.map(|millis| serde_json::Value::from(millis.min(i64::MAX as u64)));
    parse_timestamp(value.as_ref(), received_at, limits, at)
}

/// The NCMD payload that asks an edge node to publish NBIRTH and its DBIRTHs again.
pub fn rebirth_request(now_millis: u64) -> Vec<u8> {
    Payload {
        timestamp: Some(now_millis),
        metrics: vec![Metric {
            name: Some(REBIRTH.to_string()),
            timestamp: Some(now_millis),
            datatype: Some(DataType::Boolean as u32),
            value: Some(Value::BooleanValue(true)),
            ..Metric::default()
        }],
        ..Payload::default()
    }
    .encode_to_vec()
}

/// The topic of an edge node's commands.
pub fn node_command_topic(group: &str, edge: &str) -> String {
    format!("{NAMESPACE}/{group}/NCMD/{edge}")
}

/// Limits for the Sparkplug tests here and in `ingest::sparkplug`: no age limit, so fixed
/// timestamps stay valid.
#[cfg(test)]
pub(crate) fn test_limits() -> ValidationLimits {
    ValidationLimits {
        max_payload_bytes: 65536,
        max_future_skew_micros: 300_000_000,
        max_age_micros: None,
        max_abs_value: 1e12,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ValidationLimits {
        test_limits()
    }

    #[test]
    fn topics_name_the_node_or_the_device_behind_it() {
        let topic = parse_topic("spBv1.0/plant1/DDATA/gw-7/pump.3").unwrap();
        assert_eq!(topic.message_type, MessageType::DData);
        assert_eq!(topic.device_id(), "plant1:gw-7:pump.3");
        assert_eq!(topic.node_id(), "plant1:gw-7");
        let node = parse_topic("spBv1.0/plant1/NBIRTH/gw-7").unwrap();
        assert_eq!(node.device, None);
        assert_eq!(node.device_id(), "plant1:gw-7");
        for bad in [
            "spBv1.0/plant1/NCMD/gw-7",
            "spBv1.0/plant1/DDATA/gw-7",
            "spBv1.0/plant1/NDATA/gw-7/extra",
            "spBv1.0/plant 1/NDATA/gw-7",
            "spBv1.0/plant1/NDATA/gw:7",
            "spAv1.0/plant1/NDATA/gw-7",
        ] {
            let rejection = parse_topic(bad).unwrap_err();
            assert_eq!(rejection.reason, RejectReason::InvalidTopic, "{bad}");
        }
        assert_eq!(topic_filters().len(), 6);
        assert!(topic_filters().contains(&"spBv1.0/+/DDATA/+/+".to_string()));
    }

    fn metric(value: Value, datatype: DataType) -> Metric {
        Metric {
            value: Some(value),
            datatype: Some(datatype as u32),
            ..Metric::default()
        }
    }

    #[test]
    fn signed_integers_are_read_at_their_width() {
        let read = |value, datatype: DataType| {
            metric_value(&metric(value, datatype), datatype as i32, "x", &limits())
        };
        assert_eq!(read(Value::IntValue(0xFF), DataType::Int8), Ok(-1.0));
        assert_eq!(read(Value::IntValue(0xFFFE), DataType::Int16), Ok(-2.0));
        assert_eq!(read(Value::IntValue(u32::MAX), DataType::Int32), Ok(-1.0));
        assert_eq!(
            read(Value::IntValue(u32::MAX), DataType::UInt32),
            Ok(4294967295.0)
        );
        assert_eq!(read(Value::LongValue(u64::MAX), DataType::Int64), Ok(-1.0));
        assert_eq!(read(Value::BooleanValue(true), DataType::Boolean), Ok(1.0));
        assert_eq!(read(Value::FloatValue(1.5), DataType::Float), Ok(1.5));
        assert_eq!(
            read(Value::StringValue("1.2".into()), DataType::String),
            Err(SkipReason::NotNumeric)
        );
        assert_eq!(
            read(Value::LongValue(1_700_000_000_000), DataType::DateTime),
            Err(SkipReason::NotNumeric)
        );
        assert_eq!(
            read(Value::DoubleValue(f64::NAN), DataType::Double),
            Err(SkipReason::NonFinite)
        );
        let null = Metric {
            is_null: Some(true),
            ..metric(Value::DoubleValue(1.0), DataType::Double)
        };
        assert_eq!(
            metric_value(&null, DataType::Double as i32, "x", &limits()),
            Err(SkipReason::NotNumeric)
        );
    }

    #[test]
    fn a_rebirth_request_round_trips() {
        let decoded = decode(&rebirth_request(1_700_000_000_000), &limits()).unwrap();
        assert_eq!(decoded.metrics.len(), 1);
        assert_eq!(decoded.metrics[0].name.as_deref(), Some(REBIRTH));
        assert_eq!(decoded.metrics[0].value, Some(Value::BooleanValue(true)));
        assert_eq!(
            decode(b"\xff\xff\xff", &limits()).unwrap_err().reason,
            RejectReason::InvalidPayload
        );
        assert_eq!(
            metric_name("Inputs/Motor Temp"),
            Ok("inputs_motor_temp".into())
        );
        assert!(is_protocol_metric("Node Control/Rebirth"));
    }
}

//! The host's state machine, on payloads encoded with prost.
use super::*;
use crate::contract::sparkplug::{DataType, Metric, MetricValue};
use prost::Message;

fn limits() -> ValidationLimits {
    sparkplug::test_limits()
}

const NOW: EpochMicros = 1_700_000_000_000_000;

fn payload(seq: Option<u64>, metrics: Vec<Metric>) -> Vec<u8> {
    Payload {
        timestamp: Some(1_700_000_000_000),
        seq,
        metrics,
        ..Payload::default()
    }
    .encode_to_vec()
}

fn named(name: &str, alias: u64, datatype: DataType, value: MetricValue) -> Metric {
    Metric {
        name: Some(name.into()),
        alias: Some(alias),
        datatype: Some(datatype as u32),
        value: Some(value),
        ..Metric::default()
    }
}

fn by_alias(alias: u64, value: MetricValue) -> Metric {
    Metric {
        alias: Some(alias),
        value: Some(value),
        ..Metric::default()
    }
}

fn readings(outcome: &Outcome) -> Vec<(String, String, f64)> {
    outcome
        .parsed
        .iter()
        .filter_map(|parsed| match parsed {
            Parsed::Telemetry { device, message } => Some(
                message
                    .readings
                    .iter()
                    .map(|r| (device.clone(), r.metric.clone(), r.value))
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn aliases_declared_at_birth_name_the_data() {
    let mut host = SparkplugHost::new(limits());
    let birth = host.handle(
        "spBv1.0/g/NBIRTH/e",
        &payload(
            Some(0),
            vec![
                named("bdSeq", 0, DataType::Int64, MetricValue::LongValue(3)),
                named(
                    "Supply Voltage",
                    1,
                    DataType::Int16,
                    MetricValue::IntValue(0xFFFF),
                ),
            ],
        ),
        NOW,
    );
    assert!(birth.rebirth.is_none());
    assert_eq!(
        readings(&birth),
        vec![("g:e".into(), "supply_voltage".into(), -1.0)]
    );
    let data = host.handle(
        "spBv1.0/g/NDATA/e",
        &payload(
            Some(1),
            vec![
                by_alias(1, MetricValue::IntValue(0xFFFE)),
                by_alias(9, MetricValue::IntValue(1)),
            ],
        ),
        NOW,
    );
    assert_eq!(
        readings(&data),
        vec![("g:e".into(), "supply_voltage".into(), -2.0)]
    );
    let Parsed::Telemetry { message, .. } = &data.parsed[0] else {
        panic!("telemetry expected");
    };
    assert_eq!(
        message.skipped.first.as_ref().unwrap().0,
        crate::contract::SkipReason::UnknownAlias
    );
    assert!(data.rebirth.is_none());

    // A gap in seq asks for a rebirth, once per interval, and keeps what it can read.
    let gap = host.handle(
        "spBv1.0/g/NDATA/e",
        &payload(Some(5), vec![by_alias(1, MetricValue::IntValue(7))]),
        NOW,
    );
    assert_eq!(readings(&gap).len(), 1);
    let (topic, request) = gap.rebirth.expect("a rebirth request");
    assert_eq!(topic, "spBv1.0/g/NCMD/e");
    let request = Payload::decode(request.as_slice()).unwrap();
    assert_eq!(request.metrics[0].name.as_deref(), Some(sparkplug::REBIRTH));
    let again = host.handle(
        "spBv1.0/g/NDATA/e",
        &payload(Some(9), vec![by_alias(1, MetricValue::IntValue(7))]),
        NOW,
    );
    assert!(again.rebirth.is_none(), "rate-limited");
}

#[test]
fn a_new_node_birth_takes_its_earlier_devices_offline_until_they_are_born_again() {
    let mut host = SparkplugHost::new(limits());
    let bd = vec![named(
        "bdSeq",
        0,
        DataType::Int64,
        MetricValue::LongValue(1),
    )];
    host.handle("spBv1.0/g/NBIRTH/e", &payload(Some(0), bd.clone()), NOW);
    host.handle("spBv1.0/g/DBIRTH/e/d", &payload(Some(1), vec![]), NOW);
    let rebirth = host.handle("spBv1.0/g/NBIRTH/e", &payload(Some(0), bd), NOW);
    let statuses: Vec<(&str, DeviceStatus)> = rebirth
        .parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Status { device, status } => Some((device.as_str(), *status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("g:e:d", DeviceStatus::Offline),
            ("g:e", DeviceStatus::Online)
        ]
    );
}

#[test]
fn data_before_birth_is_dead_lettered_and_asks_for_a_rebirth() {
    let mut host = SparkplugHost::new(limits());
    let outcome = host.handle(
        "spBv1.0/g/DDATA/e/d",
        &payload(Some(4), vec![by_alias(1, MetricValue::IntValue(1))]),
        NOW,
    );
    assert!(matches!(
        &outcome.parsed[..],
        [Parsed::Rejected { rejection, .. }] if rejection.reason == RejectReason::SparkplugNotBorn
    ));
    assert!(outcome.rebirth.is_some());
}

#[test]
fn a_stale_death_changes_nothing_and_a_current_one_takes_the_devices_offline() {
    let mut host = SparkplugHost::new(limits());
    let bd = |n| {
        vec![named(
            "bdSeq",
            0,
            DataType::Int64,
            MetricValue::LongValue(n),
        )]
    };
    host.handle("spBv1.0/g/NBIRTH/e", &payload(Some(0), bd(2)), NOW);
    host.handle(
        "spBv1.0/g/DBIRTH/e/d",
        &payload(
            Some(1),
            vec![named("T", 5, DataType::Float, MetricValue::FloatValue(1.0))],
        ),
        NOW,
    );
    let stale = host.handle("spBv1.0/g/NDEATH/e", &payload(None, bd(1)), NOW);
    assert!(stale.parsed.is_empty());
    let death = host.handle("spBv1.0/g/NDEATH/e", &payload(None, bd(2)), NOW);
    let offline: Vec<_> = death
        .parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Status {
                device,
                status: DeviceStatus::Offline,
            } => Some(device.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(offline, vec!["g:e", "g:e:d"]);
    // A hostile seq does not overflow.
    host.handle("spBv1.0/g/NBIRTH/e", &payload(Some(u64::MAX), bd(2)), NOW);
    // After the death, data waits for a new birth.
    let after = host.handle(
        "spBv1.0/g/DDATA/e/d",
        &payload(Some(2), vec![by_alias(5, MetricValue::FloatValue(2.0))]),
        NOW,
    );
    assert!(after.rebirth.is_some());
}

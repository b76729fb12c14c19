//! Sparkplug B host application: what ingest remembers of each edge node to read its
//! messages (births, metric aliases, sequence numbers) and when it asks for a rebirth.
//!
//! One session reads the whole Sparkplug stream in arrival order (it is never a shared
//! subscription: sequence numbers count every message of an edge node). Births register
//! the node and its devices (auto-registration) and their metrics in the catalogue
//! (through the readings they carry) and mark them online; data becomes telemetry; a death
//! marks them offline. Data before a birth, an unknown device, or a gap in `seq` asks the
//! edge node for a rebirth (NCMD `Node Control/Rebirth`, at most once per node per
//! [`REBIRTH_INTERVAL`]); data that cannot be read without its birth is dead-lettered
//! (`sparkplug_not_born`), never guessed.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::contract::sparkplug::{self, MessageType, Payload, Topic};
use crate::contract::{
    DeviceStatus, EpochMicros, RejectReason, Rejection, TelemetryMessage, ValidationLimits,
};

use super::writer::Parsed;

/// A node is asked for a rebirth at most this often.
pub(super) const REBIRTH_INTERVAL: Duration = Duration::from_secs(5);
/// Edge nodes remembered; the least recently heard from is forgotten beyond this (its
/// next message asks for a rebirth).
const MAX_NODES: usize = 10_000;
/// Aliases (and named datatypes) remembered per edge node with its devices; a birth
/// beyond this is read, but data that uses the further aliases is not.
const MAX_ALIASES_PER_NODE: usize = 10_000;
/// Aliases remembered over all nodes: beyond it the least recently heard nodes are
/// forgotten. With [`MAX_NODES`] it bounds the host's memory to tens of MiB.
const MAX_ALIASES: usize = 500_000;
/// Devices remembered per edge node: one NDEATH becomes at most this many status rows
/// (held beyond the session's pending budget until they commit). A DBIRTH beyond it is
/// stored, but the device's data waits for a rebirth.
const MAX_DEVICES_PER_NODE: usize = 10_000;

/// What a birth declared about one metric.
#[derive(Debug, Clone)]
struct Declared {
    name: String,
    datatype: i32,
}

#[derive(Debug, Default)]
struct Node {
    /// The `bdSeq` of the NBIRTH in force: an NDEATH with another one is stale (the will
    /// of an earlier connection) and changes nothing.
    bd_seq: Option<u64>,
    /// The `seq` the next message must carry.
    next_seq: u64,
    /// Alias → metric, for the node and its devices (Sparkplug aliases are unique across
    /// both).
    aliases: HashMap<u64, Declared>,
    /// (device, metric name) → datatype, for data that names a metric without its type.
    datatypes: HashMap<(Option<String>, String), i32>,
    /// Devices whose DBIRTH came after the node's NBIRTH.
    devices: HashSet<String>,
    last_heard: u64,
}

/// What one message comes to.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// In order; empty when the message changes nothing (a stale death).
    pub parsed: Vec<Parsed>,
    /// An NCMD to publish: topic and payload.
    pub rebirth: Option<(String, Vec<u8>)>,
}

pub(super) struct SparkplugHost {
    nodes: HashMap<(String, String), Node>,
    /// Aliases remembered over all nodes.
    n_aliases: usize,
    /// When each node was last asked for a rebirth (at most [`MAX_NODES`] entries).
    asked: HashMap<(String, String), Instant>,
    last_sweep: Instant,
    limits: ValidationLimits,
    clock: u64,
}

impl SparkplugHost {
    pub fn new(limits: ValidationLimits) -> SparkplugHost {
        SparkplugHost {
            nodes: HashMap::new(),
            n_aliases: 0,
            asked: HashMap::new(),
            last_sweep: Instant::now(),
            limits,
            clock: 0,
        }
    }

    /// Reads one message of the namespace.
    pub fn handle(&mut self, topic: &str, payload: &[u8], received_at: EpochMicros) -> Outcome {
        let topic = match sparkplug::parse_topic(topic) {
            Ok(topic) => topic,
            Err(rejection) => return rejected(rejection),
        };
        let payload = match sparkplug::decode(payload, &self.limits) {
            Ok(payload) => payload,
            Err(rejection) => return rejected(rejection),
        };
        self.clock += 1;
        let key = (topic.group.to_string(), topic.edge.to_string());
        if let Some(node) = self.nodes.get_mut(&key) {
            node.last_heard = self.clock;
        }
        let outcome = match topic.message_type {
            MessageType::NBirth => self.node_birth(&topic, key, &payload, received_at),
            MessageType::NDeath => self.node_death(&topic, &key, &payload),
            _ => self.node_message(&topic, key, &payload, received_at),
        };
        self.enforce_bounds();
        outcome
    }

    fn node_birth(
        &mut self,
        topic: &Topic<'_>,
        key: (String, String),
        payload: &Payload,
        received_at: EpochMicros,
    ) -> Outcome {
        // A new birth replaces everything known of the node. Its devices are born again
        // after it: until then they are offline (one removed from the gateway meanwhile
        // never is).
        let previous = self.forget(&key);
        let mut node = Node {
            bd_seq: bd_seq(payload),
            next_seq: next_seq(payload.seq).unwrap_or(0),
            last_heard: self.clock,
            ..Node::default()
        };
        declare(&mut node, None, payload);
        let telemetry = read_metrics(&node, None, payload, received_at, &self.limits);
        self.remember(key, node);
        let device = topic.node_id();
        let mut outcome = Outcome::default();
        outcome
            .parsed
            .extend(devices_offline(topic, previous.map(|node| node.devices)));
        outcome.parsed.push(Parsed::Status {
            device: device.clone(),
            status: DeviceStatus::Online,
        });
        push_telemetry(&mut outcome, device, telemetry);
        outcome
    }

    /// Takes a node out of memory, keeping the alias count.
    fn forget(&mut self, key: &(String, String)) -> Option<Node> {
        let node = self.nodes.remove(key)?;
        self.n_aliases = self.n_aliases.saturating_sub(node.aliases.len());
        Some(node)
    }

    /// Keeps a node, forgetting the least recently heard ones beyond the bounds.
    fn remember(&mut self, key: (String, String), node: Node) {
        self.n_aliases += node.aliases.len();
        self.nodes.insert(key, node);
        self.enforce_bounds();
    }

    /// Forgets the least recently heard nodes while over [`MAX_NODES`] or [`MAX_ALIASES`]
    /// (never the last one left).
    fn enforce_bounds(&mut self) {
        while (self.nodes.len() > MAX_NODES || self.n_aliases > MAX_ALIASES) && self.nodes.len() > 1
        {
            let Some(oldest) = self
                .nodes
                .iter()
                .min_by_key(|(_, node)| node.last_heard)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            tracing::warn!(
                group = oldest.0,
                edge = oldest.1,
                "Sparkplug host at its memory bound: the least recently heard edge node is forgotten (its next message asks for a rebirth)"
            );
            self.forget(&oldest);
        }
    }

    fn node_death(
        &mut self,
        topic: &Topic<'_>,
        key: &(String, String),
        payload: &Payload,
    ) -> Outcome {
        let Some(node) = self.nodes.get(key) else {
            // Nothing known of it: it is offline all the same.
            return Outcome {
                parsed: vec![offline(topic.node_id())],
                rebirth: None,
            };
        };
        if let (Some(born), Some(died)) = (node.bd_seq, bd_seq(payload))
            && born != died
        {
            tracing::debug!(node = %topic.node_id(), born, died, "stale Sparkplug NDEATH ignored");
            return Outcome::default();
        }
        let node = self.forget(key);
        let mut parsed = vec![offline(topic.node_id())];
        parsed.extend(devices_offline(topic, node.map(|node| node.devices)));
        Outcome {
            parsed,
            rebirth: None,
        }
    }

    /// NDATA, DBIRTH, DDATA and DDEATH: they need the node's birth, and carry `seq`.
    fn node_message(
        &mut self,
        topic: &Topic<'_>,
        key: (String, String),
        payload: &Payload,
        received_at: EpochMicros,
    ) -> Outcome {
        let Some(node) = self.nodes.get_mut(&key) else {
            let rebirth = self.ask_rebirth(&key, "data before the node's birth");
            return Outcome {
                parsed: vec![not_born(topic, "no NBIRTH seen from this edge node")],
                rebirth,
            };
        };
        let mut gap = None;
        match payload.seq {
            Some(seq) if seq % 256 == node.next_seq => {}
            Some(seq) => gap = Some((node.next_seq, seq)),
            None => gap = Some((node.next_seq, u64::MAX)),
        }
        node.next_seq = next_seq(payload.seq).unwrap_or(node.next_seq);
        let device = topic.device.map(str::to_string);
        let mut outcome = Outcome::default();
        match (topic.message_type, &device) {
            (MessageType::DBirth, Some(name)) => {
                if node.devices.len() < MAX_DEVICES_PER_NODE {
                    node.devices.insert(name.clone());
                }
                let aliases_before = node.aliases.len();
                declare(node, device.as_deref(), payload);
                self.n_aliases += node.aliases.len() - aliases_before;
                let telemetry =
                    read_metrics(node, device.as_deref(), payload, received_at, &self.limits);
                outcome.parsed.push(Parsed::Status {
                    device: topic.device_id(),
                    status: DeviceStatus::Online,
                });
                push_telemetry(&mut outcome, topic.device_id(), telemetry);
            }
            (MessageType::DDeath, Some(name)) => {
                node.devices.remove(name);
                outcome.parsed.push(offline(topic.device_id()));
            }
            (MessageType::DData, Some(name)) if !node.devices.contains(name) => {
                outcome
                    .parsed
                    .push(not_born(topic, "no DBIRTH seen from this device"));
                outcome.rebirth = self.ask_rebirth(&key, "data before the device's birth");
                return outcome;
            }
            _ => {
                let telemetry =
                    read_metrics(node, device.as_deref(), payload, received_at, &self.limits);
                push_telemetry(&mut outcome, topic.device_id(), telemetry);
            }
        }
        if let Some((expected, got)) = gap {
            tracing::info!(
                node = %topic.node_id(),
                expected,
                got = ?(got != u64::MAX).then_some(got),
                "Sparkplug sequence gap: asking for a rebirth"
            );
            outcome.rebirth = self.ask_rebirth(&key, "sequence gap");
        }
        outcome
    }

    /// The NCMD that asks for a rebirth, unless one was sent within [`REBIRTH_INTERVAL`].
    fn ask_rebirth(&mut self, key: &(String, String), why: &str) -> Option<(String, Vec<u8>)> {
        let now = Instant::now();
        if self
            .asked
            .get(key)
            .is_some_and(|at| now.duration_since(*at) < REBIRTH_INTERVAL)
        {
            return None;
        }
        if self.asked.len() >= MAX_NODES {
            // Swept at most once a second; while it stays full (a flood of unknown node
            // names) no more requests go out, rather than a sweep per message.
            if now.duration_since(self.last_sweep) >= Duration::from_secs(1) {
                self.last_sweep = now;
                self.asked
                    .retain(|_, at| now.duration_since(*at) < REBIRTH_INTERVAL);
            }
            if self.asked.len() >= MAX_NODES {
                return None;
            }
        }
        self.asked.insert(key.clone(), now);
        tracing::debug!(
            group = key.0,
            edge = key.1,
            why,
            "Sparkplug rebirth requested"
        );
        let millis = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
        Some((
            sparkplug::node_command_topic(&key.0, &key.1),
            sparkplug::rebirth_request(millis),
        ))
    }
}

/// The `seq` after this one (Sparkplug counts 0–255 and wraps).
fn next_seq(seq: Option<u64>) -> Option<u64> {
    seq.map(|seq| (seq % 256 + 1) % 256)
}

/// Offline rows for the devices a node had, in a stable order.
fn devices_offline(topic: &Topic<'_>, devices: Option<HashSet<String>>) -> Vec<Parsed> {
    let mut devices: Vec<String> = devices.unwrap_or_default().into_iter().collect();
    devices.sort();
    devices
        .into_iter()
        .map(|device| offline(format!("{}:{device}", topic.node_id())))
        .collect()
}

fn bd_seq(payload: &Payload) -> Option<u64> {
    payload
        .metrics
        .iter()
        .find(|metric| metric.name.as_deref() == Some(sparkplug::BD_SEQ))
        .and_then(|metric| match metric.value {
            Some(sparkplug::MetricValue::LongValue(v)) => Some(v),
            Some(sparkplug::MetricValue::IntValue(v)) => Some(u64::from(v)),
            _ => None,
        })
}

/// Remembers the aliases and datatypes a birth declares.
fn declare(node: &mut Node, device: Option<&str>, payload: &Payload) {
    for metric in &payload.metrics {
        let (Some(name), Some(datatype)) = (&metric.name, metric.datatype) else {
            continue;
        };
        let datatype = i32::try_from(datatype).unwrap_or_default();
        if let Some(alias) = metric.alias
            && (node.aliases.len() < MAX_ALIASES_PER_NODE || node.aliases.contains_key(&alias))
        {
            node.aliases.insert(
                alias,
                Declared {
                    name: name.clone(),
                    datatype,
                },
            );
        }
        if node.datatypes.len() < MAX_ALIASES_PER_NODE {
            node.datatypes
                .insert((device.map(str::to_string), name.clone()), datatype);
        }
    }
}

/// The readings of a birth or data message: every numeric metric, by name or alias.
fn read_metrics(
    node: &Node,
    device: Option<&str>,
    payload: &Payload,
    received_at: EpochMicros,
    limits: &ValidationLimits,
) -> Result<TelemetryMessage, Rejection> {
    let mut message = TelemetryMessage::default();
    for (metric_idx, metric) in payload.metrics.iter().enumerate() {
        let at = format!("metric {metric_idx}");
        let declared = metric.alias.and_then(|alias| node.aliases.get(&alias));
        let Some(raw_name) = metric.name.as_deref().or(declared.map(|d| d.name.as_str())) else {
            message.skipped.push(
                crate::contract::SkipReason::UnknownAlias,
                &at,
                &format!("alias {}", metric.alias.unwrap_or_default()),
            );
            continue;
        };
        if sparkplug::is_protocol_metric(raw_name) {
            continue;
        }
        let datatype = metric
            .datatype
            .and_then(|d| i32::try_from(d).ok())
            .filter(|d| *d != 0)
            .or(declared.map(|d| d.datatype))
            .or_else(|| {
                node.datatypes
                    .get(&(device.map(str::to_string), raw_name.to_string()))
                    .copied()
            })
            .unwrap_or_default();
        let value = sparkplug::metric_name(raw_name).and_then(|name| {
            Ok((
                sparkplug::metric_value(metric, datatype, &name, limits)?,
                name,
            ))
        });
        let (value, name) = match value {
            Ok(read) => read,
            Err(reason) => {
                message.skipped.push(reason, &at, raw_name);
                continue;
            }
        };
        let (time, time_estimated) =
            sparkplug::metric_time(metric, payload, received_at, limits, &at)?;
        message.readings.push(crate::contract::Reading {
            time,
            time_estimated,
            metric: name,
            value,
        });
    }
    Ok(message)
}

fn push_telemetry(
    outcome: &mut Outcome,
    device: String,
    telemetry: Result<TelemetryMessage, Rejection>,
) {
    match telemetry {
        Ok(message) if !message.readings.is_empty() => {
            outcome.parsed.push(Parsed::Telemetry { device, message });
        }
        Ok(message) => outcome.parsed.push(Parsed::Ignored {
            skipped: message.skipped,
        }),
        Err(rejection) => outcome.parsed.push(Parsed::Rejected {
            kind: None,
            rejection,
        }),
    }
}

fn offline(device: String) -> Parsed {
    Parsed::Status {
        device,
        status: DeviceStatus::Offline,
    }
}

fn not_born(topic: &Topic<'_>, why: &str) -> Parsed {
    Parsed::Rejected {
        kind: None,
        rejection: Rejection::new(
            RejectReason::SparkplugNotBorn,
            format!(
                "{} of {}: {why}",
                topic.message_type.as_str(),
                topic.device_id()
            ),
        ),
    }
}

fn rejected(rejection: Rejection) -> Outcome {
    Outcome {
        parsed: vec![Parsed::Rejected {
            kind: None,
            rejection,
        }],
        rebirth: None,
    }
}

#[cfg(test)]
mod tests;

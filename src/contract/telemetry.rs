//! Telemetry payloads: parsing and validating what devices send, and writing it for
//! publishers.

use serde_json::{Map, Value};

use super::payload::{check_size, parse_json, parse_timestamp};
use super::{EpochMicros, RejectReason, Rejection, ValidationLimits, format_timestamp};

/// Metric names are 1–64 characters of `[a-z0-9_]`.
pub fn is_valid_metric_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// One sample of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub time: EpochMicros,
    /// The payload had no `ts`: `time` is the receive time.
    pub time_estimated: bool,
    pub metric: String,
    pub value: f64,
}

/// Why one field of a telemetry sample was skipped while the rest of the message was kept.
/// The string form labels `forewarn_ingest_skipped_fields_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A string or null where a number or boolean belongs (`"fw": "1.2"`).
    NotNumeric,
    /// An object or an array where a number or boolean belongs.
    Nested,
    /// A key beside `ts`/`seq`/`metrics` in forewarn's own form.
    UnknownKey,
    /// A name that is not `[a-z0-9_]{1,64}`.
    InvalidName,
    /// A string spelling NaN or infinity.
    NonFinite,
    /// A number beyond `ingest.max_abs_value`.
    OutOfRange,
    /// A Sparkplug B metric sent by an alias its birth certificate did not declare.
    UnknownAlias,
}

impl SkipReason {
    pub const ALL: [SkipReason; 7] = [
        SkipReason::NotNumeric,
        SkipReason::Nested,
        SkipReason::UnknownKey,
        SkipReason::InvalidName,
        SkipReason::NonFinite,
        SkipReason::OutOfRange,
        SkipReason::UnknownAlias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotNumeric => "not_numeric",
            SkipReason::Nested => "nested",
            SkipReason::UnknownKey => "unknown_key",
            SkipReason::InvalidName => "invalid_name",
            SkipReason::NonFinite => "non_finite",
            SkipReason::OutOfRange => "out_of_range",
            SkipReason::UnknownAlias => "unknown_alias",
        }
    }

    /// The dead-letter reason when every field of a message was skipped and this was the
    /// first reason: the message carried nothing usable.
    fn rejection(self) -> RejectReason {
        match self {
            SkipReason::NotNumeric
            | SkipReason::Nested
            | SkipReason::UnknownKey
            | SkipReason::UnknownAlias => RejectReason::InvalidPayload,
            SkipReason::InvalidName => RejectReason::InvalidMetricName,
            SkipReason::NonFinite => RejectReason::NonFiniteValue,
            SkipReason::OutOfRange => RejectReason::ValueOutOfRange,
        }
    }
}

/// The fields a message lost while the rest of it was kept: a count per reason, and the
/// first one named (bounded, whatever the payload holds).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SkippedFields {
    pub counts: [u32; SkipReason::ALL.len()],
    /// The first skipped field: its reason and where it was (`sample 0: \`fw\``).
    pub first: Option<(SkipReason, String)>,
}

impl SkippedFields {
    /// Counts a skipped field; the first one is named (`at`: where it was).
    pub fn push(&mut self, reason: SkipReason, at: &str, name: &str) {
        let reason_idx = SkipReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or_default();
        self.counts[reason_idx] = self.counts[reason_idx].saturating_add(1);
        if self.first.is_none() {
            self.first = Some((reason, format!("{at}: `{}`", shorten(name))));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    /// `(reason, count)` for every reason that skipped a field.
    pub fn iter(&self) -> impl Iterator<Item = (SkipReason, u32)> + '_ {
        SkipReason::ALL
            .iter()
            .zip(self.counts)
            .filter(|(_, n)| *n > 0)
            .map(|(reason, n)| (*reason, n))
    }
}

/// A parsed telemetry message: every reading it carries, the device's `seq` if sent, and
/// the fields it skipped.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TelemetryMessage {
    pub readings: Vec<Reading>,
    /// Smallest and largest `seq` of the message's samples, when the device sends one.
    pub seq_range: Option<(u64, u64)>,
    pub skipped: SkippedFields,
}

/// The forms one sample may take.
enum Form<'a> {
    /// forewarn's own: `{"ts"?, "seq"?, "metrics": {…}}`; other keys are skipped.
    Own(&'a Map<String, Value>),
    /// ThingsBoard's `{"ts": ms, "values": {…}}` (exactly those two keys).
    Values(&'a Map<String, Value>),
    /// A flat `{"name": value, …}` (ThingsBoard without a time, Telegraf's JSON): every key
    /// but `ts` and `seq` is a metric; `ts`, when present, is the time, `seq` the counter.
    Flat,
}

fn form<'a>(fields: &'a Map<String, Value>, at: &str) -> Result<Form<'a>, Rejection> {
    let shape = |what: &str| Rejection::new(RejectReason::InvalidPayload, format!("{at}: {what}"));
    if let Some(metrics) = fields.get("metrics") {
        return match metrics {
            Value::Object(metrics) => Ok(Form::Own(metrics)),
            _ => Err(shape("`metrics` must be an object")),
        };
    }
    if let Some(values) = fields.get("values")
        && fields.keys().all(|k| k == "ts" || k == "values")
    {
        return match values {
            Value::Object(values) => Ok(Form::Values(values)),
            _ => Err(shape("`values` must be an object")),
        };
    }
    Ok(Form::Flat)
}

/// Parses and validates a telemetry payload: one sample or an array of them, each in any
/// accepted form (forewarn's, ThingsBoard's `ts`+`values`, or flat). A field that cannot be
/// a reading is skipped and counted; a message is refused only when its shape or a
/// timestamp is wrong, or when no field in it is usable.
pub fn parse_telemetry(
    payload: &[u8],
    received_at: EpochMicros,
    limits: &ValidationLimits,
) -> Result<TelemetryMessage, Rejection> {
    check_size(payload, limits)?;
    let samples = match parse_json(payload)? {
        Value::Array(samples) => samples,
        sample @ Value::Object(_) => vec![sample],
        _ => {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                "expected an object or an array of objects",
            ));
        }
    };
    if samples.is_empty() {
        return Err(Rejection::new(RejectReason::InvalidPayload, "empty array"));
    }
    let mut message = TelemetryMessage::default();
    for (sample_idx, sample) in samples.iter().enumerate() {
        let at = format!("sample {sample_idx}");
        let Value::Object(fields) = sample else {
            return Err(Rejection::new(
                RejectReason::InvalidPayload,
                format!("{at}: not an object"),
            ));
        };
        let form = form(fields, &at)?;
        // Samples without `ts` in one array keep their order instead of collapsing onto one
        // timestamp: sample i is stamped i µs after the receive time.
        let (time, time_estimated) = parse_timestamp(
            fields.get("ts"),
            received_at + sample_idx as EpochMicros,
            limits,
            &at,
        )?;
        // forewarn's own form names metrics as the catalogue does; the others carry what
        // devices already send (`batteryLevel`, `Motor Temp`), taken in snake case.
        let native = matches!(form, Form::Own(_));
        if matches!(form, Form::Own(_) | Form::Flat) {
            message.seq_range = merge_seq(message.seq_range, fields.get("seq"), &at)?;
        }
        let metrics: Box<dyn Iterator<Item = (&String, &Value)>> = match form {
            Form::Own(metrics) => {
                for name in fields
                    .keys()
                    .filter(|k| !matches!(k.as_str(), "ts" | "metrics" | "seq"))
                {
                    message.skipped.push(SkipReason::UnknownKey, &at, name);
                }
                Box::new(metrics.iter())
            }
            Form::Values(values) => Box::new(values.iter()),
            Form::Flat => Box::new(
                fields
                    .iter()
                    .filter(|(name, _)| !matches!(name.as_str(), "ts" | "seq")),
            ),
        };
        for (name, value) in metrics {
            let metric = if native {
                Some(name.clone())
            } else {
                snake_case(name)
            };
            match reading_value(metric.as_deref(), value, limits) {
                Ok(value) => message.readings.push(Reading {
                    time,
                    time_estimated,
                    metric: metric.unwrap_or_default(),
                    value,
                }),
                Err(reason) => message.skipped.push(reason, &at, name),
            }
        }
    }
    if message.readings.is_empty() {
        return Err(match &message.skipped.first {
            Some((reason, detail)) => Rejection::new(
                reason.rejection(),
                format!("no usable field ({}: {detail})", reason.as_str()),
            ),
            None => Rejection::new(RejectReason::InvalidPayload, "no metrics"),
        });
    }
    Ok(message)
}

fn merge_seq(
    range: Option<(u64, u64)>,
    seq: Option<&Value>,
    at: &str,
) -> Result<Option<(u64, u64)>, Rejection> {
    match seq {
        None | Some(Value::Null) => Ok(range),
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            let seq = n.as_u64().unwrap_or_default();
            Ok(Some(match range {
                Some((low, high)) => (low.min(seq), high.max(seq)),
                None => (seq, seq),
            }))
        }
        Some(_) => Err(Rejection::new(
            RejectReason::InvalidPayload,
            format!("{at}: `seq` must be a non-negative integer"),
        )),
    }
}

/// One field as a reading's value, or why it is skipped (`name` is `None` when it has no
/// catalogue form).
fn reading_value(
    name: Option<&str>,
    value: &Value,
    limits: &ValidationLimits,
) -> Result<f64, SkipReason> {
    let value = match value {
        Value::Number(number) => number.as_f64().ok_or(SkipReason::OutOfRange)?,
        Value::Bool(flag) => f64::from(u8::from(*flag)),
        // JSON has no NaN or Infinity; devices that print them produce strings or bare
        // words, which the JSON parser already refuses. A string spelling is named here.
        Value::String(text)
            if matches!(
                text.to_ascii_lowercase().as_str(),
                "nan" | "inf" | "-inf" | "infinity" | "-infinity"
            ) =>
        {
            return Err(SkipReason::NonFinite);
        }
        Value::String(_) | Value::Null => return Err(SkipReason::NotNumeric),
        Value::Array(_) | Value::Object(_) => return Err(SkipReason::Nested),
    };
    check_number(name, value, limits)
}

/// The rules every reading's value meets whatever the payload form: a catalogue name, a
/// finite number, within `ingest.max_abs_value`.
pub(super) fn check_number(
    name: Option<&str>,
    value: f64,
    limits: &ValidationLimits,
) -> Result<f64, SkipReason> {
    if !name.is_some_and(is_valid_metric_name) {
        return Err(SkipReason::InvalidName);
    }
    if !value.is_finite() {
        return Err(SkipReason::NonFinite);
    }
    if value.abs() > limits.max_abs_value {
        return Err(SkipReason::OutOfRange);
    }
    Ok(value)
}

/// A key as devices send it in the catalogue's form: `batteryLevel` → `battery_level`,
/// `HTTPStatus` → `http_status`, `Motor Temp` and `temp-c` → `motor_temp`, `temp_c`; `None`
/// for a key with other than ASCII letters, digits, `_`, `-`, `.`, `/` and spaces, or one
/// longer than 64 characters in that form.
pub fn snake_case(key: &str) -> Option<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut name = String::with_capacity(key.len() + 4);
    for (char_idx, &c) in chars.iter().enumerate() {
        let previous = char_idx.checked_sub(1).map(|i| chars[i]);
        let next = chars.get(char_idx + 1).copied();
        match c {
            'A'..='Z' => {
                let word_starts = match previous {
                    Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                    // The last capital of an acronym before a word: HTTPStatus.
                    Some(p) if p.is_ascii_uppercase() => {
                        next.is_some_and(|n| n.is_ascii_lowercase())
                    }
                    _ => false,
                };
                if word_starts && !name.is_empty() && !name.ends_with('_') {
                    name.push('_');
                }
                name.push(c.to_ascii_lowercase());
            }
            'a'..='z' | '0'..='9' => name.push(c),
            '_' | '-' | '.' | '/' | ' ' => {
                if !name.is_empty() && !name.ends_with('_') {
                    name.push('_');
                }
            }
            _ => return None,
        }
    }
    let name = name.trim_end_matches('_');
    is_valid_metric_name(name).then(|| name.to_string())
}

fn shorten(name: &str) -> String {
    name.chars().take(80).collect()
}

/// Writes one telemetry sample as the contract's JSON object, without allocating a map.
pub fn telemetry_json(time: EpochMicros, seq: Option<u64>, metrics: &[(&str, f64)]) -> String {
    use std::fmt::Write;
    let mut json = String::with_capacity(64 + metrics.len() * 32);
    let _ = write!(json, r#"{{"ts":"{}""#, format_timestamp(time));
    if let Some(seq) = seq {
        let _ = write!(json, r#","seq":{seq}"#);
    }
    json.push_str(r#","metrics":{"#);
    for (metric_idx, (name, value)) in metrics.iter().enumerate() {
        if metric_idx > 0 {
            json.push(',');
        }
        let _ = write!(json, r#""{name}":{value}"#);
    }
    json.push_str("}}");
    json
}

//! The validation rules every section's `validate` is written with: each failure is one
//! sentence naming the key, its value and what is allowed.

use std::time::Duration;

use super::ConfigError;

pub(crate) const HOUR: Duration = Duration::from_secs(3600);
/// Longest period of a repeating task; longer ones are better written `"off"`.
pub(crate) const MAX_PERIOD: Duration = Duration::from_secs(365 * 86_400);
/// Longest horizon or window: ample for any fleet, and safely inside chrono's range.
pub(crate) const MAX_SPAN: Duration = Duration::from_secs(36_500 * 86_400);

/// `Ok` when `ok`; otherwise one sentence naming the key, its value and what is allowed.
pub(crate) fn rule(
    ok: bool,
    key: &str,
    value: impl std::fmt::Display,
    allowed: &str,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{key} = {value} is not allowed: {allowed}"
        )))
    }
}

/// The period of a repeating task (`tokio::time::interval` panics on zero); `None` is "off".
pub(crate) fn period_rule(key: &str, period: Option<Duration>) -> Result<(), ConfigError> {
    rule(
        period.is_none_or(|p| !p.is_zero() && p <= MAX_PERIOD),
        key,
        show_optional(period),
        "it must be positive and at most 365d",
    )
}

/// A horizon or window over hourly data.
pub(crate) fn span_rule(key: &str, span: Duration) -> Result<(), ConfigError> {
    rule(
        span >= HOUR && span <= MAX_SPAN,
        key,
        show(span),
        "it must be between 1h (features use hourly buckets) and 36500d",
    )
}

/// A cost the alert threshold weighs: the threshold of `0 / 0` or `NaN` means nothing.
pub(crate) fn cost_rule(key: &str, cost: f64) -> Result<(), ConfigError> {
    rule(
        cost.is_finite() && cost > 0.0,
        key,
        cost,
        "it must be a finite number above 0",
    )
}

pub(crate) fn show(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

pub(crate) fn show_optional(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "off".to_string(), show)
}

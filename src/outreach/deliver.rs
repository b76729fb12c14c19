//! What to do with a claimed message, decided without I/O: whether quiet hours hold it
//! back, which channel it goes by, and after a failure when it is tried again, on which
//! channel, or whether it is given up.

use std::time::Duration;

use chrono::{DateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::channels::{Channel, SendError};
use super::config::OutreachConfig;
use crate::store::{AttemptOutcome, ClaimedMessage};

/// How a customer can be reached, in the order they are tried: the preferred channel
/// first, then the others they have an address on, then the log when it is on. Only
/// channels this process can send on (`available`).
pub fn channel_order(
    message: &ClaimedMessage,
    available: impl Fn(Channel) -> bool,
) -> Vec<Channel> {
    let preferred = Channel::parse(&message.preferred_channel);
    let order = preferred.into_iter().chain([
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Webhook,
        Channel::Log,
    ]);
    let mut out: Vec<Channel> = Vec::new();
    for channel in order {
        if !out.contains(&channel) && available(channel) && address(message, channel).is_some() {
            out.push(channel);
        }
    }
    out
}

/// The customer's address on `channel`, if they have one.
pub fn address(message: &ClaimedMessage, channel: Channel) -> Option<&str> {
    match channel {
        Channel::Email => present(&message.email),
        Channel::Sms => present(&message.phone),
        // Push and integrations address the customer by their id in the customer's system.
        Channel::Push | Channel::Webhook => present(&message.customer_external_id),
        Channel::Log => {
            Some(present(&message.customer_external_id).unwrap_or(message.customer_name.as_str()))
        }
    }
}

fn present(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The channel this attempt goes by: the row's, unless it was given up on or cannot be
/// used here, then the next in `order` not yet given up on. `None`: none is left.
pub fn current_channel(message: &ClaimedMessage, order: &[Channel]) -> Option<Channel> {
    let tried = |c: &Channel| message.channels_tried.iter().any(|t| t == c.as_str());
    Channel::parse(&message.channel)
        .filter(|c| order.contains(c) && !tried(c))
        .or_else(|| order.iter().copied().find(|c| !tried(c)))
}

/// When quiet hours hold a message back until, in the customer's zone: `None` when it may
/// go now. `start > end` spans midnight (22:00–07:00); `start == end` is no quiet hours.
pub fn quiet_until(
    now: DateTime<Utc>,
    zone: Tz,
    start: Option<NaiveTime>,
    end: Option<NaiveTime>,
) -> Option<DateTime<Utc>> {
    let (start, end) = (start?, end?);
    if start == end {
        return None;
    }
    let local = now.with_timezone(&zone);
    let time = local.time();
    let quiet = if start < end {
        time >= start && time < end
    } else {
        time >= start || time < end
    };
    if !quiet {
        return None;
    }
    let mut day = local.date_naive();
    if time >= end {
        day = day.succ_opt()?;
    }
    // The first instant at or after `end` that exists in the zone and is still ahead: a
    // DST gap moves it on; of a repeated hour, the occurrence not yet past.
    let mut naive = day.and_time(end);
    let at_least = now + chrono::Duration::minutes(1);
    for _ in 0..4 {
        let at = match zone.from_local_datetime(&naive) {
            chrono::LocalResult::Single(at) => Some(at),
            chrono::LocalResult::Ambiguous(first, second) => {
                Some(if first.with_timezone(&Utc) > now {
                    first
                } else {
                    second
                })
            }
            chrono::LocalResult::None => None,
        };
        if let Some(at) = at {
            return Some(at.with_timezone(&Utc).max(at_least));
        }
        naive += chrono::Duration::minutes(30);
    }
    Some(now + chrono::Duration::hours(1))
}

/// The wait before attempt `attempt + 1`: `base × 2^(attempt − 1)`, at most `max`, less a
/// random part of up to half (`jitter` in 0..1), so failures of a burst spread out.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let full = base.saturating_mul(1 << exponent).min(max);
    full.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
}

/// The outcome of a failed send of `message` on `channel`.
pub fn after_failure(
    message: &ClaimedMessage,
    channel: Channel,
    order: &[Channel],
    error: &SendError,
    config: &OutreachConfig,
    now: DateTime<Utc>,
    jitter: f64,
) -> AttemptOutcome {
    let attempts = u32::try_from(message.attempts).unwrap_or(0);
    // Failures counted on the row belong to the row's channel, not to another one this
    // attempt moved to.
    let on_channel = if channel.as_str() == message.channel {
        u32::try_from(message.channel_attempts).unwrap_or(0) + 1
    } else {
        1
    };
    let rejected = matches!(error, SendError::Permanent(_));
    let mut tried = message.channels_tried.clone();
    let is_tried = |tried: &[String], c: Channel| tried.iter().any(|t| t == c.as_str());
    let next_untried = |tried: &[String]| {
        order
            .iter()
            .copied()
            .find(|c| *c != channel && !is_tried(tried, *c))
    };
    let next = if rejected {
        // Refused for good here: this channel is given up on.
        if !is_tried(&tried, channel) {
            tried.push(channel.as_str().to_string());
        }
        next_untried(&tried)
    } else if on_channel >= config.fallback_after {
        // Keeps failing: the next channel, if there is one; else this one again (a passing
        // outage must not fail the message before `max_attempts`).
        match next_untried(&tried) {
            Some(next) => {
                if !is_tried(&tried, channel) {
                    tried.push(channel.as_str().to_string());
                }
                Some(next)
            }
            None => Some(channel),
        }
    } else {
        Some(channel)
    };
    let reason = format!("{}: {error}", channel.as_str());
    match next {
        Some(next) if attempts < config.max_attempts => {
            let switched = next != channel;
            let wait = if switched {
                // A new channel is tried at once.
                Duration::ZERO
            } else {
                backoff(attempts, config.backoff_base, config.backoff_max, jitter)
            };
            AttemptOutcome::Retry {
                at: chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|wait| now.checked_add_signed(wait))
                    .unwrap_or(now),
                channel: next.as_str().to_string(),
                channel_attempts: if switched {
                    0
                } else {
                    i32::try_from(on_channel).unwrap_or(i32::MAX)
                },
                channels_tried: tried,
                error: reason,
                rejected,
            }
        }
        Some(_) => AttemptOutcome::Failed {
            reason: format!("gave up after {attempts} attempts; last: {reason}"),
            channels_tried: tried,
        },
        None => AttemptOutcome::Failed {
            reason: format!("no channel left; last: {reason}"),
            channels_tried: tried,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> ClaimedMessage {
        ClaimedMessage {
            id: 1,
            claim_token: 7,
            idempotency_key: "k".into(),
            customer_id: 1,
            ticket_id: Some(1),
            incident_id: None,
            message_type: "booking_proposed".into(),
            channel: "sms".into(),
            language: "pl".into(),
            urgent: false,
            payload: serde_json::json!({}),
            attempts: 1,
            channel_attempts: 0,
            channels_tried: vec![],
            customer_external_id: Some("c-1".into()),
            customer_name: "Anna".into(),
            preferred_channel: "sms".into(),
            email: Some("anna@example.com".into()),
            phone: Some("+48600000000".into()),
            timezone: "Europe/Warsaw".into(),
            quiet_hours_start: None,
            quiet_hours_end: None,
            created_at: DateTime::UNIX_EPOCH,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_preferred_channel_comes_first_then_those_with_an_address() {
        let mut m = message();
        let all = |_| true;
        assert_eq!(
            channel_order(&m, all),
            vec![
                Channel::Sms,
                Channel::Email,
                Channel::Push,
                Channel::Webhook,
                Channel::Log
            ]
        );
        m.phone = None;
        let no_log = |c| c != Channel::Log && c != Channel::Push;
        assert_eq!(
            channel_order(&m, no_log),
            vec![Channel::Email, Channel::Webhook]
        );
    }

    #[test]
    fn quiet_hours_hold_until_their_end_in_the_customers_zone() {
        let zone: Tz = "Europe/Warsaw".parse().unwrap();
        let start = NaiveTime::from_hms_opt(22, 0, 0);
        let end = NaiveTime::from_hms_opt(7, 0, 0);
        // 22:30 UTC is 23:30 in Warsaw: held until 07:00 local = 06:00 UTC next day.
        assert_eq!(
            quiet_until(utc("2026-11-24T22:30:00Z"), zone, start, end),
            Some(utc("2026-11-25T06:00:00Z"))
        );
        // 05:00 UTC is 06:00 local: held until 07:00 local the same day.
        assert_eq!(
            quiet_until(utc("2026-11-25T05:00:00Z"), zone, start, end),
            Some(utc("2026-11-25T06:00:00Z"))
        );
        assert_eq!(
            quiet_until(utc("2026-11-25T12:00:00Z"), zone, start, end),
            None
        );
        assert_eq!(
            quiet_until(utc("2026-11-25T12:00:00Z"), zone, None, end),
            None
        );
        // A daytime span.
        let (s, e) = (
            NaiveTime::from_hms_opt(12, 0, 0),
            NaiveTime::from_hms_opt(14, 0, 0),
        );
        assert_eq!(
            quiet_until(utc("2026-11-25T11:30:00Z"), zone, s, e),
            Some(utc("2026-11-25T13:00:00Z"))
        );
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_up_to_half_taken_off() {
        let (base, max) = (Duration::from_secs(30), Duration::from_secs(3600));
        assert_eq!(backoff(1, base, max, 0.0), Duration::from_secs(30));
        assert_eq!(backoff(3, base, max, 0.0), Duration::from_secs(120));
        assert_eq!(backoff(3, base, max, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(40, base, max, 0.0), max);
    }

    #[test]
    fn a_channel_that_keeps_failing_gives_way_to_the_next_and_the_last_failure_gives_up() {
        let config = OutreachConfig {
            fallback_after: 2,
            max_attempts: 5,
            ..OutreachConfig::default()
        };
        let now = utc("2026-11-24T12:00:00Z");
        let order = [Channel::Sms, Channel::Email];
        let error = SendError::Transient("503".into());
        let mut m = message();
        // First failure on sms: retried on sms after the backoff.
        let AttemptOutcome::Retry { channel, at, .. } =
            after_failure(&m, Channel::Sms, &order, &error, &config, now, 0.0)
        else {
            panic!()
        };
        assert_eq!(
            (channel.as_str(), at),
            ("sms", now + chrono::Duration::seconds(30))
        );
        // Second: email, at once.
        m.attempts = 2;
        m.channel_attempts = 1;
        let AttemptOutcome::Retry {
            channel,
            at,
            channels_tried,
            ..
        } = after_failure(&m, Channel::Sms, &order, &error, &config, now, 0.0)
        else {
            panic!()
        };
        assert_eq!((channel.as_str(), at), ("email", now));
        assert_eq!(channels_tried, vec!["sms".to_string()]);
        // A permanent refusal on the last channel: nothing left.
        m.channel = "email".into();
        m.channels_tried = vec!["sms".into()];
        let outcome = after_failure(
            &m,
            Channel::Email,
            &order,
            &SendError::Permanent("550".into()),
            &config,
            now,
            0.0,
        );
        assert!(
            matches!(outcome, AttemptOutcome::Failed { .. }),
            "{outcome:?}"
        );
        // Transient failures on the only channel: retried there until the attempt limit.
        let mut m = message();
        m.attempts = 3;
        m.channel_attempts = 2;
        let AttemptOutcome::Retry { channel, .. } =
            after_failure(&m, Channel::Sms, &[Channel::Sms], &error, &config, now, 0.0)
        else {
            panic!()
        };
        assert_eq!(channel, "sms");
        // The attempt limit.
        let mut m = message();
        m.attempts = 5;
        let outcome = after_failure(&m, Channel::Sms, &order, &error, &config, now, 0.0);
        assert!(
            matches!(outcome, AttemptOutcome::Failed { .. }),
            "{outcome:?}"
        );
    }
}

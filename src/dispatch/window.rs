//! When the visit is due: inside the predicted window, from evidence. Pure.
//!
//! The expected time to failure is not a constant. It comes from the failure mode's
//! lead-time distribution — how long before each failure its first flag came, measured on
//! the model's test window (the card) — conditioned on how long risk has already been
//! above threshold: of the failures whose lead time exceeded what has elapsed, the early
//! `quantile` of what remained. The visit is due before that time minus a safety margin,
//! and within the priority's SLA; when the evidence leaves no room, as soon as possible
//! (and the ticket says the window is already missed).

use std::time::Duration;

use super::policy::{LOWEST_PRIORITY, Priority};
use crate::contract::EpochMicros;

/// The due-time settings (`dispatch.window`).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowPolicy {
    /// The visit is due at least this long before the expected failure.
    #[serde(with = "humantime_serde")]
    pub safety_margin: Duration,
    /// Plan for the early failures: the quantile of the remaining lead time used as the
    /// expected failure time (0.2: four failures in five come later).
    pub quantile: f64,
    /// The longest a ticket of priority 1, 2, 3 and 4 may wait for its visit.
    #[serde(with = "humantime_serde")]
    pub sla_priority_1: Duration,
    #[serde(with = "humantime_serde")]
    pub sla_priority_2: Duration,
    #[serde(with = "humantime_serde")]
    pub sla_priority_3: Duration,
    #[serde(with = "humantime_serde")]
    pub sla_priority_4: Duration,
    /// Fewer lead-time samples than this beyond the elapsed time: the evidence is too thin,
    /// and the expected failure is `fallback_fraction` of the mode's horizon away.
    pub min_samples: usize,
    pub fallback_fraction: f64,
}

impl Default for WindowPolicy {
    fn default() -> Self {
        let days = |d: u64| Duration::from_secs(d * 86_400);
        WindowPolicy {
            safety_margin: Duration::from_secs(12 * 3600),
            quantile: 0.2,
            sla_priority_1: days(1),
            sla_priority_2: days(2),
            sla_priority_3: days(5),
            sla_priority_4: days(10),
            min_samples: 5,
            fallback_fraction: 0.5,
        }
    }
}

impl WindowPolicy {
    /// The SLA of a priority (1 is the most urgent).
    pub fn sla(&self, priority: Priority) -> Duration {
        match priority {
            0 | 1 => self.sla_priority_1,
            2 => self.sla_priority_2,
            3 => self.sla_priority_3,
            _ => self.sla_priority_4,
        }
    }
}

/// How urgent the device is in itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    /// A failure is a safety matter or strands someone (a car on the road).
    High,
    Normal,
    /// A failure is an inconvenience (a camera).
    Low,
}

/// The customer's service tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Premium,
    Standard,
    Basic,
}

impl Tier {
    /// `customers.tier`; anything else (`""`, a tier of another scheme) is standard.
    pub fn parse(text: &str) -> Tier {
        match text.trim().to_ascii_lowercase().as_str() {
            "premium" | "gold" | "platinum" => Tier::Premium,
            "basic" | "bronze" => Tier::Basic,
            _ => Tier::Standard,
        }
    }
}

/// The expected time left before the failure, given how long risk has been above
/// threshold (`elapsed`), the mode's measured lead times (hours) and its horizon.
pub fn expected_remaining(
    lead_times_hours: &[f64],
    horizon: Duration,
    elapsed: Duration,
    policy: &WindowPolicy,
) -> Duration {
    let elapsed_hours = elapsed.as_secs_f64() / 3600.0;
    let mut beyond: Vec<f64> = lead_times_hours
        .iter()
        .filter(|lead| lead.is_finite() && **lead > elapsed_hours)
        .map(|lead| lead - elapsed_hours)
        .collect();
    if beyond.len() < policy.min_samples.max(1) {
        let fallback = horizon.as_secs_f64() * policy.fallback_fraction - elapsed.as_secs_f64();
        return Duration::from_secs_f64(fallback.max(0.0));
    }
    beyond.sort_by(f64::total_cmp);
    let rank = (policy.quantile.clamp(0.0, 1.0) * (beyond.len() - 1) as f64).round() as usize;
    // A lead time beyond a century (a corrupt card) is a century, not a panic.
    Duration::try_from_secs_f64((beyond[rank] * 3600.0).min(3.2e9)).unwrap_or(Duration::ZERO)
}

/// The priority from risk, adjusted: one step more urgent for a critical device, for a
/// premium customer and when the failure is expected within a day; one step less for a
/// device of low criticality and for a basic tier.
pub fn priority(
    risk_priority: Priority,
    criticality: Criticality,
    tier: Tier,
    remaining: Duration,
) -> Priority {
    let mut priority = i16::from(risk_priority);
    priority += match criticality {
        Criticality::High => -1,
        Criticality::Normal => 0,
        Criticality::Low => 1,
    };
    priority += match tier {
        Tier::Premium => -1,
        Tier::Standard => 0,
        Tier::Basic => 1,
    };
    if remaining < Duration::from_secs(86_400) {
        priority -= 1;
    }
    priority.clamp(1, i16::from(LOWEST_PRIORITY)) as Priority
}

/// When the visit is due.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Due {
    pub expected_failure_at: EpochMicros,
    pub due_at: EpochMicros,
    /// The due time leaves the safety margin before the expected failure.
    pub inside_window: bool,
}

/// Due before the expected failure minus the safety margin, and within the priority's
/// SLA; `now` when the window has no room left (then not inside it).
pub fn due(
    now: EpochMicros,
    priority: Priority,
    remaining: Duration,
    policy: &WindowPolicy,
) -> Due {
    let micros = |d: Duration| (d.as_secs_f64() * 1e6) as i64;
    let expected_failure_at = now.saturating_add(micros(remaining));
    let latest_in_window = expected_failure_at.saturating_sub(micros(policy.safety_margin));
    let sla_end = now.saturating_add(micros(policy.sla(priority)));
    let due_at = latest_in_window.min(sla_end).max(now);
    Due {
        expected_failure_at,
        due_at,
        inside_window: latest_in_window >= now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_expected_failure_follows_the_measured_lead_times_and_what_has_elapsed() {
        let policy = WindowPolicy::default();
        let leads = [
            24.0, 48.0, 72.0, 96.0, 120.0, 144.0, 168.0, 192.0, 216.0, 240.0,
        ];
        let horizon = 7 * 24 * HOUR;
        // Nothing elapsed: the early fifth of the lead times (rank round(0.2 × 9) = 2: 72 h).
        assert_eq!(
            expected_remaining(&leads, horizon, Duration::ZERO, &policy),
            72 * HOUR
        );
        // 100 h above threshold already: of the failures that came later, what remains.
        let remaining = expected_remaining(&leads, horizon, 100 * HOUR, &policy);
        assert_eq!(
            remaining,
            44 * HOUR,
            "leads beyond 100 h: 120…240, early fifth 144 h − 100 h"
        );
        // Thin evidence: half the horizon, less what has elapsed.
        assert_eq!(
            expected_remaining(&[30.0, 50.0], horizon, 10 * HOUR, &policy),
            74 * HOUR
        );
        assert_eq!(
            expected_remaining(&[], horizon, 200 * HOUR, &policy),
            Duration::ZERO
        );
    }

    #[test]
    fn the_visit_is_due_inside_the_window_and_within_the_sla() {
        let policy = WindowPolicy::default();
        let now = 1_000 * 3_600_000_000;
        // Failure expected in 72 h: due 12 h before it (60 h) — within priority 3's 5 days.
        let due3 = due(now, 3, 72 * HOUR, &policy);
        assert!(due3.inside_window);
        assert_eq!(due3.due_at, now + 60 * 3_600_000_000);
        // Priority 1's SLA of a day comes first.
        assert_eq!(
            due(now, 1, 72 * HOUR, &policy).due_at,
            now + 24 * 3_600_000_000
        );
        // No room left: as soon as possible, and said to be outside the window.
        let late = due(now, 2, 6 * HOUR, &policy);
        assert_eq!(late.due_at, now);
        assert!(!late.inside_window);
    }

    #[test]
    fn criticality_tier_and_imminence_move_the_priority() {
        let week = 7 * 24 * HOUR;
        assert_eq!(priority(3, Criticality::Normal, Tier::Standard, week), 3);
        assert_eq!(
            priority(3, Criticality::High, Tier::Standard, week),
            2,
            "a car before a camera"
        );
        assert_eq!(priority(3, Criticality::Low, Tier::Standard, week), 4);
        assert_eq!(priority(3, Criticality::High, Tier::Premium, 10 * HOUR), 1);
        assert_eq!(
            priority(4, Criticality::Low, Tier::Basic, week),
            4,
            "clamped"
        );
        assert_eq!(
            priority(1, Criticality::High, Tier::Premium, HOUR),
            1,
            "clamped"
        );
    }
}

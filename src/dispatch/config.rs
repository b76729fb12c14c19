//! The `dispatch` section: the stage's pace and every policy it applies.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::plan::{PlanSettings, Strategy};
use super::policy::TicketPolicy;
use super::surge::SurgeSettings;
use super::window::{Criticality, WindowPolicy};
use crate::config::rules::{period_rule, rule, show};
use crate::config::{ConfigError, optional_duration};

/// The dispatch stage of `serve` and `forewarn dispatch`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// A pass over new signals this often; `"off"` disables the stage.
    #[serde(with = "optional_duration")]
    pub interval: Option<Duration>,
    /// Scores read per batch of a pass.
    pub signals_per_batch: usize,
    /// Predictions written up to this long before the read mark are read again
    /// (transactions commit out of order; an applied score is recognised and skipped).
    #[serde(with = "humantime_serde")]
    pub read_margin: Duration,
    /// A new ticket waits this long (event time) before it is booked or its customer told,
    /// so a surge is seen whole. At least `surge.window`.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// How long a visit takes.
    #[serde(with = "humantime_serde")]
    pub visit_duration: Duration,
    /// A ticket no technician can take is planned again after this (event time).
    #[serde(with = "humantime_serde")]
    pub replan_after: Duration,
    /// Tickets booked per pass at most (the rest wait for the next pass).
    pub bookings_per_pass: usize,
    /// How a technician and slot are chosen: `insertion` (cheapest insertion into the
    /// technicians' day routes) or `nearest_free` (the naive baseline).
    pub strategy: Strategy,
    /// The ticket policy of every failure mode without one of its own in `modes`.
    pub policy: TicketPolicy,
    /// Per failure mode (`washer/drum_bearing`): its own ticket policy.
    pub modes: BTreeMap<String, TicketPolicy>,
    pub window: WindowPolicy,
    pub plan: PlanSettings,
    pub proposal: ProposalSettings,
    pub surge: SurgeSettings,
    /// Per device kind: `high` (a car on the road, a fridge), `normal`, `low` (a camera).
    pub criticality: BTreeMap<String, Criticality>,
    /// Per critical event code: the component it means (else a component named in the
    /// event's message, else `<kind>/critical`).
    pub critical_codes: BTreeMap<String, String>,
    /// The priority of a reactive ticket (a customer's call, a critical event, silence).
    pub reactive_priority: u8,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        let criticality = [
            ("car", Criticality::High),
            ("fridge", Criticality::High),
            ("camera", Criticality::Low),
        ]
        .into_iter()
        .map(|(kind, c)| (kind.to_string(), c))
        .collect();
        DispatchConfig {
            interval: Some(Duration::from_secs(10)),
            signals_per_batch: 2_000,
            read_margin: Duration::from_secs(300),
            settle: Duration::from_secs(900),
            visit_duration: Duration::from_secs(3600),
            replan_after: Duration::from_secs(3600),
            bookings_per_pass: 500,
            strategy: Strategy::Insertion,
            policy: TicketPolicy::default(),
            modes: BTreeMap::new(),
            window: WindowPolicy::default(),
            plan: PlanSettings::default(),
            proposal: ProposalSettings::default(),
            surge: SurgeSettings::default(),
            criticality,
            critical_codes: BTreeMap::new(),
            reactive_priority: 2,
        }
    }
}

impl DispatchConfig {
    /// The ticket policy of a failure mode.
    pub fn policy_of(&self, failure_mode: &str) -> &TicketPolicy {
        self.modes.get(failure_mode).unwrap_or(&self.policy)
    }

    pub fn criticality_of(&self, kind: &str) -> Criticality {
        self.criticality
            .get(kind)
            .copied()
            .unwrap_or(Criticality::Normal)
    }

    /// Rejects what would panic or misbehave later, with one sentence naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        period_rule("dispatch.interval", self.interval)?;
        let invalid = |key: &str, error: String| ConfigError::Invalid(format!("{key}: {error}"));
        self.policy
            .validate()
            .map_err(|e| invalid("dispatch.policy", e))?;
        for (mode, policy) in &self.modes {
            policy
                .validate()
                .map_err(|e| invalid(&format!("dispatch.modes.\"{mode}\""), e))?;
        }
        self.plan
            .validate()
            .map_err(|e| invalid("dispatch.plan", e))?;
        rule(
            self.proposal.min_gain_km.is_finite() && self.proposal.min_gain_km > 0.0,
            "dispatch.proposal.min_gain_km",
            self.proposal.min_gain_km,
            "it must be finite and above 0 (or visits could move back and forth)",
        )?;
        rule(
            self.proposal.improve_evaluations <= 1_000_000,
            "dispatch.proposal.improve_evaluations",
            self.proposal.improve_evaluations,
            "it must be at most 1000000",
        )?;
        self.surge
            .validate()
            .map_err(|e| invalid("dispatch.surge", e))?;
        rule(
            self.signals_per_batch > 0 && self.signals_per_batch <= 100_000,
            "dispatch.signals_per_batch",
            self.signals_per_batch,
            "it must be between 1 and 100000",
        )?;
        rule(
            self.bookings_per_pass > 0 && self.bookings_per_pass <= 100_000,
            "dispatch.bookings_per_pass",
            self.bookings_per_pass,
            "it must be between 1 and 100000",
        )?;
        rule(
            self.visit_duration >= Duration::from_secs(60)
                && self.visit_duration <= Duration::from_secs(86_400),
            "dispatch.visit_duration",
            show(self.visit_duration),
            "it must be between 1m and 1d",
        )?;
        rule(
            !self.replan_after.is_zero(),
            "dispatch.replan_after",
            show(self.replan_after),
            "it must be positive",
        )?;
        rule(
            self.settle >= self.surge.window,
            "dispatch.settle",
            show(self.settle),
            "it must be at least dispatch.surge.window, or a surge is booked before it is seen",
        )?;
        rule(
            (1..=4).contains(&self.reactive_priority),
            "dispatch.reactive_priority",
            self.reactive_priority,
            "it must be 1 (most urgent) to 4",
        )?;
        let w = &self.window;
        rule(
            (0.0..=1.0).contains(&w.quantile) && (0.0..=1.0).contains(&w.fallback_fraction),
            "dispatch.window.quantile",
            w.quantile,
            "quantile and fallback_fraction must be within 0..1",
        )?;
        Ok(())
    }
}

/// When a booking is told to its customer (`dispatch.proposal`). A booking is made as soon
/// as its ticket is released, and held — nobody told — for `hold`, while later bookings
/// may show a better place for it (`improve_evaluations` visits re-placed per pass, each
/// move saving at least `min_gain_km` of the planning cost). A visit less than
/// `min_notice` away, an urgent one and a rescheduled one are told at once.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProposalSettings {
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
    #[serde(with = "humantime_serde")]
    pub min_notice: Duration,
    pub min_gain_km: f64,
    pub improve_evaluations: usize,
}

impl Default for ProposalSettings {
    fn default() -> Self {
        ProposalSettings {
            hold: Duration::from_secs(12 * 3600),
            min_notice: Duration::from_secs(12 * 3600),
            min_gain_km: 1.0,
            improve_evaluations: 1_000,
        }
    }
}

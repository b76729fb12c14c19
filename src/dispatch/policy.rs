//! The ticket policy of one (device, failure mode): what a new risk score does to its
//! proactive ticket. Pure: the stage feeds it the scores in event time with what it knows
//! (the streak so far, the open ticket, a cool-down), and writes what it decides.
//!
//! - **Hysteresis.** A ticket opens only after `open_after` consecutive scores at or above
//!   the open threshold; a score below it breaks the streak, so a noisy score opens
//!   nothing. An open ticket is cancelled (before a visit is booked) only after
//!   `close_after` consecutive scores below the lower close threshold; scores between the
//!   two thresholds change nothing, so a signal flapping around the open threshold does not
//!   open, close and reopen.
//! - **Repeat occurrences** of a high score on an open ticket are kept on it (count, last
//!   seen, highest risk), never a second ticket; a risk that rises past the next priority's
//!   bound escalates it.
//! - **Cool-down.** After a `no_fault_found` visit, the same device and mode opens no new
//!   ticket for `cooldown` (event time) unless the risk rises past what the visit judged
//!   harmless (by `cooldown_rise` of the room left below 1).
//! - Falling risk cancels only a **proactive** ticket not yet booked: a customer's call or
//!   a critical event is not the model's to withdraw.

use std::time::Duration;

use crate::contract::{EpochMicros, duration_micros};

/// Ticket priority: 1 is the most urgent.
pub type Priority = u8;
/// The least urgent priority.
pub const LOWEST_PRIORITY: Priority = 4;

/// The policy of one failure mode (`dispatch.modes`, else the defaults).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketPolicy {
    /// Consecutive scores at or above the open threshold that open a ticket.
    pub open_after: u32,
    /// Consecutive scores below the close threshold that cancel a ticket not yet booked.
    pub close_after: u32,
    /// The close threshold as a share of the open threshold (the model's alert threshold).
    pub close_ratio: f64,
    /// After `no_fault_found`, no new ticket for this long…
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// …unless the risk rises above the highest risk of the ticket found faultless by
    /// this share of the room left below 1 (0.5: from 0.7, above 0.85; from 0.9, above
    /// 0.95), so that a limit is always reachable.
    pub cooldown_rise: f64,
    /// Risk bounds of priorities 1, 2 and 3 (a lower risk is priority 4).
    pub priority_bounds: [f64; 3],
}

impl Default for TicketPolicy {
    fn default() -> Self {
        TicketPolicy {
            open_after: 2,
            close_after: 3,
            close_ratio: 0.6,
            cooldown: Duration::from_secs(14 * 86_400),
            cooldown_rise: 0.5,
            priority_bounds: [0.9, 0.75, 0.5],
        }
    }
}

impl TicketPolicy {
    /// The priority that risk alone calls for.
    pub fn priority_for(&self, risk: f64) -> Priority {
        self.priority_bounds
            .iter()
            .position(|bound| risk >= *bound)
            .map_or(LOWEST_PRIORITY, |idx| idx as Priority + 1)
    }

    /// The risk above which a cool-down gives way.
    pub fn cooldown_limit(&self, cooldown: Cooldown) -> f64 {
        let highest = cooldown.highest_risk.clamp(0.0, 1.0);
        highest + self.cooldown_rise * (1.0 - highest)
    }

    /// Checks the settings; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.open_after == 0 || self.close_after == 0 {
            return Err("open_after and close_after must be at least 1".into());
        }
        if !(self.close_ratio > 0.0 && self.close_ratio < 1.0) {
            return Err(format!(
                "close_ratio must be between 0 and 1 (exclusive), got {}",
                self.close_ratio
            ));
        }
        if !(0.0..1.0).contains(&self.cooldown_rise) {
            return Err(format!(
                "cooldown_rise must be in [0, 1) (a share of the room left below 1), got {}",
                self.cooldown_rise
            ));
        }
        let [p1, p2, p3] = self.priority_bounds;
        if !(p1 <= 1.0 && p1 >= p2 && p2 >= p3 && p3 >= 0.0) {
            return Err(format!(
                "priority_bounds must fall from priority 1 to 3 within 0..1, got {:?}",
                self.priority_bounds
            ));
        }
        Ok(())
    }
}

/// One risk score, in event time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub time: EpochMicros,
    pub probability: f64,
    /// The model's alert threshold for this mode: the open threshold.
    pub threshold: f64,
}

/// What the stage keeps between scores of a (device, mode).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Streak {
    /// Consecutive scores at or above the open threshold (`closing` false: no open
    /// ticket), or below the close threshold (`closing` true: a ticket is open). A count
    /// of the other kind is never carried over: a ticket cancelled or resolved elsewhere
    /// starts the opening streak from zero.
    pub count: u32,
    pub closing: bool,
    /// Event time of the first score of the current run above the open threshold: how
    /// long risk has been high (`window::expected_remaining`'s `elapsed`).
    pub above_since: Option<EpochMicros>,
    /// Event time of the last score applied: an older or equal one is a replay.
    pub last_time: Option<EpochMicros>,
}

/// The open ticket as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenTicket {
    pub highest_risk: f64,
    /// A visit is booked: the ticket is no longer cancelled by falling risk.
    pub booked: bool,
    /// Opened by a prediction. Only such a ticket is cancelled by falling risk: a
    /// customer's call or a critical event is not the model's to withdraw.
    pub proactive: bool,
}

/// The last `no_fault_found` visit of this device and mode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cooldown {
    pub resolved_at: EpochMicros,
    pub highest_risk: f64,
}

/// What a score does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Nothing to write but the streak.
    Nothing,
    /// A replay of a score already applied (event time not after the last one).
    Replay,
    /// Open a proactive ticket at this priority.
    Open { priority: Priority },
    /// The streak would open one, but the cool-down holds it.
    HeldByCooldown,
    /// A repeat occurrence on the open ticket. `escalate_to` is set when the risk rose
    /// into a more urgent band than the ticket's highest risk so far: the priority risk
    /// alone calls for, which the caller adjusts (`window::priority`) and applies if it is
    /// more urgent than the ticket's.
    Recur { escalate_to: Option<Priority> },
    /// Cancel the open ticket (not booked): risk stayed below the close threshold.
    Cancel,
}

/// Applies one score. `ticket` is the open ticket of this device and mode, if any.
pub fn decide(
    policy: &TicketPolicy,
    streak: Streak,
    score: Score,
    ticket: Option<OpenTicket>,
    cooldown: Option<Cooldown>,
) -> (Streak, Decision) {
    if streak.last_time.is_some_and(|last| score.time <= last) {
        return (streak, Decision::Replay);
    }
    let above = score.probability >= score.threshold;
    let below_close = score.probability < score.threshold * policy.close_ratio;
    let closing = ticket.is_some();
    let next = Streak {
        // A count of the other kind (the ticket came or went elsewhere) starts over.
        count: if streak.closing == closing {
            streak.count
        } else {
            0
        },
        closing,
        above_since: if above {
            streak.above_since.or(Some(score.time))
        } else {
            None
        },
        last_time: Some(score.time),
    };
    match ticket {
        Some(open) => {
            if above {
                let priority = policy.priority_for(score.probability);
                let escalate_to =
                    (priority < policy.priority_for(open.highest_risk)).then_some(priority);
                return (Streak { count: 0, ..next }, Decision::Recur { escalate_to });
            }
            if !below_close || open.booked || !open.proactive {
                // In the band between the thresholds, a visit booked, or not the model's
                // ticket: hold.
                return (Streak { count: 0, ..next }, Decision::Nothing);
            }
            let count = next.count + 1;
            if count >= policy.close_after {
                (Streak { count: 0, ..next }, Decision::Cancel)
            } else {
                (Streak { count, ..next }, Decision::Nothing)
            }
        }
        None => {
            if !above {
                return (Streak { count: 0, ..next }, Decision::Nothing);
            }
            let count = next.count + 1;
            if count < policy.open_after {
                return (Streak { count, ..next }, Decision::Nothing);
            }
            let cooling = cooldown.is_some_and(|cooldown| {
                let until = cooldown
                    .resolved_at
                    .saturating_add(duration_micros(policy.cooldown));
                score.time < until && score.probability < policy.cooldown_limit(cooldown)
            });
            if cooling {
                return (Streak { count, ..next }, Decision::HeldByCooldown);
            }
            (
                Streak { count: 0, ..next },
                Decision::Open {
                    priority: policy.priority_for(score.probability),
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: EpochMicros = 3_600_000_000;

    /// Runs `probabilities` (one score an hour, threshold 0.5) through the policy, with an
    /// open ticket kept as the decisions say, and returns the decisions.
    fn run(
        policy: &TicketPolicy,
        probabilities: &[f64],
        cooldown: Option<Cooldown>,
    ) -> Vec<Decision> {
        let mut streak = Streak::default();
        let mut ticket: Option<OpenTicket> = None;
        let mut decisions = Vec::new();
        for (hour, &probability) in probabilities.iter().enumerate() {
            let score = Score {
                time: hour as EpochMicros * HOUR,
                probability,
                threshold: 0.5,
            };
            let (next, decision) = decide(policy, streak, score, ticket, cooldown);
            streak = next;
            match decision {
                Decision::Open { .. } => {
                    ticket = Some(OpenTicket {
                        highest_risk: probability,
                        booked: false,
                        proactive: true,
                    });
                }
                Decision::Recur { .. } => {
                    let open = ticket.as_mut().expect("recur on an open ticket");
                    open.highest_risk = open.highest_risk.max(probability);
                }
                Decision::Cancel => ticket = None,
                _ => {}
            }
            decisions.push(decision);
        }
        decisions
    }

    fn opens(decisions: &[Decision]) -> usize {
        decisions
            .iter()
            .filter(|d| matches!(d, Decision::Open { .. }))
            .count()
    }

    #[test]
    fn a_noisy_score_opens_nothing_and_a_sustained_one_opens_once() {
        let policy = TicketPolicy::default();
        let noisy = run(&policy, &[0.2, 0.8, 0.2, 0.7, 0.1, 0.9, 0.3], None);
        assert_eq!(opens(&noisy), 0, "{noisy:?}");
        let sustained = run(&policy, &[0.2, 0.6, 0.6, 0.7, 0.65, 0.7], None);
        assert_eq!(opens(&sustained), 1, "{sustained:?}");
        assert_eq!(sustained[2], Decision::Open { priority: 3 });
        // The repeats are occurrences on the one ticket.
        assert!(matches!(sustained[3], Decision::Recur { .. }));
    }

    #[test]
    fn a_flapping_signal_does_not_open_close_and_reopen() {
        let policy = TicketPolicy::default();
        // Around the open threshold (0.5) but never below the close threshold (0.3).
        let flapping = run(
            &policy,
            &[0.55, 0.6, 0.45, 0.52, 0.4, 0.58, 0.35, 0.51, 0.44, 0.6],
            None,
        );
        assert_eq!(opens(&flapping), 1, "{flapping:?}");
        assert!(!flapping.contains(&Decision::Cancel), "{flapping:?}");
    }

    #[test]
    fn falling_risk_cancels_only_after_the_close_streak_and_never_a_booked_visit() {
        let policy = TicketPolicy::default();
        let falling = run(&policy, &[0.6, 0.6, 0.2, 0.1, 0.4, 0.2, 0.1, 0.1], None);
        // 0.4 is in the band: it breaks the close streak without cancelling.
        assert_eq!(
            falling.iter().filter(|d| **d == Decision::Cancel).count(),
            1
        );
        assert_eq!(falling[7], Decision::Cancel, "{falling:?}");
        let booked = OpenTicket {
            highest_risk: 0.6,
            booked: true,
            proactive: true,
        };
        let reactive = OpenTicket {
            highest_risk: 0.0,
            booked: false,
            proactive: false,
        };
        for ticket in [booked, reactive] {
            let mut streak = Streak::default();
            for hour in 0..5 {
                let score = Score {
                    time: hour * HOUR,
                    probability: 0.05,
                    threshold: 0.5,
                };
                let (next, decision) = decide(&policy, streak, score, Some(ticket), None);
                assert_eq!(decision, Decision::Nothing, "{ticket:?}");
                streak = next;
            }
        }
    }

    #[test]
    fn rising_risk_escalates_the_open_ticket() {
        let policy = TicketPolicy::default();
        let rising = run(&policy, &[0.55, 0.56, 0.8, 0.95, 0.7], None);
        assert_eq!(rising[1], Decision::Open { priority: 3 });
        assert_eq!(
            rising[2],
            Decision::Recur {
                escalate_to: Some(2)
            }
        );
        assert_eq!(
            rising[3],
            Decision::Recur {
                escalate_to: Some(1)
            }
        );
        assert_eq!(rising[4], Decision::Recur { escalate_to: None });
    }

    #[test]
    fn after_no_fault_found_the_cooldown_holds_unless_risk_rises_further() {
        let policy = TicketPolicy::default();
        let cooldown = Some(Cooldown {
            resolved_at: 0,
            highest_risk: 0.7,
        });
        let same = run(&policy, &[0.7, 0.7, 0.72, 0.7], cooldown);
        assert_eq!(opens(&same), 0, "{same:?}");
        assert!(same.contains(&Decision::HeldByCooldown));
        let higher = run(&policy, &[0.7, 0.9, 0.9], cooldown);
        assert_eq!(opens(&higher), 1, "{higher:?}");
        // A ticket found faultless at 0.9 gives way above 0.95, not never.
        let high = Cooldown {
            resolved_at: 0,
            highest_risk: 0.9,
        };
        assert!((policy.cooldown_limit(high) - 0.95).abs() < 1e-9);
        // After the cool-down, the same risk opens again.
        let later = Some(Cooldown {
            resolved_at: -(15 * 24 * HOUR),
            highest_risk: 0.7,
        });
        assert_eq!(opens(&run(&policy, &[0.7, 0.7], later)), 1);
    }

    #[test]
    fn a_close_streak_is_not_carried_into_the_next_opening() {
        let policy = TicketPolicy::default();
        let open = OpenTicket {
            highest_risk: 0.6,
            booked: false,
            proactive: true,
        };
        let score = |hour: i64, probability| Score {
            time: hour * HOUR,
            probability,
            threshold: 0.5,
        };
        let (streak, _) = decide(&policy, Streak::default(), score(0, 0.1), Some(open), None);
        let (streak, _) = decide(&policy, streak, score(1, 0.1), Some(open), None);
        assert_eq!(streak.count, 2);
        // The ticket is resolved elsewhere; one high score opens nothing yet.
        let (streak, decision) = decide(&policy, streak, score(2, 0.9), None, None);
        assert_eq!(decision, Decision::Nothing);
        assert_eq!((streak.count, streak.above_since), (1, Some(2 * HOUR)));
        let (_, decision) = decide(&policy, streak, score(3, 0.9), None, None);
        assert_eq!(decision, Decision::Open { priority: 1 });
    }

    #[test]
    fn escalation_follows_risk_not_the_tickets_adjusted_priority() {
        let policy = TicketPolicy::default();
        // Opened at 0.95 (risk priority 1), whatever the ticket's adjusted priority is:
        // a fall to 0.8 escalates nothing.
        let open = OpenTicket {
            highest_risk: 0.95,
            booked: false,
            proactive: true,
        };
        let score = Score {
            time: 0,
            probability: 0.8,
            threshold: 0.5,
        };
        let (_, decision) = decide(&policy, Streak::default(), score, Some(open), None);
        assert_eq!(decision, Decision::Recur { escalate_to: None });
    }

    #[test]
    fn a_replayed_score_changes_nothing() {
        let policy = TicketPolicy::default();
        let score = Score {
            time: 5 * HOUR,
            probability: 0.9,
            threshold: 0.5,
        };
        let (streak, first) = decide(&policy, Streak::default(), score, None, None);
        assert_eq!(first, Decision::Nothing);
        let (again, replay) = decide(&policy, streak, score, None, None);
        assert_eq!(replay, Decision::Replay);
        assert_eq!(again, streak);
    }

    #[test]
    fn settings_are_checked() {
        assert!(TicketPolicy::default().validate().is_ok());
        let bad = TicketPolicy {
            close_ratio: 1.2,
            ..TicketPolicy::default()
        };
        let unreachable = TicketPolicy {
            cooldown_rise: 1.0,
            ..TicketPolicy::default()
        };
        assert!(
            unreachable
                .validate()
                .unwrap_err()
                .contains("cooldown_rise")
        );
        assert!(bad.validate().unwrap_err().contains("close_ratio"));
        let inverted = TicketPolicy {
            priority_bounds: [0.5, 0.75, 0.9],
            ..TicketPolicy::default()
        };
        assert!(inverted.validate().unwrap_err().contains("priority_bounds"));
    }
}

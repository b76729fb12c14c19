//! Scores to tickets: new predictions are applied to their (device, mode)'s ticket policy
//! in event time, a batch of streaks at a time, each locked (`FOR UPDATE SKIP LOCKED`:
//! a streak another replica holds is that replica's to apply), and what the policy
//! decides is written in the same transaction as the streaks.

use std::collections::HashMap;
use std::time::Duration;

use super::booking::DAY_MICROS;
use super::policy::{self, Cooldown, Decision, OpenTicket, Score, Streak};
use super::window;
use super::{DispatchError, Dispatcher, PassReport};
use crate::contract::{EpochMicros, duration_micros};
use crate::store::{
    DeviceContext, Opened, PredictionSignal, StoreTx, StreakRow, TicketKind, TicketSignal,
    Transition,
};

/// Streaks locked and written per transaction.
const GROUPS_PER_TRANSACTION: usize = 500;
/// A threshold for a mode no `models` row describes (a model removed since it scored).
const FALLBACK_THRESHOLD: f64 = 0.5;

/// Repeats of one device and mode in a batch, written as one merge.
#[derive(Debug, Default)]
struct Repeats {
    count: u32,
    first_at: EpochMicros,
    last_at: EpochMicros,
    risk: f64,
    model_version: String,
    top_factors: serde_json::Value,
    escalate_to: Option<u8>,
}

impl Dispatcher {
    /// Applies every prediction not applied yet. Returns the newest `written_at` applied
    /// and whether some were left to another replica.
    pub(super) async fn apply_predictions(
        &mut self,
        report: &mut PassReport,
    ) -> Result<(), DispatchError> {
        let (mark, _) = self.store.dispatch_progress().await?;
        let margin = duration_micros(self.config.read_margin);
        let since = mark.map(|m| m.saturating_sub(margin));
        let limit = self.config.signals_per_batch as i64;
        let mut newest: Option<EpochMicros> = None;
        let mut oldest_skipped: Option<EpochMicros> = None;
        loop {
            let batch = self.store.prediction_signals(since, limit).await?;
            let full = batch.len() as i64 >= limit;
            if batch.is_empty() {
                break;
            }
            let mut groups: Vec<((i32, String), Vec<PredictionSignal>)> = Vec::new();
            let mut index: HashMap<(i32, String), usize> = HashMap::new();
            for signal in batch {
                let key = (signal.device_id, signal.failure_mode.clone());
                let at = *index.entry(key.clone()).or_insert_with(|| {
                    groups.push((key, Vec::new()));
                    groups.len() - 1
                });
                groups[at].1.push(signal);
            }
            let mut applied = 0;
            for chunk in groups.chunks_mut(GROUPS_PER_TRANSACTION) {
                for (_, signals) in chunk.iter_mut() {
                    signals.sort_by_key(|s| s.time);
                }
                let (done, skipped) = self.apply_chunk(chunk, report).await?;
                applied += done;
                for (key, signals) in chunk.iter() {
                    let written = signals.iter().map(|s| s.written_at).max();
                    if skipped.contains(key) {
                        let first = signals.iter().map(|s| s.written_at).min();
                        oldest_skipped = oldest_skipped.min(first).or(oldest_skipped.or(first));
                    } else {
                        newest = newest.max(written);
                    }
                }
            }
            if !full || applied == 0 {
                break;
            }
        }
        // A streak left to another replica keeps the mark before its scores.
        let mark = match oldest_skipped {
            Some(skipped) => newest.map(|n| n.min(skipped.saturating_sub(1))),
            None => newest,
        };
        if mark.is_some() {
            self.store.set_dispatch_progress(mark, None).await?;
        }
        Ok(())
    }

    /// One transaction: lock the chunk's streaks, decide, write. Returns how many groups
    /// were applied and the keys another replica holds.
    async fn apply_chunk(
        &mut self,
        chunk: &[((i32, String), Vec<PredictionSignal>)],
        report: &mut PassReport,
    ) -> Result<(usize, Vec<(i32, String)>), DispatchError> {
        let mut pairs: Vec<(i32, String)> = chunk.iter().map(|(k, _)| k.clone()).collect();
        pairs.sort();
        let device_ids: Vec<i32> = pairs.iter().map(|p| p.0).collect();
        // Kind, tier and (for the few cars) a position of the last week.
        let oldest = chunk
            .iter()
            .flat_map(|(_, signals)| signals.iter().map(|s| s.time))
            .min()
            .unwrap_or_default();
        let contexts = self
            .store
            .device_contexts(&device_ids, oldest.saturating_sub(7 * DAY_MICROS))
            .await?;
        let mut tx = self.store.begin().await?;
        let locked = tx.lock_streaks(&pairs).await?;
        let mut streaks: HashMap<(i32, String), StreakRow> = locked
            .into_iter()
            .map(|row| ((row.device_id, row.failure_mode.clone()), row))
            .collect();
        let skipped: Vec<(i32, String)> = pairs
            .iter()
            .filter(|p| !streaks.contains_key(*p))
            .cloned()
            .collect();
        let held: Vec<(i32, String)> = pairs
            .iter()
            .filter(|p| streaks.contains_key(*p))
            .cloned()
            .collect();
        let open = tx.open_tickets_of(&held).await?;
        let mut tickets: HashMap<(i32, String), (i64, OpenTicket)> = open
            .into_iter()
            .map(|t| {
                (
                    (t.device_id, t.failure_mode),
                    (
                        t.id,
                        OpenTicket {
                            highest_risk: t.highest_risk,
                            booked: t.status != "open",
                            proactive: t.kind == "proactive",
                        },
                    ),
                )
            })
            .collect();
        let cooldowns = tx.last_faultless_visits(&held).await?;
        let mut applied = 0;
        for (key, signals) in chunk {
            let Some(row) = streaks.get_mut(key) else {
                continue;
            };
            applied += 1;
            let cooldown = cooldowns
                .get(key)
                .map(|&(resolved_at, highest_risk)| Cooldown {
                    resolved_at,
                    highest_risk,
                });
            let context = contexts.get(&key.0);
            self.apply_group(
                &mut tx,
                key,
                signals,
                row,
                &mut tickets,
                cooldown,
                context,
                report,
            )
            .await?;
        }
        let rows: Vec<StreakRow> = streaks.into_values().collect();
        tx.save_streaks(&rows).await?;
        tx.commit().await?;
        Ok((applied, skipped))
    }

    /// The scores of one (device, mode), in event time.
    #[allow(clippy::too_many_arguments)]
    async fn apply_group(
        &mut self,
        tx: &mut StoreTx,
        key: &(i32, String),
        signals: &[PredictionSignal],
        row: &mut StreakRow,
        tickets: &mut HashMap<(i32, String), (i64, OpenTicket)>,
        cooldown: Option<Cooldown>,
        context: Option<&DeviceContext>,
        report: &mut PassReport,
    ) -> Result<(), DispatchError> {
        let policy = self.config.policy_of(&key.1).clone();
        let mut streak = Streak {
            count: row.count,
            closing: row.closing,
            above_since: row.above_since,
            last_time: row.last_time,
        };
        let mut repeats: Option<Repeats> = None;
        for signal in signals {
            report.signals += 1;
            let facts = self.modes.facts(&signal.model_version, &key.1);
            let threshold = facts.map_or(FALLBACK_THRESHOLD, |f| f.threshold);
            let score = Score {
                time: signal.time,
                probability: signal.probability,
                threshold,
            };
            let ticket = tickets.get(key).map(|t| t.1);
            let (next, decision) = policy::decide(&policy, streak, score, ticket, cooldown);
            streak = next;
            match decision {
                Decision::Replay => report.replays += 1,
                Decision::Nothing => {}
                Decision::HeldByCooldown => report.held_by_cooldown += 1,
                Decision::Open { priority } => {
                    self.flush_repeats(tx, key, repeats.take(), context, streak, report)
                        .await?;
                    let signal_out =
                        self.proactive_signal(key, signal, priority, streak, context, 1, None);
                    let opened = tx.open_or_merge_ticket(&signal_out).await?;
                    let ticket_id = match opened {
                        Opened::Created { ticket_id } => {
                            report.opened += 1;
                            ticket_id
                        }
                        Opened::Merged { ticket_id, .. } => {
                            report.merged += 1;
                            ticket_id
                        }
                    };
                    // Merged: a customer's call or a critical event opened it since this
                    // batch read the open tickets — not the model's to cancel.
                    let proactive = matches!(opened, Opened::Created { .. });
                    tickets.insert(
                        key.clone(),
                        (
                            ticket_id,
                            OpenTicket {
                                highest_risk: signal.probability,
                                booked: !proactive,
                                proactive,
                            },
                        ),
                    );
                }
                Decision::Recur { escalate_to } => {
                    if let Some((_, open)) = tickets.get_mut(key) {
                        open.highest_risk = open.highest_risk.max(signal.probability);
                    }
                    let r = repeats.get_or_insert_with(|| Repeats {
                        first_at: signal.time,
                        ..Repeats::default()
                    });
                    r.count += 1;
                    r.last_at = signal.time;
                    if signal.probability >= r.risk || r.count == 1 {
                        r.risk = signal.probability;
                        r.model_version = signal.model_version.clone();
                        r.top_factors = signal.top_factors.clone();
                    }
                    if let Some(to) = escalate_to {
                        r.escalate_to = Some(r.escalate_to.map_or(to, |p| p.min(to)));
                    }
                }
                Decision::Cancel => {
                    self.flush_repeats(tx, key, repeats.take(), context, streak, report)
                        .await?;
                    if let Some((ticket_id, _)) = tickets.remove(key) {
                        let reason = format!(
                            "risk {:.2} stayed below the close threshold {:.2} for {} scores",
                            signal.probability,
                            threshold * policy.close_ratio,
                            policy.close_after
                        );
                        tx.transition(
                            ticket_id,
                            &Transition::Cancel,
                            signal.time,
                            &self.actor,
                            &reason,
                        )
                        .await?;
                        report.cancelled += 1;
                    }
                }
            }
        }
        self.flush_repeats(tx, key, repeats, context, streak, report)
            .await?;
        row.count = streak.count;
        row.closing = streak.closing;
        row.above_since = streak.above_since;
        row.last_time = streak.last_time;
        Ok(())
    }

    /// Writes a run of repeat occurrences as one merge (an escalation with its new
    /// priority and due time).
    async fn flush_repeats(
        &self,
        tx: &mut StoreTx,
        key: &(i32, String),
        repeats: Option<Repeats>,
        context: Option<&DeviceContext>,
        streak: Streak,
        report: &mut PassReport,
    ) -> Result<(), DispatchError> {
        let Some(r) = repeats else {
            return Ok(());
        };
        let last = PredictionSignal {
            device_id: key.0,
            failure_mode: key.1.clone(),
            time: r.last_at,
            probability: r.risk,
            model_version: r.model_version.clone(),
            top_factors: r.top_factors.clone(),
            written_at: 0,
        };
        let priority = r.escalate_to.unwrap_or(super::policy::LOWEST_PRIORITY);
        let mut signal = self.proactive_signal(
            key,
            &last,
            priority,
            streak,
            context,
            r.count,
            Some(r.first_at),
        );
        if r.escalate_to.is_none() {
            // Not an escalation: the priority and window stay the ticket's.
            signal.priority = super::policy::LOWEST_PRIORITY;
            signal.expected_failure_at = None;
            signal.due_at = None;
        }
        signal.reason = format!("risk {:.2} again", r.risk);
        match tx.open_or_merge_ticket(&signal).await? {
            Opened::Merged {
                escalated_from: Some(_),
                ..
            } => report.escalated += 1,
            Opened::Merged { .. } => report.merged += 1,
            Opened::Created { .. } => report.opened += 1,
        }
        Ok(())
    }

    /// The ticket signal of a score: priority adjusted for the device and customer, the
    /// expected failure from the mode's lead times given how long risk has been high.
    #[allow(clippy::too_many_arguments)]
    fn proactive_signal(
        &self,
        key: &(i32, String),
        signal: &PredictionSignal,
        risk_priority: u8,
        streak: Streak,
        context: Option<&DeviceContext>,
        occurrences: u32,
        first_at: Option<EpochMicros>,
    ) -> TicketSignal {
        let facts = self
            .modes
            .facts(&signal.model_version, &key.1)
            .or_else(|| self.modes.active(&key.1));
        let (leads, horizon) = facts.map_or((&[][..], Duration::from_secs(7 * 86_400)), |f| {
            (
                &f.lead_times_hours[..],
                // A horizon that is not a number is a week, not a panic.
                Duration::try_from_secs_f64((f.horizon_hours * 3600.0).clamp(3600.0, 3.2e9))
                    .unwrap_or(Duration::from_secs(7 * 86_400)),
            )
        });
        let elapsed = streak.above_since.map_or(Duration::ZERO, |since| {
            micros_to_duration(signal.time - since)
        });
        let remaining = window::expected_remaining(leads, horizon, elapsed, &self.config.window);
        let (criticality, tier) =
            context.map_or((window::Criticality::Normal, window::Tier::Standard), |c| {
                (
                    self.config.criticality_of(&c.kind),
                    window::Tier::parse(&c.tier),
                )
            });
        let priority = window::priority(risk_priority, criticality, tier, remaining);
        let due = window::due(signal.time, priority, remaining, &self.config.window);
        TicketSignal {
            kind: TicketKind::Proactive,
            device_id: key.0,
            failure_mode: key.1.clone(),
            at: signal.time,
            first_at: first_at.unwrap_or(signal.time),
            occurrences,
            priority,
            risk: Some(signal.probability),
            model_version: Some(signal.model_version.clone()),
            top_factors: signal.top_factors.clone(),
            expected_failure_at: Some(due.expected_failure_at),
            due_at: Some(due.due_at),
            actor: self.actor.clone(),
            reason: format!(
                "risk {:.2} held for {} scores; failure expected in {:.0} h{}",
                signal.probability,
                self.config.policy_of(&key.1).open_after,
                remaining.as_secs_f64() / 3600.0,
                if due.inside_window {
                    ""
                } else {
                    " (no room left before it: as soon as possible)"
                }
            ),
        }
    }
}

pub(super) fn micros_to_duration(micros: EpochMicros) -> Duration {
    Duration::from_micros(u64::try_from(micros).unwrap_or(0))
}

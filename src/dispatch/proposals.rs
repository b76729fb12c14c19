//! Telling customers of their visit, and improving visits nobody has been told of yet.
//!
//! A booking is made as soon as its ticket is released, so its slot is held, but its
//! customer is told only after `dispatch.proposal.hold` (at once for an urgent visit, a
//! rescheduled one, or one less than `min_notice` away). Meanwhile each pass re-places the
//! held visits ([`plan::improve`]) now that later tickets are booked around them: a visit
//! placed knowing only the tickets before it can join a route that now passes its door.
//! Nobody hears of a move; the proposal says where the visit ended up. One improver at a
//! time across replicas (an advisory lock); a move re-checks under the technicians' and
//! the ticket's locks that the booking is still held where it was planned from, and the
//! exclusion constraint has the last word.

use std::collections::HashMap;

use super::booking::{DAY_MICROS, calendar_of, job_component, technician};
use super::plan::{self, Calendar, Effort, Job, Placed, Point, Stop, Technician};
use super::{DispatchError, Dispatcher, PassReport};
use crate::contract::{EpochMicros, duration_micros};
use crate::store::{BookingMove, HeldBooking, Message, MessageType};

/// At most this many held bookings are considered by one improvement (the soonest told).
const MAX_MOVABLE: i64 = 5_000;
/// Held bookings told per transaction.
const PROPOSE_BATCH: i64 = 500;

/// What planning reads: technicians, their first names (for messages), and every live
/// booking and unavailability from a day before `clock` over the horizon.
pub(super) struct PlanView {
    pub technicians: Vec<Technician>,
    pub names: HashMap<i32, String>,
    pub calendar: Calendar,
    /// The period the calendar was read over, `[from, to)`.
    pub from: EpochMicros,
    pub to: EpochMicros,
}

/// A booking as its customer hears of it.
pub(super) struct Proposal<'a> {
    pub ticket_id: i64,
    pub booking_id: i64,
    pub start: EpochMicros,
    pub end: EpochMicros,
    pub technician: Option<&'a String>,
    /// The visit's due time: the message says whether the slot is inside the window.
    pub due: EpochMicros,
    pub urgent: bool,
}

/// The "booking proposed" (or, after a re-plan the customer must hear of, "rescheduled")
/// message; its key names the booking, so telling twice queues one message.
pub(super) fn proposal_message(
    proposal: &Proposal<'_>,
    rescheduled: bool,
    at: EpochMicros,
) -> Message {
    Message {
        idempotency_key: format!(
            "ticket:{}:booking:{}",
            proposal.ticket_id, proposal.booking_id
        ),
        message_type: if rescheduled {
            MessageType::Rescheduled
        } else {
            MessageType::BookingProposed
        },
        urgent: proposal.urgent,
        payload: serde_json::json!({
            "booking_id": proposal.booking_id,
            "slot_start": chrono::DateTime::from_timestamp_micros(proposal.start),
            "slot_end": chrono::DateTime::from_timestamp_micros(proposal.end),
            "technician": proposal.technician,
            "inside_window": proposal.end <= proposal.due,
        }),
        at,
    }
}

impl Dispatcher {
    pub(super) async fn plan_view(&self, clock: EpochMicros) -> Result<PlanView, DispatchError> {
        let rows = self.store.technicians_for_planning().await?;
        let names = rows
            .iter()
            .map(|r| {
                let first = r.name.split_whitespace().next().unwrap_or("").to_string();
                (r.id, first)
            })
            .collect();
        let technicians = rows.iter().filter_map(technician).collect();
        let horizon = i64::from(self.config.plan.horizon_days) + 2;
        let (from, to) = (clock - DAY_MICROS, clock + horizon * DAY_MICROS);
        Ok(PlanView {
            technicians,
            names,
            calendar: calendar_of(&self.store.calendar(from, to).await?),
            from,
            to,
        })
    }

    /// Until when a new booking is held before its customer is told; `None`: told now.
    pub(super) fn hold_until(
        &self,
        clock: EpochMicros,
        start: EpochMicros,
        urgent: bool,
        rescheduled: bool,
    ) -> Option<EpochMicros> {
        let proposal = &self.config.proposal;
        if urgent || rescheduled || proposal.hold.is_zero() {
            return None;
        }
        let until = clock
            .saturating_add(duration_micros(proposal.hold))
            .min(start.saturating_sub(duration_micros(proposal.min_notice)));
        (until > clock).then_some(until)
    }

    /// When a visit is due: the ticket's due time, else its priority's SLA from opening
    /// (one rule for booking and for moving a held booking).
    pub(super) fn due(
        &self,
        due_at: Option<EpochMicros>,
        opened_at: EpochMicros,
        priority: u8,
    ) -> EpochMicros {
        due_at.unwrap_or_else(|| {
            opened_at.saturating_add(duration_micros(self.config.window.sla(priority)))
        })
    }

    /// Tells the customers of held bookings whose hold is over, where the visit is now.
    pub(super) async fn propose(
        &self,
        clock: EpochMicros,
        names: &HashMap<i32, String>,
        report: &mut PassReport,
    ) -> Result<(), DispatchError> {
        loop {
            let mut tx = self.store.begin().await?;
            let due = tx.bookings_to_propose(clock, PROPOSE_BATCH).await?;
            if due.is_empty() {
                return Ok(());
            }
            for booking in &due {
                let message = proposal_message(
                    &Proposal {
                        ticket_id: booking.ticket_id,
                        booking_id: booking.booking_id,
                        start: booking.start,
                        end: booking.end,
                        technician: names.get(&booking.technician_id),
                        due: self.due(booking.due_at, booking.opened_at, booking.priority),
                        urgent: false,
                    },
                    false,
                    clock,
                );
                report.messages +=
                    u64::from(tx.queue_ticket_message(booking.ticket_id, &message).await?);
                tx.mark_proposed(booking.booking_id, clock).await?;
                report.proposed += 1;
            }
            tx.commit().await?;
        }
    }

    /// Re-places held visits where they now cost less, and writes the moves.
    pub(super) async fn improve(
        &self,
        clock: EpochMicros,
        view: PlanView,
        report: &mut PassReport,
    ) -> Result<(), DispatchError> {
        let settings = &self.config.proposal;
        // The baseline strategy is naive by definition: nothing improves its plan.
        if settings.improve_evaluations == 0 || self.config.strategy != plan::Strategy::Insertion {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        if !tx.try_improve_lock().await? {
            return Ok(());
        }
        let held = tx.movable_bookings(clock, MAX_MOVABLE).await?;
        let by_booking: HashMap<i64, &HeldBooking> =
            held.iter().map(|b| (b.booking_id, b)).collect();
        let placed: Vec<Placed> = held
            .iter()
            .filter_map(|booking| {
                let (latitude, longitude) = booking.site?;
                Some(Placed {
                    id: booking.booking_id,
                    technician_id: booking.technician_id,
                    start: booking.start,
                    end: booking.end,
                    job: Job {
                        site: Point {
                            latitude,
                            longitude,
                        },
                        kind: booking.device_kind.clone(),
                        component: job_component(&booking.failure_mode),
                        duration_micros: booking.end - booking.start,
                        // A held visit stays at least the notice away, so that it is still
                        // held (and told in its own time) wherever it moves.
                        earliest: clock.saturating_add(duration_micros(settings.min_notice)),
                        due: self.due(booking.due_at, booking.opened_at, booking.priority),
                    },
                })
            })
            .collect();
        if placed.is_empty() {
            return Ok(());
        }
        let effort = Effort {
            min_gain_km: settings.min_gain_km,
            max_evaluations: settings.improve_evaluations,
        };
        let plan_settings = self.config.plan.clone();
        let PlanView {
            technicians,
            mut calendar,
            from,
            to,
            ..
        } = view;
        let planned_on = calendar.clone();
        // Each evaluation searches every eligible technician's days: CPU work, off the
        // async workers.
        let moves = tokio::task::spawn_blocking(move || {
            plan::improve(&placed, &technicians, &mut calendar, &plan_settings, effort)
        })
        .await
        .map_err(|e| DispatchError::Planning(e.to_string()))?;
        if moves.is_empty() {
            return Ok(());
        }
        let notice = duration_micros(settings.min_notice);
        let changes: Vec<BookingMove> = moves
            .iter()
            .filter_map(|moved| {
                let booking = by_booking.get(&moved.id)?;
                Some(BookingMove {
                    booking_id: moved.id,
                    ticket_id: booking.ticket_id,
                    from_technician_id: moved.from_technician_id,
                    from_start: moved.from_start,
                    technician_id: moved.technician_id,
                    start: moved.start,
                    end: moved.end,
                    hold_until: moved.start.saturating_sub(notice),
                    gain_km: moved.gain,
                })
            })
            .collect();
        let technicians: Vec<i32> = changes
            .iter()
            .flat_map(|c| [c.from_technician_id, c.technician_id])
            .collect();
        let tickets: Vec<i64> = changes.iter().map(|c| c.ticket_id).collect();
        tx.lock_technicians(&technicians).await?;
        // With their locks held, their calendars must be the ones planned on: a booking
        // made meanwhile (another replica) would be overlapped or left without travel time.
        let now = calendar_of(&tx.calendar_of(&technicians, from, to).await?);
        if technicians
            .iter()
            .any(|&t| !same_stops(now.stops(t), planned_on.stops(t)))
        {
            report.improve_refused += changes.len() as u64;
            return Ok(());
        }
        tx.lock_tickets(&tickets).await?;
        tx.defer_double_booking_check().await?;
        let (mut improved, mut refused) = (0, 0);
        for change in &changes {
            if tx.move_held_booking(change, clock, &self.actor).await? {
                improved += 1;
            } else {
                refused += 1;
            }
        }
        match tx.commit().await {
            Ok(()) => {
                report.improved += improved;
                report.improve_refused += refused;
                Ok(())
            }
            // A slot was booked after the plan was read: nothing moved; the next pass
            // plans from what is there then.
            Err(error) if error.is_double_booking() => {
                tracing::debug!(%error, "improved plan refused at commit");
                report.improve_refused += improved + refused;
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// The same stops, whatever the order of stops that start together.
fn same_stops(a: &[Stop], b: &[Stop]) -> bool {
    let key = |s: &Stop| {
        let site = s
            .site
            .map(|p| (p.latitude.to_bits(), p.longitude.to_bits()));
        (s.start, s.end, site)
    };
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

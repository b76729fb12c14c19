//! Booking released tickets: most urgent first, claimed with `FOR UPDATE SKIP LOCKED`
//! (replicas book different tickets), the technician and slot [`plan`] offers best first,
//! the next candidate when the database refuses a slot another replica took (the
//! exclusion constraint is the last word), and the customer's message in the same
//! transaction; one ticket per transaction (it holds one technician's lock). A ticket
//! nobody can take is planned again after `dispatch.replan_after`,
//! and its customer is told once what was found.

use std::collections::HashMap;

use super::plan::{self, Calendar, Job, Point, Stop, Technician};
use super::proposals::{PlanView, Proposal, proposal_message};
use super::window::Criticality;
use super::{DispatchError, Dispatcher, PassReport};
use crate::contract::{EpochMicros, duration_micros};
use crate::store::{
    BookableTicket, Booked, BookingRequest, CalendarRow, Message, MessageType, NOT_COMPONENTS,
    PlannedOn, StoreTx, TechnicianPlanRow,
};

pub(super) const DAY_MICROS: EpochMicros = 86_400_000_000;
/// How often one ticket is planned again after finding its technician's visits changed:
/// each time another replica booked that technician in between, so a few per concurrent
/// replica's bookings (seen: with 3, two replicas booking 12 tickets onto 3 technicians
/// left one unbooked for an hour).
const MAX_STALE_REPLANS: usize = 16;

/// What the planner saw of the candidate's technician over the day around the slot: their
/// routed visits, checked under their booking lock.
pub(super) fn planned_on(calendar: &Calendar, candidate: &plan::Candidate) -> PlannedOn {
    let (from, to) = (
        candidate.start.saturating_sub(DAY_MICROS),
        candidate.end.saturating_add(DAY_MICROS),
    );
    PlannedOn {
        from,
        to,
        visits: calendar
            .stops(candidate.technician_id)
            .iter()
            .filter(|stop| stop.site.is_some() && stop.end > from && stop.start < to)
            .map(|stop| (stop.start, stop.end))
            .collect(),
    }
}

/// One ticket per transaction: a booking holds its technician's advisory lock until
/// commit, so a transaction booking several tickets would hold several technicians' locks
/// and two replicas could each wait for the other's (seen: `bench dispatch`, two replicas).
const CLAIM_BATCH: i64 = 1;

/// The planning view of a technician row; `None` (logged) when its time zone is unknown.
pub(crate) fn technician(row: &TechnicianPlanRow) -> Option<Technician> {
    let Ok(timezone) = row.timezone.parse::<chrono_tz::Tz>() else {
        tracing::warn!(technician = row.id, timezone = %row.timezone, "technician's time zone is unknown: not planned");
        return None;
    };
    Some(Technician {
        id: row.id,
        home: Point {
            latitude: row.home.0,
            longitude: row.home.1,
        },
        max_travel_km: row.max_travel_km,
        skills: row.skills.clone(),
        timezone,
        shift_days: row
            .shift_days
            .iter()
            .filter_map(|d| u8::try_from(*d).ok())
            .collect(),
        shift_start: row.shift_start,
        shift_end: row.shift_end,
    })
}

/// The planner's calendar of calendar rows (bookings at their sites, unavailability).
pub(crate) fn calendar_of(rows: &[CalendarRow]) -> Calendar {
    let mut calendar = Calendar::default();
    for row in rows {
        calendar.add(row.technician_id, stop_of(row));
    }
    calendar
}

/// A calendar row as the planner sees it.
pub(crate) fn stop_of(row: &CalendarRow) -> Stop {
    Stop {
        start: row.start,
        end: row.end,
        site: row.site.map(|(latitude, longitude)| Point {
            latitude,
            longitude,
        }),
    }
}

/// The component a technician must be able to repair: a silence or a critical event
/// names none, so any skill of the kind will do.
pub(crate) fn job_component(failure_mode: &str) -> String {
    let component = failure_mode
        .split_once('/')
        .map_or(failure_mode, |(_, c)| c);
    if NOT_COMPONENTS.contains(&component) || component == "unknown" {
        "*".to_string()
    } else {
        component.to_string()
    }
}

impl Dispatcher {
    pub(super) async fn book(
        &mut self,
        clock: EpochMicros,
        report: &mut PassReport,
    ) -> Result<(), DispatchError> {
        let mut view = self.plan_view(clock).await?;
        let mut booked_this_pass = 0usize;
        while booked_this_pass < self.config.bookings_per_pass {
            let mut tx = self.store.begin().await?;
            let claimed = tx.claim_bookable(clock, CLAIM_BATCH).await?;
            if claimed.is_empty() {
                break;
            }
            // A car is visited where its last position reading puts it.
            let cars: Vec<i32> = claimed
                .iter()
                .filter(|t| t.device_kind == "car")
                .map(|t| t.device_id)
                .collect();
            let positions = if cars.is_empty() {
                HashMap::new()
            } else {
                tx.reported_positions(&cars, clock - 7 * DAY_MICROS).await?
            };
            for ticket in &claimed {
                let site = positions
                    .get(&ticket.device_id)
                    .copied()
                    .or(ticket.position);
                let booked = self
                    .book_one(&mut tx, ticket, site, clock, &mut view, report)
                    .await?;
                booked_this_pass += usize::from(booked);
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// Books one ticket, or plans it again later. Returns whether it was booked.
    async fn book_one(
        &self,
        tx: &mut StoreTx,
        ticket: &BookableTicket,
        site: Option<(f64, f64)>,
        clock: EpochMicros,
        view: &mut PlanView,
        report: &mut PassReport,
    ) -> Result<bool, DispatchError> {
        let due = self.due(ticket.due_at, ticket.opened_at, ticket.priority);
        let duration = duration_micros(self.config.visit_duration);
        let mut why_not = "it has no location";
        if let Some((latitude, longitude)) = site {
            let job = Job {
                site: Point {
                    latitude,
                    longitude,
                },
                kind: ticket.device_kind.clone(),
                component: job_component(&ticket.failure_mode),
                duration_micros: duration,
                earliest: clock,
                due,
            };
            why_not = "no technician with the skill, in range and on shift has a free slot";
            let urgent = ticket.priority == 1
                && self.config.criticality_of(&ticket.device_kind) == Criticality::High;
            // A technician whose visits changed since the plan was read (another replica
            // booked them) is read again and the ticket planned again; past the limit it is
            // planned again after `replan_after`, like a ticket nobody can take.
            'plan: for _ in 0..=MAX_STALE_REPLANS {
                let candidates = plan::candidates(
                    &job,
                    &view.technicians,
                    &view.calendar,
                    &self.config.plan,
                    self.config.strategy,
                );
                for candidate in candidates {
                    let hold_until =
                        self.hold_until(clock, candidate.start, urgent, ticket.rebooking);
                    let planned_on = planned_on(&view.calendar, &candidate);
                    let booked = tx
                        .book(&BookingRequest {
                            ticket_id: ticket.id,
                            technician_id: candidate.technician_id,
                            start: candidate.start,
                            end: candidate.end,
                            site: Some((latitude, longitude)),
                            at: clock,
                            actor: &self.actor,
                            hold_until,
                            planned_on: Some(&planned_on),
                        })
                        .await?;
                    match booked {
                        Booked::Booked { booking_id } => {
                            view.calendar.add(
                                candidate.technician_id,
                                Stop {
                                    start: candidate.start,
                                    end: candidate.end,
                                    site: Some(job.site),
                                },
                            );
                            report.booked += 1;
                            // The customer is told now, or once the hold is over.
                            if hold_until.is_none() {
                                let message = proposal_message(
                                    &Proposal {
                                        ticket_id: ticket.id,
                                        booking_id,
                                        start: candidate.start,
                                        end: candidate.end,
                                        technician: view.names.get(&candidate.technician_id),
                                        due,
                                        urgent,
                                    },
                                    ticket.rebooking,
                                    clock,
                                );
                                report.messages +=
                                    u64::from(tx.queue_ticket_message(ticket.id, &message).await?);
                            }
                            return Ok(true);
                        }
                        Booked::SlotTaken => report.slot_taken += 1,
                        Booked::Stale => {
                            report.slot_taken += 1;
                            let rows = tx
                                .calendar_of(&[candidate.technician_id], view.from, view.to)
                                .await?;
                            view.calendar
                                .replace(candidate.technician_id, rows.iter().map(stop_of));
                            continue 'plan;
                        }
                        Booked::NotBookable => return Ok(false),
                    }
                }
                break;
            }
        }
        report.unbookable += 1;
        let retry = duration_micros(self.config.replan_after);
        tx.plan_later(ticket.id, clock.saturating_add(retry))
            .await?;
        if !ticket.planned_before {
            tx.ticket_event(
                ticket.id,
                clock,
                &self.actor,
                Some("open"),
                "open",
                &format!("not booked yet: {why_not}"),
            )
            .await?;
            let queued = tx
                .queue_ticket_message(
                    ticket.id,
                    &Message {
                        idempotency_key: format!("ticket:{}:notice", ticket.id),
                        message_type: MessageType::ProactiveNotice,
                        urgent: false,
                        payload: serde_json::json!({}),
                        at: clock,
                    },
                )
                .await?;
            report.messages += u64::from(queued);
        }
        Ok(false)
    }
}

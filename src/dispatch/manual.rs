//! A dispatcher books by hand (`POST /api/v1/tickets/{id}/book`): the times the planner
//! would offer now for an open ticket, and a chosen one booked under the same rules as the
//! planner's own booking — the gap rules ([`plan::fits`]), the ticket's row lock then the
//! technician's, the staleness check and the exclusion constraint — with the customer told
//! at once (a dispatcher's booking is not held).

use super::booking::{job_component, planned_on};
use super::plan::{self, Candidate, Job, Point};
use super::proposals::{PlanView, Proposal, proposal_message};
use super::window::Criticality;
use super::{DispatchError, Dispatcher};
use crate::contract::{EpochMicros, duration_micros};
use crate::store::{BookableTicket, Booked, BookingRequest};

/// A time a technician could take a ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotOption {
    pub technician_id: i32,
    pub start: EpochMicros,
    pub end: EpochMicros,
    /// Inside the ticket's window (before it is due).
    pub meets_due: bool,
}

/// What booking by hand did.
#[derive(Debug, Clone, PartialEq)]
pub enum HandBooked {
    Booked {
        booking_id: i64,
    },
    /// The ticket is not open (booked meanwhile, resolved, cancelled) or does not exist.
    NotOpen,
    /// The ticket's device has no location: nobody can be routed there.
    NoSite,
    /// The time does not fit the technician (shift, skill, range, their other visits), or
    /// was taken since: these fit now.
    Unfit(Vec<SlotOption>),
}

struct Planned {
    ticket: BookableTicket,
    view: PlanView,
    job: Job,
}

impl Dispatcher {
    async fn plan_ticket(
        &self,
        ticket_id: i64,
        clock: EpochMicros,
    ) -> Result<Result<Planned, HandBooked>, DispatchError> {
        let Some(ticket) = self.store.bookable_ticket(ticket_id).await? else {
            return Ok(Err(HandBooked::NotOpen));
        };
        let site = if ticket.device_kind == "car" {
            let mut tx = self.store.begin().await?;
            let positions = tx
                .reported_positions(&[ticket.device_id], clock - 7 * super::booking::DAY_MICROS)
                .await?;
            drop(tx);
            positions
                .get(&ticket.device_id)
                .copied()
                .or(ticket.position)
        } else {
            ticket.position
        };
        let Some((latitude, longitude)) = site else {
            return Ok(Err(HandBooked::NoSite));
        };
        let job = Job {
            site: Point {
                latitude,
                longitude,
            },
            kind: ticket.device_kind.clone(),
            component: job_component(&ticket.failure_mode),
            duration_micros: duration_micros(self.config.visit_duration),
            // Nobody is booked for a visit about to start: as for a customer's own choice.
            earliest: clock.saturating_add(duration_micros(self.config.proposal.min_notice)),
            due: self.due(ticket.due_at, ticket.opened_at, ticket.priority),
        };
        let view = self.plan_view(clock).await?;
        Ok(Ok(Planned { ticket, view, job }))
    }

    fn options_of(&self, planned: &Planned, limit: usize) -> Vec<SlotOption> {
        let settings = plan::PlanSettings {
            max_candidates: limit.max(1),
            ..self.config.plan.clone()
        };
        plan::candidates(
            &planned.job,
            &planned.view.technicians,
            &planned.view.calendar,
            &settings,
            self.config.strategy,
        )
        .into_iter()
        .take(limit)
        .map(|c| SlotOption {
            technician_id: c.technician_id,
            start: c.start,
            end: c.end,
            meets_due: c.meets_due,
        })
        .collect()
    }

    /// Up to `limit` times for an open ticket, best first, as the planner ranks them now;
    /// `Err` says why there are none.
    pub async fn booking_options(
        &self,
        ticket_id: i64,
        clock: EpochMicros,
        limit: usize,
    ) -> Result<Result<Vec<SlotOption>, HandBooked>, DispatchError> {
        Ok(self
            .plan_ticket(ticket_id, clock)
            .await?
            .map(|planned| self.options_of(&planned, limit)))
    }

    /// Books an open ticket on `technician_id` at `start`, if that fits by the planner's
    /// rules now; the customer is told in the same transaction.
    pub async fn book_by_hand(
        &self,
        ticket_id: i64,
        technician_id: i32,
        start: EpochMicros,
        clock: EpochMicros,
        actor: &str,
    ) -> Result<HandBooked, DispatchError> {
        let planned = match self.plan_ticket(ticket_id, clock).await? {
            Ok(planned) => planned,
            Err(refused) => return Ok(refused),
        };
        let unfit = |planned: &Planned| HandBooked::Unfit(self.options_of(planned, 3));
        let Some(technician) = planned
            .view
            .technicians
            .iter()
            .find(|t| t.id == technician_id)
        else {
            return Ok(unfit(&planned));
        };
        // A dispatcher may book past the ticket's window (late beats never, as the planner
        // itself offers): only the gap rules judge the time.
        let unbounded = Job {
            due: EpochMicros::MAX,
            ..planned.job.clone()
        };
        if !plan::fits(
            &unbounded,
            technician,
            &planned.view.calendar,
            &self.config.plan,
            start,
        ) {
            return Ok(unfit(&planned));
        }
        let end = start.saturating_add(planned.job.duration_micros);
        let candidate = Candidate {
            technician_id,
            start,
            end,
            added_km: 0.0,
            cost: 0.0,
            meets_due: end <= planned.job.due,
        };
        let on = planned_on(&planned.view.calendar, &candidate);
        let ticket = &planned.ticket;
        let mut tx = self.store.begin().await?;
        let booked = tx
            .book(&BookingRequest {
                ticket_id,
                technician_id,
                start,
                end,
                site: Some((planned.job.site.latitude, planned.job.site.longitude)),
                at: clock,
                actor,
                hold_until: None,
                planned_on: Some(&on),
            })
            .await?;
        let booking_id = match booked {
            Booked::Booked { booking_id } => booking_id,
            Booked::NotBookable => return Ok(HandBooked::NotOpen),
            Booked::SlotTaken | Booked::Stale => {
                drop(tx);
                // Read again: what fits now.
                return Ok(match self.plan_ticket(ticket_id, clock).await? {
                    Ok(fresh) => unfit(&fresh),
                    Err(refused) => refused,
                });
            }
        };
        let urgent = ticket.priority == 1
            && self.config.criticality_of(&ticket.device_kind) == Criticality::High;
        let message = proposal_message(
            &Proposal {
                ticket_id,
                booking_id,
                start,
                end,
                technician: planned.view.names.get(&technician_id),
                due: planned.job.due,
                urgent,
            },
            ticket.rebooking,
            clock,
        );
        tx.queue_ticket_message(ticket_id, &message).await?;
        tx.commit().await?;
        tracing::info!(
            ticket = ticket_id,
            technician = technician_id,
            booking = booking_id,
            actor,
            "booked by hand"
        );
        Ok(HandBooked::Booked { booking_id })
    }
}

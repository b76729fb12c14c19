//! A customer's answer through a signed link ([`crate::outreach::links`]): confirm the
//! visit, take another time, or decline. Each runs in one transaction under the ticket's
//! row lock, after checking that the message's visit is still the ticket's live one; it
//! uses up the message's links (`link_answers`: a second answer, even racing the first,
//! changes nothing) and writes the change through the dispatch rules — a confirmation
//! message, a booking by [`StoreTx::book`] (the exclusion constraint the last word), a
//! resolution as `customer_declined` — each with its `ticket_events` row, actor `customer`.
//!
//! Another time is one the planner would offer now: up to [`ALTERNATIVES`] slots on
//! different days, inside the visit's window, no sooner than `proposal.min_notice`, with
//! the customer's current visit taken out of the calendar. The one chosen is checked again
//! when it is booked; taken meanwhile, the customer is offered the times free then.

use std::collections::HashSet;

use chrono_tz::Tz;

use super::booking::{job_component, planned_on};
use super::plan::{self, Candidate, Job, Point};
use super::proposals::PlanView;
use super::{DispatchError, Dispatcher};
use crate::contract::{EpochMicros, duration_micros};
use crate::outreach::links::{LinkAction, actions_of};
use crate::store::{
    Booked, BookingRequest, LinkAnswer, LinkContext, Message, MessageType, Outcome, StoreTx,
    Transition, Transitioned,
};

/// How many other times a customer is offered.
pub const ALTERNATIVES: usize = 3;
/// Candidates the planner is asked for before picking one per day.
const SEARCHED: usize = 64;
/// Who answers through a link, in the audit.
const CUSTOMER: &str = "customer";

/// Another time the customer can take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    pub technician_id: i32,
    /// The technician's first name.
    pub technician: String,
    pub start: EpochMicros,
    pub end: EpochMicros,
}

/// What a link may still do, judged on the message's context.
#[derive(Debug, Clone, PartialEq)]
pub enum Standing {
    /// It may be answered.
    Open,
    /// The message was answered already (by this link or a sibling).
    Answered(LinkAnswer),
    /// The visit it is about changed since (moved, started, done, cancelled): the
    /// customer is pointed to the latest message.
    Changed,
    /// No such message or ticket, or an answer its message never offered.
    Unknown,
}

/// Whether a link of `action` may still answer its message.
pub fn standing(context: Option<&LinkContext>, action: LinkAction) -> Standing {
    let Some(context) = context else {
        return Standing::Unknown;
    };
    if !actions_of(&context.message_type).contains(&action) {
        return Standing::Unknown;
    }
    if let Some(answer) = &context.answer {
        return Standing::Answered(answer.clone());
    }
    let Some(ticket) = &context.ticket else {
        return Standing::Unknown;
    };
    let visit_unchanged = ticket.status == "booked"
        && context.booking_id.is_some()
        && ticket.live.as_ref().map(|b| b.id) == context.booking_id;
    let allowed = match action {
        LinkAction::Confirm | LinkAction::Reschedule => visit_unchanged,
        // Declining is about the ticket: any visit not started yet may be declined.
        LinkAction::Decline => matches!(ticket.status.as_str(), "open" | "booked"),
    };
    if allowed {
        Standing::Open
    } else {
        Standing::Changed
    }
}

/// What an answer did.
#[derive(Debug, Clone, PartialEq)]
pub enum Answered {
    Confirmed {
        booking_id: i64,
    },
    Declined,
    Moved {
        booking_id: i64,
        to: Alternative,
    },
    /// Nothing written: the link could not answer (see [`Standing`]).
    Refused(Standing),
    /// Nothing written: the chosen time is no longer free; these are.
    TimeGone(Vec<Alternative>),
}

impl Dispatcher {
    /// Other times for the link's visit, as of `clock` (event time), soonest first.
    pub async fn alternatives(
        &self,
        context: &LinkContext,
        clock: EpochMicros,
    ) -> Result<Vec<Alternative>, DispatchError> {
        let (candidates, view) = self.alternative_candidates(context, clock).await?;
        Ok(candidates.iter().map(|c| alternative(c, &view)).collect())
    }

    async fn alternative_candidates(
        &self,
        context: &LinkContext,
        clock: EpochMicros,
    ) -> Result<(Vec<Candidate>, PlanView), DispatchError> {
        let mut view = self.plan_view(clock).await?;
        let Some(ticket) = &context.ticket else {
            return Ok((Vec::new(), view));
        };
        let Some((latitude, longitude)) = ticket.site else {
            return Ok((Vec::new(), view));
        };
        // The customer's own visit frees its time for the others.
        if let Some(live) = &ticket.live {
            let kept: Vec<plan::Stop> = view
                .calendar
                .stops(live.technician_id)
                .iter()
                .filter(|s| !(s.start == live.start && s.end == live.end))
                .cloned()
                .collect();
            view.calendar.replace(live.technician_id, kept);
        }
        let job = Job {
            site: Point {
                latitude,
                longitude,
            },
            kind: ticket.device_kind.clone(),
            component: job_component(&ticket.failure_mode),
            duration_micros: duration_micros(self.config.visit_duration),
            earliest: clock.saturating_add(duration_micros(self.config.proposal.min_notice)),
            due: self.due(ticket.due_at, ticket.opened_at, ticket.priority),
        };
        let settings = plan::PlanSettings {
            max_candidates: SEARCHED,
            ..self.config.plan.clone()
        };
        let found = plan::candidates(
            &job,
            &view.technicians,
            &view.calendar,
            &settings,
            self.config.strategy,
        );
        let zone: Tz = context.timezone.parse().unwrap_or(Tz::UTC);
        let current = ticket.live.as_ref().map(|b| (b.technician_id, b.start));
        // Best first: the cheapest of each of the best days, inside the window only (the
        // visit is there to come before the failure).
        let mut days = HashSet::new();
        let mut chosen: Vec<Candidate> = found
            .into_iter()
            .filter(|c| c.meets_due && Some((c.technician_id, c.start)) != current)
            .filter(|c| {
                chrono::DateTime::from_timestamp_micros(c.start)
                    .is_some_and(|t| days.insert(t.with_timezone(&zone).date_naive()))
            })
            .take(ALTERNATIVES)
            .collect();
        chosen.sort_by_key(|c| c.start);
        Ok((chosen, view))
    }

    /// Answers a link: `choice` is the (technician, start) of the other time chosen, for
    /// [`LinkAction::Reschedule`]. `clock` is the event time of the answer.
    pub async fn answer_link(
        &self,
        outreach_id: i64,
        action: LinkAction,
        choice: Option<(i32, EpochMicros)>,
        clock: EpochMicros,
    ) -> Result<Answered, DispatchError> {
        let mut tx = self.store.begin().await?;
        let context = tx.lock_link(outreach_id).await?;
        let judged = standing(context.as_ref(), action);
        if judged != Standing::Open {
            return Ok(Answered::Refused(judged));
        }
        let Some(context) = context else {
            return Ok(Answered::Refused(Standing::Unknown));
        };
        let Some(ticket) = context.ticket.as_ref() else {
            return Ok(Answered::Refused(Standing::Unknown));
        };
        let ticket_id = ticket.id;
        let answered = match action {
            LinkAction::Confirm => {
                let Some(booking_id) = context.booking_id else {
                    return Ok(Answered::Refused(Standing::Unknown));
                };
                tx.confirm_booking(
                    ticket_id,
                    booking_id,
                    clock,
                    CUSTOMER,
                    &format!("customer confirmed the visit (link of message {outreach_id})"),
                )
                .await?;
                queue_confirmation(&mut tx, ticket_id, booking_id, clock).await?;
                Answered::Confirmed { booking_id }
            }
            LinkAction::Decline => {
                let done = tx
                    .transition(
                        ticket_id,
                        &Transition::Resolve {
                            outcome: Outcome::CustomerDeclined,
                            component: None,
                            action: None,
                        },
                        clock,
                        CUSTOMER,
                        &format!("customer declined the visit (link of message {outreach_id})"),
                    )
                    .await?;
                if !matches!(done, Transitioned::Done { .. }) {
                    return Ok(Answered::Refused(Standing::Changed));
                }
                Answered::Declined
            }
            LinkAction::Reschedule => {
                let (Some((technician_id, start)), Some(live)) = (choice, ticket.live.as_ref())
                else {
                    return Ok(Answered::Refused(Standing::Unknown));
                };
                // The times free now, with this ticket locked: the chosen one must be one.
                let (candidates, view) = self.alternative_candidates(&context, clock).await?;
                let Some(candidate) = candidates
                    .iter()
                    .find(|c| c.technician_id == technician_id && c.start == start)
                else {
                    drop(tx);
                    return Ok(Answered::TimeGone(
                        candidates.iter().map(|c| alternative(c, &view)).collect(),
                    ));
                };
                tx.give_up_booking(
                    ticket_id,
                    live.id,
                    clock,
                    CUSTOMER,
                    &format!("customer chose another time (link of message {outreach_id})"),
                )
                .await?;
                let planned = planned_on(&view.calendar, candidate);
                let booked = tx
                    .book(&BookingRequest {
                        ticket_id,
                        technician_id,
                        start: candidate.start,
                        end: candidate.end,
                        site: ticket.site,
                        at: clock,
                        actor: CUSTOMER,
                        hold_until: None,
                        planned_on: Some(&planned),
                    })
                    .await?;
                let Booked::Booked { booking_id } = booked else {
                    // Taken, or the technician's day changed, since the times were read.
                    drop(tx);
                    let fresh = self.alternatives(&context, clock).await?;
                    return Ok(Answered::TimeGone(fresh));
                };
                tx.confirm_booking(
                    ticket_id,
                    booking_id,
                    clock,
                    CUSTOMER,
                    "customer chose this time: confirmed",
                )
                .await?;
                queue_confirmation(&mut tx, ticket_id, booking_id, clock).await?;
                Answered::Moved {
                    booking_id,
                    to: alternative(candidate, &view),
                }
            }
        };
        let booking_id = match &answered {
            Answered::Confirmed { booking_id } | Answered::Moved { booking_id, .. } => {
                Some(*booking_id)
            }
            _ => None,
        };
        // The single use, last: a racing answer that got here first leaves this one
        // writing nothing.
        if !tx
            .record_link_answer(outreach_id, ticket_id, action.as_str(), clock, booking_id)
            .await?
        {
            drop(tx);
            let now = self.store.link_context(outreach_id).await?;
            return Ok(Answered::Refused(standing(now.as_ref(), action)));
        }
        tx.commit().await?;
        tracing::info!(
            message = outreach_id,
            ticket = ticket_id,
            action = action.as_str(),
            "customer answered by link"
        );
        Ok(answered)
    }
}

fn alternative(candidate: &Candidate, view: &PlanView) -> Alternative {
    Alternative {
        technician_id: candidate.technician_id,
        technician: view
            .names
            .get(&candidate.technician_id)
            .cloned()
            .unwrap_or_default(),
        start: candidate.start,
        end: candidate.end,
    }
}

/// The "booking confirmed" message, keyed by the booking: confirming twice tells once.
async fn queue_confirmation(
    tx: &mut StoreTx,
    ticket_id: i64,
    booking_id: i64,
    at: EpochMicros,
) -> Result<bool, DispatchError> {
    Ok(tx
        .queue_ticket_message(
            ticket_id,
            &Message {
                idempotency_key: format!("ticket:{ticket_id}:booking:{booking_id}:confirmed"),
                message_type: MessageType::BookingConfirmed,
                urgent: false,
                payload: serde_json::json!({ "booking_id": booking_id }),
                at,
            },
        )
        .await?)
}

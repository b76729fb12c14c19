//! A customer's answer through a signed link ([`crate::outreach::links`]): confirm the
//! visit, take another time, or decline. Only while the ticket is booked on the very visit
//! the message was about (else the customer is pointed to the latest message), and a move
//! or a decline only until [`LAST_CHANGE_MICROS`] before it starts. Each runs in one
//! transaction under the ticket's row lock (a move first takes the technicians' booking
//! locks: the lock order of every booking writer, technicians then tickets), re-checks
//! that standing, uses up the message's links (`link_answers`: a second answer, even
//! racing the first, changes nothing) and writes the change through the dispatch rules — a
//! confirmation message, a booking by [`StoreTx::book`] (the exclusion constraint the last
//! word), a resolution as `customer_declined` — each with its `ticket_events` row, actor
//! `customer`.
//!
//! Another time is offered as the planner would offer it now: up to [`ALTERNATIVES`] slots
//! on different days, inside the visit's window, no sooner than `proposal.min_notice`, with
//! the customer's own visit taken out of the calendar. The one chosen must still fit by the
//! planner's rules ([`plan::fits`]: skills, range, shift, travel from and to the visits
//! around it, window) when it is answered, and is booked through the booking path (which
//! refuses it if that technician's day changed meanwhile); refused, the customer is offered
//! the times free then. Planning reads on connections of its own before any lock is taken.

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
    /// The visit is about to start: moving or declining it here could send a technician to
    /// a door nobody opens; the customer is asked to call.
    TooLate,
    /// No such message or ticket, or an answer its message never offered.
    Unknown,
}

/// How long before a visit starts it can still be moved or declined by link.
pub const LAST_CHANGE_MICROS: EpochMicros = 2 * 3_600_000_000;

/// Whether a link of `action` may still answer its message at `now` (event time): only
/// while the ticket is booked on the very visit the message was about, and — to move or
/// decline it — more than [`LAST_CHANGE_MICROS`] before it starts.
pub fn standing(context: Option<&LinkContext>, action: LinkAction, now: EpochMicros) -> Standing {
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
    let live = ticket
        .live
        .as_ref()
        .filter(|b| ticket.status == "booked" && Some(b.id) == context.booking_id);
    match (live, action) {
        (None, _) => Standing::Changed,
        (Some(_), LinkAction::Confirm) => Standing::Open,
        (Some(visit), _) if visit.start.saturating_sub(LAST_CHANGE_MICROS) <= now => {
            Standing::TooLate
        }
        (Some(_), _) => Standing::Open,
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

/// What planning another time for a link's visit reads: the calendar without the
/// customer's own visit (it frees its time for the others) and the visit as a job.
struct Replan {
    view: PlanView,
    job: Job,
}

impl Dispatcher {
    /// Other times for the link's visit, as of `clock` (event time), soonest first.
    pub async fn alternatives(
        &self,
        context: &LinkContext,
        clock: EpochMicros,
    ) -> Result<Vec<Alternative>, DispatchError> {
        Ok(match self.replan(context, clock).await? {
            Some(replan) => self.offer(context, &replan),
            None => Vec::new(),
        })
    }

    async fn replan(
        &self,
        context: &LinkContext,
        clock: EpochMicros,
    ) -> Result<Option<Replan>, DispatchError> {
        let Some(ticket) = &context.ticket else {
            return Ok(None);
        };
        let Some((latitude, longitude)) = ticket.site else {
            return Ok(None);
        };
        let mut view = self.plan_view(clock).await?;
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
        Ok(Some(Replan { view, job }))
    }

    /// Up to [`ALTERNATIVES`] times, the cheapest of each of the best days, inside the
    /// window only (the visit is there to come before the failure), soonest first.
    fn offer(&self, context: &LinkContext, replan: &Replan) -> Vec<Alternative> {
        let settings = plan::PlanSettings {
            max_candidates: SEARCHED,
            ..self.config.plan.clone()
        };
        let found = plan::candidates(
            &replan.job,
            &replan.view.technicians,
            &replan.view.calendar,
            &settings,
            self.config.strategy,
        );
        let zone: Tz = context.timezone.parse().unwrap_or(Tz::UTC);
        let current = context
            .ticket
            .as_ref()
            .and_then(|t| t.live.as_ref())
            .map(|b| (b.technician_id, b.start));
        let mut days = HashSet::new();
        let mut chosen: Vec<Alternative> = found
            .iter()
            .filter(|c| c.meets_due && Some((c.technician_id, c.start)) != current)
            .filter(|c| {
                chrono::DateTime::from_timestamp_micros(c.start)
                    .is_some_and(|t| days.insert(t.with_timezone(&zone).date_naive()))
            })
            .take(ALTERNATIVES)
            .map(|c| alternative(c.technician_id, c.start, c.end, &replan.view))
            .collect();
        chosen.sort_by_key(|a| a.start);
        chosen
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
        // Another time is planned before any lock is taken (planning reads on connections
        // of its own), then booked under the lock order of every booking writer:
        // technicians, then the ticket.
        let mut moving = None;
        if action == LinkAction::Reschedule {
            let before = self.store.link_context(outreach_id).await?;
            let judged = standing(before.as_ref(), action, clock);
            let (Standing::Open, Some(before), Some((technician_id, start))) =
                (&judged, before, choice)
            else {
                return Ok(Answered::Refused(match judged {
                    Standing::Open => Standing::Unknown,
                    other => other,
                }));
            };
            let Some(replan) = self.replan(&before, clock).await? else {
                return Ok(Answered::TimeGone(Vec::new()));
            };
            let fits = replan
                .view
                .technicians
                .iter()
                .find(|t| t.id == technician_id)
                .is_some_and(|technician| {
                    plan::fits(
                        &replan.job,
                        technician,
                        &replan.view.calendar,
                        &self.config.plan,
                        start,
                    )
                });
            let end = start.saturating_add(replan.job.duration_micros);
            let live = before.ticket.as_ref().and_then(|t| t.live.as_ref());
            if !fits || live.is_some_and(|b| (b.technician_id, b.start) == (technician_id, start)) {
                return Ok(Answered::TimeGone(self.offer(&before, &replan)));
            }
            moving = Some((before, replan, technician_id, start, end));
        }
        let mut tx = self.store.begin().await?;
        if let Some((before, _, technician_id, _, _)) = &moving {
            let live = before.ticket.as_ref().and_then(|t| t.live.as_ref());
            let mut technicians = vec![*technician_id];
            technicians.extend(live.map(|b| b.technician_id));
            tx.lock_technicians(&technicians).await?;
        }
        let context = tx.lock_link(outreach_id).await?;
        let judged = standing(context.as_ref(), action, clock);
        if judged != Standing::Open {
            return Ok(Answered::Refused(judged));
        }
        let booking_id = context.as_ref().and_then(|c| c.booking_id);
        let (Some(context), Some(booking_id)) = (context, booking_id) else {
            return Ok(Answered::Refused(Standing::Unknown));
        };
        let Some(ticket) = context.ticket.as_ref() else {
            return Ok(Answered::Refused(Standing::Unknown));
        };
        let ticket_id = ticket.id;
        let answered = match (action, moving) {
            (LinkAction::Confirm, _) => {
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
            (LinkAction::Decline, _) => {
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
            (LinkAction::Reschedule, Some((before, replan, technician_id, start, end))) => {
                // The visit planned from must be the one still booked.
                let planned_from = before.ticket.as_ref().and_then(|t| t.live.clone());
                if ticket.live != planned_from {
                    return Ok(Answered::Refused(Standing::Changed));
                }
                tx.give_up_booking(
                    ticket_id,
                    booking_id,
                    clock,
                    CUSTOMER,
                    &format!("customer chose another time (link of message {outreach_id})"),
                )
                .await?;
                let chosen = Candidate {
                    technician_id,
                    start,
                    end,
                    added_km: 0.0,
                    cost: 0.0,
                    meets_due: true,
                };
                let planned = planned_on(&replan.view.calendar, &chosen);
                let booked = tx
                    .book(&BookingRequest {
                        ticket_id,
                        technician_id,
                        start,
                        end,
                        site: ticket.site,
                        at: clock,
                        actor: CUSTOMER,
                        hold_until: None,
                        planned_on: Some(&planned),
                    })
                    .await?;
                let Booked::Booked { booking_id: moved } = booked else {
                    // Taken, or the technician's day changed, since it was planned: nothing
                    // written; the times free now.
                    drop(tx);
                    let fresh = self.alternatives(&before, clock).await?;
                    return Ok(Answered::TimeGone(fresh));
                };
                tx.confirm_booking(
                    ticket_id,
                    moved,
                    clock,
                    CUSTOMER,
                    "customer chose this time: confirmed",
                )
                .await?;
                queue_confirmation(&mut tx, ticket_id, moved, clock).await?;
                Answered::Moved {
                    booking_id: moved,
                    to: alternative(technician_id, start, end, &replan.view),
                }
            }
            (LinkAction::Reschedule, None) => return Ok(Answered::Refused(Standing::Unknown)),
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
            return Ok(Answered::Refused(standing(now.as_ref(), action, clock)));
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

fn alternative(
    technician_id: i32,
    start: EpochMicros,
    end: EpochMicros,
    view: &PlanView,
) -> Alternative {
    Alternative {
        technician_id,
        technician: view.names.get(&technician_id).cloned().unwrap_or_default(),
        start,
        end,
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

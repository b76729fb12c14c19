//! Dispatch: where a risk becomes a job with a person, a time and a place (DESIGN.md
//! §Dispatch). Built so far: the ticket policy of one (device, failure mode)
//! ([`policy`]) — hysteresis, repeat occurrences, escalation, cancellation and cool-down as
//! a pure function of the scores in event time. The stage that feeds it from
//! `predictions`, the tables it writes (`tickets`, `ticket_events`, `bookings`,
//! `incidents`), booking and incidents come with the rest of the dispatch issue.

pub mod policy;

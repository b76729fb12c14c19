//! Dispatch: where a risk becomes a job with a person, a time and a place (DESIGN.md
//! §Dispatch). Built so far, pure: the ticket policy of one (device, failure mode)
//! ([`policy`]) — hysteresis, repeat occurrences, escalation, cancellation and cool-down —
//! and when the visit is due ([`window`]) — the expected failure from the mode's measured
//! lead times given how long risk has been high, priority from risk, criticality, tier and
//! imminence, due inside the window and the SLA. Its tables and their writes are in
//! `store::tickets`. The stage that feeds them from `predictions`, booking, incidents and
//! reactive tickets come with the rest of the dispatch issue.

pub mod policy;
pub mod window;

//! The gaps of a technician's working day — between what is already booked — that a visit
//! can go into, shared by the slot search ([`super::candidates`]) and by [`fits`], which
//! checks one given slot (a time a customer chose) by the same rules.

use super::{
    Booked, Calendar, EpochMicros, Job, PlanSettings, Point, Technician, haversine_km,
    is_shift_day, latest_end, local_date, work_day,
};

/// What a gap inherits from the stops before it and owes to the stops after it.
pub(super) struct GapContext {
    /// The last visit site before the gap, else home (unavailability carries location).
    pub previous_site: Point,
    /// The latest end of anything before the gap (stops may overlap, so not just the last).
    pub previous_end: EpochMicros,
    /// Index of the first route visit after the gap, if any.
    pub next_visit: Option<usize>,
    /// Index of the first booked stop after the gap.
    pub gap: usize,
}

/// Every gap of a day's booked stops (sorted by start), first to last.
pub(super) fn contexts(home: Point, booked: &[Booked]) -> Vec<GapContext> {
    let next_visit = next_visit_indices(booked);
    let mut previous_site = home;
    let mut previous_end = i64::MIN;
    (0..=booked.len())
        .map(|gap| {
            if gap > 0 {
                let before = booked[gap - 1];
                previous_end = previous_end.max(before.end);
                previous_site = before.route_site.unwrap_or(previous_site);
            }
            GapContext {
                previous_site,
                previous_end,
                next_visit: next_visit[gap],
                gap,
            }
        })
        .collect()
}

/// `result[g]` is the index of the first route visit at or after `g` (length `n + 1`), so
/// each gap knows where the technician must go next without rescanning.
pub(super) fn next_visit_indices(booked: &[Booked]) -> Vec<Option<usize>> {
    let mut result = vec![None; booked.len() + 1];
    for index in (0..booked.len()).rev() {
        result[index] = if booked[index].route_site.is_some() {
            Some(index)
        } else {
            result[index + 1]
        };
    }
    result
}

/// Whether the job can start at `start` with this technician, by the rules of the slot
/// search: skilled and in range, on the slot grid (`slot_step`), not before `job.earliest`,
/// ending by `job.due`, inside a
/// shift, and in a gap of their day with time to drive there from the stop before and on
/// to the visit after. (The search offers each gap's earliest start; a later start in the
/// same gap fits too.)
pub fn fits(
    job: &Job,
    technician: &Technician,
    calendar: &Calendar,
    settings: &PlanSettings,
    start: EpochMicros,
) -> bool {
    let Some(end) = start.checked_add(job.duration_micros) else {
        return false;
    };
    if settings.validate().is_err()
        || !job.site.is_valid()
        || job.duration_micros < 0
        || !technician.is_eligible(job)
        || start < job.earliest
        || end > job.due
        || start.rem_euclid(settings.slot_step_micros()) != 0
    {
        return false;
    }
    let Some(date) = local_date(technician.timezone, start) else {
        return false;
    };
    if !is_shift_day(technician, date) {
        return false;
    }
    let Some(day) = work_day(technician, calendar.stops(technician.id), date) else {
        return false;
    };
    contexts(technician.home, &day.booked).iter().any(|gap| {
        let depart = day.shift_start.max(gap.previous_end).max(job.earliest);
        let arrive = depart
            .saturating_add(settings.travel_micros(haversine_km(gap.previous_site, job.site)));
        start >= arrive && latest_end(job, &day, gap, settings).is_some_and(|latest| end <= latest)
    })
}

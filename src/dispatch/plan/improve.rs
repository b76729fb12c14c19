//! Improving visits already placed but not yet announced: each in turn is taken out of its
//! technician's day and put back where [`candidates`] now finds it cheapest, if that beats
//! where it is by at least `min_gain_km`. Visits placed as jobs arrived were placed
//! knowing only the jobs before them; taken out again once later jobs are known, a visit
//! can join a route that passes its door. Pure, deterministic, bounded by a count of
//! evaluations, so two replicas given the same plan propose the same moves.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use super::{
    Calendar, EpochMicros, Job, PlanSettings, Point, Slot, Stop, Strategy, Technician, candidates,
    haversine_km, insertion_cost, local_date, next_visit_indices, round_up, route_km, work_day,
};

/// A visit that may still move.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The caller's key (a booking id).
    pub id: i64,
    pub technician_id: i32,
    pub start: EpochMicros,
    pub end: EpochMicros,
    /// `earliest` is the earliest a moved visit may start (now, or later).
    pub job: Job,
}

/// One move of a visit: from where, to whom and when, and what it saved by the planning cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moved {
    pub id: i64,
    pub from_technician_id: i32,
    pub from_start: EpochMicros,
    pub technician_id: i32,
    pub start: EpochMicros,
    pub end: EpochMicros,
    /// Cost where it was less cost where it went (km of the planning cost).
    pub gain: f64,
}

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Effort {
    /// A move must save at least this (planning cost, km): no churn for crumbs.
    pub min_gain_km: f64,
    /// At most this many visits are re-evaluated (each one a search over every eligible
    /// technician's days).
    pub max_evaluations: usize,
}

/// Moves visits of `placed` while one saves at least `min_gain_km`, sweeping them in order
/// until a sweep moves nothing or the evaluations run out. `calendar` holds every visit
/// (the placed ones at their places) and is updated as they move. The moves are listed in
/// the order they were made (a visit may move more than once): applied in that order,
/// each goes to a slot that is free at that point, as it was here.
pub fn improve(
    placed: &[Placed],
    technicians: &[Technician],
    calendar: &mut Calendar,
    settings: &PlanSettings,
    effort: Effort,
) -> Vec<Moved> {
    if settings.validate().is_err() || !effort.min_gain_km.is_finite() {
        return Vec::new();
    }
    let mut now_at: Vec<(i32, EpochMicros, EpochMicros)> = placed
        .iter()
        .map(|p| (p.technician_id, p.start, p.end))
        .collect();
    let mut moves = Vec::new();
    let mut evaluations = 0usize;
    'sweeps: loop {
        let mut moved_any = false;
        for (index, visit) in placed.iter().enumerate() {
            if evaluations >= effort.max_evaluations {
                break 'sweeps;
            }
            evaluations += 1;
            let (technician_id, start, end) = now_at[index];
            let stop = Stop {
                start,
                end,
                site: Some(visit.job.site),
            };
            let Some(technician) = technicians.iter().find(|t| t.id == technician_id) else {
                continue;
            };
            if !calendar.remove(technician_id, &stop) {
                continue;
            }
            let here = cost_in_place(&visit.job, technician, calendar, start, end, settings);
            let best = candidates(
                &visit.job,
                technicians,
                calendar,
                settings,
                Strategy::Insertion,
            )
            .into_iter()
            .next();
            match (here, best) {
                (Some(here), Some(best)) if best.cost + effort.min_gain_km <= here => {
                    calendar.add(
                        best.technician_id,
                        Stop {
                            start: best.start,
                            end: best.end,
                            site: Some(visit.job.site),
                        },
                    );
                    now_at[index] = (best.technician_id, best.start, best.end);
                    moves.push(Moved {
                        id: visit.id,
                        from_technician_id: technician_id,
                        from_start: start,
                        technician_id: best.technician_id,
                        start: best.start,
                        end: best.end,
                        gain: here - best.cost,
                    });
                    moved_any = true;
                }
                _ => calendar.add(technician_id, stop),
            }
        }
        if !moved_any {
            break;
        }
    }
    reorder_days(
        placed,
        &mut now_at,
        technicians,
        calendar,
        settings,
        effort,
        &mut moves,
    );
    moves
}

/// Re-orders the day routes made only of visits that may move: visits placed as they came
/// are in the order they came, so the route zigzags. The shortest order found (2-opt) is
/// timed again from the shift's start, kept only if every visit still fits the shift and
/// ends by its due time (or, late already, no later) and it saves `min_gain_km`. Days with
/// a visit already announced or time off keep their order.
fn reorder_days(
    placed: &[Placed],
    now_at: &mut [(i32, EpochMicros, EpochMicros)],
    technicians: &[Technician],
    calendar: &mut Calendar,
    settings: &PlanSettings,
    effort: Effort,
    moves: &mut Vec<Moved>,
) {
    let mut days: BTreeMap<(i32, NaiveDate), Vec<usize>> = BTreeMap::new();
    for (index, (technician_id, start, _)) in now_at.iter().enumerate() {
        let technician = technicians.iter().find(|t| t.id == *technician_id);
        if let Some(date) = technician.and_then(|t| local_date(t.timezone, *start)) {
            days.entry((*technician_id, date)).or_default().push(index);
        }
    }
    for ((technician_id, date), mut members) in days {
        let Some(technician) = technicians.iter().find(|t| t.id == technician_id) else {
            continue;
        };
        let Some(day) = work_day(technician, calendar.stops(technician_id), date) else {
            continue;
        };
        let only_movable =
            day.booked.len() == members.len() && day.booked.iter().all(|b| b.route_site.is_some());
        if members.len() < 2 || !only_movable {
            continue;
        }
        members.sort_by_key(|&index| now_at[index].1);
        let sites: Vec<Point> = members.iter().map(|&i| placed[i].job.site).collect();
        let before = route_km(technician.home, &sites);
        let order = two_opt(technician.home, &sites);
        let ordered: Vec<Point> = order.iter().map(|&k| sites[k]).collect();
        let after = route_km(technician.home, &ordered);
        if after + effort.min_gain_km > before {
            continue;
        }
        let mut ready = day.shift_start;
        let mut previous = technician.home;
        let mut timed = Vec::with_capacity(order.len());
        for &k in &order {
            let index = members[k];
            let (job, (_, start_was, end_was)) = (&placed[index].job, now_at[index]);
            let arrive = ready
                .max(job.earliest)
                .saturating_add(settings.travel_micros(haversine_km(previous, job.site)));
            let Some(start) = round_up(arrive, settings.slot_step_micros()) else {
                break;
            };
            let end = start.saturating_add(end_was - start_was);
            let in_time = end <= job.due || (end_was > job.due && end <= end_was);
            if end > day.shift_end || !in_time {
                break;
            }
            timed.push((index, start, end));
            ready = end;
            previous = job.site;
        }
        if timed.len() != order.len() {
            continue;
        }
        let changed: Vec<(usize, EpochMicros, EpochMicros)> = timed
            .into_iter()
            .filter(|&(index, start, _)| now_at[index].1 != start)
            .collect();
        let gain = (before - after) / changed.len().max(1) as f64;
        for &(index, _, _) in &changed {
            let (_, start, end) = now_at[index];
            let site = Some(placed[index].job.site);
            calendar.remove(technician_id, &Stop { start, end, site });
        }
        for (index, start, end) in changed {
            let site = Some(placed[index].job.site);
            calendar.add(technician_id, Stop { start, end, site });
            moves.push(Moved {
                id: placed[index].id,
                from_technician_id: technician_id,
                from_start: now_at[index].1,
                technician_id,
                start,
                end,
                gain,
            });
            now_at[index] = (technician_id, start, end);
        }
    }
}

/// The visiting order of a route from home and back that 2-opt finds from the given
/// order: reverses a stretch while that shortens the route.
fn two_opt(home: Point, sites: &[Point]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sites.len()).collect();
    let at = |order: &[usize], position: isize| -> Point {
        usize::try_from(position)
            .ok()
            .and_then(|p| order.get(p))
            .map_or(home, |&k| sites[k])
    };
    let n = order.len() as isize;
    let mut improved = true;
    while improved {
        improved = false;
        for i in 0..n - 1 {
            for j in i + 1..n {
                let (a, b) = (at(&order, i - 1), at(&order, i));
                let (c, d) = (at(&order, j), at(&order, j + 1));
                let delta = haversine_km(a, c) + haversine_km(b, d)
                    - haversine_km(a, b)
                    - haversine_km(c, d);
                if delta < -1e-9 {
                    order[i as usize..=j as usize].reverse();
                    improved = true;
                }
            }
        }
    }
    order
}

/// What the visit costs where it is, by the insertion cost [`candidates`] uses: the detour
/// it adds between the route stops around it, the day's load and its delay. `None` when
/// the day's shift cannot be placed in time (a DST gap): then the visit stays.
fn cost_in_place(
    job: &Job,
    technician: &Technician,
    calendar: &Calendar,
    start: EpochMicros,
    end: EpochMicros,
    settings: &PlanSettings,
) -> Option<f64> {
    let date = local_date(technician.timezone, start)?;
    let day = work_day(technician, calendar.stops(technician.id), date)?;
    let gap = day.booked.partition_point(|b| b.start <= start);
    let previous = day.booked[..gap]
        .iter()
        .rev()
        .find_map(|b| b.route_site)
        .unwrap_or(technician.home);
    let next = next_visit_indices(&day.booked)[gap]
        .and_then(|index| day.booked[index].route_site)
        .unwrap_or(technician.home);
    let added_km = haversine_km(previous, job.site) + haversine_km(job.site, next)
        - haversine_km(previous, next);
    let slot = Slot {
        start,
        end,
        added_km,
    };
    Some(insertion_cost(job, &slot, &day, settings))
}

impl Calendar {
    /// The technician's stops are these from now on (read again from the database).
    pub fn replace(&mut self, technician_id: i32, stops: impl IntoIterator<Item = Stop>) {
        self.stops_by_technician.remove(&technician_id);
        for stop in stops {
            self.add(technician_id, stop);
        }
    }

    /// Takes one stop equal to `stop` out of the technician's calendar; false if none.
    pub fn remove(&mut self, technician_id: i32, stop: &Stop) -> bool {
        let Some(stops) = self.stops_by_technician.get_mut(&technician_id) else {
            return false;
        };
        match stops.iter().position(|existing| existing == stop) {
            Some(index) => {
                stops.remove(index);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::plan::tests::{job, point, technician, warsaw};
    use crate::dispatch::plan::travel_km;

    const HOUR: i64 = 3_600_000_000;

    /// Tuesday 3 March 2026, local time in Warsaw.
    fn tuesday(h: u32, m: u32) -> EpochMicros {
        warsaw(3, 3, h, m)
    }

    fn placed(id: i64, technician_id: i32, start: EpochMicros, site: Point) -> Placed {
        Placed {
            id,
            technician_id,
            start,
            end: start + HOUR,
            job: job(site, tuesday(7, 0), tuesday(16, 0)),
        }
    }

    fn calendar_of(visits: &[Placed]) -> Calendar {
        let mut calendar = Calendar::default();
        for visit in visits {
            calendar.add(
                visit.technician_id,
                Stop {
                    start: visit.start,
                    end: visit.end,
                    site: Some(visit.job.site),
                },
            );
        }
        calendar
    }

    /// [`reorder_days`] alone, from the visits' places.
    fn reorder(
        visits: &[Placed],
        technicians: &[Technician],
        calendar: &mut Calendar,
    ) -> Vec<Moved> {
        let mut now_at: Vec<_> = visits
            .iter()
            .map(|v| (v.technician_id, v.start, v.end))
            .collect();
        let mut moves = Vec::new();
        reorder_days(
            visits,
            &mut now_at,
            technicians,
            calendar,
            &PlanSettings::default(),
            EFFORT,
            &mut moves,
        );
        moves
    }

    const EFFORT: Effort = Effort {
        min_gain_km: 1.0,
        max_evaluations: 100,
    };

    #[test]
    fn a_visit_placed_with_a_far_technician_moves_to_one_who_arrived_nearby() {
        let site = point(52.40, 21.00);
        let technicians = [technician(1, point(52.0, 21.0)), technician(2, site)];
        let visits = [placed(7, 1, tuesday(10, 0), site)];
        let mut calendar = calendar_of(&visits);
        let before = travel_km(&technicians, &calendar);
        let moves = improve(
            &visits,
            &technicians,
            &mut calendar,
            &PlanSettings::default(),
            EFFORT,
        );
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!((moves[0].id, moves[0].from_technician_id), (7, 1));
        assert_eq!(moves[0].technician_id, 2);
        assert!(moves[0].end <= tuesday(16, 0));
        assert!(calendar.stops(1).is_empty());
        assert_eq!(calendar.stops(2).len(), 1);
        assert!(travel_km(&technicians, &calendar) < before - 80.0);
        // Where it is now is where it is best: nothing moves again (no churn).
        let again = improve(
            &visits
                .iter()
                .map(|v| Placed {
                    technician_id: 2,
                    start: moves[0].start,
                    end: moves[0].end,
                    ..v.clone()
                })
                .collect::<Vec<_>>(),
            &technicians,
            &mut calendar,
            &PlanSettings::default(),
            EFFORT,
        );
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn a_day_of_held_visits_in_arrival_order_is_driven_in_a_shorter_order() {
        let home = point(52.0, 21.0);
        let technicians = [technician(1, home)];
        // North, south, east, in that order: north to south crosses home.
        let (north, south, east) = (point(52.2, 21.0), point(51.8, 21.0), point(52.0, 21.3));
        let visits = [
            placed(1, 1, tuesday(8, 45), north),
            placed(2, 1, tuesday(10, 45), south),
            placed(3, 1, tuesday(12, 45), east),
        ];
        let mut calendar = calendar_of(&visits);
        let before = travel_km(&technicians, &calendar);
        let moves = reorder(&visits, &technicians, &mut calendar);
        let after = travel_km(&technicians, &calendar);
        assert!(after < before - 10.0, "{before} → {after}");
        assert!(!moves.is_empty());
        let stops = calendar.stops(1);
        assert_eq!(stops.len(), 3);
        assert!(
            stops.windows(2).all(|w| w[0].end <= w[1].start),
            "no overlap: {stops:?}"
        );
        assert!(stops.iter().all(|s| s.end <= tuesday(16, 0)));
        assert!(stops[0].start >= tuesday(8, 0));
        // North, then east, then south (or the mirror): never north to south directly.
        let order: Vec<Point> = stops.iter().filter_map(|s| s.site).collect();
        assert_eq!(order[1], east, "{order:?}");
    }

    #[test]
    fn a_day_with_a_visit_already_announced_keeps_its_order() {
        let home = point(52.0, 21.0);
        let technicians = [technician(1, home)];
        let visits = [
            placed(1, 1, tuesday(8, 45), point(52.2, 21.0)),
            placed(2, 1, tuesday(10, 45), point(51.8, 21.0)),
        ];
        let mut calendar = calendar_of(&visits);
        // Announced (not among the movable ones): the east visit at 12:45.
        calendar.add(
            1,
            Stop {
                start: tuesday(12, 45),
                end: tuesday(13, 45),
                site: Some(point(52.0, 21.3)),
            },
        );
        let moves = reorder(&visits, &technicians, &mut calendar);
        assert!(moves.is_empty(), "{moves:?}");
    }
}

//! Many devices at once become one incident.
//!
//! When a storm takes out a district or a firmware release breaks one model, hundreds of
//! devices raise the same signal within minutes. Dispatching each as its own ticket would
//! flood the technicians; one surge per area or model is one incident to handle. Pure: the
//! caller groups members by failure mode and passes them in; no clock, no IO.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use smartcore::cluster::dbscan::{DBSCAN, DBSCANParameters};
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::metrics::distance::Distance;

use super::plan::{Point, haversine_km};
use crate::contract::EpochMicros;

/// smartcore 0.7 numbers DBSCAN clusters with `i16`; with at most this many points it
/// cannot run out of cluster numbers (each cluster holds at least one point).
const MAX_CLUSTERED_POINTS: usize = i16::MAX as usize;
/// The same radius as `plan::haversine_km`, so both modules measure the same kilometres.
const MEAN_EARTH_RADIUS_KM: f64 = 6371.0088;

/// One device that raised the signal.
#[derive(Debug, Clone)]
pub struct Member {
    pub device_id: i32,
    pub model: Option<String>,
    pub position: Option<Point>,
    pub at: EpochMicros,
}

/// What makes a surge.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SurgeSettings {
    /// A surge has at least this many devices.
    pub min_devices: usize,
    /// Members within this of each other in time belong to the same run.
    #[serde(with = "humantime_serde")]
    pub window: std::time::Duration,
    /// DBSCAN eps, in great-circle km.
    pub radius_km: f64,
    /// DBSCAN min samples: neighbours (itself included) that make a point dense.
    pub min_points: usize,
}

impl Default for SurgeSettings {
    fn default() -> Self {
        Self {
            min_devices: 20,
            window: std::time::Duration::from_secs(10 * 60),
            radius_km: 5.0,
            min_points: 5,
        }
    }
}

impl SurgeSettings {
    /// Checks every field; the error names the field so a config mistake is found at once.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_devices == 0 {
            return Err("min_devices must be at least 1, got 0".to_owned());
        }
        if !(self.radius_km.is_finite() && self.radius_km > 0.0) {
            return Err(format!(
                "radius_km must be finite and above 0, got {}",
                self.radius_km
            ));
        }
        if self.min_points == 0 {
            return Err("min_points must be at least 1, got 0".to_owned());
        }
        Ok(())
    }

    fn window_micros(&self) -> i128 {
        i128::try_from(self.window.as_micros()).unwrap_or(i128::MAX)
    }
}

/// What a surge covers.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    Area { center: Point, radius_km: f64 },
    Model(String),
}

/// One incident standing for many devices.
#[derive(Debug, Clone, PartialEq)]
pub struct Surge {
    pub scope: Scope,
    /// Device ids, sorted.
    pub members: Vec<i32>,
    pub first_at: EpochMicros,
    pub last_at: EpochMicros,
}

/// The surges among members that all raised the same signal (the caller groups by failure mode).
/// Members are split into runs where consecutive times (sorted) are more than `window` apart;
/// in each run, area surges first: DBSCAN clusters (positions only) of at least `min_devices`
/// members; then among the members left, model surges: at least `min_devices` of one model.
/// A device is in at most one surge. Members without position can still be in a model surge.
///
/// Area comes first because a place explains more than a model: a storm hits every model.
/// A device listed several times counts once (its earliest valid position and first named
/// model are used); once in a surge, its members in later runs are ignored. Invalid
/// settings find nothing.
pub fn find_surges(members: &[Member], settings: &SurgeSettings) -> Vec<Surge> {
    if settings.validate().is_err() {
        return Vec::new();
    }
    let mut by_time: Vec<&Member> = members.iter().collect();
    by_time.sort_by_key(|member| (member.at, member.device_id));
    let window = settings.window_micros();
    let mut in_a_surge = HashSet::new();
    let mut surges = Vec::new();
    for run in by_time.chunk_by(|a, b| i128::from(b.at) - i128::from(a.at) <= window) {
        let devices = devices_in_run(run, &in_a_surge);
        for surge in surges_in_run(&devices, settings) {
            in_a_surge.extend(surge.members.iter().copied());
            surges.push(surge);
        }
    }
    surges.sort_by(|a, b| {
        a.first_at
            .cmp(&b.first_at)
            .then_with(|| a.members.first().cmp(&b.members.first()))
    });
    surges
}

/// A device as seen in one run.
#[derive(Debug)]
struct Device<'a> {
    first_at: EpochMicros,
    last_at: EpochMicros,
    model: Option<&'a str>,
    /// Only a position we can measure: NaN or off-globe coordinates are left out.
    position: Option<Point>,
}

/// The run's devices by id (so surges list members sorted), minus those already in a surge.
fn devices_in_run<'a>(run: &[&'a Member], in_a_surge: &HashSet<i32>) -> BTreeMap<i32, Device<'a>> {
    let mut devices: BTreeMap<i32, Device<'a>> = BTreeMap::new();
    for member in run.iter().filter(|m| !in_a_surge.contains(&m.device_id)) {
        let position = member.position.filter(|p| p.is_valid());
        let device = devices.entry(member.device_id).or_insert(Device {
            first_at: member.at,
            last_at: member.at,
            model: None,
            position: None,
        });
        device.last_at = device.last_at.max(member.at);
        device.model = device.model.or(member.model.as_deref());
        device.position = device.position.or(position);
    }
    devices
}

fn surges_in_run(devices: &BTreeMap<i32, Device<'_>>, settings: &SurgeSettings) -> Vec<Surge> {
    let mut surges = area_surges(devices, settings);
    let taken: HashSet<i32> = surges
        .iter()
        .flat_map(|surge| surge.members.iter().copied())
        .collect();
    surges.extend(model_surges(devices, &taken, settings));
    surges
}

fn area_surges(devices: &BTreeMap<i32, Device<'_>>, settings: &SurgeSettings) -> Vec<Surge> {
    let mut positioned: Vec<(i32, &Device<'_>, Point)> = devices
        .iter()
        .filter_map(|(&id, device)| device.position.map(|p| (id, device, p)))
        .collect();
    if positioned.len() < settings.min_devices {
        return Vec::new();
    }
    // Past smartcore's limit, the earliest devices are the ones that tell the story.
    if positioned.len() > MAX_CLUSTERED_POINTS {
        positioned.sort_by_key(|(id, device, _)| (device.first_at, *id));
        positioned.truncate(MAX_CLUSTERED_POINTS);
        positioned.sort_by_key(|(id, _, _)| *id);
    }
    let points: Vec<Point> = positioned.iter().map(|(_, _, p)| *p).collect();
    let labels = cluster_labels(&points, settings);
    let mut clusters: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (index, &label) in labels.iter().enumerate().filter(|(_, l)| **l > 0) {
        clusters.entry(label).or_default().push(index);
    }
    clusters
        .values()
        .filter(|indices| indices.len() >= settings.min_devices)
        .map(|indices| {
            let cluster_points: Vec<Point> = indices.iter().map(|&i| points[i]).collect();
            let center = spherical_mean(&cluster_points);
            let radius_km = cluster_points
                .iter()
                .map(|&p| haversine_km(center, p))
                .fold(0.0, f64::max);
            let members = indices.iter().map(|&i| (positioned[i].0, positioned[i].1));
            surge(Scope::Area { center, radius_km }, members)
        })
        .collect()
}

fn model_surges(
    devices: &BTreeMap<i32, Device<'_>>,
    taken: &HashSet<i32>,
    settings: &SurgeSettings,
) -> Vec<Surge> {
    let mut by_model: BTreeMap<&str, Vec<(i32, &Device<'_>)>> = BTreeMap::new();
    for (&id, device) in devices.iter().filter(|(id, _)| !taken.contains(id)) {
        if let Some(model) = device.model {
            by_model.entry(model).or_default().push((id, device));
        }
    }
    by_model
        .into_iter()
        .filter(|(_, members)| members.len() >= settings.min_devices)
        .map(|(model, members)| surge(Scope::Model(model.to_owned()), members.into_iter()))
        .collect()
}

/// Members must come in id order, so the list is sorted without another sort.
fn surge<'a>(scope: Scope, members: impl Iterator<Item = (i32, &'a Device<'a>)>) -> Surge {
    let mut ids = Vec::new();
    let mut first_at = EpochMicros::MAX;
    let mut last_at = EpochMicros::MIN;
    for (id, device) in members {
        ids.push(id);
        first_at = first_at.min(device.first_at);
        last_at = last_at.max(device.last_at);
    }
    debug_assert!(ids.is_sorted());
    Surge {
        scope,
        members: ids,
        first_at,
        last_at,
    }
}

/// Great-circle km between two rows of unit vectors `[x, y, z]`, for smartcore's DBSCAN.
///
/// The haversine of the angle between two unit vectors is a quarter of their squared
/// chord, so this is the haversine distance with every sine and cosine computed once per
/// point instead of once per pair: DBSCAN on a dense cluster compares every pair, twice.
#[derive(Debug, Clone, Copy)]
struct HaversineKm;

impl Distance<Vec<f64>> for HaversineKm {
    fn distance(&self, a: &Vec<f64>, b: &Vec<f64>) -> f64 {
        match (a.as_slice(), b.as_slice()) {
            ([xa, ya, za], [xb, yb, zb]) => {
                let squared_chord = (xa - xb).powi(2) + (ya - yb).powi(2) + (za - zb).powi(2);
                let haversine = (squared_chord / 4.0).clamp(0.0, 1.0);
                2.0 * MEAN_EARTH_RADIUS_KM * haversine.sqrt().asin()
            }
            // Rows are built here with three columns; anything else is infinitely far.
            _ => f64::INFINITY,
        }
    }
}

/// The point as a unit vector from the Earth's centre.
fn unit_vector(point: Point) -> [f64; 3] {
    let (latitude, longitude) = (point.latitude.to_radians(), point.longitude.to_radians());
    [
        latitude.cos() * longitude.cos(),
        latitude.cos() * longitude.sin(),
        latitude.sin(),
    ]
}

/// DBSCAN cluster of each point: 0 for noise, 1.. for clusters.
///
/// smartcore keeps the labels of `fit` private; `predict` on the same points is the public
/// way to read them. It votes among each point's eps-neighbours (ties go to the cluster),
/// so a border point surrounded mostly by noise reads as noise and a noise point beside a
/// cluster's border can read as part of it: the dense core of a surge is unaffected.
fn cluster_labels(points: &[Point], settings: &SurgeSettings) -> Vec<u32> {
    let noise = vec![0; points.len()];
    if points.is_empty() {
        return noise;
    }
    let flat: Vec<f64> = points.iter().flat_map(|&p| unit_vector(p)).collect();
    let Ok(matrix) = DenseMatrix::new(points.len(), 3, flat, false) else {
        return noise;
    };
    let parameters = DBSCANParameters::default()
        .with_distance(HaversineKm)
        .with_eps(settings.radius_km)
        .with_min_samples(settings.min_points);
    DBSCAN::<f64, u32, DenseMatrix<f64>, Vec<u32>, HaversineKm>::fit(&matrix, parameters)
        .and_then(|model| model.predict(&matrix))
        .unwrap_or(noise)
}

/// The mean position on the sphere (mean of unit vectors), which, unlike averaging degrees,
/// stays right for a cluster astride the antimeridian.
fn spherical_mean(points: &[Point]) -> Point {
    let (mut x, mut y, mut z) = (0.0, 0.0, 0.0);
    for &point in points {
        let [px, py, pz] = unit_vector(point);
        x += px;
        y += py;
        z += pz;
    }
    Point {
        latitude: z.atan2(x.hypot(y)).to_degrees(),
        longitude: y.atan2(x).to_degrees(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000;
    /// 2026-11-24 10:00 UTC.
    const T0: EpochMicros = 1_795_514_400_000_000;
    const WARSAW: Point = Point {
        latitude: 52.2297,
        longitude: 21.0122,
    };

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

        /// Uniform in a disc of `radius_km` around `center` (flat-Earth offsets are fine at city scale).
        fn near(&mut self, center: Point, radius_km: f64) -> Point {
            let distance = radius_km * self.next_unit().sqrt();
            let bearing = std::f64::consts::TAU * self.next_unit();
            let km_per_degree = 111.195;
            Point {
                latitude: center.latitude + distance * bearing.cos() / km_per_degree,
                longitude: center.longitude
                    + distance * bearing.sin()
                        / (km_per_degree * center.latitude.to_radians().cos()),
            }
        }
    }

    fn member(device_id: i32, model: &str, position: Option<Point>, at: EpochMicros) -> Member {
        Member {
            device_id,
            model: Some(model.to_owned()),
            position,
            at,
        }
    }

    fn burst(
        random: &mut Lcg,
        ids: std::ops::Range<i32>,
        center: Point,
        start: EpochMicros,
    ) -> Vec<Member> {
        ids.map(|id| {
            let at = start + (random.next_unit() * 5.0 * MINUTE as f64) as i64;
            member(id, "X200", Some(random.near(center, 3.0)), at)
        })
        .collect()
    }

    fn span(members: &[Member]) -> (EpochMicros, EpochMicros) {
        let times = members.iter().map(|m| m.at);
        (times.clone().min().unwrap_or(0), times.max().unwrap_or(0))
    }

    #[test]
    fn three_hundred_devices_around_one_city_are_one_area_surge_and_lone_cities_are_not() {
        let mut random = Lcg(7);
        let mut members = burst(&mut random, 0..300, WARSAW, T0);
        let (first_at, last_at) = span(&members);
        for (id, city) in [
            (1000, (50.0647, 19.9450)),
            (1001, (54.352, 18.6466)),
            (1002, (51.1079, 17.0385)),
        ] {
            let position = Point {
                latitude: city.0,
                longitude: city.1,
            };
            members.push(member(id, "X200", Some(position), T0 + 2 * MINUTE));
        }
        let surges = find_surges(&members, &SurgeSettings::default());
        assert_eq!(surges.len(), 1);
        let surge = &surges[0];
        assert_eq!(surge.members, (0..300).collect::<Vec<i32>>());
        assert_eq!((surge.first_at, surge.last_at), (first_at, last_at));
        let Scope::Area { center, radius_km } = surge.scope else {
            panic!("expected an area surge, got {:?}", surge.scope);
        };
        assert!(haversine_km(center, WARSAW) < 0.5, "center {center:?}");
        assert!((2.5..=3.1).contains(&radius_km), "radius {radius_km}");
    }

    #[test]
    fn three_hundred_devices_of_one_model_far_apart_are_one_model_surge() {
        // A 15 × 20 grid 2° apart around the equator: every neighbour is over 200 km away.
        let members: Vec<Member> = (0..300)
            .map(|id| {
                let position = Point {
                    latitude: -15.0 + 2.0 * f64::from(id / 20),
                    longitude: 2.0 * f64::from(id % 20),
                };
                member(id, "X200", Some(position), T0 + i64::from(id) * 1_000_000)
            })
            .collect();
        let surges = find_surges(&members, &SurgeSettings::default());
        assert_eq!(
            surges,
            vec![Surge {
                scope: Scope::Model("X200".to_owned()),
                members: (0..300).collect(),
                first_at: T0,
                last_at: T0 + 299 * 1_000_000,
            }]
        );
    }

    #[test]
    fn two_bursts_an_hour_apart_are_two_separate_surges() {
        let mut random = Lcg(11);
        let mut members = burst(&mut random, 100..130, WARSAW, T0 + 60 * MINUTE);
        members.extend(burst(&mut random, 0..30, WARSAW, T0));
        // Device 0 fails again in the second burst: it already belongs to the first surge.
        members.push(member(0, "X200", Some(WARSAW), T0 + 61 * MINUTE));
        let surges = find_surges(&members, &SurgeSettings::default());
        let member_lists: Vec<Vec<i32>> = surges.iter().map(|s| s.members.clone()).collect();
        assert_eq!(
            member_lists,
            vec![(0..30).collect::<Vec<i32>>(), (100..130).collect()]
        );
        assert!(surges[0].last_at < T0 + 5 * MINUTE);
        assert!(surges[1].first_at >= T0 + 60 * MINUTE);
    }

    #[test]
    fn no_members_make_no_surges() {
        assert_eq!(find_surges(&[], &SurgeSettings::default()), Vec::new());
    }

    #[test]
    fn devices_without_a_position_still_count_towards_a_model_surge() {
        let mut random = Lcg(3);
        // 18 dense devices are too few for an area surge on their own …
        let mut members = burst(&mut random, 0..18, WARSAW, T0);
        // … and 5 without a usable position cannot join one, but all 23 share a model.
        for (id, position) in [
            (18, None),
            (
                19,
                Some(Point {
                    latitude: f64::NAN,
                    longitude: 21.0,
                }),
            ),
            (
                20,
                Some(Point {
                    latitude: 52.0,
                    longitude: f64::INFINITY,
                }),
            ),
            (
                21,
                Some(Point {
                    latitude: 95.0,
                    longitude: 21.0,
                }),
            ),
            (22, None),
        ] {
            members.push(member(id, "X200", position, T0 + MINUTE));
        }
        // Devices with no model and no position are in nothing.
        members.extend((30..60).map(|id| Member {
            device_id: id,
            model: None,
            position: None,
            at: T0,
        }));
        let surges = find_surges(&members, &SurgeSettings::default());
        assert_eq!(surges.len(), 1);
        assert_eq!(surges[0].scope, Scope::Model("X200".to_owned()));
        assert_eq!(surges[0].members, (0..23).collect::<Vec<i32>>());
    }

    #[test]
    fn an_area_surge_takes_its_devices_before_model_surges_count() {
        let mut random = Lcg(5);
        let mut members = burst(&mut random, 0..25, WARSAW, T0);
        // 15 more X200s far away: with the 25 they would make 40, without them only 15.
        members.extend((100..115).map(|id| {
            let position = Point {
                latitude: 10.0,
                longitude: f64::from(id),
            };
            member(id, "X200", Some(position), T0 + MINUTE)
        }));
        let surges = find_surges(&members, &SurgeSettings::default());
        assert_eq!(surges.len(), 1);
        assert!(matches!(surges[0].scope, Scope::Area { .. }));
        assert_eq!(surges[0].members, (0..25).collect::<Vec<i32>>());
    }

    #[test]
    fn invalid_settings_are_named_and_find_nothing() {
        assert_eq!(SurgeSettings::default().validate(), Ok(()));
        let cases = [
            (
                "min_devices",
                SurgeSettings {
                    min_devices: 0,
                    ..Default::default()
                },
            ),
            (
                "radius_km",
                SurgeSettings {
                    radius_km: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "min_points",
                SurgeSettings {
                    min_points: 0,
                    ..Default::default()
                },
            ),
        ];
        let mut random = Lcg(1);
        let members = burst(&mut random, 0..50, WARSAW, T0);
        for (field, settings) in cases {
            let error = settings.validate().expect_err(field);
            assert!(error.starts_with(field), "{error}");
            assert!(find_surges(&members, &settings).is_empty());
        }
    }

    #[test]
    fn five_thousand_members_in_one_run_are_clustered_within_a_second_in_release() {
        let mut random = Lcg(42);
        let cities = [
            (52.2297, 21.0122),
            (50.0647, 19.9450),
            (51.1079, 17.0385),
            (54.3520, 18.6466),
            (52.4064, 16.9252),
            (51.7592, 19.4560),
            (53.4285, 14.5528),
            (50.2649, 19.0238),
            (51.2465, 22.5684),
            (53.1325, 23.1688),
        ];
        let mut members = Vec::new();
        for (index, (latitude, longitude)) in cities.into_iter().enumerate() {
            let first = 300 * index as i32;
            members.extend(burst(
                &mut random,
                first..first + 300,
                Point {
                    latitude,
                    longitude,
                },
                T0,
            ));
        }
        // 2,000 more scattered over the country: noise.
        members.extend((3000..5000).map(|id| {
            let position = Point {
                latitude: 49.0 + 6.0 * random.next_unit(),
                longitude: 14.0 + 10.0 * random.next_unit(),
            };
            Member {
                device_id: id,
                model: None,
                position: Some(position),
                at: T0 + MINUTE,
            }
        }));
        let started = std::time::Instant::now();
        let surges = find_surges(&members, &SurgeSettings::default());
        let elapsed = started.elapsed();
        println!(
            "5,000 members in one run: {} surges in {elapsed:?}",
            surges.len()
        );
        let areas = surges
            .iter()
            .filter(|s| matches!(s.scope, Scope::Area { .. }))
            .count();
        assert_eq!(areas, 10);
        if !cfg!(debug_assertions) {
            assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
        }
    }
}

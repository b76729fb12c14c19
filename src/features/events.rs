//! Events per device, sorted by time, for counts over windows.

use std::collections::HashMap;

use super::{EventRecord, HOUR_MICROS};

/// Events per device, sorted by time.
pub(super) struct EventIndex<'a> {
    by_device: HashMap<i32, Vec<&'a EventRecord>>,
}

impl<'a> EventIndex<'a> {
    pub(super) fn build(
        events: &'a [EventRecord],
        devices: &std::collections::HashSet<i32>,
    ) -> Self {
        let mut by_device: HashMap<i32, Vec<&EventRecord>> = HashMap::new();
        for event in events.iter().filter(|e| devices.contains(&e.device_id)) {
            by_device.entry(event.device_id).or_default().push(event);
        }
        for list in by_device.values_mut() {
            list.sort_by_key(|e| e.time);
        }
        EventIndex { by_device }
    }

    pub(super) fn count(
        &self,
        device: i32,
        from: i64,
        to: i64,
        keep: impl Fn(&EventRecord) -> bool,
    ) -> f64 {
        let Some(list) = self.by_device.get(&device) else {
            return 0.0;
        };
        let start = list.partition_point(|e| e.time < from);
        let end = list.partition_point(|e| e.time < to);
        list[start..end].iter().filter(|e| keep(e)).count() as f64
    }

    /// Distinct clock hours in `[from, to)` with an event of `code`.
    pub(super) fn active_hours(&self, device: i32, from: i64, to: i64, code: &str) -> f64 {
        let Some(list) = self.by_device.get(&device) else {
            return 0.0;
        };
        let start = list.partition_point(|e| e.time < from);
        let end = list.partition_point(|e| e.time < to);
        let mut hours = 0;
        let mut last_hour = None;
        for event in list[start..end].iter().filter(|e| e.code == code) {
            let hour = event.time.div_euclid(HOUR_MICROS);
            if last_hour != Some(hour) {
                hours += 1;
                last_hour = Some(hour);
            }
        }
        hours as f64
    }
}

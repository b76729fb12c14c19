//! The process metrics every Prometheus client exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, …), read from `/proc/self` at each
//! scrape. Elsewhere than Linux they are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/self/stat`'s times (`USER_HZ`, 100 on every Linux
/// architecture forewarn builds for).
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: f64,
    pub virtual_memory_bytes: f64,
    pub open_fds: f64,
    pub max_fds: Option<f64>,
    pub threads: f64,
    pub start_time_seconds: Option<f64>,
}

impl ProcessSample {
    /// Reads `/proc/self`; `None` where there is none.
    pub fn read() -> Option<ProcessSample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count from
        // the last ')'. Fields after it start at field 3 (state).
        let after_name = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |number: usize| -> Option<f64> { fields.get(number - 3)?.parse().ok() };
        let status_kib = |key: &str| -> Option<f64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line[key.len()..].split_whitespace().next()?.parse().ok()
        };
        let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("Max open files"))?;
                line["Max open files".len()..]
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
        Some(ProcessSample {
            cpu_seconds: (field(14)? + field(15)?) / TICKS_PER_SECOND,
            resident_memory_bytes: status_kib("VmRSS:")? * 1024.0,
            virtual_memory_bytes: field(23)?,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as f64,
            max_fds,
            threads: status_kib("Threads:")?,
            start_time_seconds: boot_time
                .zip(field(22))
                .map(|(boot, ticks)| boot + ticks / TICKS_PER_SECOND),
        })
    }
}

/// Registered on the registry's root, so the names carry no `forewarn_` prefix.
#[derive(Debug)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(sample) = ProcessSample::read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(sample.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            sample.resident_memory_bytes,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            sample.virtual_memory_bytes,
        )?;
        gauge(
            "process_open_fds",
            "Number of open file descriptors",
            sample.open_fds,
        )?;
        if let Some(max_fds) = sample.max_fds {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors",
                max_fds,
            )?;
        }
        gauge("process_threads", "Number of OS threads", sample.threads)?;
        if let Some(start) = sample.start_time_seconds {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                start,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_itself() {
        let Some(sample) = ProcessSample::read() else {
            return; // not Linux
        };
        assert!(sample.resident_memory_bytes > 1e6, "{sample:?}");
        assert!(sample.open_fds >= 3.0, "{sample:?}");
        assert!(sample.threads >= 1.0, "{sample:?}");
        assert!(sample.cpu_seconds >= 0.0, "{sample:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = sample.start_time_seconds.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{sample:?}"
        );
    }
}

//! Features in words a dispatcher can act on: "drum vibration rms 24 h mean 3.1σ above
//! this machine's baseline".

use super::FeatureSpec;

fn words(name: &str) -> String {
    name.replace('_', " ")
}

fn window_words(hours: i64) -> String {
    if hours % 24 == 0 && hours >= 48 {
        format!("{} days", hours / 24)
    } else {
        format!("{hours} h")
    }
}

/// Describes feature `name` at `value` (as computed with `spec`).
pub fn describe(spec: &FeatureSpec, name: &str, value: f64) -> String {
    let short = window_words(spec.short_window_hours);
    let long = window_words(spec.long_window_days * 24);
    if let Some(rest) = name.strip_prefix("events.") {
        let (what, window) = rest.rsplit_once('.').unwrap_or((rest, ""));
        if let Some(code) = what.strip_prefix("code_") {
            if window == "baseline_per_day" {
                return format!("event {code} usually {value:.2} × a day on this machine");
            }
            if let Some(hours) = window
                .strip_prefix("active_hours_")
                .and_then(|h| h.strip_suffix('h'))
                .and_then(|h| h.parse::<i64>().ok())
            {
                return format!(
                    "event {code} in {} separate hours of the last {}",
                    value.round() as i64,
                    window_words(hours)
                );
            }
        }
        let window = window
            .strip_suffix('h')
            .and_then(|h| h.parse::<i64>().ok())
            .map(window_words)
            .unwrap_or_default();
        let count = value.round() as i64;
        return match what.strip_prefix("code_") {
            Some(code) => format!("{count} × event {code} in the last {window}"),
            None => format!("{count} {what} events in the last {window}"),
        };
    }
    if let Some(model) = name.strip_prefix("device.model_") {
        return if value > 0.5 {
            format!("model {model}")
        } else {
            format!("not model {model}")
        };
    }
    if name == "device.age_days" {
        return format!("device is {:.0} days old", value);
    }
    let Some((subject, stat)) = name.rsplit_once('.') else {
        return format!("{} = {value:.3}", words(name));
    };
    let subject = words(subject);
    let direction = if value >= 0.0 { "above" } else { "below" };
    match stat {
        "z_short" => format!(
            "{subject} {short} mean {:.1}σ {direction} this machine's baseline",
            value.abs()
        ),
        "z_long" => format!(
            "{subject} {long} mean {:.1}σ {direction} this machine's baseline",
            value.abs()
        ),
        "vs_fleet_short" => format!(
            "{subject} {short} mean {:.2} {direction} the fleet's median",
            value.abs()
        ),
        "z_fleet_short" | "z_fleet_long" => {
            let window = if stat == "z_fleet_short" {
                &short
            } else {
                &long
            };
            format!(
                "{subject} {window} mean {:.1}σ {direction} this machine's usual place in the fleet",
                value.abs()
            )
        }
        "slope_short" | "slope_long" => {
            let window = if stat == "slope_short" { &short } else { &long };
            let trend = if value >= 0.0 { "rising" } else { "falling" };
            format!("{subject} {trend} {:.3} per day over {window}", value.abs())
        }
        "last" => format!("{subject} last hour {value:.2}"),
        "latest" => format!("{subject} latest reading {value:.2}"),
        "latest_age_hours" => format!("{subject} last read {value:.0} h ago"),
        "z_latest" => format!(
            "{subject} latest reading {:.1}σ {direction} this machine's baseline",
            value.abs()
        ),
        "hours_since_last" => format!("no {subject} reading for {value:.0} h"),
        "mean_short" => format!("{subject} {short} mean {value:.2}"),
        "std_short" => format!("{subject} {short} spread (σ) {value:.2}"),
        "min_short" => format!("{subject} {short} minimum {value:.2}"),
        "max_short" => format!("{subject} {short} peak {value:.2}"),
        "mean_long" => format!("{subject} {long} mean {value:.2}"),
        "std_long" => format!("{subject} {long} spread (σ) {value:.2}"),
        "min_long" => format!("{subject} {long} minimum {value:.2}"),
        "max_long" => format!("{subject} {long} peak {value:.2}"),
        "hours_since_maintenance" => {
            format!("{subject} last serviced {:.0} days ago", value / 24.0)
        }
        "hours_since_failure" => format!("{subject} last failed {:.0} days ago", value / 24.0),
        _ => format!("{subject} {} = {value:.3}", words(stat)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_read_as_sentences() {
        let spec = FeatureSpec::default();
        assert_eq!(
            describe(&spec, "drum_vibration_rms.z_short", 3.12),
            "drum vibration rms 24 h mean 3.1σ above this machine's baseline"
        );
        assert_eq!(
            describe(&spec, "cranking_voltage_v.z_fleet_long", -2.04),
            "cranking voltage v 7 days mean 2.0σ below this machine's usual place in the fleet"
        );
        assert_eq!(
            describe(&spec, "cranking_voltage_v.vs_fleet_short", -0.5),
            "cranking voltage v 24 h mean 0.50 below the fleet's median"
        );
        assert_eq!(
            describe(&spec, "drain_time_s.z_latest", 4.31),
            "drain time s latest reading 4.3σ above this machine's baseline"
        );
        assert_eq!(
            describe(&spec, "drain_time_s.slope_long", 12.0),
            "drain time s rising 12.000 per day over 7 days"
        );
        assert_eq!(
            describe(&spec, "events.code_E31.168h", 4.0),
            "4 × event E31 in the last 7 days"
        );
        assert_eq!(
            describe(&spec, "events.error.24h", 2.0),
            "2 error events in the last 24 h"
        );
        assert_eq!(
            describe(&spec, "events.code_E31.active_hours_168h", 3.0),
            "event E31 in 3 separate hours of the last 7 days"
        );
        assert_eq!(
            describe(&spec, "events.code_E31.baseline_per_day", 0.25),
            "event E31 usually 0.25 × a day on this machine"
        );
        assert_eq!(
            describe(&spec, "events.error.24h", 2.0),
            "2 error events in the last 24 h"
        );
        assert_eq!(
            describe(&spec, "drum_bearing.hours_since_maintenance", 240.0),
            "drum bearing last serviced 10 days ago"
        );
    }
}

//! `forewarn evaluate`: judge a model (default: the active ones) on a time range and print
//! the figures; optionally write the raised flags for `forewarn-sim score`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use forewarn::config::Config;
use forewarn::training::{self, Evaluation};

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// A version in `models` or a path to a `model.json`; default: the active models.
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    from: chrono::DateTime<chrono::Utc>,
    #[arg(long)]
    to: chrono::DateTime<chrono::Utc>,
    /// Time between scored points of a device.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    stride: Duration,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Write the raised flags as JSON lines (`forewarn-sim score --flags`).
    #[arg(long)]
    flags_out: Option<PathBuf>,
    /// Judge at this probability threshold instead of each mode's own (to explore the
    /// precision/recall trade-off).
    #[arg(long)]
    threshold: Option<f64>,
}

pub async fn run(args: EvaluateArgs, config: &Config) -> anyhow::Result<()> {
    let (store, _cluster) = super::open_refreshed_store(config).await?;
    let evaluation = training::evaluate_models(
        &store,
        args.model.as_deref(),
        args.from,
        args.to,
        training::stride_micros(args.stride),
        args.threshold,
    )
    .await
    .context("evaluating")?;
    if let Some(path) = args.flags_out {
        let mut lines = String::new();
        for (device, component, time) in &evaluation.flags {
            lines.push_str(
                &serde_json::json!({"device": device, "component": component, "time": time})
                    .to_string(),
            );
            lines.push('\n');
        }
        std::fs::write(&path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&evaluation)?);
    } else {
        print_evaluation(&evaluation);
    }
    Ok(())
}

fn print_evaluation(evaluation: &Evaluation) {
    println!("evaluation {} .. {}", evaluation.from, evaluation.to);
    println!(
        "  {:<26} {:>8} {:>10} {:>9} {:>7} {:>13} {:>11} {:>7}",
        "failure mode",
        "failures",
        "≥24h ahead",
        "precision",
        "recall",
        "FA/1000 d-d",
        "median lead",
        "PR-AUC"
    );
    for m in &evaluation.failure_modes {
        println!(
            "  {:<26} {:>8} {:>10} {:>9.2} {:>7.2} {:>13.2} {:>11} {:>7.3}",
            m.failure_mode,
            m.failures,
            m.flagged_24h_ahead,
            m.precision,
            m.recall,
            m.false_alarms_per_1000_device_days,
            m.median_lead_time_hours
                .map_or("-".into(), |h| format!("{h:.0} h")),
            m.pr_auc
        );
    }
    println!(
        "  overall: {}",
        serde_json::to_string(&evaluation.overall).unwrap_or_default()
    );
}

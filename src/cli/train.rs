//! `forewarn train`: train every failure mode from the database's history, promote as
//! asked, print the report.

use anyhow::Context;
use forewarn::config::Config;
use forewarn::training::{self, Decision, TrainReport};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// First event time to use (RFC 3339); default: the oldest hourly bucket.
    #[arg(long)]
    from: Option<chrono::DateTime<chrono::Utc>>,
    /// End of the data (exclusive); the validation window is its last
    /// `train.validation_window`. Default: the newest hourly bucket.
    #[arg(long)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Version name; default `v<UTC timestamp>`.
    #[arg(long)]
    version: Option<String>,
    /// `if-better`: activate per mode only where it beats the active model on the
    /// validation window; `always`; `never`.
    #[arg(long, default_value = "if-better")]
    promote: Promote,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Promote {
    IfBetter,
    Always,
    Never,
}

pub async fn run(args: TrainArgs, config: &Config) -> anyhow::Result<()> {
    let (store, _cluster) = super::open_refreshed_store(config).await?;
    let range = training::training_range(&store, args.from, args.until).await?;
    let (artifact, report) = training::train(&store, &config.train, range, args.version)
        .await
        .context("training")?;
    let stride = training::stride_micros(config.train.example_stride);
    let decisions = match args.promote {
        Promote::Never => Vec::new(),
        Promote::IfBetter => training::promote_if_better(&store, &artifact, stride)
            .await
            .context("promotion")?,
        Promote::Always => {
            training::promote_all(&store, &artifact, "promoted by hand (--promote always)").await?;
            Vec::new()
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"report": report, "promotions": decisions})
        );
    } else {
        print_train_report(&report, &decisions);
    }
    Ok(())
}

fn print_train_report(report: &TrainReport, decisions: &[Decision]) {
    println!(
        "trained {} on {} .. {} (tuning from {} in {} fold(s), test from {}) in {:.1} s",
        report.version,
        report.data_from,
        report.data_to,
        report.tuning_from,
        report.tuning_folds,
        report.test_from,
        report.seconds
    );
    println!("  figures: test window (nothing fitted or chosen on it) | tuning window");
    println!(
        "artifact {}  card {}",
        report.artifact.display(),
        report.card.display()
    );
    for mode in &report.modes {
        let tuning = &mode.tuning_window.events;
        let baseline = mode
            .baselines
            .iter()
            .map(|b| {
                format!(
                    "{} {}/{} p {:.2}",
                    b.rule, b.test.flagged_24h_ahead, b.test.failures, b.test.precision
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  {:<26} {:<24} horizon {:>4.0} h  threshold {:.3}  flagged ≥24h {}/{}  false {}  unjudged {}  precision {:.2}  PR-AUC {:.3} | {}/{} p {:.2} | baselines: {}",
            mode.failure_mode,
            mode.algorithm,
            mode.horizon_hours,
            mode.threshold,
            mode.events.flagged_24h_ahead,
            mode.events.failures,
            mode.events.false_flags,
            mode.events.unjudged_flags,
            mode.events.precision,
            mode.pr_auc,
            tuning.flagged_24h_ahead,
            tuning.failures,
            tuning.precision,
            baseline,
        );
    }
    for decision in decisions {
        println!(
            "  {} {}: {}",
            if decision.promoted {
                "promoted"
            } else {
                "kept active"
            },
            decision.failure_mode,
            decision.reason
        );
    }
}

//! NASA C-MAPSS FD001 end to end — import into a real database, rollup, features, the
//! regressor's settings chosen on held-out training units, the test units scored once —
//! in the quick version of `forewarn bench cmapss`, so the README's figure is reproduced
//! on every CI run. The dataset is vendored (`datasets/cmapss`): if it is missing, the
//! test fails; it never skips.

use std::path::Path;

use forewarn::bench::cmapss::{CmapssBench, RUL_CAP, run_cmapss_bench};
use forewarn::config::Config;

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmapss_fd001_rmse_is_at_most_16_with_settings_chosen_on_training_units_only() {
    support::init_logs();
    let server = tokio::task::spawn_blocking(support::test_server)
        .await
        .unwrap();
    let config = Config {
        storage: support::storage_config(),
        ..Config::default()
    };
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/cmapss");
    let bench = CmapssBench::quick(directory, "FD001");
    let report = run_cmapss_bench(&config, &server.admin_url, &bench)
        .await
        .expect("the C-MAPSS bench runs on the vendored FD001");
    println!(
        "chosen {}; RMSE {:.2} [{:.2}–{:.2}]; import {:.1} s, features {:.1} s, choosing {:.1} s, refit and test {:.1} s",
        report.chosen,
        report.rmse_capped,
        report.rmse_capped_interval.0,
        report.rmse_capped_interval.1,
        report.import_seconds,
        report.features_seconds,
        report.validation_seconds,
        report.train_seconds
    );

    assert_eq!(report.train_units, 100);
    assert_eq!(report.test_units, 100);
    assert_eq!(report.validation_units.len(), 20);
    assert!(
        report
            .validation_units
            .iter()
            .all(|unit| unit.starts_with("fd001-train-")),
        "settings are chosen on training units only: {:?}",
        report.validation_units
    );
    assert_eq!(report.validation.len(), bench.grid.len());
    assert!(bench.grid.contains(&report.chosen));
    let best = report
        .validation
        .iter()
        .map(|score| score.rmse_capped)
        .fold(f64::INFINITY, f64::min);
    assert!(
        report
            .validation
            .iter()
            .any(|score| score.settings == report.chosen && score.rmse_capped == best),
        "the chosen setting has the lowest validation RMSE"
    );
    assert_eq!(report.rul_cap, RUL_CAP);
    let (low, high) = report.rmse_capped_interval;
    assert!(
        (low..=high).contains(&report.rmse_capped),
        "{low} ≤ {} ≤ {high}",
        report.rmse_capped
    );
    assert!(
        report.rmse_uncapped >= report.rmse_capped,
        "capping the truth at {RUL_CAP} can only help a regressor trained on capped RUL"
    );
    assert!(
        report.rmse_capped <= 16.0,
        "C-MAPSS FD001 RMSE (RUL capped at {RUL_CAP}) {:.2} > 16; report: {report:?}",
        report.rmse_capped
    );
}

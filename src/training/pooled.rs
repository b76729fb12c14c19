//! The kind's pooled candidate: one model fitted on every mode's examples together, each
//! row told which mode it asks about.

use std::time::Instant;

use super::TrainingError;
use super::fit::{
    FoldScheme, examples_before, fit_labels, fit_min_lead, fold_examples, hours_to_micros,
};
use super::split::Split;
use crate::config::TrainConfig;
use crate::features::FeatureTable;
use crate::history::KindData;
use crate::model::{self, Algorithm, Augment, Classifier, FailureMode, TrainingSet};

/// The kind-level candidate: one gradient-boosted model fitted on the examples of every mode
/// of a kind together, each row [`Augment`]ed with the mode it asks about. Fitted once per
/// tuning fold and once before the test window, with the same limits as the per-mode
/// candidates, then judged per mode beside them.
pub struct PooledFits {
    pub components: Vec<String>,
    /// Blocked when any mode of the kind is ([`FoldScheme::for_component`]); a mode whose
    /// own scheme differs does not compare it.
    pub scheme: FoldScheme,
    /// One per tuning fold (`None`: no failure of any mode to learn that fold from).
    folds: Vec<Option<Classifier>>,
    /// Fitted on every example labelled before the test window.
    refit: Option<Classifier>,
    /// Fitted on every example labelled by the end of the data, when the shipped models are
    /// (`train.refit_with_test_window`).
    shipped: Option<Classifier>,
}

impl PooledFits {
    /// Fits the pooled candidate of `modes` (all of one kind); `None` for fewer than two
    /// modes (it would be the per-mode candidate again).
    pub fn fit(
        config: &TrainConfig,
        data: &KindData,
        table: &FeatureTable,
        modes: &[FailureMode],
        split: &Split,
    ) -> Result<Option<PooledFits>, TrainingError> {
        if modes.len() < 2
            || !config
                .candidates
                .contains(&Algorithm::PooledGradientBoostedTrees)
        {
            return Ok(None);
        }
        let components: Vec<String> = modes.iter().map(|m| m.component.clone()).collect();
        let labelled: Vec<(Augment, i64, Vec<Option<bool>>)> = modes
            .iter()
            .enumerate()
            .map(|(index, mode)| {
                let horizon = hours_to_micros(mode.horizon_hours);
                (
                    Augment::new(index, components.clone(), &table.names),
                    horizon,
                    fit_labels(
                        &data.labels(table, &mode.component, horizon),
                        table,
                        &data.failure_times(&mode.component),
                        fit_min_lead(config, horizon),
                    )
                    .into_owned(),
                )
            })
            .collect();
        let scheme = if modes.iter().any(|m| {
            FoldScheme::for_component(data, &m.component, split) == FoldScheme::BlockedPurged
        }) {
            FoldScheme::BlockedPurged
        } else {
            FoldScheme::RollingOrigin
        };
        // A fold's rows (`Some`), or every example labelled before `limit`.
        let set_for = |fold: Option<(i64, i64)>, limit: i64| -> TrainingSet {
            let width = labelled
                .first()
                .map_or(table.n_columns(), |(a, _, _)| a.width(table.n_columns()));
            let mut set = TrainingSet {
                values: Vec::new(),
                n_columns: width,
                labels: Vec::new(),
            };
            for (augment, horizon, labels) in &labelled {
                let rows = match fold {
                    Some(fold) => fold_examples(
                        scheme,
                        table,
                        labels,
                        *horizon,
                        fold,
                        split.test_from,
                        config.negative_sample,
                    ),
                    None => examples_before(table, labels, *horizon, limit, config.negative_sample),
                };
                let values = table.gather(&rows);
                set.values
                    .extend(augment.apply(&values, rows.len(), table.n_columns()));
                set.labels
                    .extend(rows.iter().map(|&r| labels[r] == Some(true)));
            }
            set
        };
        let fit =
            |fold: Option<(i64, i64)>, limit: i64| -> Result<Option<Classifier>, TrainingError> {
                let set = set_for(fold, limit);
                if !set.labels.iter().any(|l| *l) {
                    return Ok(None);
                }
                Ok(Some(model::fit_candidate(
                    Algorithm::PooledGradientBoostedTrees,
                    &set,
                )?))
            };
        let fitting = Instant::now();
        let folds = split
            .folds()
            .into_iter()
            .map(|fold| fit(Some(fold), split.test_from))
            .collect::<Result<Vec<_>, _>>()?;
        let refit = fit(None, split.test_from)?;
        let shipped = if config.refit_with_test_window {
            fit(None, split.until)?
        } else {
            None
        };
        tracing::info!(kind = %modes[0].kind, modes = modes.len(), seconds = fitting.elapsed().as_secs_f64(), "pooled candidate fitted");
        Ok(Some(PooledFits {
            components,
            scheme,
            folds,
            refit,
            shipped,
        }))
    }

    pub(super) fn augment(&self, component: &str, names: &[String]) -> Option<Augment> {
        let index = self.components.iter().position(|c| c == component)?;
        Some(Augment::new(index, self.components.clone(), names))
    }

    /// Margins of `rows` of `table` for `component` by fold `fold`'s model (`None`: that
    /// fold had no failure to learn from).
    pub(super) fn margins(
        &self,
        fold: usize,
        component: &str,
        table: &FeatureTable,
        rows: &[usize],
    ) -> Option<Vec<f64>> {
        let augment = self.augment(component, &table.names)?;
        let inner = self.folds.get(fold)?.as_ref()?;
        let values = table.gather(rows);
        Some(inner.margins_of(
            &augment.apply(&values, rows.len(), table.n_columns()),
            rows.len(),
            augment.width(table.n_columns()),
        ))
    }

    /// The model fitted on every example labelled by the end of the data, scoring
    /// `component` (`None`: not refitted, or no failure to learn from).
    pub(super) fn shipped(&self, component: &str, names: &[String]) -> Option<Classifier> {
        self.scoring(self.shipped.as_ref(), component, names)
    }

    /// The model fitted before the test window, scoring `component`.
    pub(super) fn refitted(&self, component: &str, names: &[String]) -> Option<Classifier> {
        self.scoring(self.refit.as_ref(), component, names)
    }

    /// `inner`, one of the kind's fits, scoring `component`.
    fn scoring(
        &self,
        inner: Option<&Classifier>,
        component: &str,
        names: &[String],
    ) -> Option<Classifier> {
        Some(Classifier::Pooled {
            augment: self.augment(component, names)?,
            inner: Box::new(inner?.duplicate()),
        })
    }
}

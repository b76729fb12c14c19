//! `forewarn bench …`: the committed benchmarks. Each prints its figures (medians of
//! repeated runs) next to the baseline it is judged against, measured in the same run
//! where the baseline can be run here.

pub mod api;
pub mod cmapss;
pub mod dispatch;
mod ingest;
pub mod model;
pub mod outreach;
pub mod predict;

pub use ingest::*;

/// What a benchmark can fail on: the parts it drives.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Training(#[from] crate::training::TrainingError),
    #[error(transparent)]
    Artifact(#[from] crate::artifact::ArtifactError),
    #[error(transparent)]
    Features(#[from] crate::features::FeatureError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    App(#[from] crate::app::AppError),
    #[error("{0}")]
    Invalid(String),
}

/// The median of `values` (the upper one of an even count); 0 for none.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// A deterministic pseudo-random stream (no dependency for a benchmark's noise).
pub(crate) struct Noise(pub(crate) u64);

impl Noise {
    pub(crate) fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }
}

//! `forewarn bench …`: the committed benchmarks. Each prints its figures (medians of
//! repeated runs) next to the baseline it is judged against, measured in the same run
//! where the baseline can be run here.

pub mod cmapss;
mod ingest;
pub mod model;
pub mod predict;

pub use ingest::*;

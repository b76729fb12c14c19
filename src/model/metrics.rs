//! Example-level metrics: how well probabilities rank and separate labelled examples.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExampleMetrics {
    pub examples: usize,
    pub positives: usize,
    /// Share of positive examples (class balance).
    pub positive_share: f64,
    /// Area under the precision–recall curve (average precision).
    pub pr_auc: f64,
    /// Precision and recall of "probability ≥ threshold" on examples.
    pub precision_at_threshold: f64,
    pub recall_at_threshold: f64,
}

/// Average precision: Σ over positives of precision at their rank, / positives. Ties are
/// broken pessimistically (negatives first), so a constant score earns the base rate.
pub fn pr_auc(probabilities: &[f64], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|&a, &b| {
        probabilities[b]
            .total_cmp(&probabilities[a])
            .then(labels[a].cmp(&labels[b]))
    });
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 {
        return 0.0;
    }
    let mut true_positives = 0usize;
    let mut sum = 0.0;
    for (rank, &index) in order.iter().enumerate() {
        if labels[index] {
            true_positives += 1;
            sum += true_positives as f64 / (rank + 1) as f64;
        }
    }
    sum / positives as f64
}

pub fn example_metrics(probabilities: &[f64], labels: &[bool], threshold: f64) -> ExampleMetrics {
    let positives = labels.iter().filter(|l| **l).count();
    let predicted = probabilities.iter().filter(|p| **p >= threshold).count();
    let hits = probabilities
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p >= threshold && **l)
        .count();
    ExampleMetrics {
        examples: labels.len(),
        positives,
        positive_share: if labels.is_empty() {
            0.0
        } else {
            positives as f64 / labels.len() as f64
        },
        pr_auc: pr_auc(probabilities, labels),
        precision_at_threshold: if predicted > 0 {
            hits as f64 / predicted as f64
        } else {
            0.0
        },
        recall_at_threshold: if positives > 0 {
            hits as f64 / positives as f64
        } else {
            0.0
        },
    }
}

/// P(x > y) + ½ P(x = y) for x from `a`, y from `b` (Mann–Whitney).
pub fn rank_auc(a: &[f64], b: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = a
        .iter()
        .map(|&v| (v, true))
        .chain(b.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        // Average rank of the tie group (1-based).
        let rank = (i + j + 1) as f64 / 2.0;
        rank_sum += rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let (n, m) = (a.len() as f64, b.len() as f64);
    (rank_sum - n * (n + 1.0) / 2.0) / (n * m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_auc_of_separated_and_equal_samples() {
        assert_eq!(rank_auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(rank_auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(rank_auc(&[1.0, 1.0], &[1.0, 1.0]), 0.5);
    }

    #[test]
    fn average_precision_of_known_rankings() {
        assert_eq!(pr_auc(&[0.9, 0.8, 0.1], &[true, true, false]), 1.0);
        // Positive ranked second: precision 1/2 at its rank.
        assert_eq!(pr_auc(&[0.9, 0.8, 0.1], &[false, true, false]), 0.5);
        // Constant scores earn the base rate at best... here exactly 1/3 ranks last.
        assert!((pr_auc(&[0.5, 0.5, 0.5], &[false, false, true]) - 1.0 / 3.0).abs() < 1e-12);
        let m = example_metrics(&[0.9, 0.6, 0.4, 0.1], &[true, false, true, false], 0.5);
        assert_eq!(m.precision_at_threshold, 0.5);
        assert_eq!(m.recall_at_threshold, 0.5);
    }
}

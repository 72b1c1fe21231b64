//! Evaluation metrics: accuracy and the exact ROC AUC over a whole evaluation set.
//!
//! ```
//! use dlrm_kernels::metrics::{accuracy, roc_auc};
//! let p = [0.9f32, 0.2, 0.6, 0.4];
//! let y = [1.0f32, 0.0, 0.0, 1.0];
//! assert_eq!(accuracy(&p, &y), 0.5);
//! assert_eq!(roc_auc(&p, &y), Some(0.75));
//! ```

use rayon::prelude::*;

/// Fraction of samples with `round(p) == y` (`p >= 0.5` predicts 1; targets rounded too).
///
/// ```
/// assert_eq!(dlrm_kernels::metrics::accuracy(&[0.5, 0.49], &[1.0, 0.0]), 1.0);
/// ```
pub fn accuracy(probs: &[f32], targets: &[f32]) -> f64 {
    if probs.is_empty() {
        return 0.0;
    }
    let right = probs
        .iter()
        .zip(targets)
        .filter(|&(&p, &y)| (p >= 0.5) == (y >= 0.5))
        .count();
    right as f64 / probs.len() as f64
}

/// Area under the ROC curve of scores `probs` for binary targets (`y >= 0.5` is positive),
/// computed exactly: the Mann-Whitney statistic with tied scores given their average rank,
/// which equals the trapezoid rule over the ROC curve. `O(n log n)` (a parallel sort), fine
/// for millions of samples. `None` when only one class is present.
///
/// ```
/// use dlrm_kernels::metrics::roc_auc;
/// // All scores tied: the ROC curve is the diagonal.
/// assert_eq!(roc_auc(&[0.3, 0.3, 0.3, 0.3], &[1.0, 0.0, 1.0, 0.0]), Some(0.5));
/// assert_eq!(roc_auc(&[0.3, 0.4], &[1.0, 1.0]), None);
/// ```
pub fn roc_auc(probs: &[f32], targets: &[f32]) -> Option<f64> {
    let mut pairs: Vec<(f32, bool)> = probs
        .iter()
        .zip(targets)
        .map(|(&p, &y)| (p, y >= 0.5))
        .collect();
    pairs.par_sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|p| p.1).count() as f64;
    let negatives = pairs.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0.total_cmp(&pairs[i].0).is_eq() {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        let pos_in_tie = pairs[i..j].iter().filter(|p| p.1).count() as f64;
        rank_sum += avg_rank * pos_in_tie;
        i = j;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

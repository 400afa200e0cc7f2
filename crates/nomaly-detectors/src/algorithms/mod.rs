//! One module per detector family. Each turns a finished [`crate::fit::FitState`] into its model body
//! and scores feature columns. Scores are "higher = more anomalous" everywhere.

pub mod chi2;
pub mod covariance;
pub mod ecdf;
pub mod eif;
pub mod eigen;
pub mod hbos;
pub mod iforest;
pub mod knn;
pub mod loda;
pub mod lof;
pub mod mahalanobis;
pub mod mcd;
pub mod moments;
pub mod pca;

/// A detector that scores a row whole, not feature by feature (knn, lof, loda; eif, which also needs
/// to know its text features, has its own `score_with_text`): one call gives the scores and, when
/// asked, each feature's part of them.
pub trait WholeRowScorer {
    /// Scores of `len` rows of `cols` and, when `parts`, one column per feature of the parts that
    /// sum to each score (none otherwise).
    fn score_rows(&self, cols: &[&[f64]], len: usize, parts: bool) -> (Vec<f64>, Vec<Vec<f64>>);
}

/// `rows` as `d` feature columns (the tests' input shape).
#[cfg(test)]
pub(crate) fn columns_of(rows: &[Vec<f64>], d: usize) -> Vec<Vec<f64>> {
    (0..d)
        .map(|j| rows.iter().map(|r| r[j]).collect())
        .collect()
}

/// The part columns [`WholeRowScorer::score_rows`] fills: `d` of `len` zeros when `parts`.
pub(crate) fn part_columns(parts: bool, d: usize, len: usize) -> Vec<Vec<f64>> {
    if parts {
        vec![vec![0.0; len]; d]
    } else {
        vec![]
    }
}

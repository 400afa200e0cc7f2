//! `mahalanobis`: the squared Mahalanobis distance of a row from the mean, under the inverse of
//! the features' covariance — scikit-learn's `EmpiricalCovariance().fit(X).mahalanobis(X)` (the
//! score PyOD's `MCD` gives, with the classical covariance in place of the robust one). The mean
//! and covariance come from exact sums ([`super::covariance`]), so the same bits for any
//! partitioning; the inverse is scipy's `pinvh`: eigenvalues at or below d·ε·|λ|max count as zero
//! (a feature that never varied, or one that is a combination of others, adds nothing).

use super::covariance::Moments;
use super::eigen::pinvh;
use crate::exact_sum::scale_by_pow2;
use crate::fit::FitState;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MahalanobisModel {
    pub location: Vec<f64>,
    /// The (pseudo-)inverse covariance, row-major d×d.
    pub precision: Vec<f64>,
}

impl MahalanobisModel {
    pub fn fit(state: &FitState) -> Self {
        let d = state.n_features;
        let Some(Moments { mean, cov, k }) = Moments::of(state) else {
            return MahalanobisModel {
                location: vec![0.0; d],
                precision: vec![0.0; d * d],
            };
        };
        let (mut precision, _) = pinvh(&cov, d);
        // The covariance was read at the scale 2^-2k: its inverse is 2^2k too large.
        for p in precision.iter_mut() {
            *p = scale_by_pow2(*p, -2 * k);
        }
        MahalanobisModel {
            location: mean,
            precision,
        }
    }

    /// Per feature j: (x_j − μ_j)·(P (x − μ))_j; they sum to the squared distance.
    pub fn explain(&self, cols: &[&[f64]], len: usize) -> Vec<Vec<f64>> {
        let d = self.location.len();
        let centred: Vec<Vec<f64>> = cols
            .iter()
            .zip(&self.location)
            .map(|(c, &m)| c[..len].iter().map(|&x| x - m).collect())
            .collect();
        (0..d)
            .map(|j| {
                let mut projected = vec![0.0; len];
                for (col, &p) in centred.iter().zip(&self.precision[j * d..(j + 1) * d]) {
                    for (acc, &x) in projected.iter_mut().zip(col) {
                        *acc += p * x;
                    }
                }
                projected
                    .iter()
                    .zip(&centred[j])
                    .map(|(y, x)| x * y)
                    .collect()
            })
            .collect()
    }

    pub fn score(&self, cols: &[&[f64]], len: usize) -> Vec<f64> {
        let mut out = vec![0.0; len];
        for part in self.explain(cols, len) {
            for (o, x) in out.iter_mut().zip(part) {
                *o += x;
            }
        }
        out
    }
}

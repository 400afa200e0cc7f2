//! The covariance of the features from exact sums: what `pca` and `mahalanobis` fit on. The fit
//! keeps each feature's exact sum and the exact sum of every product x_j·x_k ([`CrossProducts`]),
//! each product added as its error-free pair, so the covariance is the same bits for any
//! partitioning and carries no rounding from the order rows arrived in.

use super::moments::squares_scale;
use crate::exact_sum::{ExactSum, dd, scale_by_pow2};
use crate::fit::{FitState, SparseOrDense};
use serde::{Deserialize, Serialize};

/// Magnitudes from here up would overflow a product: the covariance detectors refuse them (the zscore family sums
/// squares at a scale instead; a pair's product has no single scale to use).
pub const LARGEST_COVARIANCE_VALUE: f64 = f64::from_bits((1023 + 500) << 52); // 2^500

/// Exact sums of x_j·x_k for j ≤ k, the upper triangle row by row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossProducts {
    n: usize,
    sums: Vec<SparseOrDense>,
}

impl CrossProducts {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            sums: (0..n * (n + 1) / 2)
                .map(|_| SparseOrDense(ExactSum::new()))
                .collect(),
        }
    }

    fn index(&self, j: usize, k: usize) -> usize {
        let (j, k) = if j <= k { (j, k) } else { (k, j) };
        j * self.n - j * (j + 1) / 2 + k
    }

    /// Adds rows given as columns (all finite, |x| < [`LARGEST_COVARIANCE_VALUE`]).
    pub fn add_columns(&mut self, columns: &[&[f64]]) {
        for j in 0..self.n {
            for k in j..self.n {
                let i = self.index(j, k);
                self.sums[i].0.add_products_slice(columns[j], columns[k]);
            }
        }
    }

    pub fn merge(&mut self, other: &CrossProducts) {
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            a.0.merge(&b.0);
        }
    }

    pub fn size_bytes(&self) -> usize {
        self.sums.iter().map(|s| s.0.size_bytes()).sum()
    }

    pub fn features(&self) -> usize {
        self.n
    }
}

/// The mean and the population covariance (ddof = 0) of the fit's rows.
pub struct Moments {
    /// Per feature, in the data's units.
    pub mean: Vec<f64>,
    /// Row-major d×d, at the scale 2^-2k (multiply by 4^k for the data's units; ratios and
    /// eigenvectors need no rescaling).
    pub cov: Vec<f64>,
    pub k: i32,
}

impl Moments {
    /// `None` for a fit on no rows (or a state that kept no products).
    pub fn of(state: &FitState) -> Option<Moments> {
        let d = state.n_features;
        let n = state.rows as f64;
        let products = state.products.as_ref().filter(|_| state.rows > 0)?;
        // Read every sum at one power-of-two scale 2^-k (products at 2^-2k) that keeps them
        // finite; exact, and undone on the mean.
        let largest = state
            .features
            .iter()
            .map(|f| f.min.abs().max(f.max.abs()))
            .fold(0.0, f64::max);
        let k = squares_scale(largest);
        let s1: Vec<(f64, f64)> = state
            .features
            .iter()
            .map(|f| {
                f.sum
                    .as_ref()
                    .map(|s| s.0.scaled(k).to_double_double())
                    .unwrap_or((0.0, 0.0))
            })
            .collect();
        // n·cov(j, k) = S_jk - S_j·S_k / n, in double-double so a large mean cancels no digits.
        let mut cov = vec![0.0; d * d];
        for a in 0..d {
            for b in a..d {
                let sjk = products.sums[products.index(a, b)]
                    .0
                    .scaled(2 * k)
                    .to_double_double();
                let cross = dd::div_f64(dd::mul(s1[a], s1[b]), n);
                let m = dd::add(sjk, (-cross.0, -cross.1));
                let c = (m.0 + m.1) / n;
                cov[a * d + b] = c;
                cov[b * d + a] = c;
            }
        }
        let mean = s1
            .iter()
            .map(|&s| {
                let m = dd::div_f64(s, n);
                scale_by_pow2(m.0 + m.1, k)
            })
            .collect();
        Some(Moments { mean, cov, k })
    }
}

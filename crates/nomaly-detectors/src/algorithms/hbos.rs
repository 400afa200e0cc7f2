//! HBOS — histogram-based outlier score (Goldstein & Dengel 2012), with PyOD's static-bin semantics:
//! per feature, `n_bins` equal-width bins over [min, max] (NumPy's `histogram`, density=True); the
//! term of a value is `-log2(density of its bin + alpha)`; values below/above the range by at most
//! `tol` bin widths use the edge bin, further out the lowest-density term of the feature. The score
//! is the sum of the terms (PyOD's `decision_function`).
//!
//! Bin counts come from the feature's quantile sketch: exact for inputs up to the sketch's exact
//! capacity, at bucket granularity (relative 1.3e-4) beyond.

use crate::fit::FitState;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HbosModel {
    /// `n_bins + 1` edges per feature.
    pub edges: Vec<Vec<f64>>,
    /// `log2(density + alpha)` per bin per feature.
    pub log_density: Vec<Vec<f64>>,
    pub tol: f64,
}

/// NumPy's `linspace(first, last, n + 1)`.
pub(crate) fn linspace(first: f64, last: f64, n: usize) -> Vec<f64> {
    let step = (last - first) / n as f64;
    let mut e: Vec<f64> = if step.is_finite() {
        (0..=n).map(|i| i as f64 * step + first).collect()
    } else {
        // A range wider than f64::MAX (NumPy gives NaN edges): the same formula on halves, doubled
        // (exact), so every edge is finite and bins keep their order.
        let half_step = (last / 2.0 - first / 2.0) / n as f64;
        (0..=n)
            .map(|i| (i as f64 * half_step + first / 2.0) * 2.0)
            .collect()
    };
    e[n] = last;
    e
}

impl HbosModel {
    pub fn fit(state: &FitState) -> Self {
        let n_bins = state.params.n_bins;
        let alpha = state.params.alpha;
        let mut edges = Vec::new();
        let mut log_density = Vec::new();
        for f in &state.features {
            let (mut first, mut last) = (f.min, f.max);
            if !first.is_finite() || !last.is_finite() {
                (first, last) = (0.0, 1.0);
            }
            if first == last {
                first -= 0.5;
                last += 0.5;
            }
            let e = linspace(first, last, n_bins);
            let mut counts = vec![0u64; n_bins];
            if let Some(sketch) = &f.sketch {
                sketch.for_each_value(|v, c| {
                    // A bucket midpoint may stray past the exact range; it still belongs to an edge bin.
                    let b = e.partition_point(|&edge| edge <= v).clamp(1, n_bins) - 1;
                    counts[b] += c;
                });
            }
            let total: u64 = counts.iter().sum();
            let ld = counts
                .iter()
                .enumerate()
                .map(|(b, &c)| {
                    let width = e[b + 1] - e[b];
                    let density = if total == 0 {
                        0.0
                    } else {
                        c as f64 / width / total as f64
                    };
                    // libm's, the same bits on every CPU (see iforest's `scores_from_depth_sums`)
                    libm::log2(density + alpha)
                })
                .collect();
            edges.push(e);
            log_density.push(ld);
        }
        Self {
            edges,
            log_density,
            tol: state.params.tol,
        }
    }

    pub fn terms(&self, j: usize, col: &[f64], out: &mut [f64]) {
        let e = &self.edges[j];
        let ld = &self.log_density[j];
        let n_bins = ld.len();
        let min_ld = ld.iter().copied().fold(f64::INFINITY, f64::min);
        let first_width = e[1] - e[0];
        let last_width = e[n_bins] - e[n_bins - 1];
        for (o, &x) in out.iter_mut().zip(col) {
            // np.digitize(x, edges, right=False)
            let idx = e.partition_point(|&edge| edge <= x);
            let s = if idx == 0 {
                if e[0] - x <= first_width * self.tol {
                    ld[0]
                } else {
                    min_ld
                }
            } else if idx == n_bins + 1 {
                if x - e[n_bins] <= last_width * self.tol {
                    ld[n_bins - 1]
                } else {
                    min_ld
                }
            } else {
                ld[idx - 1]
            };
            *o = -s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Algorithm, DetectorParams};
    use arrow_array::{ArrayRef, Float64Array};
    use std::sync::Arc;

    #[test]
    fn a_range_wider_than_the_largest_double_has_finite_edges() {
        let values = [-1.7e308, 1.7e308, 0.0, 1.0, 2.0, 1.5];
        let col: ArrayRef = Arc::new(Float64Array::from(values.to_vec()));
        let mut fit = FitState::new(DetectorParams::new(Algorithm::Hbos), 1);
        fit.update(std::slice::from_ref(&col)).unwrap();
        let model = HbosModel::fit(&fit);
        assert!(
            model.edges[0].iter().all(|e| e.is_finite()),
            "{:?}",
            model.edges[0]
        );
        assert!(model.edges[0].windows(2).all(|w| w[0] < w[1]));
        let mut terms = vec![0.0; values.len()];
        model.terms(0, &values, &mut terms);
        // Densities (count / width / rows) this wide are ~1e-308, far below alpha: by HBOS's
        // definition (PyOD's too) every term is then -log2(alpha).
        assert!(terms.iter().all(|t| *t == -(0.1f64.log2())), "{terms:?}");
        assert_eq!(linspace(0.0, 1.0, 4), [0.0, 0.25, 0.5, 0.75, 1.0]);
    }
}

//! `pca`: PyOD's `PCA` detector. The fit keeps, besides each feature's exact sum, the exact sum of
//! every product x_j·x_k ([`super::covariance::CrossProducts`]), so the covariance — and
//! everything after it — is the same bits for any partitioning. Finishing standardises (mean 0,
//! population std 1, a constant feature's std taken as 1, as scikit-learn's `StandardScaler`),
//! takes the eigenvectors of the
//! covariance of the standardised features (scikit-learn's `covariance_eigh` solver, which
//! `PCA(svd_solver='auto')` picks for data with ten times more rows than features), orders them by
//! variance, and turns each so its largest entry is positive (scikit-learn's `svd_flip`).
//!
//! The score of a row x (standardised to z) is PyOD's: the sum, over the `n_selected_components`
//! components with the least variance among the first `n_components`, of the Euclidean distance
//! from z to the component (a unit vector), divided by its explained-variance ratio when
//! `weighted`. A component with no variance at all (a ratio of 0, from a feature that never
//! varied) is left out of the sum, where PyOD would divide by zero.

use super::covariance::Moments;
use super::eigen::symmetric_eigen;
use crate::exact_sum::scale_by_pow2;
use crate::fit::FitState;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaModel {
    /// Subtracted from each feature before scoring (the mean, or 0 without standardisation).
    pub centre: Vec<f64>,
    /// Each feature is divided by this (the population std, or 1).
    pub scale: Vec<f64>,
    /// The scoring components, unit vectors over the features.
    pub components: Vec<Vec<f64>>,
    /// Each component's divisor (its explained-variance ratio, or 1).
    pub weights: Vec<f64>,
    /// Every component's explained-variance ratio, largest first (for the model's description).
    pub variance_ratios: Vec<f64>,
}

impl PcaModel {
    pub fn fit(state: &FitState) -> Self {
        let d = state.n_features;
        let p = &state.params;
        let empty = PcaModel {
            centre: vec![0.0; d],
            scale: vec![1.0; d],
            components: vec![],
            weights: vec![],
            variance_ratios: vec![],
        };
        let Some(Moments { mean, mut cov, k }) = Moments::of(state) else {
            return empty;
        };
        let (centre, scale) = if p.standardization {
            let sd: Vec<f64> = (0..d)
                .map(|j| {
                    let s = cov[j * d + j].max(0.0).sqrt();
                    if s == 0.0 { 1.0 } else { s }
                })
                .collect();
            for a in 0..d {
                for b in 0..d {
                    cov[a * d + b] /= sd[a] * sd[b];
                }
            }
            (mean, sd.iter().map(|&s| scale_by_pow2(s, k)).collect())
        } else {
            (vec![0.0; d], vec![1.0; d])
        };
        let (mut values, mut vectors) = symmetric_eigen(&cov, d);
        for v in values.iter_mut() {
            *v = v.max(0.0);
        }
        for v in vectors.iter_mut() {
            // svd_flip: the entry of largest magnitude made positive, the first on ties. Entries
            // equal but for rounding (two standardised features give (1, -1)/√2) count as tied:
            // which one rounding makes larger differs between eigen-solvers.
            let largest = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let at = v
                .iter()
                .position(|x| x.abs() >= largest * (1.0 - 1e-9))
                .unwrap_or(0);
            if v[at] < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
        }
        let total: f64 = values.iter().sum();
        let ratios: Vec<f64> = values
            .iter()
            .map(|&v| if total > 0.0 { v / total } else { 0.0 })
            .collect();
        let kept = p.n_components.unwrap_or(d).min(d);
        let selected = p.n_selected_components.unwrap_or(kept).min(kept);
        let (mut components, mut weights) = (Vec::new(), Vec::new());
        for c in kept - selected..kept {
            if ratios[c] > 0.0 {
                components.push(vectors[c].clone());
                weights.push(if p.weighted { ratios[c] } else { 1.0 });
            }
        }
        PcaModel {
            centre,
            scale,
            components,
            weights,
            variance_ratios: ratios,
        }
    }

    /// The standardised columns.
    fn standardise(&self, cols: &[&[f64]], len: usize) -> Vec<Vec<f64>> {
        cols.iter()
            .enumerate()
            .map(|(j, c)| {
                let (m, s) = (self.centre[j], self.scale[j]);
                c[..len].iter().map(|&x| (x - m) / s).collect()
            })
            .collect()
    }

    /// Each scoring component's distance to every row, divided by its weight.
    fn weighted_distances(&self, z: &[Vec<f64>], len: usize) -> Vec<Vec<f64>> {
        self.components
            .iter()
            .zip(&self.weights)
            .map(|(v, &w)| {
                let mut sq = vec![0.0; len];
                for (zj, &vj) in z.iter().zip(v) {
                    for (acc, &x) in sq.iter_mut().zip(zj) {
                        let d = x - vj;
                        *acc += d * d;
                    }
                }
                sq.iter().map(|s| s.sqrt() / w).collect()
            })
            .collect()
    }

    pub fn score(&self, cols: &[&[f64]], len: usize) -> Vec<f64> {
        let z = self.standardise(cols, len);
        let mut out = vec![0.0; len];
        for dist in self.weighted_distances(&z, len) {
            for (o, x) in out.iter_mut().zip(dist) {
                *o += x;
            }
        }
        out
    }

    /// Per-feature parts that sum to the score: a distance ‖z − v‖ is Σ_j (z_j − v_j)² / ‖z − v‖,
    /// so feature j's part of a component's term is its squared difference over the distance.
    pub fn explain(&self, cols: &[&[f64]], len: usize) -> Vec<Vec<f64>> {
        let z = self.standardise(cols, len);
        let dists = self.weighted_distances(&z, len);
        let mut parts = vec![vec![0.0; len]; z.len()];
        for ((v, &w), dist) in self.components.iter().zip(&self.weights).zip(&dists) {
            for (j, zj) in z.iter().enumerate() {
                for i in 0..len {
                    // dist = ‖z − v‖ / w, so (z_j − v_j)² / (‖z − v‖ · w) = diff² / (dist · w²).
                    let norm_w = dist[i] * w * w;
                    if norm_w > 0.0 {
                        let diff = zj[i] - v[j];
                        parts[j][i] += diff * diff / norm_w;
                    }
                }
            }
        }
        parts
    }

    pub fn size_bytes(&self) -> usize {
        8 * (self.centre.len()
            + self.scale.len()
            + self.weights.len()
            + self.variance_ratios.len()
            + self.components.iter().map(Vec::len).sum::<usize>())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Algorithm, DetectorError, DetectorParams, FitState};
    use arrow_array::{ArrayRef, Float64Array};
    use std::sync::Arc;

    fn columns(n: usize) -> Vec<ArrayRef> {
        let mut rng = crate::hashing::DeterministicRng::new(9);
        let a: Vec<f64> = (0..n).map(|_| rng.next_f64() * 4.0).collect();
        let b: Vec<f64> = a.iter().map(|x| 2.0 * x + rng.next_f64()).collect();
        let c: Vec<f64> = (0..n).map(|_| 100.0 + rng.next_f64()).collect();
        [a, b, c]
            .into_iter()
            .map(|v| Arc::new(Float64Array::from(v)) as ArrayRef)
            .collect()
    }

    fn fit(options: &str, cols: &[ArrayRef]) -> crate::Result<crate::Model> {
        let params = DetectorParams::parse(Algorithm::Pca, options)?;
        let mut state = FitState::new(params, cols.len());
        state.update(cols)?;
        Ok(state.finish())
    }

    #[test]
    fn explanations_sum_to_the_score() {
        let cols = columns(500);
        let model = fit("", &cols).unwrap();
        let scores = model.score(&cols).unwrap();
        let parts = model.explain(&cols).unwrap();
        for i in 0..500 {
            let sum: f64 = parts.iter().map(|p| p.value(i)).sum();
            assert!(
                (sum - scores.value(i)).abs() <= 1e-9 * scores.value(i),
                "row {i}"
            );
        }
    }

    #[test]
    fn selected_components_are_the_least_variance_ones() {
        let cols = columns(500);
        let all = fit("", &cols).unwrap();
        let last = fit("n_selected_components=1", &cols).unwrap();
        let crate::model::ModelBody::Pca(a) = &all.body else {
            panic!("a pca model")
        };
        let crate::model::ModelBody::Pca(l) = &last.body else {
            panic!("a pca model")
        };
        assert_eq!(a.components.len(), 3);
        assert_eq!(l.components, vec![a.components[2].clone()]);
        assert_eq!(l.weights, vec![a.variance_ratios[2]]);
        assert!(a.variance_ratios.windows(2).all(|w| w[0] >= w[1]));
        let unweighted = fit("weighted=false, n_components=2", &cols).unwrap();
        let crate::model::ModelBody::Pca(u) = &unweighted.body else {
            panic!("a pca model")
        };
        assert_eq!(u.weights, vec![1.0, 1.0]);
        assert_eq!(u.components, a.components[..2].to_vec());
    }

    #[test]
    fn a_constant_feature_is_left_out_not_divided_by_zero() {
        let mut cols = columns(300);
        cols[2] = Arc::new(Float64Array::from(vec![7.0; 300]));
        let model = fit("", &cols).unwrap();
        let scores = model.score(&cols).unwrap();
        assert!(scores.values().iter().all(|s| s.is_finite()));
    }

    #[test]
    fn what_it_cannot_take_is_an_error_naming_it() {
        let cols = columns(10);
        let e = fit("n_components=4", &cols).unwrap_err();
        assert_eq!(
            e.to_string(),
            "option 'n_components' has invalid value '4': at most the number of features (3)"
        );
        let mut big = cols.clone();
        big[1] = Arc::new(Float64Array::from(vec![1e200; 10]));
        let e = fit("", &big).unwrap_err();
        assert!(
            matches!(e, DetectorError::ValueOutOfRange { index: 2, .. }),
            "{e}"
        );
        let wide: Vec<ArrayRef> = (0..257).map(|_| cols[0].clone()).collect();
        assert!(matches!(
            fit("", &wide).unwrap_err(),
            DetectorError::TooManyFeatures {
                features: 257,
                max: 256,
                ..
            }
        ));
        assert!(DetectorParams::parse(Algorithm::Pca, "weighted=maybe").is_err());
        assert!(DetectorParams::parse(Algorithm::Pca, "n_components=0").is_err());
    }
}

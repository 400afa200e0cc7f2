//! `lof`: PyOD's `LOF` (scikit-learn's `LocalOutlierFactor`) — how much sparser a row's
//! neighbourhood is than its neighbours' own. With `o` one of the k nearest reference rows of `x`,
//! `reach(x, o) = max(‖x − o‖, k-distance(o))`, `lrd(x) = 1 / (mean reach + 1e-10)`, and the score
//! is `mean lrd(o) / lrd(x)` (about 1 inside a cluster, larger outside).
//!
//! The reference rows are the fit's row sample (as `knn`'s, in the same k-d tree); each reference
//! row's k-distance and lrd are computed when the model is fitted, among the other reference rows
//! (one copy of itself left out, as scikit-learn's training scores are). A scored row identical to
//! a reference row is scored without one copy of it, so a training row gets its training score.
//! k is `n_neighbors` capped at the reference's rows − 1, as scikit-learn caps it.

use super::{WholeRowScorer, part_columns};
use crate::algorithms::knn::{KnnMethod, KnnModel, Near};
use crate::sample::RowSample;
use serde::{Deserialize, Serialize};

/// scikit-learn's guard against a zero mean reachability (duplicate rows).
const DENSITY_GUARD: f64 = 1e-10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LofModel {
    /// The reference rows and their index; `tree.k` is the neighbour count used.
    pub tree: KnnModel,
    /// Each reference row's distance to its k-th neighbour, in the tree's row order.
    pub k_distance: Vec<f64>,
    /// Each reference row's local reachability density, in the tree's row order.
    pub lrd: Vec<f64>,
}

impl LofModel {
    pub fn fit(sample: &RowSample, d: usize, n_neighbors: usize) -> Self {
        let rows: u64 = sample.rows().map(|(_, w)| w).sum();
        let k = (n_neighbors as u64).min(rows.saturating_sub(1)).max(1) as usize;
        let tree = KnnModel::fit(sample, d, k, KnnMethod::Largest);
        let n = tree.weights.len();
        let mut offsets = vec![0.0; d];
        let mut x = vec![0.0; d];
        let neighbours: Vec<Vec<Near>> = (0..n)
            .map(|i| {
                tree.copy_row(i, &mut x);
                tree.neighbours(&x, &mut offsets)
            })
            .collect();
        let k_distance: Vec<f64> = neighbours
            .iter()
            .map(|near| near.last().map_or(0.0, |n| n.0.sqrt()))
            .collect();
        let lrd = neighbours
            .iter()
            .map(|near| density(near, &k_distance))
            .collect();
        LofModel {
            tree,
            k_distance,
            lrd,
        }
    }

    /// Lengths, and densities and distances that are finite and not negative.
    pub fn validate(&self, width: usize) -> Result<(), String> {
        self.tree.validate(width)?;
        let n = self.tree.weights.len();
        if self.k_distance.len() != n || self.lrd.len() != n {
            return Err(format!(
                "{} k-distances and {} densities for {n} reference rows",
                self.k_distance.len(),
                self.lrd.len()
            ));
        }
        if !self
            .k_distance
            .iter()
            .chain(&self.lrd)
            .all(|v| v.is_finite() && *v >= 0.0)
        {
            return Err("a k-distance or density is negative or not a finite number".into());
        }
        Ok(())
    }

    /// The local outlier factor of a row with these neighbours: their mean density over its own.
    fn factor(&self, near: &[Near]) -> f64 {
        let k: u64 = near.iter().map(|n| n.1).sum();
        if k == 0 {
            // A reference of one row: nothing to compare with, so nothing is odd.
            return 1.0;
        }
        let mean_lrd = near.iter().map(|n| n.1 as f64 * self.lrd[n.2]).sum::<f64>() / k as f64;
        mean_lrd / density(near, &self.k_distance)
    }
}

/// `1 / (mean reachability distance + 1e-10)` over the neighbours (each counted by its weight).
fn density(near: &[Near], k_distance: &[f64]) -> f64 {
    let k: u64 = near.iter().map(|n| n.1).sum();
    if k == 0 {
        return 1.0 / DENSITY_GUARD;
    }
    let reach: f64 = near
        .iter()
        .map(|n| n.1 as f64 * n.0.sqrt().max(k_distance[n.2]))
        .sum();
    1.0 / (reach / k as f64 + DENSITY_GUARD)
}

impl WholeRowScorer for LofModel {
    /// Scores and, when `parts`, each feature's part of them (the score split over features in
    /// proportion to each feature's share of the squared distances to the k neighbours).
    fn score_rows(&self, cols: &[&[f64]], len: usize, parts: bool) -> (Vec<f64>, Vec<Vec<f64>>) {
        let d = self.tree.d;
        let mut scores = vec![0.0; len];
        let mut split = part_columns(parts, d, len);
        let mut x = vec![0.0; d];
        let mut offsets = vec![0.0; d];
        let mut shares = vec![0.0; d];
        for i in 0..len {
            for (v, c) in x.iter_mut().zip(cols) {
                *v = c[i];
            }
            let near = self.tree.neighbours(&x, &mut offsets);
            scores[i] = self.factor(&near);
            if parts {
                self.tree.distance_shares(&x, &near, &mut shares);
                for (part, share) in split.iter_mut().zip(&shares) {
                    part[i] = scores[i] * share;
                }
            }
        }
        (scores, split)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::DeterministicRng;

    fn dist(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q) * (p - q))
            .sum::<f64>()
            .sqrt()
    }

    /// scikit-learn's definition, by brute force over the rows.
    fn brute_force(rows: &[Vec<f64>], k: usize) -> Vec<f64> {
        let n = rows.len();
        let knn: Vec<Vec<(f64, usize)>> = (0..n)
            .map(|i| {
                let mut d: Vec<(f64, usize)> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| (dist(&rows[i], &rows[j]), j))
                    .collect();
                d.sort_by(|a, b| a.0.total_cmp(&b.0));
                d.truncate(k);
                d
            })
            .collect();
        let kdist: Vec<f64> = knn.iter().map(|v| v[k - 1].0).collect();
        let lrd: Vec<f64> = knn
            .iter()
            .map(|v| {
                let reach: f64 = v.iter().map(|&(d, j)| d.max(kdist[j])).sum();
                1.0 / (reach / k as f64 + 1e-10)
            })
            .collect();
        (0..n)
            .map(|i| knn[i].iter().map(|&(_, j)| lrd[j] / lrd[i]).sum::<f64>() / k as f64)
            .collect()
    }

    #[test]
    fn scores_equal_the_definition_by_brute_force() {
        let mut rng = DeterministicRng::new(5);
        let mut s = RowSample::new(100_000, 3, 1);
        let mut rows = Vec::new();
        for i in 0..700 {
            // two clusters of different density and a few far rows
            let spread = if i % 2 == 0 { 1.0 } else { 4.0 };
            let centre = if i % 2 == 0 { 0.0 } else { 20.0 };
            let far = if i % 97 == 0 { 50.0 } else { 0.0 };
            let r: Vec<f64> = (0..3)
                .map(|_| centre + far + spread * rng.next_f64())
                .collect();
            s.offer(&r);
            rows.push(r);
        }
        s.compact();
        let model = LofModel::fit(&s, 3, 20);
        model.validate(3).unwrap();
        let cols = super::super::columns_of(&rows, 3);
        let refs: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
        let (scores, parts) = model.score_rows(&refs, rows.len(), true);
        let want = brute_force(&rows, 20);
        for i in 0..rows.len() {
            assert!(
                (scores[i] - want[i]).abs() <= 1e-9 * want[i],
                "row {i}: {} vs {}",
                scores[i],
                want[i]
            );
            let sum: f64 = parts.iter().map(|p| p[i]).sum();
            assert!((sum - scores[i]).abs() <= 1e-9 * scores[i]);
        }
        // the far rows stand out
        assert!(
            scores[0] > 2.0 && scores[1] < 1.5,
            "{} {}",
            scores[0],
            scores[1]
        );
    }

    #[test]
    fn one_row_and_duplicates_give_finite_scores() {
        let mut s = RowSample::new(100, 2, 1);
        s.offer(&[1.0, 2.0]);
        s.compact();
        let model = LofModel::fit(&s, 2, 20);
        model.validate(2).unwrap();
        let (scores, _) = model.score_rows(&[&[1.0, 5.0], &[2.0, 2.0]], 2, false);
        assert!(scores.iter().all(|v| v.is_finite()), "{scores:?}");
        let mut s = RowSample::new(100, 2, 1);
        for _ in 0..30 {
            s.offer(&[1.0, 2.0]);
        }
        s.offer(&[3.0, 2.0]);
        s.compact();
        let model = LofModel::fit(&s, 2, 5);
        model.validate(2).unwrap();
        let (scores, _) = model.score_rows(&[&[1.0, 3.0], &[2.0, 2.0]], 2, false);
        assert!(scores.iter().all(|v| v.is_finite()), "{scores:?}");
    }
}

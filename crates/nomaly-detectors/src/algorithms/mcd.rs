//! `mcd`: the squared Mahalanobis distance under a robust covariance — PyOD's `MCD`
//! (scikit-learn's `MinCovDet`), fitted on the fit's row sample (a bounded, partition-independent
//! bottom-k hash sample; the whole input when it has at most `sample_rows` distinct rows).
//!
//! FastMCD (Rousseeuw & Van Driessen 1999), as scikit-learn runs it: h = ⌈(n + d + 1)/2⌉; from 30
//! random h-subsets (drawn from the detector's seed) two C-steps each (mean and covariance of the
//! subset, then the h rows nearest under them); the 10 with the smallest covariance determinant
//! are iterated to convergence and the smallest wins. Then scikit-learn's consistency correction
//! (the covariance times median(d²) / χ²_d.isf(0.5)) and reweighting (mean and covariance of the
//! rows with corrected d² < χ²_d.isf(0.025)). The sample's rows carry multiplicities, so every
//! mean, covariance, median and h-subset is weighted (a repeated row counts as often as it
//! occurred; the h-subset may take part of the last row's weight).

use super::chi2::chi2_isf;
use super::eigen::pinvh;
use super::mahalanobis::MahalanobisModel;
use crate::hashing::DeterministicRng;
use crate::quantile::quantile_linear;
use crate::sample::RowSample;

/// Rows (row-major) with their weights.
struct Weighted {
    x: Vec<f64>,
    w: Vec<f64>,
    d: usize,
}

/// A fitted location and covariance with what a C-step needs of them.
struct Estimate {
    location: Vec<f64>,
    precision: Vec<f64>,
    /// ln det of the covariance; -∞ when singular (an exact fit: the C-steps stop).
    log_det: f64,
}

impl Weighted {
    fn rows(&self) -> usize {
        self.w.len()
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.x[i * self.d..(i + 1) * self.d]
    }

    /// Weighted mean and population covariance of `members` (row, weight).
    fn estimate(&self, members: &[(usize, f64)]) -> Estimate {
        let d = self.d;
        let total: f64 = members.iter().map(|m| m.1).sum();
        let mut location = vec![0.0; d];
        for &(i, w) in members {
            for (l, x) in location.iter_mut().zip(self.row(i)) {
                *l += w * x;
            }
        }
        location.iter_mut().for_each(|l| *l /= total);
        let mut covariance = vec![0.0; d * d];
        for &(i, w) in members {
            let r = self.row(i);
            for a in 0..d {
                let da = r[a] - location[a];
                for b in a..d {
                    covariance[a * d + b] += w * da * (r[b] - location[b]);
                }
            }
        }
        for a in 0..d {
            for b in a..d {
                covariance[a * d + b] /= total;
                covariance[b * d + a] = covariance[a * d + b];
            }
        }
        Estimate::new(location, covariance)
    }

    /// Every row's squared distance under `e`.
    fn distances(&self, e: &Estimate) -> Vec<f64> {
        let d = self.d;
        let mut centred = vec![0.0; d];
        (0..self.rows())
            .map(|i| {
                for ((c, x), m) in centred.iter_mut().zip(self.row(i)).zip(&e.location) {
                    *c = x - m;
                }
                let mut total = 0.0;
                for (a, ca) in centred.iter().enumerate() {
                    let row = &e.precision[a * d..(a + 1) * d];
                    let projected: f64 = row.iter().zip(&centred).map(|(p, c)| p * c).sum();
                    total += ca * projected;
                }
                total
            })
            .collect()
    }

    /// The rows nearest by `dist` up to weight `h` (the last one's weight cut to fit).
    fn nearest(&self, dist: &[f64], h: f64) -> Vec<(usize, f64)> {
        let mut order: Vec<usize> = (0..self.rows()).collect();
        order.sort_by(|&a, &b| dist[a].total_cmp(&dist[b]).then(a.cmp(&b)));
        let mut out = Vec::new();
        let mut taken = 0.0;
        for i in order {
            if taken >= h {
                break;
            }
            let w = self.w[i].min(h - taken);
            taken += w;
            out.push((i, w));
        }
        out
    }

    /// C-steps from `start` until the determinant stops falling or `steps` are done.
    fn c_steps(&self, start: Estimate, h: f64, steps: usize) -> Estimate {
        let mut current = start;
        for _ in 0..steps {
            if current.log_det == f64::NEG_INFINITY {
                break;
            }
            let next = self.estimate(&self.nearest(&self.distances(&current), h));
            if next.log_det >= current.log_det {
                break;
            }
            current = next;
        }
        current
    }
}

impl Estimate {
    /// With the precision as scipy's `pinvh`.
    fn new(location: Vec<f64>, covariance: Vec<f64>) -> Estimate {
        let (precision, log_det) = pinvh(&covariance, location.len());
        Estimate {
            location,
            precision,
            log_det,
        }
    }
}

/// Trials drawn, those iterated to convergence, and the C-step limit (scikit-learn's).
const TRIALS: usize = 30;
const BEST: usize = 10;
const MAX_STEPS: usize = 30;

pub fn fit(sample: &RowSample, d: usize, seed: u64) -> MahalanobisModel {
    let rows: Vec<(&[f64], u64)> = sample.rows().collect();
    if rows.is_empty() {
        return MahalanobisModel {
            location: vec![0.0; d],
            precision: vec![0.0; d * d],
        };
    }
    let data = Weighted {
        x: rows.iter().flat_map(|r| r.0.iter().copied()).collect(),
        w: rows.iter().map(|r| r.1 as f64).collect(),
        d,
    };
    let n: f64 = data.w.iter().sum();
    let h = (0.5 * (n + d as f64 + 1.0)).ceil().min(n);
    let mut rng = DeterministicRng::new(seed ^ 0x6d63_645f_7472_6961);
    let mut candidates: Vec<Estimate> = (0..TRIALS)
        .map(|_| {
            // A random h-subset: the rows in a random order (Fisher–Yates) up to weight h.
            let mut order: Vec<usize> = (0..data.rows()).collect();
            for i in (1..order.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
            let mut rank = vec![0.0; data.rows()];
            for (r, &i) in order.iter().enumerate() {
                rank[i] = r as f64;
            }
            let start = data.estimate(&data.nearest(&rank, h));
            data.c_steps(start, h, 2)
        })
        .collect();
    candidates.sort_by(|a, b| a.log_det.total_cmp(&b.log_det));
    let raw = candidates
        .into_iter()
        .take(BEST)
        .map(|c| data.c_steps(c, h, MAX_STEPS))
        .min_by(|a, b| a.log_det.total_cmp(&b.log_det))
        .expect("at least one trial");
    // Consistency at the normal model.
    let mut dist = data.distances(&raw);
    let median = weighted_quantile(&dist, &data.w, 0.5);
    let correction = median / chi2_isf(0.5, d);
    if correction.is_finite() && correction > 0.0 {
        dist.iter_mut().for_each(|x| *x /= correction);
    }
    // Reweighting: the rows within the 97.5% quantile of χ²_d.
    let cut = chi2_isf(0.025, d);
    let mut kept: Vec<(usize, f64)> = (0..data.rows())
        .filter(|&i| dist[i] < cut)
        .map(|i| (i, data.w[i]))
        .collect();
    if kept.is_empty() {
        kept = (0..data.rows()).map(|i| (i, data.w[i])).collect();
    }
    let fitted = data.estimate(&kept);
    MahalanobisModel {
        location: fitted.location,
        precision: fitted.precision,
    }
}

/// NumPy's `quantile` of `values` repeated by `weights` (whole numbers here).
fn weighted_quantile(values: &[f64], weights: &[f64], q: f64) -> f64 {
    let mut pairs: Vec<(f64, u64)> = values
        .iter()
        .zip(weights)
        .map(|(&v, &w)| (v, w as u64))
        .collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    quantile_linear(&pairs, q)
}

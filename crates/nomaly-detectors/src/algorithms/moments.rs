//! The z-score family: `zscore` (mean/std), `robust_zscore` (median/MAD) and `iqr` (Tukey fences).
//!
//! Per feature j the term is
//! - zscore: |x - mean| / std, with the population std (ddof = 0, as `scipy.stats.zscore`);
//! - robust_zscore: |x - median| / (1.4826 · MAD); if MAD = 0, the mean absolute deviation
//!   · 1.2533 is used instead (Iglewicz & Hoaglin), so a mostly-constant feature still scores;
//! - iqr: max(Q1 - x, x - Q3, 0) / IQR — how many IQRs the value lies outside [Q1, Q3]; Tukey's rule
//!   "outside the 1.5 · IQR fences" is `score > 1.5`, iqr's default threshold.
//!
//! Terms combine by `combine = max` (default: the worst feature decides) or `sum`. A feature with zero
//! spread scores 0 at its centre and +Infinity anywhere else (it never varied in training).

use crate::exact_sum::{dd, scale_by_pow2};
use crate::fit::FitState;
use crate::params::Algorithm;
use crate::quantile::quantile_linear;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentreScaleModel {
    /// Centre per feature (mean, median, or Q1 for iqr).
    pub centre: Vec<f64>,
    /// Upper centre for iqr (Q3); equal to `centre` otherwise.
    pub upper: Vec<f64>,
    /// Scale per feature (std, 1.4826·MAD, IQR).
    pub scale: Vec<f64>,
}

impl CentreScaleModel {
    pub fn fit(state: &FitState) -> Self {
        let n = state.rows as f64;
        let mut centre = Vec::new();
        let mut upper = Vec::new();
        let mut scale = Vec::new();
        for f in &state.features {
            match state.params.algorithm {
                Algorithm::ZScore => {
                    // Sums are read at a power-of-two scale that keeps S1² and S2 finite and
                    // normal (1e170s square past f64::MAX, 1e-200s to zero); scaling by a power
                    // of two is exact, so ordinary data gets the same bits as unscaled.
                    let k = squares_scale(f.min.abs().max(f.max.abs()));
                    let s1 = f
                        .sum
                        .as_ref()
                        .map(|s| s.0.scaled(k).to_double_double())
                        .unwrap_or((0.0, 0.0));
                    let s2 = f
                        .sum_sq
                        .as_ref()
                        .map(|s| s.scaled(2 * k).to_double_double())
                        .unwrap_or((0.0, 0.0));
                    let mean = dd::div_f64(s1, n);
                    // n·var = S2 - S1²/n, in double-double so a large offset does not cancel digits.
                    let s1_sq_over_n = dd::div_f64(dd::mul(s1, s1), n);
                    let m2 = dd::add(s2, (-s1_sq_over_n.0, -s1_sq_over_n.1));
                    let var = (m2.0 + m2.1) / n;
                    let centre_j = scale_by_pow2(mean.0 + mean.1, k);
                    centre.push(centre_j);
                    upper.push(centre_j);
                    scale.push(scale_by_pow2(var.max(0.0).sqrt(), k));
                }
                Algorithm::RobustZScore => {
                    let wv = f
                        .sketch
                        .as_ref()
                        .map(|s| s.weighted_values())
                        .unwrap_or_default();
                    let med = quantile_linear(&wv, 0.5);
                    let mut dev: Vec<(f64, u64)> =
                        wv.iter().map(|&(v, c)| ((v - med).abs(), c)).collect();
                    dev.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let mad = quantile_linear(&dev, 0.5);
                    let mut s = 1.4826 * mad;
                    if s == 0.0 {
                        let total: u64 = dev.iter().map(|d| d.1).sum();
                        let mean_ad = dev.iter().map(|&(d, c)| d * c as f64).sum::<f64>()
                            / total.max(1) as f64;
                        s = 1.253314 * mean_ad;
                    }
                    centre.push(med);
                    upper.push(med);
                    scale.push(s);
                }
                Algorithm::Iqr => {
                    let wv = f
                        .sketch
                        .as_ref()
                        .map(|s| s.weighted_values())
                        .unwrap_or_default();
                    let q1 = quantile_linear(&wv, 0.25);
                    let q3 = quantile_linear(&wv, 0.75);
                    centre.push(q1);
                    upper.push(q3);
                    scale.push(q3 - q1);
                }
                _ => unreachable!("not a centre/scale detector"),
            }
        }
        Self {
            centre,
            upper,
            scale,
        }
    }

    /// Per-feature term for one column into `out`.
    pub fn terms(&self, j: usize, col: &[f64], out: &mut [f64]) {
        let (lo, hi, s) = (self.centre[j], self.upper[j], self.scale[j]);
        for (o, &x) in out.iter_mut().zip(col) {
            *o = scaled_distance(distance_outside(x, lo, hi), s);
        }
    }
}

/// The power of two `k` at which sums of squares of values up to `largest` in magnitude stay
/// finite and normal: work with values times 2^-k. 600 from 2^400 up, -600 below 2^-300, else 0
/// (ordinary data: scaling by 1 keeps its bits). Non-finite or zero `largest` gives 0.
pub fn squares_scale(largest: f64) -> i32 {
    if !largest.is_finite() || largest == 0.0 {
        0
    } else if largest >= 2f64.powi(400) {
        600
    } else if largest < 2f64.powi(-300) {
        -600
    } else {
        0
    }
}

/// How far `x` lies outside `[lo, hi]` (0 inside).
#[inline]
pub fn distance_outside(x: f64, lo: f64, hi: f64) -> f64 {
    if x < lo {
        lo - x
    } else if x > hi {
        x - hi
    } else {
        0.0
    }
}

/// `distance / scale`; a zero scale (no spread in training) gives 0 at distance 0 and +Infinity
/// otherwise.
#[inline]
pub fn scaled_distance(distance: f64, scale: f64) -> f64 {
    if scale > 0.0 {
        distance / scale
    } else if distance == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::DetectorParams;
    use arrow_array::{ArrayRef, Float64Array};
    use std::sync::Arc;

    fn zscores(values: &[f64]) -> Vec<f64> {
        let col: ArrayRef = Arc::new(Float64Array::from(values.to_vec()));
        let mut fit = FitState::new(DetectorParams::new(Algorithm::ZScore), 1);
        fit.update(std::slice::from_ref(&col)).unwrap();
        let model = CentreScaleModel::fit(&fit);
        let mut out = vec![0.0; values.len()];
        model.terms(0, values, &mut out);
        out
    }

    /// Squares of 1e170 overflow and of 1e-200 vanish; the z-scores must not notice.
    #[test]
    fn zscore_holds_at_the_ends_of_the_double_range() {
        let unit = zscores(&[1.0, 2.0, 3.0, 10.0]);
        assert!((unit[3] - 1.697056274847714).abs() < 1e-15, "{unit:?}");
        for scale in [1e170, 1e-200, 1e300, -1e-300, 1e-310] {
            let scaled: Vec<f64> = [1.0, 2.0, 3.0, 10.0].iter().map(|v| v * scale).collect();
            let got = zscores(&scaled);
            for (g, u) in got.iter().zip(&unit) {
                assert!((g - u).abs() < 1e-9, "scale {scale}: {got:?} vs {unit:?}");
            }
        }
        // a huge outlier among ordinary values: finite, and it ranks first
        let mixed = zscores(&[1.0, 2.0, 3.0, 1e200]);
        assert!(mixed.iter().all(|z| z.is_finite()), "{mixed:?}");
        assert!(mixed[3] > mixed[0]);
    }
}

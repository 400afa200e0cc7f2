//! ECOD (Li et al. 2022) and COPOD (Li et al. 2020), as in PyOD.
//!
//! Per feature, with the training ECDF F: `U_l = -ln F(x)` (share of training values ≤ x) and
//! `U_r = -ln F̄(x)` (share ≥ x); the skewness sign s of the feature picks `U_skew` (U_l if s < 0, U_r
//! if s > 0, U_l + U_r if s = 0). ECOD's term is max(U_l, U_r, U_skew), COPOD's is
//! max(U_skew, (U_l + U_r)/2); the score is the sum of the terms.
//!
//! Unlike PyOD, which re-computes the ECDFs on training ∪ new data at every call, the ECDFs are frozen
//! at fit time, so a row's score does not depend on which other rows are scored with it. On the
//! training rows this is exactly PyOD's `decision_scores_`. A value outside the training range counts
//! as half an observation in its tail (F = 0.5/n), so it scores above every training value.

use crate::fit::FitState;
use crate::quantile::{Ecdf, TermTable};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EcdfVariant {
    Ecod,
    Copod,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EcdfModel {
    pub variant: EcdfVariant,
    pub ecdfs: Vec<Ecdf>,
    /// Sign of the skewness per feature: -1, 0 or 1.
    pub skew_sign: Vec<i8>,
    /// Per-bucket terms, built on first use (not serialised: derived from `ecdfs`).
    #[serde(skip)]
    pub tables: OnceLock<Vec<TermTable<f64>>>,
}

impl PartialEq for EcdfModel {
    fn eq(&self, other: &Self) -> bool {
        self.variant == other.variant
            && self.ecdfs == other.ecdfs
            && self.skew_sign == other.skew_sign
    }
}

impl EcdfModel {
    pub fn fit(state: &FitState, variant: EcdfVariant) -> Self {
        let mut ecdfs = Vec::new();
        let mut skew_sign = Vec::new();
        for f in &state.features {
            let sketch = f.sketch.as_ref().expect("ecdf detectors keep sketches");
            let (ecdf, wv) = sketch.ecdf_and_weighted_values();
            let n: u64 = wv.iter().map(|w| w.1).sum();
            let sign = if n == 0 {
                0
            } else {
                let mean = wv.iter().map(|&(v, c)| v * c as f64).sum::<f64>() / n as f64;
                let m3: f64 = wv.iter().map(|&(v, c)| (v - mean).powi(3) * c as f64).sum();
                let m2: f64 = wv.iter().map(|&(v, c)| (v - mean).powi(2) * c as f64).sum();
                // scipy gives NaN skewness for a constant feature; its terms are 0 either way.
                if m2 == 0.0 || m3 == 0.0 {
                    0
                } else if m3 > 0.0 {
                    1
                } else {
                    -1
                }
            };
            ecdfs.push(ecdf);
            skew_sign.push(sign);
        }
        Self {
            variant,
            ecdfs,
            skew_sign,
            tables: OnceLock::new(),
        }
    }

    /// Feature `j`'s term from its two tail scores.
    #[inline]
    fn term(&self, j: usize, u_l: f64, u_r: f64) -> f64 {
        let u_skew = match self.skew_sign[j] {
            -1 => u_l,
            1 => u_r,
            _ => u_l + u_r,
        };
        match self.variant {
            EcdfVariant::Ecod => u_l.max(u_r).max(u_skew),
            EcdfVariant::Copod => u_skew.max((u_l + u_r) / 2.0),
        }
    }

    pub fn terms(&self, j: usize, col: &[f64], out: &mut [f64]) {
        let ecdf = &self.ecdfs[j];
        let table = self
            .tables
            .get_or_init(|| {
                (0..self.ecdfs.len())
                    .map(|f| self.ecdfs[f].term_table(|u_l, u_r| self.term(f, u_l, u_r)))
                    .collect()
            })
            .get(j);
        for (o, &x) in out.iter_mut().zip(col) {
            *o = match table.and_then(|t| t.get(x)) {
                Some(term) => term,
                None => {
                    let (u_l, u_r) = ecdf.tails(x);
                    self.term(j, u_l, u_r)
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::DeterministicRng;
    use crate::params::{Algorithm, DetectorParams};
    use arrow_array::{ArrayRef, Float64Array};
    use std::sync::Arc;

    /// The term tables give exactly the terms computed from the counts, for values in every kind
    /// of place: in bucket mode occupied and empty buckets, zero, below the smallest bucket, outside
    /// the training range, on both signs; in exact mode on a training value, between two, beyond.
    #[test]
    fn term_tables_give_the_counted_terms() {
        for n in [100_000, 1_000] {
            let mut rng = DeterministicRng::new(11);
            // centred, skewed right, skewed left (with ties at zero)
            let columns: Vec<Vec<f64>> = vec![
                (0..n).map(|_| (rng.next_f64() - 0.5) * 10.0).collect(),
                (0..n).map(|_| rng.next_f64().powi(4) * 1e3).collect(),
                (0..n)
                    .map(|i| {
                        if i % 3 == 0 {
                            if i % 2 == 0 { 0.0 } else { -0.0 }
                        } else {
                            -rng.next_f64().powi(3)
                        }
                    })
                    .collect(),
            ];
            let arrays: Vec<ArrayRef> = columns
                .iter()
                .map(|c| Arc::new(Float64Array::from(c.clone())) as ArrayRef)
                .collect();
            let mut probes: Vec<f64> = (0..5_000).map(|_| (rng.next_f64() - 0.5) * 30.0).collect();
            probes.extend([
                0.0, -0.0, 1e-30, -1e-30, 1e-300, 5e-324, 1e30, -1e30, 999.9, 1e3, 2e3, -2.0, -1.0,
            ]);
            // and every training value, where exact mode's ties live
            probes.extend(columns.iter().flat_map(|c| c.iter().step_by(7).copied()));
            for variant in [Algorithm::Ecod, Algorithm::Copod] {
                let mut fit = FitState::new(DetectorParams::new(variant), arrays.len());
                fit.update(&arrays).unwrap();
                let model = EcdfModel::fit(
                    &fit,
                    if variant == Algorithm::Ecod {
                        EcdfVariant::Ecod
                    } else {
                        EcdfVariant::Copod
                    },
                );
                let bucketed = matches!(model.ecdfs[0], crate::quantile::Ecdf::Buckets { .. });
                assert_eq!(bucketed, n > 65_536);
                assert_eq!(model.skew_sign[1..], [1, -1]);
                for j in 0..arrays.len() {
                    let mut looked_up = vec![0.0; probes.len()];
                    model.terms(j, &probes, &mut looked_up);
                    for (x, got) in probes.iter().zip(&looked_up) {
                        let (u_l, u_r) = model.ecdfs[j].tails(*x);
                        let counted = model.term(j, u_l, u_r);
                        assert_eq!(
                            got.to_bits(),
                            counted.to_bits(),
                            "{variant:?} n {n} feature {j} at {x}: table {got}, counts {counted}"
                        );
                    }
                }
            }
        }
    }
}

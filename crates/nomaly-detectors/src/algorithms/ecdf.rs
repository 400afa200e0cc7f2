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
use crate::quantile::{Ecdf, TailTable};
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
    /// Per-bucket tail scores, built on first use (not serialised: derived from `ecdfs`).
    #[serde(skip)]
    pub tables: OnceLock<Vec<Option<TailTable>>>,
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
            let wv = sketch.weighted_values();
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
            ecdfs.push(sketch.to_ecdf());
            skew_sign.push(sign);
        }
        Self {
            variant,
            ecdfs,
            skew_sign,
            tables: OnceLock::new(),
        }
    }

    pub fn terms(&self, j: usize, col: &[f64], out: &mut [f64]) {
        let ecdf = &self.ecdfs[j];
        let table = self
            .tables
            .get_or_init(|| self.ecdfs.iter().map(Ecdf::tail_table).collect())
            .get(j)
            .and_then(|t| t.as_ref());
        let s = self.skew_sign[j];
        for (o, &x) in out.iter_mut().zip(col) {
            let (u_l, u_r) = ecdf.tails(x, table);
            let u_skew = match s {
                -1 => u_l,
                1 => u_r,
                _ => u_l + u_r,
            };
            *o = match self.variant {
                EcdfVariant::Ecod => u_l.max(u_r).max(u_skew),
                EcdfVariant::Copod => u_skew.max((u_l + u_r) / 2.0),
            };
        }
    }
}

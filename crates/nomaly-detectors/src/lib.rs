//! # nomaly-detectors
//!
//! Pure anomaly-detection algorithms over Arrow arrays: no DataFusion, no I/O.
//!
//! Every detector is a **mergeable fit** ([`FitState`]: `update` per batch, `merge` partial states,
//! `finish` into a [`Model`]) plus a **vectorised score** ([`Model::score`], [`Model::explain`]).
//! Fit states merge to the same bits in any order — exact sums ([`exact_sum`]), integer-count quantile
//! sketches ([`quantile`]) and bottom-k hash samples ([`sample`]) — so scores never depend on how the
//! input was partitioned or which engine ran it.
//!
//! Conventions:
//! - higher score = more anomalous; `is_anomaly` = `score > threshold`;
//! - the threshold is an explicit `threshold=` option, else the `(1 - contamination)` quantile of the
//!   training scores (estimated on the row sample; exact when the input has ≤ `sample_rows` distinct
//!   rows), except `iqr`, whose default threshold is Tukey's 1.5;
//! - missing values: rows with a null/NaN/±Inf feature are skipped by the fit and get a null score.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{ArrayRef, Float64Array};
//! use nomaly_detectors::{Algorithm, DetectorParams, FitState};
//!
//! let x: ArrayRef = Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 2.0, 100.0]));
//! let mut fit = FitState::new(DetectorParams::new(Algorithm::RobustZScore), 1);
//! fit.update(&[x.clone()]).unwrap();
//! let model = fit.finish();
//! let scores = model.score(&[x]).unwrap();
//! assert!(scores.value(4) > scores.value(0));
//! ```

pub mod algorithms;
pub mod categorical;
pub mod cpu;
pub mod error;
pub mod exact_sum;
pub mod features;
pub mod fit;
pub mod hashing;
pub mod model;
mod model_v1;
pub mod params;
pub mod quantile;
pub mod rank_index;
pub mod sample;
pub mod series;
pub mod suggest;
pub mod validate;

pub use error::{DetectorError, Result};
pub use features::{Features, is_numeric};
pub use fit::FitState;
pub use model::{MODEL_FORMAT_VERSION, Model};
pub use params::{Algorithm, Combine, DetectorParams};

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, ArrayRef, Float64Array};
    use std::sync::Arc;

    fn data(n: usize) -> Vec<Vec<f64>> {
        let mut rng = hashing::DeterministicRng::new(3);
        let mut cols = vec![Vec::new(), Vec::new(), Vec::new()];
        for i in 0..n {
            let outlier = i % 97 == 0;
            for (j, c) in cols.iter_mut().enumerate() {
                let base = rng.next_f64() + rng.next_f64() + rng.next_f64() - 1.5;
                c.push(if outlier {
                    base * 8.0 + 5.0
                } else {
                    base * (j + 1) as f64 + 10.0 * j as f64
                });
            }
        }
        cols
    }

    fn arrays(cols: &[Vec<f64>], range: std::ops::Range<usize>) -> Vec<ArrayRef> {
        cols.iter()
            .map(|c| Arc::new(Float64Array::from(c[range.clone()].to_vec())) as ArrayRef)
            .collect()
    }

    /// lof and loda do not see this data's outliers, as their PyOD anchors do not: 1% of rows
    /// spread over a box around the clusters are a sparse cluster of their own to LOF (PyOD `LOF`:
    /// ROC-AUC 0.59, 9% of its top 1% are outliers), and inside every projection's range to LODA
    /// (PyOD `LODA`: 10%). Their quality is checked against the anchors' scores instead.
    fn scattered_outliers_blind(alg: Algorithm) -> bool {
        matches!(alg, Algorithm::Lof | Algorithm::Loda)
    }

    #[test]
    fn every_detector_is_partition_invariant_and_round_trips() {
        // Bigger than the sketch's exact capacity and the row sample, so every approximate path runs.
        let n = 70_000;
        let cols = data(n);
        let all = arrays(&cols, 0..n);
        for alg in Algorithm::ALL {
            let params = DetectorParams::parse(alg, "n_trees=20")
                .unwrap_or_else(|_| DetectorParams::new(alg));
            let mut whole = FitState::new(params.clone(), 3);
            whole.update(&all).unwrap();
            let reference = whole.finish();
            for parts in [2usize, 7] {
                let bounds: Vec<usize> = (0..=parts).map(|p| p * n / parts).collect();
                let mut states: Vec<FitState> = bounds
                    .windows(2)
                    .map(|w| {
                        let mut s = FitState::new(params.clone(), 3);
                        // feed in two uneven batches
                        let mid = w[0] + (w[1] - w[0]) / 3;
                        s.update(&arrays(&cols, w[0]..mid)).unwrap();
                        s.update(&arrays(&cols, mid..w[1])).unwrap();
                        FitState::from_bytes(&s.to_bytes()).unwrap()
                    })
                    .collect();
                let mut merged = states.pop().unwrap();
                while let Some(s) = states.pop() {
                    merged.merge(&s).unwrap();
                }
                let model = merged.finish();
                assert_eq!(model, reference, "{alg} with {parts} parts");
            }
            let back = Model::from_bytes(&reference.to_bytes()).unwrap();
            assert_eq!(back, reference);
            let scores = reference.score(&all).unwrap();
            let flags = reference.flags(&scores);
            let flagged = flags.iter().filter(|f| *f == Some(true)).count();
            // outliers (every 97th row) must rank high: the top 1% of scores is mostly outliers
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| scores.value(b).total_cmp(&scores.value(a)));
            let hits = order[..n / 97].iter().filter(|&&i| i % 97 == 0).count();
            assert!(
                hits * 10 >= (n / 97) * 8 || scattered_outliers_blind(alg),
                "{alg}: only {hits} of {} top rows are outliers",
                n / 97
            );
            if alg != Algorithm::Iqr {
                let rate = flagged as f64 / n as f64;
                assert!((rate - 0.1).abs() < 0.02, "{alg}: anomaly rate {rate}");
            }
        }
    }

    #[test]
    fn contamination_auto_flags_the_outliers_and_few_others() {
        let n = 30_000;
        let cols = data(n);
        let all = arrays(&cols, 0..n);
        let outliers = (0..n).filter(|i| i % 97 == 0).count();
        for alg in Algorithm::ALL {
            let params = DetectorParams::parse(alg, "contamination=auto").unwrap();
            assert_eq!(
                params.to_options_string().split(", ").next(),
                Some("contamination=auto")
            );
            let mut fit = FitState::new(params, 3);
            fit.update(&all).unwrap();
            let model = fit.finish();
            let flags = model.flags(&model.score(&all).unwrap());
            let flagged: Vec<usize> = (0..n).filter(|&i| flags.value(i)).collect();
            let hits = flagged.iter().filter(|&&i| i % 97 == 0).count();
            println!(
                "{alg}: flagged {} rows, {hits} of {outliers} outliers",
                flagged.len()
            );
            assert!(
                hits * 10 >= outliers * 8 || scattered_outliers_blind(alg),
                "{alg}: {hits} of {outliers} outliers"
            );
            // Distance scores (knn 7%, mahalanobis 4%) have the longest upper tails.
            assert!(
                flagged.len() <= n / 10 || scattered_outliers_blind(alg),
                "{alg}: {} rows flagged",
                flagged.len()
            );
        }
    }

    #[test]
    fn missing_values_are_skipped_and_scored_null() {
        let x: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.0),
            None,
            Some(f64::NAN),
            Some(2.0),
            Some(f64::INFINITY),
            Some(3.0),
        ]));
        for alg in Algorithm::ALL {
            let mut fit = FitState::new(DetectorParams::new(alg), 1);
            fit.update(std::slice::from_ref(&x)).unwrap();
            assert_eq!((fit.rows(), fit.skipped_rows()), (3, 3));
            let m = fit.finish();
            let s = m.score(std::slice::from_ref(&x)).unwrap();
            assert_eq!(s.null_count(), 3, "{alg}");
            assert!(s.is_valid(0) && s.is_null(1) && s.is_null(2) && s.is_null(4));
            let e = m.explain(std::slice::from_ref(&x)).unwrap();
            assert_eq!(e[0].null_count(), 3);
        }
        // no usable rows: a model that scores null, not a panic
        let empty: ArrayRef = Arc::new(Float64Array::from(vec![None, Some(f64::NAN)]));
        let mut fit = FitState::new(DetectorParams::new(Algorithm::Ecod), 1);
        fit.update(std::slice::from_ref(&empty)).unwrap();
        let m = fit.finish();
        assert_eq!(m.score(&[empty]).unwrap().null_count(), 2);
    }

    #[test]
    fn exact_values_on_a_small_fixture() {
        let x: ArrayRef = Arc::new(Float64Array::from(vec![
            2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0,
        ]));
        let fit_score = |alg: Algorithm, opts: &str| {
            let mut f = FitState::new(DetectorParams::parse(alg, opts).unwrap(), 1);
            f.update(std::slice::from_ref(&x)).unwrap();
            let m = f.finish();
            (m.score(std::slice::from_ref(&x)).unwrap(), m)
        };
        // mean 5, population std 2
        let (s, _) = fit_score(Algorithm::ZScore, "");
        assert_eq!(
            s.values().to_vec(),
            vec![1.5, 0.5, 0.5, 0.5, 0.0, 0.0, 1.0, 2.0]
        );
        // median 4.5, MAD 0.5 → scale 0.7413
        let (s, _) = fit_score(Algorithm::RobustZScore, "");
        assert!((s.value(7) - 4.5 / 0.7413).abs() < 1e-12);
        // Q1 = 4, Q3 = 5.5, IQR = 1.5: 9 is (9-5.5)/1.5 = 2.333 IQRs out → anomaly under Tukey
        let (s, m) = fit_score(Algorithm::Iqr, "");
        assert_eq!(m.threshold, 1.5);
        assert!((s.value(7) - 3.5 / 1.5).abs() < 1e-15);
        assert_eq!(m.flags(&s).iter().filter(|f| *f == Some(true)).count(), 1);
        // threshold from contamination = NumPy percentile(scores, 75) of the training scores
        let (s, m) = fit_score(Algorithm::ZScore, "contamination=0.25");
        assert_eq!(m.threshold, 1.125);
        assert_eq!(m.flags(&s).iter().filter(|f| *f == Some(true)).count(), 2);
    }
}

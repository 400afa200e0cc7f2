//! Models stored in format version 1 (before pca): the same model, but parameters without pca's
//! options. Read them as what they were and fill those options with their defaults, so a model
//! saved by an earlier release still scores.

use crate::model::{Model, ModelBody};
use crate::params::{Algorithm, Combine, DetectorParams};
use serde::Deserialize;

#[derive(Deserialize)]
pub(crate) struct ParamsV1 {
    algorithm: Algorithm,
    contamination: f64,
    contamination_set: bool,
    threshold: Option<f64>,
    seed: u64,
    sample_rows: usize,
    combine: Combine,
    n_bins: usize,
    alpha: f64,
    tol: f64,
    n_trees: usize,
    sample_size: usize,
    max_depth: Option<usize>,
}

#[derive(Deserialize)]
pub(crate) struct ModelV1 {
    params: ParamsV1,
    n_features: usize,
    training_rows: u64,
    skipped_rows: u64,
    threshold: f64,
    body: ModelBody,
}

impl From<ModelV1> for Model {
    fn from(m: ModelV1) -> Model {
        let p = m.params;
        let params = DetectorParams {
            algorithm: p.algorithm,
            contamination: p.contamination,
            contamination_set: p.contamination_set,
            contamination_auto: false,
            threshold: p.threshold,
            seed: p.seed,
            sample_rows: p.sample_rows,
            combine: p.combine,
            n_bins: p.n_bins,
            alpha: p.alpha,
            tol: p.tol,
            n_trees: p.n_trees,
            sample_size: p.sample_size,
            max_depth: p.max_depth,
            ..DetectorParams::new(p.algorithm)
        };
        Model {
            params,
            n_features: m.n_features,
            training_rows: m.training_rows,
            skipped_rows: m.skipped_rows,
            threshold: m.threshold,
            body: m.body,
            categories: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Algorithm, Model};
    use arrow_array::{ArrayRef, Float64Array};
    use std::sync::Arc;

    /// Models written by release c871a42 (format 1): `encode(fit_detector(alg, amount,
    /// latency_ms), 'hex')` over examples/data/tx.csv, and the scores that release gave them.
    #[test]
    fn version_1_models_load_and_score_as_before() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for (alg, file, scores) in [
            (
                Algorithm::Hbos,
                "hbos_v1.hex",
                [6.611014107120158, 6.643856189774724],
            ),
            (
                Algorithm::IsolationForest,
                "iforest_v1.hex",
                [0.5516486514413345, 0.729248825811769],
            ),
        ] {
            let hex = std::fs::read_to_string(dir.join(file)).unwrap();
            let hex = hex.trim();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            assert_eq!(
                &bytes[4..8],
                &1u32.to_le_bytes(),
                "{file} is a version 1 model"
            );
            let model = Model::from_bytes(&bytes).unwrap();
            assert_eq!(model.algorithm(), alg);
            assert_eq!(model.params.n_components, None);
            assert!(model.params.standardization && model.params.weighted);
            let x: ArrayRef = Arc::new(Float64Array::from(vec![120.5, 5000.0]));
            let y: ArrayRef = Arc::new(Float64Array::from(vec![340.0, 10.0]));
            let got = model.score(&[x, y]).unwrap();
            assert_eq!(got.values().to_vec(), scores.to_vec(), "{file}");
            // Written again, it is a version 2 model, and the same model.
            let again = model.to_bytes();
            assert_eq!(&again[4..8], &2u32.to_le_bytes());
            assert_eq!(Model::from_bytes(&again).unwrap(), model);
        }
    }
}

//! Models this process has just fitted, handed to the scoring that follows in the same process.
//!
//! Every model travels from its fit to its scoring as bytes in a column (they must cross
//! partitions and executors). When the fit and the scoring run in one process, decoding those
//! bytes again also throws away what the fit already derived from the model to compute its
//! threshold: an isolation forest's tree layout, ECDF term tables. A per-segment fit and score
//! (`nomaly-physical`'s `segment_fit_score.rs`) does that once per segment; with 10,000 iforest segments the decode, the
//! model cache's hash of the bytes and the second layout were about a third of the run.
//!
//! `fit_detector` leaves each model it encodes here, with its bytes; the model cache takes it back
//! when the same bytes arrive, compared in full, so a model is only ever matched to its own bytes.
//! Bounded to the newest [`FITTED_MODELS`] models and [`FITTED_BYTES`] bytes: a model nobody
//! scores here (stored in a table, scored by another process) is pushed out by newer ones, and
//! one that is pushed out before its scoring is decoded from its bytes as before.

use crate::model_column::StoredModel;
use nomaly_detectors::Model;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Models kept at most: a batch of small segments names up to a few dozen per partition.
const FITTED_MODELS: usize = 64;

/// Encoded bytes kept at most (an iforest model is ~1 MB, an ECOD model ~100 KB).
const FITTED_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Fitted {
    models: VecDeque<StoredModel>,
    bytes: usize,
}

static FITTED: Mutex<Fitted> = Mutex::new(Fitted {
    models: VecDeque::new(),
    bytes: 0,
});

/// Leaves `model`, encoded as `bytes`, for [`take`].
pub(crate) fn remember(bytes: &[u8], model: Model) {
    if bytes.len() > FITTED_BYTES {
        return;
    }
    let Ok(mut fitted) = FITTED.lock() else {
        return;
    };
    while fitted.models.len() >= FITTED_MODELS || fitted.bytes + bytes.len() > FITTED_BYTES {
        match fitted.models.pop_front() {
            Some((old, _)) => fitted.bytes -= old.len(),
            None => break,
        }
    }
    fitted.bytes += bytes.len();
    fitted.models.push_back((bytes.to_vec(), Arc::new(model)));
}

/// The model fitted here whose encoding is exactly `bytes`, removed from the registry.
pub(crate) fn take(bytes: &[u8]) -> Option<Arc<Model>> {
    let mut fitted = FITTED.lock().ok()?;
    let at = fitted
        .models
        .iter()
        .position(|(b, _)| b.len() == bytes.len() && b.as_slice() == bytes)?;
    let (b, model) = fitted.models.remove(at)?;
    fitted.bytes -= b.len();
    Some(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Float64Array};
    use nomaly_detectors::{Algorithm, DetectorParams, FitState};

    fn model(seed: u64) -> Model {
        let mut params = DetectorParams::new(Algorithm::Ecod);
        params.seed = seed;
        let mut fit = FitState::new(params, 1);
        let x: ArrayRef = Arc::new(Float64Array::from_iter_values(
            (0..100).map(|i| (i * seed as usize % 17) as f64),
        ));
        fit.update(&[x]).expect("finite");
        fit.finish()
    }

    #[test]
    fn a_fitted_model_is_taken_back_once_by_its_exact_bytes() {
        let m = model(3);
        let bytes = m.to_bytes();
        remember(&bytes, m.clone());
        let mut other = bytes.clone();
        *other.last_mut().unwrap() ^= 1;
        assert!(take(&other).is_none(), "matched bytes that differ");
        let taken = take(&bytes).expect("the model left for these bytes");
        assert_eq!(*taken, m);
        assert!(take(&bytes).is_none(), "taken twice");
        // pushed out by newer models
        let first = model(5);
        let first_bytes = first.to_bytes();
        remember(&first_bytes, first);
        for seed in 6..6 + FITTED_MODELS as u64 {
            let m = model(seed);
            remember(&m.to_bytes(), m);
        }
        assert!(
            take(&first_bytes).is_none(),
            "kept more than {FITTED_MODELS}"
        );
    }
}

//! What the speed examples share: the same synthetic features and the same detector choice.

use arrow_array::{ArrayRef, Float64Array};
use nomaly_detectors::Algorithm;
use nomaly_detectors::hashing::DeterministicRng;
use std::sync::Arc;

/// Eight feature columns of `rows` values, centred like the benchmark generator's features (signs
/// mix, as in real data); the same values on every run.
pub fn features(rows: usize) -> Vec<ArrayRef> {
    let mut rng = DeterministicRng::new(1);
    (0..8)
        .map(|_| {
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|_| (rng.next_f64() - 0.5) * 10.0),
            )) as ArrayRef
        })
        .collect()
}

/// The detectors named in `only` (comma-separated), or all of them.
pub fn chosen(only: Option<&str>) -> impl Iterator<Item = Algorithm> + '_ {
    Algorithm::ALL
        .into_iter()
        .filter(move |alg| only.is_none_or(|o| o.split(',').any(|a| a == alg.name())))
}

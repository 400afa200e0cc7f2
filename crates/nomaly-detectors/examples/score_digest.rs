//! Digests of every detector's model and scores on the examples' synthetic features, one line per
//! detector and tree walk: `cargo run --release -p nomaly-detectors --example score_digest [rows]`.
//!
//! Two machines (or one machine and an emulated other architecture, as `scripts/aarch64.sh` runs
//! it) print the same lines exactly when they fit the same models and score the same bits, so a
//! `diff` of the two outputs checks "the same scores on every CPU" without shipping the scores.

mod shared;

use arrow_array::{Array, ArrayRef};
use nomaly_detectors::algorithms::iforest::TreeWalk;
use nomaly_detectors::hashing::mix64;
use nomaly_detectors::model::{Model, ModelBody};
use nomaly_detectors::series::{self, SeriesDetector, SeriesOptions};
use nomaly_detectors::{DetectorParams, FitState};

/// Folds 64-bit words into one digest; order matters, so a permuted output differs.
fn digest(words: impl Iterator<Item = u64>) -> u64 {
    words.fold(0x6469_6765_7374, |h, w| mix64(h ^ w))
}

/// The digest of a model's bytes, eight at a time.
fn model_digest(model: &Model) -> u64 {
    digest(
        model
            .to_bytes()
            .chunks(8)
            .map(|c| c.iter().fold(0u64, |w, b| w << 8 | u64::from(*b))),
    )
}

fn score_digest(model: &Model, cols: &[ArrayRef]) -> (u64, usize) {
    let scores = model.score(cols).expect("finite features score");
    let nulls = scores.null_count();
    (digest(scores.values().iter().map(|s| s.to_bits())), nulls)
}

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let cols = shared::features(rows);
    println!("# {rows} rows x {} features", cols.len());
    for alg in shared::chosen(None) {
        // Fitted in three uneven batches, as a scan hands rows over.
        let mut fit = FitState::new(DetectorParams::new(alg), cols.len());
        for (start, end) in [(0, rows / 3), (rows / 3, rows / 2), (rows / 2, rows)] {
            let batch: Vec<ArrayRef> = cols.iter().map(|c| c.slice(start, end - start)).collect();
            fit.update(&batch).expect("finite features fit");
        }
        let model = fit.finish();
        let model_digest = model_digest(&model);
        let walks: Vec<(&str, Model)> = match &model.body {
            ModelBody::IsolationForest(forest) => TreeWalk::ALL
                .into_iter()
                .filter(|w| *w != TreeWalk::Fastest)
                .filter_map(|w| {
                    let walked = forest.clone().with_walk(w, cols.len())?;
                    let mut m = model.clone();
                    m.body = ModelBody::IsolationForest(walked);
                    Some((w.name(), m))
                })
                .collect(),
            _ => vec![("-", model.clone())],
        };
        for (walk, m) in &walks {
            let (scores, nulls) = score_digest(m, &cols);
            // The walk is printed apart: machines differ in the walks they allow, not in the bits.
            println!(
                "{:14} model {model_digest:016x} scores {scores:016x} nulls {nulls}\t(walk {walk})",
                alg.name()
            );
        }
    }
    text_digests(&cols);
    series_digests(&cols[0]);
}

/// The detectors that take text features, on a text column (60 categories, a few rare, some
/// NULL) next to two numeric ones: the category codes, counts, places and splits.
fn text_digests(cols: &[ArrayRef]) {
    let first = cols[0]
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .expect("Float64 features");
    let text: ArrayRef = std::sync::Arc::new(
        first
            .values()
            .iter()
            .enumerate()
            .map(|(i, v)| match i % 997 {
                0 => None,
                1 => Some(format!("rare {}", i % 7)),
                _ => Some(format!("category {}", (v.abs() * 5.0) as i64)),
            })
            .collect::<arrow_array::StringArray>(),
    );
    let inputs = [text, cols[1].clone(), cols[2].clone()];
    for alg in shared::chosen(None).filter(|a| a.takes_categorical()) {
        let mut fit = FitState::new(DetectorParams::new(alg), inputs.len());
        fit.update(&inputs).expect("text and numbers fit");
        let model = fit.finish();
        let model_digest = model_digest(&model);
        let (scores, nulls) = score_digest(&model, &inputs);
        println!(
            "{:14} model {model_digest:016x} scores {scores:016x} nulls {nulls}\t(walk -, text)",
            alg.name()
        );
    }
}

/// The time-series detectors on the first feature cut into series of 500 points (with a period-24
/// wave added, so the seasonal fit and the period search have something to find).
fn series_digests(column: &ArrayRef) {
    let values = column
        .as_any()
        .downcast_ref::<arrow_array::Float64Array>()
        .expect("Float64 features");
    let series: Vec<Vec<Option<f64>>> = values
        .values()
        .chunks(500)
        .map(|c| {
            c.iter()
                .enumerate()
                .map(|(t, v)| Some(v + [0.0, 3.0, 5.0, 3.0, 0.0, -3.0, -5.0, -3.0][t % 24 / 3]))
                .collect()
        })
        .collect();
    for (name, detector, text) in [
        ("seasonal", SeriesDetector::Seasonal, "period=24"),
        ("seasonal_auto", SeriesDetector::Seasonal, ""),
        (
            "seasonal_jumps",
            SeriesDetector::Seasonal,
            "period=24, trend_jump=5, low_pass_jump=3",
        ),
        ("rolling", SeriesDetector::Rolling, "window=50, warmup=10"),
        ("esd", SeriesDetector::Esd, "period=24"),
    ] {
        let options = SeriesOptions::parse(detector, name, text).expect("valid options");
        let scores: Vec<Option<f64>> = series
            .iter()
            .flat_map(|s| series::series_scores(s, &options))
            .collect();
        let nulls = scores.iter().filter(|s| s.is_none()).count();
        let d = digest(scores.iter().map(|s| s.map_or(u64::MAX, f64::to_bits)));
        println!(
            "{name:14} series {} scores {d:016x} nulls {nulls}\t(walk -)",
            series.len()
        );
    }
}

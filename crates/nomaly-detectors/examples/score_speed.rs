//! Scoring throughput of each detector on synthetic data, without DataFusion:
//! `cargo run --release -p nomaly-detectors --example score_speed [rows] [alg,alg...] [batch rows]
//! [fastest|avx512|shuffle|avx2|rows]` — the last picks iforest's tree walk (all give the same
//! scores; "fastest" times them on the forest and prints the one it chose).

mod shared;

use arrow_array::ArrayRef;
use nomaly_detectors::algorithms::iforest::TreeWalk;
use nomaly_detectors::model::ModelBody;
use nomaly_detectors::{DetectorParams, FitState};
use std::time::Instant;

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let cols = shared::features(rows);
    let only: Option<String> = std::env::args().nth(2);
    // rows per batch, as DataFusion's `batch_size` would hand them over
    let batch_rows: usize = std::env::args()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or(8192);
    let walk = match std::env::args().nth(4) {
        None => TreeWalk::Fastest,
        Some(name) => TreeWalk::ALL
            .into_iter()
            .find(|w| w.name() == name)
            .unwrap_or_else(|| {
                panic!(
                    "walk {name:?}: expected one of {:?}",
                    TreeWalk::ALL.map(|w| w.name())
                )
            }),
    };
    for alg in shared::chosen(only.as_deref()) {
        let started = Instant::now();
        let mut fit = FitState::new(DetectorParams::new(alg), cols.len());
        for chunk in (0..rows).step_by(batch_rows) {
            let n = batch_rows.min(rows - chunk);
            let batch: Vec<ArrayRef> = cols.iter().map(|c| c.slice(chunk, n)).collect();
            fit.update(&batch).unwrap();
        }
        let fit_time = started.elapsed();
        let mut model = fit.finish();
        if let ModelBody::IsolationForest(forest) = &mut model.body {
            *forest = forest
                .clone()
                .with_walk(walk, cols.len())
                .expect("this CPU or these trees do not allow that walk");
        }
        let finish_time = started.elapsed() - fit_time;
        let started = Instant::now();
        for chunk in (0..rows).step_by(batch_rows) {
            let n = batch_rows.min(rows - chunk);
            let batch: Vec<ArrayRef> = cols.iter().map(|c| c.slice(chunk, n)).collect();
            std::hint::black_box(model.score(&batch).unwrap());
        }
        let score_time = started.elapsed();
        let walked = match &model.body {
            ModelBody::IsolationForest(forest) => {
                format!("  walk {}", forest.walk(cols.len()).name())
            }
            _ => String::new(),
        };
        println!(
            "{:14} fit {:7.1} ns/row  finish {:6.1} ms  score {:7.1} ns/row{walked}",
            alg.name(),
            fit_time.as_nanos() as f64 / rows as f64,
            finish_time.as_secs_f64() * 1e3,
            score_time.as_nanos() as f64 / rows as f64
        );
    }
}

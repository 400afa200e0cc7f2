//! Per-segment model cost without DataFusion: `cargo run --release -p nomaly-detectors --example
//! segment_speed [segments] [rows per segment] [alg,alg...]` fits, encodes, decodes and scores one
//! model per segment, as `detect_anomalies(...) OVER (PARTITION BY k)` does, and prints the time of
//! each step per segment.

mod shared;

use nomaly_detectors::model::Model;
use nomaly_detectors::{DetectorParams, FitState};
use std::time::{Duration, Instant};

fn main() {
    let arg = |i: usize| std::env::args().nth(i);
    let segments: usize = arg(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rows: usize = arg(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let only = arg(3);
    let cols = shared::features(rows);
    for alg in shared::chosen(only.as_deref()) {
        let mut times = [Duration::ZERO; 5];
        for s in 0..segments {
            let mut params = DetectorParams::new(alg);
            params.seed = s as u64;
            let t = Instant::now();
            let mut fit = FitState::new(params, cols.len());
            fit.update(&cols).expect("finite features");
            times[0] += t.elapsed();
            let t = Instant::now();
            let model = fit.finish();
            times[1] += t.elapsed();
            let t = Instant::now();
            let bytes = model.to_bytes();
            times[2] += t.elapsed();
            let t = Instant::now();
            let model = Model::from_bytes(&bytes).expect("decodes");
            times[3] += t.elapsed();
            let t = Instant::now();
            std::hint::black_box(model.score(&cols).expect("scores"));
            times[4] += t.elapsed();
        }
        let per = |d: Duration| d.as_secs_f64() * 1e6 / segments as f64;
        println!(
            "{:14} {segments} segments x {rows} rows, µs per segment: update {:8.1}  finish {:8.1}  \
             encode {:8.1}  decode {:8.1}  score {:8.1}  total {:8.1}",
            alg.name(),
            per(times[0]),
            per(times[1]),
            per(times[2]),
            per(times[3]),
            per(times[4]),
            per(times.iter().sum()),
        );
    }
}

//! Per-series cost of the time-series detectors without DataFusion: `cargo run --release -p
//! nomaly-detectors --example series_speed [series] [points] ['options'] [seasonal|rolling|esd]`
//! scores `series` hourly-like series (trend + periods 24 and 168 + noise) and prints the time per
//! series and per point, on one core.

use nomaly_detectors::hashing::DeterministicRng;
use nomaly_detectors::series::{self, SeriesDetector, SeriesOptions};
use std::time::Instant;

fn main() {
    let arg = |i: usize| std::env::args().nth(i);
    let count: usize = arg(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let points: usize = arg(2).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let text = arg(3).unwrap_or_else(|| "period=24".to_string());
    let detector = match arg(4).as_deref() {
        None | Some("seasonal") => SeriesDetector::Seasonal,
        Some("rolling") => SeriesDetector::Rolling,
        Some("esd") => SeriesDetector::Esd,
        Some(other) => panic!("unknown detector {other}"),
    };
    let options = SeriesOptions::parse(detector, "series_speed", &text).expect("options");
    let mut rng = DeterministicRng::new(1);
    let data: Vec<Vec<Option<f64>>> = (0..count)
        .map(|s| {
            (0..points)
                .map(|t| {
                    let t = t as f64;
                    let tau = std::f64::consts::TAU;
                    Some(
                        s as f64
                            + 0.01 * t
                            + 5.0 * (tau * t / 24.0).sin()
                            + 2.0 * (tau * t / 168.0).sin()
                            + rng.next_f64(),
                    )
                })
                .collect()
        })
        .collect();
    let start = Instant::now();
    let mut checksum = 0.0;
    for y in &data {
        checksum += series::series_scores(y, &options)
            .iter()
            .flatten()
            .sum::<f64>();
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "{detector:?} '{text}': {count} series x {points} points: {:.3} ms/series, {:.1} ns/point (checksum {checksum:.6})",
        1e3 * elapsed / count as f64,
        1e9 * elapsed / (count * points) as f64
    );
}

//! Fuzzing model decoding and scoring (SECURITY.md: a model is a file someone else may have
//! written). Valid models of every detector, fitted on no, one and many rows, are mutated (bit
//! flips, bytes set to edge values, truncation, insertion, duplication, splices of two models,
//! huge length prefixes) and each result is decoded and, when it decodes, scored on rows holding
//! NaN, infinities and extremes and explained. No input may panic or hang: a panic fails the test
//! with the input in hex, and a watchdog fails it when one input takes over 20 s.
//!
//! CI runs `NOMALY_FUZZ_INPUTS` inputs (default 20,000) in a debug build; the 10-million-input
//! run is `NOMALY_FUZZ_INPUTS=10000000 cargo test --release -p nomaly-detectors --test
//! fuzz_models -- --nocapture` (benchmarks/README.md).

use arrow_array::{ArrayRef, Float64Array};
use nomaly_detectors::hashing::DeterministicRng;
use nomaly_detectors::{Algorithm, DetectorParams, FitState, Model};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Models to start from: small, so that millions of mutations stay fast.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for alg in Algorithm::ALL {
        for (rows, width, options) in [
            (0, 1, ""),
            (1, 2, ""),
            (300, 3, ""),
            (300, 2, "n_trees=3, sample_size=16"),
            (300, 3, "n_bins=4"),
            (300, 1, "n_trees=2, sample_size=8, max_depth=2"),
        ] {
            let Ok(params) = DetectorParams::parse(alg, options) else {
                continue;
            };
            if matches!(alg, Algorithm::IsolationForest | Algorithm::Eif)
                && options.is_empty()
                && rows > 1
            {
                continue; // 100 trees of 256 rows: large, and the small forests cover the shape
            }
            let mut fit = FitState::new(params, width);
            if rows > 0 {
                let cols: Vec<ArrayRef> = (0..width)
                    .map(|j| {
                        Arc::new(Float64Array::from_iter_values(
                            (0..rows).map(|i| ((i * 31 + j * 17) % 97) as f64 * 0.5 - 20.0),
                        )) as ArrayRef
                    })
                    .collect();
                fit.update(&cols).expect("finite features fit");
            }
            out.push(fit.finish().to_bytes());
        }
    }
    // Models with a text feature (format 3: category tables after the model).
    let small_forest =
        DetectorParams::parse(Algorithm::IsolationForest, "n_trees=3, sample_size=16")
            .expect("valid options");
    let small_eif =
        DetectorParams::parse(Algorithm::Eif, "n_trees=3, sample_size=16").expect("valid options");
    for params in [Algorithm::Hbos, Algorithm::Ecod, Algorithm::Copod]
        .map(DetectorParams::new)
        .into_iter()
        .chain([small_forest, small_eif])
    {
        let mut fit = FitState::new(params, 2);
        let text: ArrayRef = Arc::new(arrow_array::StringArray::from_iter_values(
            (0..200).map(|i| ["a", "b", "c", "dd"][(i * 7 % 11) % 4]),
        ));
        let numbers: ArrayRef = Arc::new(Float64Array::from_iter_values(
            (0..200).map(|i| (i % 13) as f64),
        ));
        fit.update(&[text, numbers]).expect("text and numbers fit");
        out.push(fit.finish().to_bytes());
    }
    out
}

/// Rows to score with a model of `width` features: ordinary, extreme and missing values.
fn rows(width: usize) -> Vec<ArrayRef> {
    let values = [
        0.0,
        -1.5,
        3.25,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        f64::MIN_POSITIVE,
        -0.0,
        1e300,
        -7.0,
        42.0,
    ];
    (0..width)
        .map(|j| {
            Arc::new(Float64Array::from_iter_values(
                (0..values.len()).map(|i| values[(i + j) % values.len()]),
            )) as ArrayRef
        })
        .collect()
}

fn mutate(rng: &mut DeterministicRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.next_below(seeds.len())].clone();
    for _ in 0..1 + rng.next_below(4) {
        if b.is_empty() {
            b.push(rng.next_u64() as u8);
        }
        let at = rng.next_below(b.len());
        match rng.next_below(8) {
            0 => b[at] ^= 1 << rng.next_below(8),
            1 => b[at] = [0x00, 0x01, 0x7f, 0x80, 0xff][rng.next_below(5)],
            2 => b.truncate(at),
            3 => {
                let n = 1 + rng.next_below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(at..at, bytes);
            }
            4 => {
                let end = (at + 1 + rng.next_below(32)).min(b.len());
                let copy = b[at..end].to_vec();
                b.splice(at..at, copy);
            }
            5 => {
                let other = &seeds[rng.next_below(seeds.len())];
                let from = rng.next_below(other.len().max(1));
                b.truncate(at);
                b.extend_from_slice(&other[from.min(other.len())..]);
            }
            6 => {
                // A varint length that claims billions of elements.
                let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
                let end = (at + huge.len()).min(b.len());
                b.splice(at..end, huge);
            }
            _ => {
                let v = rng.next_u64().to_le_bytes();
                let end = (at + 8).min(b.len());
                b.splice(at..end, v);
            }
        }
    }
    b
}

#[test]
fn mutated_models_never_panic_or_hang() {
    let inputs: u64 = std::env::var("NOMALY_FUZZ_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seeds = seeds();
    let width_rows: Vec<Vec<ArrayRef>> = (0..=16).map(rows).collect();
    let done = Arc::new(AtomicU64::new(0));
    let watch = done.clone();
    std::thread::spawn(move || {
        let mut last = (0, Instant::now());
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = watch.load(Ordering::Relaxed);
            if now == u64::MAX {
                return;
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(20) {
                eprintln!("input {now} has run for over 20 s: a hang");
                std::process::exit(3);
            }
        }
    });
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = DeterministicRng::new(0x6675_7a7a);
    let (mut decoded, mut scored) = (0u64, 0u64);
    let started = Instant::now();
    for i in 0..inputs {
        let bytes = mutate(&mut rng, &seeds);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let Ok(model) = Model::from_bytes(&bytes) else {
                return (false, false);
            };
            let Some(cols) = width_rows.get(model.n_features) else {
                return (true, false);
            };
            let _ = model.score(cols);
            let _ = model.explain(cols);
            let _ = model.describe();
            (true, true)
        }));
        match outcome {
            Ok((d, s)) => {
                decoded += u64::from(d);
                scored += u64::from(s);
            }
            Err(panic) => {
                let _ = std::panic::take_hook();
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                panic!("input {i} panicked ({what}); its bytes: {hex}");
            }
        }
        done.store(i + 1, Ordering::Relaxed);
    }
    done.store(u64::MAX, Ordering::Relaxed);
    let _ = std::panic::take_hook();
    eprintln!(
        "fuzz_models: {inputs} inputs from {} seed models in {:.1} s: {decoded} decoded, {scored} \
         scored and explained, 0 panics, 0 hangs",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        decoded > 0,
        "no mutation decoded: the seeds or the mutations are off"
    );
}

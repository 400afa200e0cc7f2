//! The quantile sketch and the ECDF tables against exact answers.

use super::*;

#[test]
fn slices_build_the_sketch_single_adds_build() {
    let mut rng = crate::hashing::DeterministicRng::new(3);
    let values: Vec<f64> = (0..EXACT_CAPACITY + 20_000)
        .map(|i| {
            let x = rng.next_f64() - 0.4;
            match i % 13 {
                0 => 0.0,
                1 => -0.0,
                2 => x * 1e-25,
                3 => x * 1e25,
                _ => x * 100.0,
            }
        })
        .collect();
    let mut one = QuantileSketch::new();
    values.iter().for_each(|&v| one.add(v));
    // Uneven slices cross the exact-to-buckets switch mid-slice.
    let mut many = QuantileSketch::new();
    for part in values.chunks(7_777) {
        many.add_slice(part);
    }
    assert_eq!(one, many);
    assert!(matches!(one.repr, Repr::Buckets(_)));
}

#[test]
fn exact_mode_matches_numpy_quantiles() {
    let mut s = QuantileSketch::new();
    for v in [5.0, 1.0, 3.0, 2.0, 4.0, 10.0] {
        s.add(v);
    }
    let wv = s.weighted_values();
    assert_eq!(quantile_linear(&wv, 0.5), 3.5);
    assert_eq!(quantile_linear(&wv, 0.25), 2.25);
    assert_eq!(quantile_linear(&wv, 0.75), 4.75);
    let e = s.to_ecdf();
    assert_eq!(e.counts_lt_le(3.0), (2, 3));
    assert_eq!(e.counts_lt_le(0.0), (0, 0));
    assert_eq!(e.counts_lt_le(11.0), (6, 6));
}

#[test]
fn bucket_mode_is_bounded_and_accurate() {
    let mut s = QuantileSketch::new();
    let n = 200_000;
    for i in 0..n {
        s.add((i as f64 - 100_000.0) / 1000.0);
    }
    assert!(!s.is_exact());
    let wv = s.weighted_values();
    let med = quantile_linear(&wv, 0.5);
    assert!(med.abs() < 0.002, "median {med}");
    let q90 = quantile_linear(&wv, 0.9);
    assert!(
        (q90 - 80.0).abs() <= 80.0 * RELATIVE_ERROR + 1e-3,
        "q90 {q90}"
    );
    let e = s.to_ecdf();
    let (lt, le) = e.counts_lt_le(-50.0);
    assert!(lt <= 50_000 && le >= 50_001 && le - lt < 20, "{lt} {le}");
    let (lt, le) = e.counts_lt_le(50.0);
    assert!(lt <= 150_000 && le >= 150_001, "{lt} {le}");
    assert_eq!(e.counts_lt_le(1e9), (n, n));
    assert_eq!(e.counts_lt_le(-1e9), (0, 0));
}

#[test]
fn merge_order_gives_identical_sketches() {
    let values: Vec<f64> = (0..150_000)
        .map(|i| ((i * 7919) % 100_003) as f64 * 0.37 - 9000.0)
        .collect();
    let mut whole = QuantileSketch::new();
    values.iter().for_each(|&v| whole.add(v));
    for parts in [2usize, 3, 16] {
        let mut sketches: Vec<QuantileSketch> = (0..parts).map(|_| QuantileSketch::new()).collect();
        for (i, &v) in values.iter().enumerate() {
            sketches[i % parts].add(v);
        }
        let mut merged = QuantileSketch::new();
        for s in sketches.iter().rev() {
            merged.merge(s);
        }
        assert_eq!(merged.weighted_values(), whole.weighted_values());
        assert_eq!(merged.to_ecdf(), whole.to_ecdf());
    }
    // small inputs stay exact through merges
    let mut a = QuantileSketch::new();
    let mut b = QuantileSketch::new();
    a.add(1.0);
    b.add(-2.0);
    a.merge(&b);
    assert!(a.is_exact());
    assert_eq!(a.weighted_values(), vec![(-2.0, 1), (1.0, 1)]);
}

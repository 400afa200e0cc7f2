//! The rolling robust baseline: each value against the median and MAD of the `window` rows before
//! it, |x − median| / (1.4826 · MAD), NULL while fewer than `warmup` of those rows hold a value.
//!
//! The frame is kept sorted (insert and remove by binary search), so a row costs O(log w) to find
//! the median and the MAD (the k-th smallest of two sorted deviation runs) plus an O(w) shift:
//! the same numbers as sorting the frame — `anomaly_score_mad(v) OVER (ROWS BETWEEN w PRECEDING
//! AND 1 PRECEDING)` — without sorting it per row.

use crate::algorithms::moments::scaled_distance;

/// Scores of `values` (None = missing) against their trailing window.
pub fn rolling_scores(values: &[Option<f64>], window: usize, warmup: usize) -> Vec<Option<f64>> {
    let mut frame: Vec<f64> = Vec::with_capacity(window + 1);
    let mut out = Vec::with_capacity(values.len());
    for (t, x) in values.iter().enumerate() {
        let score = match x {
            Some(x) if frame.len() >= warmup && !frame.is_empty() => {
                let (med, mad) = median_and_mad(&frame);
                Some(scaled_distance((x - med).abs(), 1.4826 * mad))
            }
            _ => None,
        };
        out.push(score);
        if let Some(x) = x {
            let at = frame.partition_point(|v| v.total_cmp(x).is_lt());
            frame.insert(at, *x);
        }
        if t >= window
            && let Some(old) = values[t - window]
        {
            let at = frame.partition_point(|v| v.total_cmp(&old).is_lt());
            frame.remove(at);
        }
    }
    out
}

/// The median of sorted `s` and the median of |s − median|, both by linear interpolation
/// between the two middle order statistics (NumPy's rule, as [`crate::quantile::quantile_linear`]).
pub fn median_and_mad(s: &[f64]) -> (f64, f64) {
    let m = s.len();
    let mid = (m - 1) / 2;
    let med = middle(s[mid], s[(m / 2).max(mid)], m);
    // Deviations left of the median, nearest first, and right of it, nearest first.
    let p = s.partition_point(|v| *v < med);
    let left = |i: usize| med - s[p - 1 - i];
    let right = |i: usize| s[p + i] - med;
    let (nl, nr) = (p, m - p);
    let kth = |k: usize| kth_of_two(k, nl, nr, &left, &right);
    let a = kth(mid);
    let b = if m.is_multiple_of(2) { kth(mid + 1) } else { a };
    (med, middle(a, b, m))
}

/// The 0.5 quantile from the two middle order statistics of `m` values (`quantile_linear`'s
/// arithmetic: `b − (b − a) · 0.5` when they differ and m is even).
fn middle(a: f64, b: f64, m: usize) -> f64 {
    if !m.is_multiple_of(2) || a == b {
        a
    } else {
        b - (b - a) * 0.5
    }
}

/// The k-th smallest (0-based) of the union of two ascending runs given by index functions.
fn kth_of_two(
    k: usize,
    na: usize,
    nb: usize,
    a: &dyn Fn(usize) -> f64,
    b: &dyn Fn(usize) -> f64,
) -> f64 {
    // Take i from `a` and j = k + 1 − i from `b` so that the largest taken is the answer.
    let take = k + 1;
    let (mut lo, mut hi) = (take.saturating_sub(nb), take.min(na));
    loop {
        let i = lo + (hi - lo) / 2;
        let j = take - i;
        if i < na && j > 0 && b(j - 1) > a(i) {
            lo = i + 1;
        } else if i > 0 && j < nb && a(i - 1) > b(j) {
            hi = i - 1;
        } else {
            let from_a = if i > 0 { a(i - 1) } else { f64::NEG_INFINITY };
            let from_b = if j > 0 { b(j - 1) } else { f64::NEG_INFINITY };
            return from_a.max(from_b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::DeterministicRng;
    use crate::quantile::quantile_linear;

    fn sorted_median_and_mad(frame: &[f64]) -> (f64, f64) {
        let mut s = frame.to_vec();
        s.sort_by(f64::total_cmp);
        let wv: Vec<(f64, u64)> = s.iter().map(|v| (*v, 1)).collect();
        let med = quantile_linear(&wv, 0.5);
        let mut dev: Vec<(f64, u64)> = s.iter().map(|v| ((v - med).abs(), 1)).collect();
        dev.sort_by(|a, b| a.0.total_cmp(&b.0));
        (med, quantile_linear(&dev, 0.5))
    }

    #[test]
    fn median_and_mad_equal_sorting_the_deviations() {
        let mut rng = DeterministicRng::new(9);
        for m in 1..60 {
            for round in 0..20 {
                let s: Vec<f64> = (0..m)
                    .map(|_| {
                        let v = rng.next_f64();
                        // Many ties in some rounds.
                        if round % 2 == 0 {
                            (v * 5.0).floor()
                        } else {
                            v * 100.0 - 30.0
                        }
                    })
                    .collect();
                let mut sorted = s.clone();
                sorted.sort_by(f64::total_cmp);
                let got = median_and_mad(&sorted);
                let want = sorted_median_and_mad(&s);
                assert_eq!(got.0.to_bits(), want.0.to_bits(), "median {s:?}");
                assert_eq!(got.1.to_bits(), want.1.to_bits(), "mad {s:?}");
            }
        }
    }

    #[test]
    fn rolling_scores_equal_the_brute_force_frame() {
        let mut rng = DeterministicRng::new(4);
        let values: Vec<Option<f64>> = (0..400)
            .map(|i| (i % 17 != 3).then(|| (rng.next_f64() * 10.0).round()))
            .collect();
        let (window, warmup) = (25, 10);
        let got = rolling_scores(&values, window, warmup);
        for t in 0..values.len() {
            let frame: Vec<f64> = values[t.saturating_sub(window)..t]
                .iter()
                .flatten()
                .copied()
                .collect();
            let want = match values[t] {
                Some(x) if frame.len() >= warmup => {
                    let (med, mad) = sorted_median_and_mad(&frame);
                    Some(scaled_distance((x - med).abs(), 1.4826 * mad))
                }
                _ => None,
            };
            assert_eq!(got[t].map(f64::to_bits), want.map(f64::to_bits), "row {t}");
        }
    }

    #[test]
    fn warm_up_and_a_spike() {
        let mut v: Vec<Option<f64>> = (0..30).map(|i| Some((i % 3) as f64)).collect();
        v[20] = Some(50.0);
        let s = rolling_scores(&v, 10, 5);
        assert!(s[..5].iter().all(Option::is_none));
        assert!(s[5].is_some());
        assert!(s[20].unwrap() > 30.0, "{:?}", s[20]);
        assert!(
            s.iter()
                .enumerate()
                .all(|(i, s)| i == 20 || s.is_none_or(|s| s <= 1.5))
        );
    }
}

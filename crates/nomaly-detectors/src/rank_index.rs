//! How many of a sorted set of values lie below x, in constant time for values spread evenly.
//!
//! Both the isolation forest's rank walk (a row's rank among a feature's split thresholds) and
//! ECOD/COPOD's exact-mode term tables (a value's rank among the training values) ask this for
//! every value scored. A binary search over thousands of values is a chain of dependent,
//! mispredicted steps that cost more than the rest of the scoring; an index of equal-width
//! buckets over the values' range answers with the bucket's start plus a look at the few values in
//! that one bucket.
//!
//! Exact for any placement of the buckets: `bucket` never decreases as x grows, so every value in
//! an earlier bucket is below x and every value in a later one is not.

/// Sorted values with an index of equal-width buckets over their range.
#[derive(Debug, Clone, PartialEq)]
pub struct RankIndex {
    /// Ascending, then `WINDOW` copies of +∞ so a window read past the last value stays in bounds.
    sorted: Vec<f64>,
    low: f64,
    scale: f64,
    /// Index of the last bucket, as a float for clamping.
    last_bucket: f64,
    /// `starts[b]`: values in buckets before b; one entry per bucket plus the total.
    starts: Vec<u32>,
}

/// Values compared without a branch after a bucket's start: values past the bucket are not below
/// x (or are the +∞ padding), so they never count, and buckets holding at most this many need no
/// search.
const WINDOW: usize = 4;

impl RankIndex {
    /// Indexes `sorted`, which must be ascending (as `<` orders it; no NaN).
    pub fn new(mut sorted: Vec<f64>) -> Self {
        let n = sorted.len();
        // about half a value per bucket when the values are spread evenly
        let buckets = (2 * n).next_power_of_two();
        let (low, high) = match (sorted.first(), sorted.last()) {
            (Some(&low), Some(&high)) => (low, high),
            _ => (0.0, 0.0),
        };
        // high = low gives +∞ (all but `low` in the last bucket); an overflowing range gives 0
        // (one bucket): slower, still exact
        let scale = buckets as f64 / (high - low);
        sorted.extend([f64::INFINITY; WINDOW]);
        let mut index = Self {
            sorted,
            low,
            scale,
            last_bucket: (buckets - 1) as f64,
            starts: vec![0; buckets + 1],
        };
        for i in 0..n {
            let b = index.bucket(index.sorted[i]);
            index.starts[b + 1] += 1;
        }
        for b in 1..index.starts.len() {
            index.starts[b] += index.starts[b - 1];
        }
        index
    }

    /// The indexed values, ascending.
    pub fn values(&self) -> &[f64] {
        &self.sorted[..self.sorted.len() - WINDOW]
    }

    pub fn len(&self) -> usize {
        self.sorted.len() - WINDOW
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn bucket(&self, x: f64) -> usize {
        // NaN (from x = NaN, or ±∞ against a degenerate range) and values below the range go to
        // bucket 0, values above it to the last; every step is monotone in x
        let b = ((x - self.low) * self.scale).max(0.0).min(self.last_bucket);
        // SAFETY: b is finite and in [0, last_bucket] after the clamps (max(NaN, 0) is 0).
        unsafe { b.to_int_unchecked() }
    }

    /// The number of values below `x` (0 for NaN).
    #[inline]
    pub fn rank(&self, x: f64) -> usize {
        let b = self.bucket(x);
        let (from, to) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        if to - from <= WINDOW {
            let window = &self.sorted[from..from + WINDOW];
            from + window.iter().filter(|v| **v < x).count()
        } else {
            from + self.sorted[from..to].partition_point(|v| *v < x)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::DeterministicRng;

    #[test]
    fn ranks_count_the_values_below() {
        let mut rng = DeterministicRng::new(3);
        let spread: Vec<f64> = (0..3_000).map(|_| (rng.next_f64() - 0.5) * 1e3).collect();
        // most values in a narrow middle, a few far out: crowded buckets next to empty ones
        let clustered: Vec<f64> = (0..3_000)
            .map(|i| {
                let u = rng.next_f64();
                if i % 100 == 0 {
                    (u - 0.5) * 1e9
                } else {
                    u * 1e-3
                }
            })
            .collect();
        let cases = vec![
            vec![],
            vec![2.5],
            vec![-0.0, 0.0, 1.0, 1.0, 3.0],
            vec![-f64::MAX, f64::MAX],
            vec![f64::NEG_INFINITY, -1.0, 7.0],
            spread,
            clustered,
        ];
        for mut values in cases {
            values.sort_by(f64::total_cmp);
            let index = RankIndex::new(values.clone());
            assert_eq!(index.values(), &values[..]);
            let mut probes = vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0, 1e300];
            for &v in &values {
                probes.extend([v, v.next_down(), v.next_up()]);
            }
            probes.extend((0..1_000).map(|_| (rng.next_f64() - 0.5) * 2e3));
            for x in probes {
                let expected = values.iter().filter(|v| **v < x).count();
                assert_eq!(
                    index.rank(x),
                    expected,
                    "x = {x:e}, {} values",
                    values.len()
                );
            }
        }
    }
}

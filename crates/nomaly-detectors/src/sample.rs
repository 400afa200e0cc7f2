//! Bottom-k hash sampling of rows: a uniform sample that does not depend on row order or partitioning.
//!
//! Every row gets a seeded hash of its values; the sample is the `k` distinct rows with the smallest
//! hashes, each with the number of times it occurred. A partition's local bottom-k always contains
//! the global bottom-k rows it saw, so merging local samples gives exactly the global sample, and its
//! counts are exact. Reservoir sampling would depend on arrival order; this does not.
//!
//! The sample trains isolation trees and estimates the score threshold for a contamination rate. As a
//! uniform sample of `k` distinct rows, the empirical quantile of its scores is within ε = sqrt(ln(2/δ)
//! / 2k) in rank of the true one with probability 1 - δ (Dvoretzky–Kiefer–Wolfowitz): for the default
//! k = 16384 and δ = 0.01, ε = 0.0127. Inputs with at most k distinct rows are sampled completely,
//! so their thresholds are exact.

use crate::hashing::{canonical_bits, row_hash};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowSample {
    k: usize,
    width: usize,
    seed: u64,
    /// Rows with hash ≥ this cannot enter the sample any more.
    cutoff: u64,
    hashes: Vec<u64>,
    counts: Vec<u64>,
    /// `width` values per entry.
    values: Vec<f64>,
}

impl RowSample {
    pub fn new(k: usize, width: usize, seed: u64) -> Self {
        Self {
            k: k.max(1),
            width,
            seed,
            cutoff: u64::MAX,
            hashes: Vec::new(),
            counts: Vec::new(),
            values: Vec::new(),
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Offers one row of finite values.
    #[inline]
    pub fn offer(&mut self, row: &[f64]) {
        self.offer_hashed(row_hash(self.seed, row), row);
    }

    /// True when a row with hash `h` could still enter the sample.
    #[inline]
    pub fn admits(&self, h: u64) -> bool {
        h <= self.cutoff
    }

    /// Offers a row whose [`row_hash`] under this sample's seed is `h`.
    #[inline]
    pub fn offer_hashed(&mut self, h: u64, row: &[f64]) {
        if h > self.cutoff {
            return;
        }
        self.push(h, 1, row);
    }

    #[inline]
    fn push(&mut self, h: u64, count: u64, row: &[f64]) {
        self.hashes.push(h);
        self.counts.push(count);
        self.values
            .extend(row.iter().map(|&v| if v == 0.0 { 0.0 } else { v }));
        if self.hashes.len() >= 2 * self.k.max(512) {
            self.compact();
        }
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// Sorts by (hash, row bits), folds duplicate rows, keeps the k smallest.
    pub fn compact(&mut self) {
        let n = self.hashes.len();
        let mut order: Vec<usize> = (0..n).collect();
        // a total order up to identical rows, which fold into one: unstable gives the same sample
        order.sort_unstable_by(|&a, &b| {
            self.hashes[a].cmp(&self.hashes[b]).then_with(|| {
                let (ra, rb) = (self.row(a), self.row(b));
                ra.iter()
                    .map(|v| canonical_bits(*v))
                    .cmp(rb.iter().map(|v| canonical_bits(*v)))
            })
        });
        // At most min(n, k) rows stay (plus one while deciding): capacity for k whatever the
        // sample's size made every per-group sample of a PARTITION BY fit a megabyte.
        let keep = n.min(self.k) + 1;
        let mut hashes = Vec::with_capacity(keep);
        let mut counts: Vec<u64> = Vec::with_capacity(keep);
        let mut values = Vec::with_capacity(keep * self.width);
        for &i in &order {
            let same_as_last = hashes.last() == Some(&self.hashes[i]) && {
                let last = hashes.len() - 1;
                values[last * self.width..(last + 1) * self.width]
                    .iter()
                    .zip(self.row(i))
                    .all(|(a, b): (&f64, &f64)| canonical_bits(*a) == canonical_bits(*b))
            };
            if same_as_last {
                *counts.last_mut().unwrap() += self.counts[i];
                continue;
            }
            if hashes.len() == self.k {
                break;
            }
            hashes.push(self.hashes[i]);
            counts.push(self.counts[i]);
            values.extend_from_slice(self.row(i));
        }
        if hashes.len() == self.k {
            self.cutoff = *hashes.last().unwrap();
        }
        self.hashes = hashes;
        self.counts = counts;
        self.values = values;
    }

    pub fn merge(&mut self, other: &RowSample) {
        for i in 0..other.hashes.len() {
            if other.hashes[i] <= self.cutoff {
                let row: Vec<f64> = other.row(i).to_vec();
                self.push(other.hashes[i], other.counts[i], &row);
            }
        }
        self.cutoff = self.cutoff.min(other.cutoff);
        self.compact();
    }

    /// The finished sample in hash order: (row, count) pairs.
    pub fn rows(&self) -> impl Iterator<Item = (&[f64], u64)> {
        (0..self.hashes.len()).map(move |i| (self.row(i), self.counts[i]))
    }

    /// Approximate heap size in bytes.
    pub fn size_bytes(&self) -> usize {
        self.hashes.capacity() * 16 + self.values.capacity() * 8
    }

    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_is_partition_independent() {
        let rows: Vec<[f64; 2]> = (0..20_000)
            .map(|i| [(i % 1000) as f64, (i / 7) as f64])
            .collect();
        let mut whole = RowSample::new(300, 2, 9);
        rows.iter().for_each(|r| whole.offer(r));
        whole.compact();
        for parts in [2usize, 5] {
            let mut samples: Vec<RowSample> =
                (0..parts).map(|_| RowSample::new(300, 2, 9)).collect();
            for (i, r) in rows.iter().enumerate().rev() {
                samples[(i * 13) % parts].offer(r);
            }
            let mut merged = RowSample::new(300, 2, 9);
            for s in &samples {
                merged.merge(s);
            }
            assert_eq!(merged, whole);
        }
        assert_eq!(whole.len(), 300);
    }

    #[test]
    fn duplicates_are_counted_not_repeated() {
        let mut s = RowSample::new(10, 1, 1);
        for _ in 0..1000 {
            s.offer(&[1.0]);
        }
        s.offer(&[2.0]);
        s.compact();
        let rows: Vec<(Vec<f64>, u64)> = s.rows().map(|(r, c)| (r.to_vec(), c)).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), 1001);
    }
}

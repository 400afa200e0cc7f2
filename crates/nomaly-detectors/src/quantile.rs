//! A deterministic, mergeable quantile / ECDF sketch.
//!
//! Up to [`EXACT_CAPACITY`] values the sketch *is* the multiset of values, so small inputs get exact
//! answers (and agree with PyOD/NumPy to the last digit). Past that it holds integer counts in fixed,
//! log-spaced buckets (DDSketch-style): bucket keys are the top 12 mantissa bits of |x| plus its
//! exponent, so a bucket spans a relative width of 2^-12 and a value read back from a bucket is within
//! a relative error of **1.3e-4** of the true value (ranks/ECDF values are exact at bucket granularity).
//! Magnitudes below 2^-64 (5.4e-20) count as zero and above 2^64 (1.8e19) share the top bucket, which
//! bounds a sketch to 2 × 128 × 4096 counters (8 MiB) per feature whatever the input size.
//!
//! Which representation a sketch has is a function of its total count, and bucketing a multiset gives
//! the same counts whenever it happens, so the result is the same bits for any partitioning and merge
//! order. Data whose spread is tiny compared with its magnitude (e.g. epoch seconds) loses resolution
//! in bucket mode: centre such columns first (`ts - 1700000000`).

use crate::rank_index::RankIndex;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Up to this many values the sketch keeps them exactly.
pub const EXACT_CAPACITY: usize = 65_536;
const MANTISSA_BITS: u32 = 12;
const SHIFT: u32 = 52 - MANTISSA_BITS;
/// Smallest and largest indexable magnitudes: 2^-64 and 2^64.
const MIN_EXP_BITS: u64 = (1023 - 64) << 52;
const MAX_EXP_BITS: u64 = (1023 + 64) << 52;
const MIN_KEY: u32 = (MIN_EXP_BITS >> SHIFT) as u32;

/// Relative error bound of a value read back from a bucket.
pub const RELATIVE_ERROR: f64 = 1.0 / (1u64 << (MANTISSA_BITS + 1)) as f64 * 1.0001;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantileSketch {
    count: u64,
    repr: Repr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Repr {
    Exact(Vec<f64>),
    Buckets(BucketStore),
}

/// Counts for positive magnitudes, negative magnitudes and zero.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct BucketStore {
    zero: u64,
    positive: DenseCounts,
    negative: DenseCounts,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct DenseCounts {
    offset: u32,
    counts: Vec<u64>,
}

impl DenseCounts {
    #[inline]
    fn add(&mut self, key: u32, n: u64) {
        if self.counts.is_empty() {
            self.offset = key;
            self.counts.push(n);
            return;
        }
        if key < self.offset {
            let grow = (self.offset - key) as usize;
            let mut v = vec![0u64; grow + self.counts.len()];
            v[grow..].copy_from_slice(&self.counts);
            self.counts = v;
            self.offset = key;
        }
        let idx = (key - self.offset) as usize;
        if idx >= self.counts.len() {
            self.counts.resize(idx + 1, 0);
        }
        self.counts[idx] += n;
    }

    fn merge(&mut self, other: &DenseCounts) {
        for (i, &c) in other.counts.iter().enumerate() {
            if c != 0 {
                self.add(other.offset + i as u32, c);
            }
        }
    }
}

#[inline]
fn magnitude_key(abs: f64) -> Option<u32> {
    let bits = abs.to_bits();
    (bits >= MIN_EXP_BITS).then(|| key_of_bits(bits))
}

/// The bucket key of a magnitude's bits at or above `MIN_EXP_BITS`; from 2^64 up all share the top
/// key. Without a branch, for the slice path.
#[inline]
fn key_of_bits(abs_bits: u64) -> u32 {
    (abs_bits.min(MAX_EXP_BITS) >> SHIFT) as u32
}

/// Midpoint of a magnitude bucket.
#[inline]
fn key_value(key: u32) -> f64 {
    let lo = f64::from_bits((key as u64) << SHIFT);
    let hi = f64::from_bits(((key as u64) + 1) << SHIFT);
    lo + (hi - lo) * 0.5
}

/// `values` in total order (a sketch's exact values arrive in any order; sums over them must not).
fn sorted_copy(values: &[f64]) -> Vec<f64> {
    let mut sorted = values.to_vec();
    // total_cmp tells every two values apart but identical bits: unstable is the same order
    sorted.sort_unstable_by(f64::total_cmp);
    sorted
}

/// Sorted values as (value, count) runs of equal values (-0 and 0 are one run, under the first).
fn counted_runs(sorted: &[f64]) -> Vec<WeightedValue> {
    let mut out: Vec<WeightedValue> = Vec::with_capacity(sorted.len());
    for &v in sorted {
        match out.last_mut() {
            Some((last, c)) if *last == v => *c += 1,
            _ => out.push((v, 1)),
        }
    }
    out
}

/// One step of the sorted (value, count) sequence of a sketch.
pub type WeightedValue = (f64, u64);

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl QuantileSketch {
    pub fn new() -> Self {
        Self {
            count: 0,
            repr: Repr::Exact(Vec::new()),
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Approximate heap size in bytes.
    pub fn size_bytes(&self) -> usize {
        match &self.repr {
            Repr::Exact(v) => v.capacity() * 8,
            Repr::Buckets(b) => (b.positive.counts.capacity() + b.negative.counts.capacity()) * 8,
        }
    }

    pub fn is_exact(&self) -> bool {
        matches!(self.repr, Repr::Exact(_))
    }

    /// Adds a finite value.
    #[inline]
    pub fn add(&mut self, v: f64) {
        debug_assert!(v.is_finite());
        self.count += 1;
        match &mut self.repr {
            Repr::Exact(values) => {
                values.push(if v == 0.0 { 0.0 } else { v });
                if values.len() > EXACT_CAPACITY {
                    self.convert_to_buckets();
                }
            }
            Repr::Buckets(store) => store.add(v, 1),
        }
    }

    /// Adds finite values: the same sketch as [`QuantileSketch::add`] on each, without a branch
    /// per value in bucket mode (the sign of centred data is a coin flip to a branch predictor).
    pub fn add_slice(&mut self, values: &[f64]) {
        let mut rest = values;
        while let Repr::Exact(_) = self.repr {
            let Some((&v, tail)) = rest.split_first() else {
                return;
            };
            self.add(v);
            rest = tail;
        }
        if let Repr::Buckets(store) = &mut self.repr {
            store.add_slice(rest);
            self.count += rest.len() as u64;
        }
    }

    fn convert_to_buckets(&mut self) {
        if let Repr::Exact(values) = &self.repr {
            let mut store = BucketStore::default();
            for &v in values {
                store.add(v, 1);
            }
            self.repr = Repr::Buckets(store);
        }
    }

    pub fn merge(&mut self, other: &QuantileSketch) {
        self.count += other.count;
        let stay_exact = self.count as usize <= EXACT_CAPACITY;
        match (&mut self.repr, &other.repr) {
            (Repr::Exact(a), Repr::Exact(b)) if stay_exact => a.extend_from_slice(b),
            _ => {
                self.convert_to_buckets();
                let Repr::Buckets(store) = &mut self.repr else {
                    unreachable!("converted above")
                };
                match &other.repr {
                    Repr::Exact(b) => b.iter().for_each(|&v| store.add(v, 1)),
                    Repr::Buckets(b) => store.merge(b),
                }
            }
        }
    }

    /// Sorted distinct values (bucket midpoints in bucket mode) with their counts.
    pub fn weighted_values(&self) -> Vec<WeightedValue> {
        match &self.repr {
            Repr::Exact(values) => counted_runs(&sorted_copy(values)),
            Repr::Buckets(store) => store.weighted_values(),
        }
    }

    /// [`Self::to_ecdf`] and [`Self::weighted_values`] at once, sorting exact values once.
    pub fn ecdf_and_weighted_values(&self) -> (Ecdf, Vec<WeightedValue>) {
        match &self.repr {
            Repr::Exact(values) => {
                let sorted = sorted_copy(values);
                let weighted = counted_runs(&sorted);
                (Ecdf::Exact { sorted }, weighted)
            }
            Repr::Buckets(store) => (self.to_ecdf(), store.weighted_values()),
        }
    }

    /// Every value with its count in no particular order: exact values one by one (repeats
    /// apart), buckets by their midpoints. For sums over the values, such as a histogram's bin
    /// counts, where [`Self::weighted_values`]' sort would be wasted (per-segment HBOS models
    /// sorted every feature of every segment for nothing).
    pub fn for_each_value(&self, mut f: impl FnMut(f64, u64)) {
        match &self.repr {
            Repr::Exact(values) => values.iter().for_each(|&v| f(v, 1)),
            Repr::Buckets(store) => store
                .weighted_values()
                .into_iter()
                .for_each(|(v, c)| f(v, c)),
        }
    }

    /// Finishes into an immutable ECDF for scoring.
    pub fn to_ecdf(&self) -> Ecdf {
        match &self.repr {
            Repr::Exact(values) => Ecdf::Exact {
                sorted: sorted_copy(values),
            },
            Repr::Buckets(store) => Ecdf::Buckets {
                n: self.count,
                zero: store.zero,
                positive: CumulativeCounts::new(&store.positive),
                negative: CumulativeCounts::new(&store.negative),
            },
        }
    }
}

impl BucketStore {
    #[inline]
    fn add(&mut self, v: f64, n: u64) {
        let key = magnitude_key(v.abs());
        match key {
            None => self.zero += n,
            Some(k) if v > 0.0 => self.positive.add(k - MIN_KEY, n),
            Some(k) => self.negative.add(k - MIN_KEY, n),
        }
    }

    fn add_slice(&mut self, values: &[f64]) {
        const CHUNK: usize = 1024;
        const ZERO: u8 = 0;
        const POSITIVE: u8 = 1;
        const NEGATIVE: u8 = 2;
        let mut keys = [0u32; CHUNK];
        let mut classes = [ZERO; CHUNK];
        for chunk in values.chunks(CHUNK) {
            let n = chunk.len();
            let (mut pos_min, mut pos_max, mut neg_min, mut neg_max) = (u32::MAX, 0, u32::MAX, 0);
            for ((key, class), &v) in keys.iter_mut().zip(classes.iter_mut()).zip(chunk) {
                debug_assert!(v.is_finite());
                // The same key and sign as `add`, kept per value for the counting loop below, in
                // arithmetic rather than a match: the compiler branched on the sign, which centred
                // data mispredicts half the time (a fifth of the hbos fit on centred data).
                let bits = v.to_bits();
                let abs = bits & !(1u64 << 63);
                let zero = abs < MIN_EXP_BITS;
                let k = if zero {
                    0
                } else {
                    key_of_bits(abs).wrapping_sub(MIN_KEY)
                };
                let c = if zero {
                    ZERO
                } else {
                    POSITIVE + (bits >> 63) as u8
                };
                *key = k;
                *class = c;
                let (p, q) = (c == POSITIVE, c == NEGATIVE);
                pos_min = pos_min.min(if p { k } else { u32::MAX });
                pos_max = pos_max.max(if p { k } else { 0 });
                neg_min = neg_min.min(if q { k } else { u32::MAX });
                neg_max = neg_max.max(if q { k } else { 0 });
            }
            let (keys, classes) = (&keys[..n], &classes[..n]);
            for (store, lo, hi) in [
                (&mut self.positive, pos_min, pos_max),
                (&mut self.negative, neg_min, neg_max),
            ] {
                if lo <= hi {
                    // Grow once to the chunk's key range (the range one-by-one adds would reach).
                    store.add(lo, 0);
                    store.add(hi, 0);
                }
            }
            // One increment per value into its class's counts, chosen by indexing rather than by
            // a branch; zeros count in a one-slot sink (their key is 0).
            let mut zeros = [0u64; 1];
            let offsets = [0, self.positive.offset, self.negative.offset];
            let sinks: [&mut [u64]; 3] = [
                &mut zeros,
                &mut self.positive.counts,
                &mut self.negative.counts,
            ];
            for (&k, &c) in keys.iter().zip(classes) {
                let c = usize::from(c);
                sinks[c][(k - offsets[c]) as usize] += 1;
            }
            self.zero += zeros[0];
        }
    }

    fn merge(&mut self, other: &BucketStore) {
        self.zero += other.zero;
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
    }

    fn weighted_values(&self) -> Vec<WeightedValue> {
        let mut out = Vec::new();
        for (i, &c) in self.negative.counts.iter().enumerate().rev() {
            if c != 0 {
                out.push((-key_value(self.negative.offset + i as u32 + MIN_KEY), c));
            }
        }
        if self.zero != 0 {
            out.push((0.0, self.zero));
        }
        for (i, &c) in self.positive.counts.iter().enumerate() {
            if c != 0 {
                out.push((key_value(self.positive.offset + i as u32 + MIN_KEY), c));
            }
        }
        out
    }
}

/// Prefix sums over a dense bucket range, for O(1) ECDF look-ups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CumulativeCounts {
    pub(crate) offset: u32,
    /// `cumulative[i]` = number of values in buckets `offset .. offset + i` (exclusive).
    pub(crate) cumulative: Vec<u64>,
}

impl CumulativeCounts {
    fn new(d: &DenseCounts) -> Self {
        let mut cumulative = Vec::with_capacity(d.counts.len() + 1);
        let mut acc = 0u64;
        cumulative.push(0);
        for &c in &d.counts {
            acc += c;
            cumulative.push(acc);
        }
        Self {
            offset: d.offset,
            cumulative,
        }
    }

    fn total(&self) -> u64 {
        *self.cumulative.last().unwrap_or(&0)
    }

    /// (values in buckets below `key`, values in bucket `key`).
    #[inline]
    fn below_and_at(&self, key: u32) -> (u64, u64) {
        if self.cumulative.len() <= 1 || key < self.offset {
            return (0, 0);
        }
        let idx = (key - self.offset) as usize;
        if idx + 1 >= self.cumulative.len() {
            return (self.total(), 0);
        }
        let below = self.cumulative[idx];
        (below, self.cumulative[idx + 1] - below)
    }
}

/// A frozen empirical distribution function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Ecdf {
    Exact {
        sorted: Vec<f64>,
    },
    Buckets {
        n: u64,
        zero: u64,
        positive: CumulativeCounts,
        negative: CumulativeCounts,
    },
}

impl Ecdf {
    pub fn n(&self) -> u64 {
        match self {
            Ecdf::Exact { sorted } => sorted.len() as u64,
            Ecdf::Buckets { n, .. } => *n,
        }
    }

    /// (#values < x, #values ≤ x). In bucket mode the whole bucket of `x` counts as equal to `x`.
    #[inline]
    pub fn counts_lt_le(&self, x: f64) -> (u64, u64) {
        match self {
            Ecdf::Exact { sorted } => {
                let lt = sorted.partition_point(|&v| v < x) as u64;
                let le = sorted.partition_point(|&v| v <= x) as u64;
                (lt, le)
            }
            Ecdf::Buckets {
                zero,
                positive,
                negative,
                ..
            } => {
                let neg_total = negative.total();
                match magnitude_key(x.abs()) {
                    None => (neg_total, neg_total + zero),
                    Some(k) if x > 0.0 => {
                        let (below, at) = positive.below_and_at(k - MIN_KEY);
                        let lt = neg_total + zero + below;
                        (lt, lt + at)
                    }
                    Some(k) => {
                        // negative magnitudes: larger key = smaller value
                        let (below_mag, at) = negative.below_and_at(k - MIN_KEY);
                        let lt = neg_total - below_mag - at;
                        (lt, lt + at)
                    }
                }
            }
        }
    }
}

/// `(-ln F(x), -ln F̄(x))` from the counts below / at-or-below `x` among `n`; an empty tail counts
/// as half an observation (a value beyond the training range scores above all training values).
#[inline]
pub fn tail_scores(lt: u64, le: u64, n: u64) -> (f64, f64) {
    (neg_ln_fraction(le, n), neg_ln_fraction(n - lt, n))
}

/// `-ln(k / n)`, with an empty count (`k = 0`) taken as half an observation.
#[inline]
fn neg_ln_fraction(k: u64, n: u64) -> f64 {
    let fraction = if k == 0 { 0.5 } else { k as f64 } / n as f64;
    // libm's log, the same bits on every CPU (see `IsolationForestModel::scores_from_depth_sums`)
    -libm::log(fraction)
}

thread_local! {
    /// `-ln(k / n)` for k = 0..=n, of the last exact-mode `n` a term table was built for.
    static NEG_LN_FRACTIONS: std::cell::RefCell<(u64, Arc<Vec<f64>>)> =
        std::cell::RefCell::new((u64::MAX, Arc::new(Vec::new())));
}

/// A value per distinct place a value can fall in an [`Ecdf`], computed from that place's
/// [`tail_scores`], so scoring a value costs a lookup instead of two logarithms (and, in exact
/// mode, two binary searches: per-group models are exact-mode ECDFs, and with them a query spent
/// three quarters of its time in those).
#[derive(Debug, Clone, PartialEq)]
pub enum TermTable<T> {
    /// Per bucket of a bucket-mode ECDF.
    Buckets(BucketTable<T>),
    /// Per distinct training value (`at`) and per gap before each and after the last (`gap`).
    Exact {
        /// The distinct training values, indexed for ranks: a binary search through thousands of
        /// values per scored value was a segmented ECOD run's costliest step.
        distinct: RankIndex,
        at: Vec<T>,
        gap: Vec<T>,
    },
}

impl<T: Copy> TermTable<T> {
    /// The entry for `x`, or None where a bucket table does not reach (outside the training range,
    /// non-finite values): there [`Ecdf::tails`] counts.
    #[inline]
    pub fn get(&self, x: f64) -> Option<T> {
        match self {
            TermTable::Buckets(b) => b.get(x),
            TermTable::Exact { distinct, at, gap } => {
                let p = distinct.rank(x);
                Some(if distinct.values().get(p) == Some(&x) {
                    at[p]
                } else {
                    gap[p]
                })
            }
        }
    }
}

/// The bucket-mode part of a [`TermTable`].
#[derive(Debug, Clone, PartialEq)]
pub struct BucketTable<T> {
    zero: T,
    positive_offset: u32,
    positive: Vec<T>,
    negative_offset: u32,
    negative: Vec<T>,
}

impl<T: Copy> BucketTable<T> {
    /// The entry of `x`'s bucket, or None where the table does not reach (outside the training
    /// range, non-finite values): there [`Ecdf::tails`] counts.
    #[inline]
    pub fn get(&self, x: f64) -> Option<T> {
        let Some(k) = magnitude_key(x.abs()) else {
            return Some(self.zero);
        };
        let key = k - MIN_KEY;
        let (offset, entries) = if x > 0.0 {
            (self.positive_offset, &self.positive)
        } else {
            (self.negative_offset, &self.negative)
        };
        key.checked_sub(offset)
            .and_then(|i| entries.get(i as usize))
            .copied()
    }
}

impl Ecdf {
    /// `entry(-ln F(x), -ln F̄(x))` per bucket (None in exact mode, where values are looked up by
    /// binary search). Scorers store their per-feature term directly: one load per value, and half
    /// the memory of storing both tails (the tables of a 10M-row feature are megabytes, so their
    /// size is what a lookup costs).
    pub fn term_table<T>(&self, entry: impl Fn(f64, f64) -> T) -> TermTable<T> {
        let (n, zero, positive, negative) = match self {
            Ecdf::Buckets {
                n,
                zero,
                positive,
                negative,
            } => (n, zero, positive, negative),
            Ecdf::Exact { sorted } => {
                let n = sorted.len() as u64;
                // Both tails are -ln(k / n) for a count k: n + 1 logarithms serve every place, and
                // every feature of the model (same n), instead of four per distinct value per
                // feature — per-segment models score about as many rows as they hold, so these
                // logarithms were a third of a segmented ECOD query.
                let logs = NEG_LN_FRACTIONS.with(|cache| {
                    let mut cache = cache.borrow_mut();
                    if cache.0 != n || cache.1.len() != n as usize + 1 {
                        cache.0 = n;
                        cache.1 = Arc::new((0..=n).map(|k| neg_ln_fraction(k, n)).collect());
                    }
                    Arc::clone(&cache.1)
                });
                let of_counts =
                    |lt: u64, le: u64| entry(logs[le as usize], logs[(n - lt) as usize]);
                // Runs of equal values (== makes -0 and 0 one run, as the counts' comparisons do).
                let mut distinct = Vec::with_capacity(sorted.len());
                let mut at = Vec::with_capacity(sorted.len());
                let mut gap = Vec::with_capacity(sorted.len() + 1);
                let mut i = 0;
                while i < sorted.len() {
                    // Runs are short (one value, mostly): a scan, not a search of the rest.
                    let mut end = i + 1;
                    while end < sorted.len() && sorted[end] == sorted[i] {
                        end += 1;
                    }
                    gap.push(of_counts(i as u64, i as u64));
                    at.push(of_counts(i as u64, end as u64));
                    distinct.push(sorted[i]);
                    i = end;
                }
                gap.push(of_counts(n, n));
                return TermTable::Exact {
                    distinct: RankIndex::new(distinct),
                    at,
                    gap,
                };
            }
        };
        let neg_total = negative.total();
        let of_counts = |(lt, le): (u64, u64)| {
            let (u_l, u_r) = tail_scores(lt, le, *n);
            entry(u_l, u_r)
        };
        let buckets = |c: &CumulativeCounts, f: &dyn Fn(u64, u64) -> (u64, u64)| -> Vec<T> {
            c.cumulative
                .windows(2)
                .map(|w| of_counts(f(w[0], w[1] - w[0])))
                .collect()
        };
        TermTable::Buckets(BucketTable {
            zero: of_counts((neg_total, neg_total + zero)),
            positive_offset: positive.offset,
            positive: buckets(positive, &|below, at| {
                let lt = neg_total + zero + below;
                (lt, lt + at)
            }),
            negative_offset: negative.offset,
            negative: buckets(negative, &|below_mag, at| {
                let lt = neg_total - below_mag - at;
                (lt, lt + at)
            }),
        })
    }

    /// `(-ln F(x), -ln F̄(x))`.
    #[inline]
    pub fn tails(&self, x: f64) -> (f64, f64) {
        let (lt, le) = self.counts_lt_le(x);
        tail_scores(lt, le, self.n())
    }
}

/// NumPy's default ("linear", type 7) quantile of a sorted weighted sequence.
pub fn quantile_linear(values: &[WeightedValue], q: f64) -> f64 {
    let n: u64 = values.iter().map(|(_, c)| c).sum();
    if n == 0 {
        return f64::NAN;
    }
    let h = (n - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor();
    let frac = h - lo;
    let a = value_at_rank(values, lo as u64);
    if frac == 0.0 {
        return a;
    }
    let b = value_at_rank(values, lo as u64 + 1);
    if a == b {
        return a;
    }
    // NumPy's _lerp: a + (b - a) * t, evaluated from the nearer end for t ≥ 0.5.
    let d = b - a;
    if frac >= 0.5 {
        b - d * (1.0 - frac)
    } else {
        a + d * frac
    }
}

/// Value at 0-based rank `r` of a sorted weighted sequence.
pub fn value_at_rank(values: &[WeightedValue], r: u64) -> f64 {
    let mut seen = 0u64;
    for &(v, c) in values {
        seen += c;
        if r < seen {
            return v;
        }
    }
    values.last().map(|v| v.0).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests;

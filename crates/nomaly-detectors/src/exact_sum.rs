//! Exact, order-independent summation of `f64` values.
//!
//! Floating-point addition is not associative, so a plain running sum depends on how rows were split
//! into partitions and in which order partial sums merge (DataFusion's own `avg`/`stddev` differ in
//! the 15th digit across partition counts). [`ExactSum`] keeps the *exact* sum: each finite double is
//! `m · 2^(e-1075)` with a 53-bit integer `m`, so we add `m` into an `i128` bin per exponent `e`.
//! Bins never overflow (2^74 additions), merging is bin-wise integer addition, and the final value is
//! a function of the exact sum only — the same bits for any partitioning and merge order.

use serde::{Deserialize, Serialize};

const EXPONENT_BINS: usize = 2047;

/// Only the bins between the lowest and highest exponent seen are allocated: all 2047 are 32 KB,
/// and a fit per group (`OVER (PARTITION BY k)`) keeps two per feature per group (10,000 groups
/// of 8 features took 13 GB); real data spans a few dozen exponents.
#[derive(Debug, Clone)]
pub struct ExactSum {
    /// `bins[i]` holds exponent bin `first + i`.
    first: usize,
    bins: Vec<i128>,
}

impl PartialEq for ExactSum {
    /// Equal when the same bins hold the same values (where the allocated ranges differ, the
    /// extra bins hold zero).
    fn eq(&self, other: &Self) -> bool {
        self.to_sparse() == other.to_sparse()
    }
}

impl Default for ExactSum {
    fn default() -> Self {
        Self::new()
    }
}

impl ExactSum {
    pub fn new() -> Self {
        Self {
            first: 0,
            bins: Vec::new(),
        }
    }

    /// Memory held, for the aggregate's accounting.
    pub fn size_bytes(&self) -> usize {
        self.bins.capacity() * std::mem::size_of::<i128>()
    }

    /// The counter of exponent bin `bin` (< [`EXPONENT_BINS`]), allocating up to it.
    #[inline]
    fn slot(&mut self, bin: usize) -> &mut i128 {
        let i = bin.wrapping_sub(self.first);
        if i >= self.bins.len() {
            self.grow_to(bin);
            return &mut self.bins[bin - self.first];
        }
        &mut self.bins[i]
    }

    #[cold]
    fn grow_to(&mut self, bin: usize) {
        if self.bins.is_empty() {
            self.first = bin;
            self.bins.push(0);
        } else if bin < self.first {
            let extra = self.first - bin;
            self.bins.splice(0..0, std::iter::repeat_n(0, extra));
            self.first = bin;
        } else {
            self.bins.resize(bin - self.first + 1, 0);
        }
    }

    /// Non-zero bins as (exponent bin, value).
    fn nonzero(&self) -> impl Iterator<Item = (usize, i128)> + '_ {
        self.bins
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(|(i, v)| (self.first + i, *v))
    }

    /// Adds a finite value; non-finite values are the caller's responsibility to filter.
    #[inline]
    pub fn add(&mut self, v: f64) {
        let (bin, mant) = bin_of(v);
        *self.slot(bin) += mant;
    }

    /// Adds `v * v` exactly, as the error-free pair (hi, lo) from a fused multiply-add.
    #[inline]
    pub fn add_square(&mut self, v: f64) {
        let hi = v * v;
        let lo = v.mul_add(v, -hi);
        self.add(hi);
        if lo != 0.0 {
            self.add(lo);
        }
    }

    /// Adds finite values. (One read-modify-write of the value's bin each: summing a block on a
    /// common scale in a register first was measured slower, 55 -> 75 ns/row for zscore's fit.)
    pub fn add_slice(&mut self, values: &[f64]) {
        values.iter().for_each(|&v| self.add(v));
    }

    /// Adds the squares of finite values exactly (each as the pair `add_square` uses).
    pub fn add_squares_slice(&mut self, values: &[f64]) {
        let mut hi = [0.0f64; 256];
        let mut lo = [0.0f64; 256];
        for block in values.chunks(256) {
            let n = block.len();
            square_pairs(block, &mut hi[..n], &mut lo[..n]);
            self.add_slice(&hi[..n]);
            self.add_slice(&lo[..n]);
        }
    }

    /// Adds the products `a[i] * b[i]` exactly, each as its error-free pair (hi, lo); the caller
    /// keeps |a|, |b| below 2^500 so no product overflows.
    pub fn add_products_slice(&mut self, a: &[f64], b: &[f64]) {
        let mut hi = [0.0f64; 256];
        let mut lo = [0.0f64; 256];
        for (ba, bb) in a.chunks(256).zip(b.chunks(256)) {
            let n = ba.len().min(bb.len());
            product_pairs(&ba[..n], &bb[..n], &mut hi[..n], &mut lo[..n]);
            self.add_slice(&hi[..n]);
            self.add_slice(&lo[..n]);
        }
    }

    pub fn merge(&mut self, other: &ExactSum) {
        for (bin, v) in other.nonzero() {
            *self.slot(bin) += v;
        }
    }

    /// The sum times 2^-k. Exact unless the result reaches below 2^-1074 (those bits are dropped,
    /// rounding towards -∞) or above the largest double (it saturates; the value reads as ±∞).
    pub fn scaled(&self, k: i32) -> ExactSum {
        let mut out = ExactSum::new();
        let top = EXPONENT_BINS - 1;
        for (i, v) in self.nonzero() {
            // bin i has scale 2^(i-1074); times 2^-k it belongs in bin i - k
            let j = i as i64 - k as i64;
            if j < 0 {
                *out.slot(0) += v >> (-j).min(127);
            } else if j as usize > top {
                let t = out.slot(top);
                *t = t.saturating_add(v.signum() << 100);
            } else {
                *out.slot(j as usize) += v;
            }
        }
        out
    }

    /// The exact sum rounded to the nearest double (ties away from subnormal corner cases aside).
    pub fn to_f64(&self) -> f64 {
        BigFixed::from_bins(self.nonzero()).to_f64()
    }

    /// The exact sum as an unevaluated pair `hi + lo` (double-double), for accurate variances.
    pub fn to_double_double(&self) -> (f64, f64) {
        let hi = self.to_f64();
        if !hi.is_finite() {
            return (hi, 0.0);
        }
        let mut rest = self.clone();
        rest.add(-hi);
        (hi, rest.to_f64())
    }

    /// Sparse form for serialisation: only non-zero bins.
    pub fn to_sparse(&self) -> SparseExactSum {
        SparseExactSum {
            bins: self.nonzero().map(|(i, v)| (i as u16, v)).collect(),
        }
    }

    pub fn from_sparse(sparse: &SparseExactSum) -> Self {
        let mut s = Self::new();
        for &(i, v) in &sparse.bins {
            if (i as usize) < EXPONENT_BINS {
                *s.slot(i as usize) = v;
            }
        }
        s
    }
}

/// The bin a finite value adds to and its signed mantissa there.
#[inline(always)]
fn bin_of(v: f64) -> (usize, i128) {
    debug_assert!(v.is_finite());
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7FF) as usize;
    let frac = (bits & ((1u64 << 52) - 1)) as i128;
    let mant = if exp == 0 { frac } else { frac | (1i128 << 52) };
    let signed = if bits >> 63 == 1 { -mant } else { mant };
    // Subnormals (exp 0) share the scale of exponent 1.
    (exp.max(1) - 1, signed)
}

/// `hi[i] = v²` rounded and `lo[i]` its exact remainder, `v² = hi + lo`. With FMA in the CPU the
/// remainder is one instruction; without it `mul_add` is a software routine (same result).
fn square_pairs(values: &[f64], hi: &mut [f64], lo: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has FMA (checked above).
            unsafe { square_pairs_fma(values, hi, lo) };
            return;
        }
    }
    square_pairs_portable(values, hi, lo);
}

#[inline(always)]
fn square_pairs_portable(values: &[f64], hi: &mut [f64], lo: &mut [f64]) {
    for ((h, l), &v) in hi.iter_mut().zip(lo.iter_mut()).zip(values) {
        *h = v * v;
        *l = v.mul_add(v, -*h);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn square_pairs_fma(values: &[f64], hi: &mut [f64], lo: &mut [f64]) {
    square_pairs_portable(values, hi, lo);
}

fn product_pairs(a: &[f64], b: &[f64], hi: &mut [f64], lo: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has FMA (checked above).
            unsafe { product_pairs_fma(a, b, hi, lo) };
            return;
        }
    }
    product_pairs_portable(a, b, hi, lo);
}

#[inline(always)]
fn product_pairs_portable(a: &[f64], b: &[f64], hi: &mut [f64], lo: &mut [f64]) {
    for (((h, l), &x), &y) in hi.iter_mut().zip(lo.iter_mut()).zip(a).zip(b) {
        *h = x * y;
        *l = x.mul_add(y, -*h);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn product_pairs_fma(a: &[f64], b: &[f64], hi: &mut [f64], lo: &mut [f64]) {
    product_pairs_portable(a, b, hi, lo);
}

/// Squares of values outside [2^-400, 2^500) are summed after scaling the value by 2^±600: a
/// square overflows from 2^512 up and loses bits below 2^-511.
const SQUARE_SCALE: i32 = 600;
const SMALLEST_PLAIN_SQUARED: f64 = f64::from_bits((1023 - 400) << 52); // 2^-400
const LARGEST_PLAIN_SQUARED: f64 = f64::from_bits((1023 + 500) << 52); // 2^500

/// The exact sum of the squares of any finite doubles.
///
/// Squaring in `f64` overflows for |x| ≥ 2^512 and underflows (losing the exact remainder) for
/// |x| < 2^-511, so a z-score of data in the 1e170s or 1e-200s came out infinite. Values in
/// [2^-400, 2^500) (and zero) are squared as they are; smaller ones are scaled up by 2^600 and
/// larger ones down by 2^600 first, each into its own exact sum, and [`ExactSquareSum::scaled`]
/// reads the total at whatever power-of-two scale keeps it finite.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "SparseSquareSum", into = "SparseSquareSum")]
pub struct ExactSquareSum {
    plain: ExactSum,
    /// Σ (x·2^600)² over 0 < |x| < 2^-400.
    tiny: Option<ExactSum>,
    /// Σ (x·2^-600)² over |x| ≥ 2^500.
    huge: Option<ExactSum>,
}

impl ExactSquareSum {
    /// Memory held, for the aggregate's accounting.
    pub fn size_bytes(&self) -> usize {
        self.plain.size_bytes()
            + self.tiny.as_ref().map_or(0, ExactSum::size_bytes)
            + self.huge.as_ref().map_or(0, ExactSum::size_bytes)
    }

    /// Adds the squares of finite values.
    pub fn add_slice(&mut self, values: &[f64]) {
        let outside = |v: f64| {
            let a = v.abs();
            (a < SMALLEST_PLAIN_SQUARED && a != 0.0) || a >= LARGEST_PLAIN_SQUARED
        };
        // without a short-circuit, so the check vectorises: it runs on every batch
        if !values.iter().fold(false, |any, &v| any | outside(v)) {
            self.plain.add_squares_slice(values);
            return;
        }
        let (mut plain, mut tiny, mut huge) = (Vec::new(), Vec::new(), Vec::new());
        for &v in values {
            let a = v.abs();
            if a >= LARGEST_PLAIN_SQUARED {
                huge.push(scale_by_pow2(v, -SQUARE_SCALE));
            } else if a < SMALLEST_PLAIN_SQUARED && a != 0.0 {
                tiny.push(scale_by_pow2(v, SQUARE_SCALE));
            } else {
                plain.push(v);
            }
        }
        self.plain.add_squares_slice(&plain);
        if !tiny.is_empty() {
            self.tiny
                .get_or_insert_with(ExactSum::new)
                .add_squares_slice(&tiny);
        }
        if !huge.is_empty() {
            self.huge
                .get_or_insert_with(ExactSum::new)
                .add_squares_slice(&huge);
        }
    }

    pub fn merge(&mut self, other: &ExactSquareSum) {
        self.plain.merge(&other.plain);
        for (mine, theirs) in [(&mut self.tiny, &other.tiny), (&mut self.huge, &other.huge)] {
            if let Some(t) = theirs {
                mine.get_or_insert_with(ExactSum::new).merge(t);
            }
        }
    }

    /// The sum of squares times 2^-k (see [`ExactSum::scaled`]).
    pub fn scaled(&self, k: i32) -> ExactSum {
        let mut total = self.plain.scaled(k);
        if let Some(t) = &self.tiny {
            // t = S·2^1200, so S·2^-k = t·2^-(k+1200)
            total.merge(&t.scaled(k + 2 * SQUARE_SCALE));
        }
        if let Some(h) = &self.huge {
            total.merge(&h.scaled(k - 2 * SQUARE_SCALE));
        }
        total
    }
}

/// Serialised form of an [`ExactSquareSum`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SparseSquareSum {
    plain: SparseExactSum,
    tiny: Option<SparseExactSum>,
    huge: Option<SparseExactSum>,
}

impl From<SparseSquareSum> for ExactSquareSum {
    fn from(s: SparseSquareSum) -> Self {
        Self {
            plain: ExactSum::from_sparse(&s.plain),
            tiny: s.tiny.as_ref().map(ExactSum::from_sparse),
            huge: s.huge.as_ref().map(ExactSum::from_sparse),
        }
    }
}

impl From<ExactSquareSum> for SparseSquareSum {
    fn from(s: ExactSquareSum) -> Self {
        Self {
            plain: s.plain.to_sparse(),
            tiny: s.tiny.as_ref().map(ExactSum::to_sparse),
            huge: s.huge.as_ref().map(ExactSum::to_sparse),
        }
    }
}

/// Serialised form of an [`ExactSum`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparseExactSum {
    bins: Vec<(u16, i128)>,
}

/// A fixed-point integer in base 2^32, scaled by 2^-1074, wide enough for any sum of doubles.
struct BigFixed {
    digits: Vec<i64>,
}

impl BigFixed {
    /// From non-zero (exponent bin, value) pairs.
    fn from_bins(bins: impl Iterator<Item = (usize, i128)>) -> Self {
        // 2046 exponent bits + 128 bits of bin headroom, in 32-bit digits, plus carry room.
        let mut digits = vec![0i64; 72];
        for (i, v) in bins {
            // Bin i has scale 2^(i+1-1075) = 2^i · 2^-1074. A bin may use all 128 bits, so its
            // 32-bit digits are shifted one at a time (each < 2^63) rather than the whole value.
            let (mut d, r) = (i / 32, i % 32);
            let mut w = v;
            loop {
                if w == 0 {
                    break;
                }
                if w == -1 {
                    digits[d] -= 1i64 << r;
                    break;
                }
                let c = ((w & 0xFFFF_FFFF) as i64) << r;
                digits[d] += c & 0xFFFF_FFFF;
                digits[d + 1] += c >> 32;
                w >>= 32;
                d += 1;
            }
        }
        let mut big = BigFixed { digits };
        big.normalize();
        big
    }

    fn normalize(&mut self) {
        let n = self.digits.len();
        for i in 0..n - 1 {
            let carry = self.digits[i] >> 32;
            self.digits[i] -= carry << 32;
            self.digits[i + 1] += carry;
        }
    }

    fn to_f64(&self) -> f64 {
        let mut digits = self.digits.clone();
        let negative = *digits.last().unwrap() < 0;
        if negative {
            for d in digits.iter_mut() {
                *d = -*d;
            }
            let mut tmp = BigFixed { digits };
            tmp.normalize();
            digits = tmp.digits;
        }
        let Some(top) = digits.iter().rposition(|&d| d != 0) else {
            return 0.0;
        };
        let d = |i: usize| -> u128 { if i <= top { digits[i] as u128 } else { 0 } };
        let (lo_index, mut mant) = if top >= 2 {
            (top - 2, (d(top) << 64) | (d(top - 1) << 32) | d(top - 2))
        } else if top == 1 {
            (0, (d(1) << 32) | d(0))
        } else {
            (0, d(0))
        };
        if top >= 2 && digits[..top - 2].iter().any(|&x| x != 0) {
            mant |= 1; // sticky bit: 43+ bits below the rounding position
        }
        let magnitude = scale_by_pow2(mant as f64, 32 * lo_index as i32 - 1074);
        if negative { -magnitude } else { magnitude }
    }
}

/// `x · 2^k` computed with exact power-of-two factors.
pub(crate) fn scale_by_pow2(mut x: f64, mut k: i32) -> f64 {
    while k > 1000 {
        x *= 2f64.powi(1000);
        k -= 1000;
    }
    while k < -1000 {
        x *= 2f64.powi(-1000);
        k += 1000;
    }
    x * 2f64.powi(k)
}

/// Double-double helpers: values as unevaluated sums hi + lo with |lo| ≤ ulp(hi)/2.
pub(crate) mod dd {
    #[inline]
    pub fn two_sum(a: f64, b: f64) -> (f64, f64) {
        let s = a + b;
        let bb = s - a;
        (s, (a - (s - bb)) + (b - bb))
    }

    pub fn add(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
        let (s, e) = two_sum(a.0, b.0);
        let e = e + a.1 + b.1;
        two_sum(s, e)
    }

    pub fn mul(a: (f64, f64), b: (f64, f64)) -> (f64, f64) {
        let p = a.0 * b.0;
        let e = a.0.mul_add(b.0, -p);
        let e = e + a.0 * b.1 + a.1 * b.0;
        two_sum(p, e)
    }

    pub fn div_f64(a: (f64, f64), b: f64) -> (f64, f64) {
        let q1 = a.0 / b;
        // remainder a - q1*b computed exactly with fma
        let p = q1 * b;
        let pe = q1.mul_add(b, -p);
        let r = ((a.0 - p) - pe) + a.1;
        let q2 = r / b;
        two_sum(q1, q2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_exactly_where_naive_summation_fails() {
        let mut s = ExactSum::new();
        for v in [1e100, 1.0, -1e100, 1e-30] {
            s.add(v);
        }
        assert_eq!(s.to_f64(), 1.0 + 1e-30);
        let (hi, lo) = s.to_double_double();
        assert_eq!(hi, 1.0);
        assert_eq!(lo, 1e-30);
    }

    #[test]
    fn order_and_partitioning_do_not_change_bits() {
        let values: Vec<f64> = (0..10_000)
            .map(|i| ((i as f64) * 0.7).sin() * 10f64.powi((i % 17) - 8))
            .collect();
        let mut a = ExactSum::new();
        values.iter().for_each(|&v| a.add(v));
        let mut parts: Vec<ExactSum> = (0..7).map(|_| ExactSum::new()).collect();
        for (i, &v) in values.iter().rev().enumerate() {
            parts[(i * 31) % 7].add(v);
        }
        let mut b = ExactSum::new();
        for p in parts.iter().rev() {
            b.merge(p);
        }
        assert_eq!(a.to_f64().to_bits(), b.to_f64().to_bits());
        let naive: f64 = values.iter().sum();
        assert!((a.to_f64() - naive).abs() <= 1e-12 * naive.abs().max(1.0));
        assert_eq!(ExactSum::from_sparse(&a.to_sparse()), a);
    }

    #[test]
    fn negative_totals_and_subnormals() {
        let mut s = ExactSum::new();
        s.add(-3.5);
        s.add(1.25);
        s.add(5e-324);
        s.add(-5e-324);
        assert_eq!(s.to_f64(), -2.25);
        let mut z = ExactSum::new();
        z.add(2.0);
        z.add(-2.0);
        assert_eq!(z.to_f64(), 0.0);
    }

    #[test]
    fn slices_sum_like_single_adds() {
        let mut rng = crate::hashing::DeterministicRng::new(7);
        // Wide exponents, zeros, signed zeros, subnormals and huge values.
        let mut values: Vec<f64> = (0..5_000)
            .map(|i| {
                let x = rng.next_f64() - 0.5;
                match i % 11 {
                    0 => x * 1e-30,
                    1 => 0.0,
                    2 => -0.0,
                    3 => x * 1e25,
                    _ => x * 3.0,
                }
            })
            .collect();
        values.extend([5e-324, -1e-310, 1e300, -1e300, f64::MAX, -f64::MAX, 1e-300]);
        let (mut one, mut many) = (ExactSum::new(), ExactSum::new());
        let (mut one_sq, mut many_sq) = (ExactSum::new(), ExactSum::new());
        for &v in &values {
            one.add(v);
            if v.abs() < 1e150 {
                one_sq.add_square(v);
            }
        }
        many.add_slice(&values);
        let small: Vec<f64> = values.iter().copied().filter(|v| v.abs() < 1e150).collect();
        many_sq.add_squares_slice(&small);
        assert_eq!(one.to_double_double(), many.to_double_double());
        assert_eq!(one_sq.to_double_double(), many_sq.to_double_double());
        // Subnormals only.
        let tiny: Vec<f64> = (1..200).map(|i| i as f64 * 1e-310).collect();
        let (mut a, mut b) = (ExactSum::new(), ExactSum::new());
        tiny.iter().for_each(|&v| a.add(v));
        b.add_slice(&tiny);
        assert_eq!(a.to_f64(), b.to_f64());
    }

    #[test]
    fn bins_may_use_all_128_bits() {
        let mut s = ExactSum::new();
        *s.slot(1074) = (1i128 << 100) + 3; // scale 2^0
        assert_eq!(s.to_f64(), 2f64.powi(100));
        *s.slot(1074) = -(1i128 << 120) - (1i128 << 70);
        *s.slot(1000) = 1 << 90; // 2^16
        assert_eq!(
            s.to_f64(),
            -(2f64.powi(120) + 2f64.powi(70)) + 2f64.powi(16)
        );
        *s.slot(1074) = i128::MAX;
        *s.slot(1000) = 0;
        assert_eq!(s.to_f64(), 2f64.powi(127));
    }

    #[test]
    fn square_sums_cover_every_finite_double() {
        let p = |k: i32| 2f64.powi(k);
        let mut s = ExactSquareSum::default();
        s.add_slice(&[p(600), p(3), -p(-600), 0.0]);
        assert_eq!(s.scaled(1200).to_double_double(), (1.0, p(-1194)));
        assert_eq!(s.scaled(0).to_f64(), f64::INFINITY);
        // read at the small end, the huge square saturates and the tiny one is exact
        let mut small = ExactSquareSum::default();
        small.add_slice(&[p(-600), 3.0 * p(-601)]);
        assert_eq!(small.scaled(-1200).to_f64(), 1.0 + 9.0 / 4.0);
        assert_eq!(small.scaled(0).to_f64(), 0.0);
        // split and merged in any order, the same bits; plain values keep the plain sum's bits
        let values: Vec<f64> = (0..3000)
            .map(|i| ((i as f64) * 0.37).sin() * 10f64.powi((i % 41) * 15 - 300))
            .collect();
        let mut whole = ExactSquareSum::default();
        whole.add_slice(&values);
        let mut parts = ExactSquareSum::default();
        for chunk in values.rchunks(77) {
            let mut part = ExactSquareSum::default();
            part.add_slice(chunk);
            parts.merge(&part);
        }
        for k in [-1200, -600, 0, 600, 1200] {
            assert_eq!(
                whole.scaled(k).to_double_double(),
                parts.scaled(k).to_double_double()
            );
        }
        // values whose squares are exact doubles: the same bins as squaring them directly
        let ordinary: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| *v == 0.0 || (v.abs() >= p(-400) && v.abs() < p(500)))
            .collect();
        let mut plain = ExactSum::new();
        plain.add_squares_slice(&ordinary);
        let mut squares = ExactSquareSum::default();
        squares.add_slice(&ordinary);
        assert!(squares.scaled(0) == plain, "plain squares changed");
    }

    #[test]
    fn squares_are_exact() {
        let mut s = ExactSum::new();
        let x = 1.0 + f64::EPSILON;
        s.add_square(x);
        s.add(-1.0);
        s.add(-2.0 * f64::EPSILON);
        assert_eq!(s.to_f64(), f64::EPSILON * f64::EPSILON);
    }
}

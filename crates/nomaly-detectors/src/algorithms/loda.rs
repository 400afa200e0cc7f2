//! `loda`: PyOD's `LODA` (Pevný 2016) — `n_random_cuts` sparse random projections, each with an
//! equal-width histogram of `n_bins` bins over the projected training rows; a row's score is the
//! mean over the cuts of `−ln(probability of its bin)`, divided once more by the number of cuts as
//! PyOD's is (its cut weights are `1 / n_random_cuts` and it divides their sum by the count).
//!
//! As PyOD: each projection has ⌊√d⌋ non-zero weights; a histogram is NumPy's (`range` = the
//! projected rows' minimum and maximum, last bin closed), each bin's count plus 1e-12 over their
//! sum; and a projected value's bin is looked up as PyOD does — the number of the first
//! `n_bins − 1` edges strictly below it (NumPy `searchsorted`, side left), which is the bin to the
//! right of the one that counted it, except at the lowest edge; values beyond the range take the
//! edge bins.
//!
//! Unlike PyOD, the projections come from the seed (xoshiro256**; weights are Irwin–Hall normals,
//! the sum of 12 uniforms minus 6, integer and exact arithmetic only), so a model is the same
//! bits on every engine and CPU; and the histograms are built over the fit's row sample (rows
//! counted by multiplicity: the whole input when it has at most `sample_rows` distinct rows).

use super::{WholeRowScorer, part_columns};
use crate::hashing::DeterministicRng;
use crate::sample::RowSample;
use serde::{Deserialize, Serialize};

/// The most random cuts a model may have (the `n_random_cuts` option's bound).
pub const MAX_RANDOM_CUTS: usize = 10_000;
/// Mixed into the seed so the projections are not the other detectors' random stream.
const PROJECTION_STREAM: u64 = 0x6C6F_6461_0000_0001;

/// One random projection and its histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cut {
    /// The features with a non-zero weight, increasing.
    pub features: Vec<u32>,
    pub weights: Vec<f64>,
    /// `n_bins + 1` edges, non-decreasing.
    pub edges: Vec<f64>,
    /// Each bin's score term: `−ln(probability) / n_random_cuts` (PyOD's weighted term).
    pub neg_log: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LodaModel {
    pub d: usize,
    pub cuts: Vec<Cut>,
    /// Each feature's mean over the row sample: where the explanation measures a row from.
    pub centre: Vec<f64>,
}

/// The projections for `d` features: per cut, the chosen features (increasing) and their weights.
pub fn projections(seed: u64, d: usize, cuts: usize) -> Vec<(Vec<u32>, Vec<f64>)> {
    let nonzero = ((d as f64).sqrt() as usize).clamp(1, d.max(1));
    let mut rng = DeterministicRng::new(seed ^ PROJECTION_STREAM);
    (0..cuts)
        .map(|_| {
            // A partial Fisher–Yates shuffle picks `nonzero` distinct features.
            let mut order: Vec<u32> = (0..d as u32).collect();
            for t in 0..nonzero {
                let r = t + rng.next_below(d - t);
                order.swap(t, r);
            }
            let mut chosen = order[..nonzero].to_vec();
            chosen.sort_unstable();
            let weights = chosen
                .iter()
                .map(|_| (0..12).fold(0.0, |s, _| s + rng.next_f64()) - 6.0)
                .collect();
            (chosen, weights)
        })
        .collect()
}

#[inline]
fn project(features: &[u32], weights: &[f64], row: impl Fn(usize) -> f64) -> f64 {
    features
        .iter()
        .zip(weights)
        .fold(0.0, |acc, (&j, &w)| acc + w * row(j as usize))
}

impl LodaModel {
    pub fn fit(sample: &RowSample, d: usize, n_bins: usize, n_cuts: usize, seed: u64) -> Self {
        let rows: Vec<(&[f64], u64)> = sample.rows().collect();
        let total: u64 = rows.iter().map(|r| r.1).sum();
        let centre = (0..d)
            .map(|j| {
                let s: f64 = rows.iter().map(|(r, w)| r[j] * *w as f64).sum();
                if total > 0 { s / total as f64 } else { 0.0 }
            })
            .collect();
        let cuts = projections(seed, d, n_cuts)
            .into_iter()
            .map(|(features, weights)| {
                let projected: Vec<f64> = rows
                    .iter()
                    .map(|(r, _)| project(&features, &weights, |j| r[j]))
                    .collect();
                let (edges, neg_log) = histogram(&projected, &rows, n_bins, 1.0 / n_cuts as f64);
                Cut {
                    features,
                    weights,
                    edges,
                    neg_log,
                }
            })
            .collect();
        LodaModel { d, cuts, centre }
    }

    /// Lengths, feature indices and finite values; edges in order.
    pub fn validate(&self, width: usize) -> Result<(), String> {
        if self.d != width || self.centre.len() != width {
            return Err(format!("a model of {} features read for {width}", self.d));
        }
        if self.cuts.is_empty() || self.cuts.len() > MAX_RANDOM_CUTS {
            return Err(format!("{} random cuts", self.cuts.len()));
        }
        for (c, cut) in self.cuts.iter().enumerate() {
            let bins = cut.neg_log.len();
            let ok = !cut.features.is_empty()
                && cut.features.len() == cut.weights.len()
                && cut.features.windows(2).all(|w| w[0] < w[1])
                && cut.features.iter().all(|&j| (j as usize) < width)
                && bins >= 2
                && cut.edges.len() == bins + 1
                && cut.edges.windows(2).all(|e| e[0] <= e[1])
                && cut.weights.iter().chain(&cut.edges).all(|v| v.is_finite())
                && cut.neg_log.iter().all(|v| v.is_finite() && *v >= 0.0);
            if !ok {
                return Err(format!("random cut {c} is malformed"));
            }
        }
        if !self.centre.iter().all(|v| v.is_finite()) {
            return Err("a feature centre is not a finite number".into());
        }
        Ok(())
    }

    /// Adds each row's share of one cut's terms to its features' parts; the block's rows start at
    /// row `start` of `out`.
    fn split_cut(
        &self,
        cut: &Cut,
        block: &[&[f64]],
        terms: &[f64],
        n_cuts: f64,
        out: &mut [Vec<f64>],
        start: usize,
    ) {
        for (r, &term) in terms.iter().enumerate() {
            let pull = |(&j, &w): (&u32, &f64)| {
                (w * (block[j as usize][r] - self.centre[j as usize])).abs()
            };
            let total: f64 = cut.features.iter().zip(&cut.weights).map(pull).sum();
            let each = 1.0 / cut.features.len() as f64;
            for (j, w) in cut.features.iter().zip(&cut.weights) {
                let share = if total > 0.0 {
                    pull((j, w)) / total
                } else {
                    each
                };
                out[*j as usize][start + r] += share * term / n_cuts;
            }
        }
    }
}

/// Rows scored together: a block's projections, terms and scores stay in the first-level cache.
const BLOCK_ROWS: usize = 1024;

/// Finds a projected value's bin: the number of the first `n_bins − 1` edges strictly below it
/// (NumPy `searchsorted`, side left). A guess from the bin width (truncated: `ceil` is a library
/// call on the baseline x86-64 target), one step down and one up against the edges themselves,
/// and the full search only where those steps were not enough (a width rounding could not give).
struct BinLookup {
    first: f64,
    inv_width: f64,
    /// The searched edges between two NaNs, so both steps read no bounds and compare false there.
    padded: Vec<f64>,
}

impl BinLookup {
    fn new(cut: &Cut) -> Self {
        let searched = &cut.edges[..cut.neg_log.len() - 1];
        let (first, last) = (cut.edges[0], cut.edges[cut.edges.len() - 1]);
        let mut padded = Vec::with_capacity(searched.len() + 2);
        padded.push(f64::NAN);
        padded.extend_from_slice(searched);
        padded.push(f64::NAN);
        BinLookup {
            first,
            inv_width: cut.neg_log.len() as f64 / (last - first),
            padded,
        }
    }

    #[inline]
    fn bin(&self, v: f64) -> usize {
        let searched = self.padded.len() - 2;
        // `as` saturates and takes NaN to 0
        let guess = ((v - self.first) * self.inv_width) as i64;
        let mut b = guess.clamp(0, searched as i64) as usize;
        b -= (self.padded[b] >= v) as usize;
        b += (self.padded[b + 1] < v) as usize;
        if self.padded[b] >= v || self.padded[b + 1] < v {
            return self.search(b, v);
        }
        b
    }

    #[cold]
    fn search(&self, mut b: usize, v: f64) -> usize {
        let searched = &self.padded[1..self.padded.len() - 1];
        while b > 0 && searched[b - 1] >= v {
            b -= 1;
        }
        while b < searched.len() && searched[b] < v {
            b += 1;
        }
        b
    }
}

/// Up to this many bins, a block's terms are chosen by one compare-and-select pass per edge (no
/// loads that depend on the data, so the passes run in vector registers); beyond, by `BinLookup`.
const SELECT_MAX_BINS: usize = 32;

/// Each block row's term on one cut, `neg_log` of its bin, into `terms` and added to `scores`:
/// by `lookup` when the cut has one (more than `SELECT_MAX_BINS` bins), else by the select passes.
/// They give the same bin: the edges are in order, so the last edge below a value is the count
/// of them.
fn add_cut_terms(
    cut: &Cut,
    lookup: Option<&BinLookup>,
    block: &[&[f64]],
    projected: &mut [f64],
    terms: &mut [f64],
    scores: &mut [f64],
) {
    if let Some(lookup) = lookup {
        project_block(cut, block, projected);
        for (t, &v) in terms.iter_mut().zip(projected.iter()) {
            *t = cut.neg_log[lookup.bin(v)];
        }
        for (s, t) in scores.iter_mut().zip(terms.iter()) {
            *s += *t;
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if crate::cpu::avx512() {
            // SAFETY: the CPU has AVX-512 F (checked just above).
            return unsafe { select_terms_avx512(cut, block, terms, scores) };
        }
        if crate::cpu::avx2() {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { select_terms_avx2(cut, block, terms, scores) };
        }
    }
    select_terms(cut, block, terms, scores)
}

#[inline(always)]
fn select_terms(cut: &Cut, block: &[&[f64]], terms: &mut [f64], scores: &mut [f64]) {
    // Eight rows at a time held in registers from the projection through all the edges:
    // selecting in memory would compile to masked stores, microcoded and slow on AMD's cores.
    const LANES: usize = 8;
    let searched = &cut.edges[..cut.neg_log.len() - 1];
    let select = |v: [f64; LANES]| {
        let mut acc = [cut.neg_log[0]; LANES];
        for (&edge, &term) in searched.iter().zip(&cut.neg_log[1..]) {
            for (a, &x) in acc.iter_mut().zip(&v) {
                *a = if x > edge { term } else { *a };
            }
        }
        acc
    };
    // the projection in `project`'s order, so the same bits
    let project = |x_of: &dyn Fn(usize) -> [f64; LANES]| {
        let mut v = [0.0; LANES];
        for (&j, &w) in cut.features.iter().zip(&cut.weights) {
            let x = x_of(j as usize);
            for (a, &x) in v.iter_mut().zip(&x) {
                *a += w * x;
            }
        }
        v
    };
    let full = terms.len() / LANES * LANES;
    for start in (0..full).step_by(LANES) {
        let acc = select(project(&|j| {
            block[j][start..start + LANES]
                .try_into()
                .expect("a full chunk")
        }));
        terms[start..start + LANES].copy_from_slice(&acc);
        for (s, a) in scores[start..start + LANES].iter_mut().zip(&acc) {
            *s += *a;
        }
    }
    let rest = terms.len() - full;
    if rest > 0 {
        let acc = select(project(&|j| {
            let mut x = [0.0; LANES];
            x[..rest].copy_from_slice(&block[j][full..]);
            x
        }));
        terms[full..].copy_from_slice(&acc[..rest]);
        for (s, a) in scores[full..].iter_mut().zip(&acc) {
            *s += *a;
        }
    }
}

/// `select_terms` compiled for AVX2: the same multiplies, adds, compares and selects.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn select_terms_avx2(cut: &Cut, block: &[&[f64]], terms: &mut [f64], scores: &mut [f64]) {
    select_terms(cut, block, terms, scores)
}

/// `select_terms` compiled for AVX-512: eight rows a register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn select_terms_avx512(cut: &Cut, block: &[&[f64]], terms: &mut [f64], scores: &mut [f64]) {
    select_terms(cut, block, terms, scores)
}

/// Each block row's projection on one cut, in the order `project` adds (so the same bits).
fn project_block(cut: &Cut, block: &[&[f64]], out: &mut [f64]) {
    out.fill(0.0);
    for (&j, &w) in cut.features.iter().zip(&cut.weights) {
        for (v, &x) in out.iter_mut().zip(block[j as usize]) {
            *v += w * x;
        }
    }
}

/// NumPy's `histogram(values, bins=n_bins)` with each row counted by its weight, then PyOD's
/// smoothing; returns the edges and each bin's term, `cut_weight · −ln(probability)`.
fn histogram(
    projected: &[f64],
    rows: &[(&[f64], u64)],
    n_bins: usize,
    cut_weight: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (mut first, mut last) = projected
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if !first.is_finite() || !last.is_finite() {
        (first, last) = (0.0, 1.0);
    }
    if first == last {
        first -= 0.5;
        last += 0.5;
    }
    let edges = crate::algorithms::hbos::linspace(first, last, n_bins);
    let mut counts = vec![0.0f64; n_bins];
    for (&v, (_, w)) in projected.iter().zip(rows) {
        let b = edges.partition_point(|&e| e <= v).clamp(1, n_bins) - 1;
        counts[b] += *w as f64;
    }
    for c in &mut counts {
        *c += 1e-12;
    }
    let sum: f64 = counts.iter().sum();
    let neg_log = counts
        .iter()
        .map(|c| cut_weight * -(c / sum).ln())
        .collect();
    (edges, neg_log)
}

impl WholeRowScorer for LodaModel {
    /// Scores and, when `parts`, each feature's part of them: each cut's term is split over its
    /// features in proportion to `|weight · (value − centre)|`, equally when all are 0.
    fn score_rows(&self, cols: &[&[f64]], len: usize, parts: bool) -> (Vec<f64>, Vec<Vec<f64>>) {
        let mut scores = vec![0.0; len];
        let mut split = part_columns(parts, self.d, len);
        let n_cuts = self.cuts.len() as f64;
        // Only cuts beyond the select passes' reach are looked up.
        let lookups: Vec<Option<BinLookup>> = self
            .cuts
            .iter()
            .map(|cut| (cut.neg_log.len() > SELECT_MAX_BINS).then(|| BinLookup::new(cut)))
            .collect();
        let mut projected = vec![0.0; BLOCK_ROWS.min(len)];
        let mut terms = vec![0.0; BLOCK_ROWS.min(len)];
        for start in (0..len).step_by(BLOCK_ROWS) {
            let end = (start + BLOCK_ROWS).min(len);
            let block: Vec<&[f64]> = cols.iter().map(|c| &c[start..end]).collect();
            let projected = &mut projected[..end - start];
            let terms = &mut terms[..end - start];
            for (cut, lookup) in self.cuts.iter().zip(&lookups) {
                add_cut_terms(
                    cut,
                    lookup.as_ref(),
                    &block,
                    projected,
                    terms,
                    &mut scores[start..end],
                );
                if parts {
                    self.split_cut(cut, &block, terms, n_cuts, &mut split, start);
                }
            }
        }
        for s in &mut scores {
            *s /= n_cuts;
        }
        (scores, split)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_lookup_is_numpy_searchsorted_left() {
        let cut = |edges: Vec<f64>| Cut {
            features: vec![0],
            weights: vec![1.0],
            neg_log: vec![0.0; edges.len() - 1],
            edges,
        };
        let even = BinLookup::new(&cut(vec![0.0, 1.0, 2.0, 3.0, 4.0]));
        // uneven edges: the width's guess is off by more than one step, so the search runs
        let uneven = BinLookup::new(&cut(vec![0.0, 0.5, 1.0, 3.5, 4.0]));
        for (v, want, uneven_want) in [
            (f64::NEG_INFINITY, 0, 0),
            (-5.0, 0, 0),
            (0.0, 0, 0),
            (0.5, 1, 1),
            (1.0, 1, 2),
            (1.0000001, 2, 3),
            (2.5, 3, 3),
            (3.0, 3, 3),
            (9.0, 3, 3),
            (f64::INFINITY, 3, 3),
            (f64::NAN, 0, 0),
        ] {
            assert_eq!(even.bin(v), want, "{v}");
            assert_eq!(uneven.bin(v), uneven_want, "{v}");
        }
        // a useless guess (an infinite width) still ends right
        let flat = BinLookup::new(&cut(vec![0.0, 1.0, 2.0, 3.0, 0.0]));
        assert!(flat.inv_width.is_infinite());
        assert_eq!(flat.bin(2.5), 3);
        assert_eq!(flat.bin(0.5), 1);
    }

    #[test]
    fn the_select_passes_choose_the_lookups_bins() {
        // ten bins whose edges the values hit exactly, lie between, or miss (NaN, ±∞, far out)
        let edges: Vec<f64> = (0..=10).map(|i| -1.0 + 0.3 * i as f64).collect();
        let cut = Cut {
            features: vec![0, 1],
            weights: vec![1.0, 0.0],
            neg_log: (0..10).map(|i| i as f64).collect(),
            edges: edges.clone(),
        };
        let mut rng = DeterministicRng::new(5);
        let mut values: Vec<f64> = edges
            .iter()
            .flat_map(|&e| [e, e - 1e-12, e + 1e-12])
            .collect();
        values.extend([f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -7.0, 7.0]);
        values.extend((0..49).map(|_| rng.next_f64() * 4.0 - 2.0));
        let zeros = vec![0.0; values.len()];
        let block: [&[f64]; 2] = [&values, &zeros];
        let (mut terms, mut scores) = (vec![0.0; values.len()], vec![1.0; values.len()]);
        let lookup = BinLookup::new(&cut);
        let mut projected = vec![0.0; values.len()];
        // 87 rows: ten whole chunks of eight and a remainder of seven
        add_cut_terms(&cut, None, &block, &mut projected, &mut terms, &mut scores);
        for (r, &v) in values.iter().enumerate() {
            let want = cut.neg_log[lookup.bin(v)];
            assert_eq!(terms[r], want, "{v}");
            assert_eq!(scores[r], 1.0 + want, "{v}");
        }
    }

    #[test]
    fn projections_are_sparse_and_reproducible() {
        let a = projections(7, 8, 50);
        assert_eq!(a, projections(7, 8, 50));
        assert_ne!(a, projections(8, 8, 50));
        for (f, w) in &a {
            assert_eq!(f.len(), 2);
            assert!(f[0] < f[1] && f[1] < 8);
            assert!(w.iter().all(|x| x.abs() <= 6.0));
        }
        assert_eq!(projections(1, 1, 3)[0].0, vec![0]);
    }

    #[test]
    fn parts_sum_to_the_score_and_far_rows_score_higher() {
        let mut s = RowSample::new(10_000, 3, 1);
        let mut rng = DeterministicRng::new(3);
        // two clusters, [0, 1)³ and [9, 10)³: the space between them is empty in every projection
        for i in 0..2_000 {
            let r: Vec<f64> = (0..3)
                .map(|_| rng.next_f64() + (i % 2 * 9) as f64)
                .collect();
            s.offer(&r);
        }
        s.compact();
        let m = LodaModel::fit(&s, 3, 10, 100, 42);
        m.validate(3).unwrap();
        let cols: [&[f64]; 3] = [&[0.5, 5.0], &[0.5, 5.0], &[0.5, 5.0]];
        let (scores, parts) = m.score_rows(&cols, 2, true);
        assert!(scores[1] > scores[0] + 0.1, "{scores:?}");
        for r in 0..2 {
            let sum: f64 = parts.iter().map(|p| p[r]).sum();
            assert!(
                (sum - scores[r]).abs() <= 1e-12 * scores[r],
                "{sum} {scores:?}"
            );
        }
    }
}

//! Isolation-forest scoring in threshold-rank space: 32 rows per instruction with AVX-512BW, 8 with
//! AVX2.
//!
//! Why: a tree step is a chain of dependent loads (node → the row's value of the node's feature →
//! compare → child), so walking rows one by one costs ~2.8 cycles a step however they overlap, and
//! 100 trees × 8 levels made scoring most of an iforest query. The walk becomes vector arithmetic
//! once values and thresholds are small integers: per feature, the distinct split thresholds of all
//! trees, sorted (`cuts`); a value becomes its rank, the number of cuts below it, and a split on cut
//! k sends a row right exactly when rank > k (x > t_k ⟺ t_0..t_k are all < x). Ranks fit in 16
//! bits, so one 512-bit register holds 32 rows, and a level's nodes (at most 128) are looked up by
//! the permute instructions instead of by memory loads. The comparisons, the leaves reached and the
//! order of the path-length sums are those of the scalar walk, so scores are the same bits.
//!
//! A level is a chain of dependent instructions (permute → choose each lane's feature → compare →
//! next node), so four trees walk side by side to keep the vector units busy, and each lane's
//! feature is chosen by a binary tree of blends on the feature number's bits (depth log2 width)
//! rather than one blend per feature in a row.
//!
//! AVX2 (what most laptops have) has no 16-bit permutes: there a lane is a 32-bit rank, the top five
//! levels are eight-entry permutes of the packed nodes (split key and feature in 32 bits) and the
//! deeper ones a gather. On the Zen 4 this was written on, `score_speed 2000000 iforest 8192
//! {fastest,avx2,rows}` gives 154-164 ns/row with AVX-512BW, 378-412 with AVX2 and 688-738 row by
//! row.

// Every kernel needs x86-64 vector instructions or NEON; elsewhere `RankForest::new` declines and
// the row-by-row walk scores.
#![cfg_attr(
    not(any(target_arch = "x86_64", target_arch = "aarch64")),
    allow(dead_code)
)]

use super::FlatTree;
use super::heap::bottom_position;
use crate::rank_index::RankIndex;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod shuffle;

/// In the shuffle walk's 16-bit nodes, the key of a split no row passes, and one more than the
/// largest key it takes: ranks of forests it walks are at most this (a feature has at most this
/// many cuts).
const NEVER: u16 = 0x0FFF;

/// Rows walked together: 32 sixteen-bit lanes of a 512-bit register.
const LANES: usize = 32;
/// Deepest tree walked here: 8 levels = 255 splits, whose widest level (128 nodes) is two pairs of
/// two-register permutes.
const MAX_DEPTH: usize = 8;
/// Widest input walked here: choosing each lane's feature costs about one blend per feature and
/// level, so much wider inputs are cheaper on the scalar walk.
const MAX_WIDTH: usize = 32;

/// The forest in rank space.
#[derive(Debug, Clone)]
pub(super) struct RankForest {
    /// Per feature, the distinct thresholds of its splits (+∞ and NaN excluded: no value is greater
    /// than them, and their splits get the key no rank exceeds).
    cuts: Vec<Cuts>,
    trees: Vec<RankTree>,
    /// Levels every tree walks: the deepest tree's depth.
    depth: usize,
    kernel: Kernel,
    /// Every node fits the 16-bit `feature << 12 | key` of [`Kernel::Avx2Shuffle`] and
    /// [`Kernel::Neon`]: at most 16 features and 4,095 cuts per feature.
    shuffle_fits: bool,
}

/// The instructions a [`RankForest`] walks with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    /// 32 rows per instruction, nodes looked up by 16-bit permutes.
    Avx512,
    /// 8 rows per instruction, deep levels' nodes gathered.
    Avx2,
    /// 16 rows per instruction, nodes looked up by byte shuffles of 8-node tables (no gathers,
    /// which are slow on AMD's Zen cores; see `shuffle`).
    Avx2Shuffle,
    /// 8 rows per instruction on 64-bit ARM, nodes looked up by table instructions of up to 32
    /// nodes (see `neon`).
    Neon,
}

/// One tree in heap order (level l at `2^l - 1 ..`), padded to the 8-level size so every table
/// load of a level stays inside the arrays. A tree shallower than the forest continues with splits
/// no row passes, so its leaves sit at their leftmost descendants of the forest's bottom level and
/// all trees walk the same number of levels.
#[derive(Debug, Clone)]
struct RankTree {
    /// Rank of the split's threshold among its feature's cuts; `u16::MAX` for a split no row passes.
    keys: [u16; 256],
    features: [u16; 256],
    /// `feature << 16 | key`: one 32-bit gather per node for the AVX2 walk.
    packed: [u32; 256],
    /// `feature << 12 | key` (the key 4,095 for a split no row passes) for the shuffle walk, when
    /// the forest fits it.
    packed16: [u16; 256],
    /// Path lengths of the bottom level's leaves, in order.
    leaf_values: [f64; 256],
}

impl RankTree {
    /// Every node a split no row passes, every leaf 0.
    const EMPTY: RankTree = RankTree {
        keys: [u16::MAX; 256],
        features: [0; 256],
        packed: [0; 256],
        packed16: [0; 256],
        leaf_values: [0.0; 256],
    };
}

/// One feature's cuts, ascending and distinct, indexed for their ranks (see [`RankIndex`]): a
/// binary search over thousands of cuts cost more than the walk itself.
#[derive(Debug, Clone)]
struct Cuts(RankIndex);

impl Cuts {
    /// `None` with 65,535 or more distinct cuts: ranks must fit in 16 bits below `u16::MAX`.
    fn new(mut sorted: Vec<f64>) -> Option<Self> {
        // total_cmp tells every two cuts apart but identical bits: unstable is the same order
        sorted.sort_unstable_by(f64::total_cmp);
        // -0.0 and 0.0 are one cut: the comparisons cannot tell them apart
        sorted.dedup_by(|a, b| a == b);
        if sorted.len() >= usize::from(u16::MAX) {
            return None;
        }
        Some(Cuts(RankIndex::new(sorted)))
    }

    /// The number of cuts below `x`.
    #[inline]
    fn rank(&self, x: f64) -> u16 {
        // at most 65,534 cuts (checked in `new`)
        self.0.rank(x) as u16
    }
}

fn is_cut(threshold: f64) -> bool {
    !threshold.is_nan() && threshold != f64::INFINITY
}

impl RankForest {
    /// `None` when the CPU has neither AVX-512BW nor AVX2, a tree is deeper than 8, the input is
    /// wider than 32 features, or a feature has 65,535 or more distinct thresholds (ranks must fit
    /// in 16 bits).
    pub(super) fn new(trees: &[FlatTree], width: usize) -> Option<Self> {
        // The first kernel allowed; `kernels` and `with_kernel` offer the others.
        let kernel = if cpu_has_avx512bw() {
            Kernel::Avx512
        } else if cpu_has_avx2() {
            Kernel::Avx2
        } else if cfg!(target_arch = "aarch64") {
            Kernel::Neon
        } else {
            return None;
        };
        if width == 0 || width > MAX_WIDTH || trees.iter().any(|t| t.depth > MAX_DEPTH) {
            return None;
        }
        let mut cuts = vec![Vec::new(); width];
        for tree in trees {
            tree.visit_heap_order(
                width,
                |_, threshold, feature| {
                    if is_cut(threshold) {
                        cuts[feature as usize].push(threshold);
                    }
                },
                |_, _, _| {},
            )?;
        }
        let cuts = cuts
            .into_iter()
            .map(Cuts::new)
            .collect::<Option<Vec<_>>>()?;
        let depth = trees.iter().map(|t| t.depth).max().unwrap_or(0);
        // Filled in place: a tree is 4.6 KB, and building each on the stack and moving it into
        // the vector was a tenth of laying out a per-segment forest.
        let mut ranked = vec![RankTree::EMPTY; trees.len()];
        for (tree, ranked) in trees.iter().zip(ranked.iter_mut()) {
            tree.visit_heap_order(
                width,
                |at, threshold, feature| {
                    ranked.features[at] = feature as u16;
                    if is_cut(threshold) {
                        ranked.keys[at] = cuts[feature as usize].rank(threshold);
                    }
                },
                |at, level, value| ranked.leaf_values[bottom_position(at, level, depth)] = value,
            )?;
            for (at, (&f, &k)) in ranked.features.iter().zip(&ranked.keys).enumerate() {
                ranked.packed[at] = u32::from(f) << 16 | u32::from(k);
                ranked.packed16[at] = (f & 0xF) << 12 | k.min(NEVER);
            }
        }
        // A rank is at most the feature's cut count, so with at most NEVER cuts no rank exceeds
        // the key NEVER and every real key (a cut's index) is below it.
        let shuffle_fits = width <= 16 && cuts.iter().all(|c| c.0.len() <= usize::from(NEVER));
        if kernel == Kernel::Neon && !shuffle_fits {
            return None;
        }
        Some(Self {
            cuts,
            trees: ranked,
            depth,
            kernel,
            shuffle_fits,
        })
    }

    /// The kernels this CPU and this forest allow, fastest first by design (the caller may time
    /// them: which is fastest depends on the core, e.g. gathers cost several times more on AMD's
    /// Zen than on Intel's cores).
    pub(super) fn kernels(&self) -> Vec<Kernel> {
        let mut k = Vec::new();
        if cpu_has_avx512bw() {
            k.push(Kernel::Avx512);
        }
        if cpu_has_avx2() {
            if self.shuffle_fits {
                k.push(Kernel::Avx2Shuffle);
            }
            k.push(Kernel::Avx2);
        }
        if cfg!(target_arch = "aarch64") && self.shuffle_fits {
            k.push(Kernel::Neon);
        }
        k
    }

    /// The same forest walked with `kernel`; `None` when this CPU or forest does not allow it.
    pub(super) fn with_kernel(self, kernel: Kernel) -> Option<Self> {
        self.kernels()
            .contains(&kernel)
            .then_some(Self { kernel, ..self })
    }

    pub(super) fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Adds every tree's path length, tree by tree in order, to `out[..len]`.
    pub(super) fn add_path_lengths(&self, cols: &[&[f64]], len: usize, out: &mut [f64]) {
        let padded = len.next_multiple_of(LANES);
        // Feature-major ranks; lanes past `len` rank 0 and are walked but never read back.
        let mut ranks = vec![0u16; padded * self.cuts.len()];
        for ((cuts, col), ranks) in self.cuts.iter().zip(cols).zip(ranks.chunks_mut(padded)) {
            for (r, &x) in ranks.iter_mut().zip(&col[..len]) {
                *r = cuts.rank(x);
            }
        }
        #[cfg(target_arch = "x86_64")]
        {
            // The feature choice unrolls over a power of two ≥ width, its values in registers.
            macro_rules! by_width {
                ($walk:ident) => {
                    match self.cuts.len() {
                        1 => Self::$walk::<1>,
                        2 => Self::$walk::<2>,
                        3..=4 => Self::$walk::<4>,
                        5..=8 => Self::$walk::<8>,
                        9..=16 => Self::$walk::<16>,
                        _ => Self::$walk::<MAX_WIDTH>,
                    }
                };
            }
            let walk = match self.kernel {
                Kernel::Avx512 => by_width!(walk_avx512),
                Kernel::Avx2 => by_width!(walk_avx2),
                Kernel::Avx2Shuffle => by_width!(walk_shuffle),
                // not built on x86-64 (`new` and `kernels` offer it on aarch64 only)
                Kernel::Neon => unreachable!("the NEON walk on x86-64"),
            };
            // SAFETY: the kernel is one the CPU has (checked in `new` / `with_kernel`).
            unsafe { walk(self, &ranks, padded, len, out) }
        }
        #[cfg(target_arch = "aarch64")]
        {
            // NEON is the only kernel `new` and `kernels` offer here, and only for forests whose
            // nodes fit 16 bits (at most 16 features).
            let walk = match self.cuts.len() {
                1 => Self::walk_neon::<1>,
                2 => Self::walk_neon::<2>,
                3..=4 => Self::walk_neon::<4>,
                5..=8 => Self::walk_neon::<8>,
                _ => Self::walk_neon::<16>,
            };
            // SAFETY: every aarch64 target has NEON.
            unsafe { walk(self, &ranks, padded, len, out) }
        }
        // Elsewhere `new` builds no rank forest (every kernel needs vector instructions).
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let _ = (ranks, out);
    }

    /// `P` is a power of two ≥ width; features past the width are zeros no split looks at. Each
    /// 32-row block is four quarters of eight 32-bit lanes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn walk_avx2<const P: usize>(&self, ranks: &[u16], padded: usize, len: usize, out: &mut [f64]) {
        use std::arch::x86_64::*;
        let mut values = [[_mm256_setzero_si256(); P]; 4];
        for start in (0..padded).step_by(LANES) {
            for (q, quarter) in values.iter_mut().enumerate() {
                for (f, v) in quarter[..self.cuts.len()].iter_mut().enumerate() {
                    let lanes = &ranks[f * padded + start + 8 * q..][..8];
                    // SAFETY: `lanes` holds the 8 values read.
                    let narrow = unsafe { _mm_loadu_si128(lanes.as_ptr().cast()) };
                    *v = _mm256_cvtepu16_epi32(narrow);
                }
            }
            let n = LANES.min(len - start);
            let out = &mut out[start..start + n];
            in_groups_of_four(
                &self.trees,
                out,
                |four, out| walk_trees_avx2::<P, 4>(four, &values, self.depth, out),
                |one, out| walk_trees_avx2::<P, 1>(one, &values, self.depth, out),
            );
        }
    }

    /// `P` is a power of two ≥ width; features past the width are zeros no split looks at.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn walk_avx512<const P: usize>(
        &self,
        ranks: &[u16],
        padded: usize,
        len: usize,
        out: &mut [f64],
    ) {
        use std::arch::x86_64::*;
        let mut values = [_mm512_setzero_si512(); P];
        for start in (0..padded).step_by(LANES) {
            for (f, v) in values[..self.cuts.len()].iter_mut().enumerate() {
                let lanes = &ranks[f * padded + start..][..LANES];
                // SAFETY: `lanes` holds the 32 values read.
                *v = unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) };
            }
            let n = LANES.min(len - start);
            let out = &mut out[start..start + n];
            in_groups_of_four(
                &self.trees,
                out,
                |four, out| walk_trees::<P, 4>(four, &values, self.depth, out),
                |one, out| walk_trees::<P, 1>(one, &values, self.depth, out),
            );
        }
    }
}

/// Calls `four` on each group of four trees, then `one` on each tree left over: tree order, which
/// the path-length sums keep. Always inlined, so the kernels' closures stay in their instruction set.
#[inline(always)]
fn in_groups_of_four(
    trees: &[RankTree],
    out: &mut [f64],
    four: impl Fn(&[RankTree; 4], &mut [f64]),
    one: impl Fn(&[RankTree; 1], &mut [f64]),
) {
    let (groups, rest) = trees.as_chunks::<4>();
    for group in groups {
        four(group, out);
    }
    for tree in rest {
        one(std::array::from_ref(tree), out);
    }
}

/// Walks `K` trees side by side over one block's 32 rows and adds their path lengths to `out`,
/// tree by tree in order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn walk_trees<const P: usize, const K: usize>(
    trees: &[RankTree; K],
    values: &[std::arch::x86_64::__m512i; P],
    depth: usize,
    out: &mut [f64],
) {
    use std::arch::x86_64::*;
    let one = _mm512_set1_epi16(1);
    // each lane's node within its level, per tree
    let mut j = [_mm512_setzero_si512(); K];
    for level in 0..depth {
        for (tree, j) in trees.iter().zip(j.iter_mut()) {
            let feature = level_lookup(&tree.features, level, *j);
            let key = level_lookup(&tree.keys, level, *j);
            let right = _mm512_cmpgt_epu16_mask(select_feature(values, feature), key);
            *j = _mm512_add_epi16(*j, *j);
            *j = _mm512_mask_add_epi16(*j, right, *j, one);
        }
    }
    let mut leaves = [[0u16; LANES]; K];
    for (leaves, j) in leaves.iter_mut().zip(j) {
        // SAFETY: `leaves` holds the 32 values written.
        unsafe { _mm512_storeu_si512(leaves.as_mut_ptr().cast(), j) };
    }
    add_leaf_values(out, &leaves, trees);
}

/// Each lane's value of its own feature: blends halve the candidates on each bit of the feature
/// number, lowest bit first.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn select_feature<const P: usize>(
    values: &[std::arch::x86_64::__m512i; P],
    feature: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let mut candidates = *values;
    let mut n = P;
    let mut bit = 1i16;
    while n > 1 {
        let odd = _mm512_test_epi16_mask(feature, _mm512_set1_epi16(bit));
        for i in 0..n / 2 {
            candidates[i] = _mm512_mask_mov_epi16(candidates[2 * i], odd, candidates[2 * i + 1]);
        }
        n /= 2;
        bit <<= 1;
    }
    candidates[0]
}

/// [`walk_trees`] with AVX2: each lane tracks its heap index and looks its node up.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn walk_trees_avx2<const P: usize, const K: usize>(
    trees: &[RankTree; K],
    values: &[[std::arch::x86_64::__m256i; P]; 4],
    depth: usize,
    out: &mut [f64],
) {
    use std::arch::x86_64::*;
    let one = _mm256_set1_epi32(1);
    let low16 = _mm256_set1_epi32(0xFFFF);
    // heap index per tree and quarter
    let mut at = [[_mm256_setzero_si256(); 4]; K];
    for level in 0..depth {
        for (tree, at) in trees.iter().zip(at.iter_mut()) {
            for (a, values) in at.iter_mut().zip(values) {
                let node = packed_lookup(&tree.packed, level, *a);
                let key = _mm256_and_si256(node, low16);
                let feature = _mm256_srli_epi32::<16>(node);
                // all lanes' values are below 2^16: the signed comparison is the unsigned one
                let right = _mm256_cmpgt_epi32(select_feature_avx2(values, feature), key);
                // 2a + 1, plus 1 where right (the mask is -1 there)
                *a = _mm256_sub_epi32(_mm256_add_epi32(_mm256_add_epi32(*a, *a), one), right);
            }
        }
    }
    let first_leaf = (1i32 << depth) - 1;
    let mut leaves = [[0u16; LANES]; K];
    for (leaves, at) in leaves.iter_mut().zip(at) {
        for (quarter, a) in leaves.chunks_exact_mut(8).zip(at) {
            let mut heap = [0i32; 8];
            // SAFETY: `heap` holds the 8 values written.
            unsafe { _mm256_storeu_si256(heap.as_mut_ptr().cast(), a) };
            for (leaf, h) in quarter.iter_mut().zip(heap) {
                *leaf = (h - first_leaf) as u16;
            }
        }
    }
    add_leaf_values(out, &leaves, trees);
}

/// Each lane's packed node at heap index `a` on level `level`: the top five levels (at most 16
/// nodes) by eight-entry permutes, deeper ones by a gather (slow on some CPUs, so only where the
/// permutes would need many tables).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn packed_lookup(
    table: &[u32; 256],
    level: usize,
    a: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let base = (1i32 << level) - 1;
    let load = |at: usize| {
        // SAFETY: the (bounds-checked) slice holds the 8 values read.
        unsafe { _mm256_loadu_si256(table[at..at + 8].as_ptr().cast()) }
    };
    match level {
        0..=3 => {
            let j = _mm256_sub_epi32(a, _mm256_set1_epi32(base));
            _mm256_permutevar8x32_epi32(load(base as usize), j)
        }
        4 => {
            let j = _mm256_sub_epi32(a, _mm256_set1_epi32(base));
            let low = _mm256_permutevar8x32_epi32(load(15), j);
            let high = _mm256_permutevar8x32_epi32(load(23), j);
            let eight = _mm256_set1_epi32(8);
            let upper = _mm256_cmpeq_epi32(_mm256_and_si256(j, eight), eight);
            _mm256_blendv_epi8(low, high, upper)
        }
        // SAFETY: after l < depth ≤ 8 steps a < 2^(l+1) - 1 ≤ 255 < table.len().
        _ => unsafe { _mm256_i32gather_epi32::<4>(table.as_ptr().cast(), a) },
    }
}

/// [`select_feature`] on eight 32-bit lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn select_feature_avx2<const P: usize>(
    values: &[std::arch::x86_64::__m256i; P],
    feature: std::arch::x86_64::__m256i,
) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let mut candidates = *values;
    let mut n = P;
    let mut bit = 1i32;
    while n > 1 {
        let b = _mm256_set1_epi32(bit);
        let odd = _mm256_cmpeq_epi32(_mm256_and_si256(feature, b), b);
        for i in 0..n / 2 {
            candidates[i] = _mm256_blendv_epi8(candidates[2 * i], candidates[2 * i + 1], odd);
        }
        n /= 2;
        bit <<= 1;
    }
    candidates[0]
}

/// `out[r] += trees[k].leaf_values[leaves[k][r]]` for k in order, one row at a time with the row's
/// sum in a register. Kept out of the AVX-512 functions on purpose: there the compiler turns it
/// into 8-wide gathers, several times slower than scalar loads on the CPUs measured.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[inline(never)]
fn add_leaf_values<const K: usize>(
    out: &mut [f64],
    leaves: &[[u16; LANES]; K],
    trees: &[RankTree; K],
) {
    for (r, o) in out.iter_mut().enumerate().take(LANES) {
        let mut sum = *o;
        for k in 0..K {
            // a leaf index is below 2^depth ≤ 256
            sum += trees[k].leaf_values[usize::from(leaves[k][r] & 0xFF)];
        }
        *o = sum;
    }
}

/// Each lane's entry `j` of level `level` of a heap-ordered table of 256.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn level_lookup(
    table: &[u16; 256],
    level: usize,
    j: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let base = (1usize << level) - 1;
    let load = |at: usize| {
        // SAFETY: the (bounds-checked) slice holds the 32 values read; at + 32 ≤ 255 below.
        unsafe { _mm512_loadu_si512(table[at..at + 32].as_ptr().cast()) }
    };
    match level {
        0..=5 => _mm512_permutexvar_epi16(j, load(base)),
        6 => _mm512_permutex2var_epi16(load(base), j, load(base + 32)),
        _ => {
            let low = _mm512_permutex2var_epi16(load(base), j, load(base + 32));
            let high = _mm512_permutex2var_epi16(load(base + 64), j, load(base + 96));
            let upper = _mm512_test_epi16_mask(j, _mm512_set1_epi16(64));
            _mm512_mask_mov_epi16(low, upper, high)
        }
    }
}

pub(super) fn cpu_has_avx2() -> bool {
    crate::cpu::avx2()
}

pub(super) fn cpu_has_avx512bw() -> bool {
    crate::cpu::avx512()
}

//! The rank walk with AVX2 and no gathers: 16 rows per instruction.
//!
//! Why: AVX2's gathers, which the 8-lane walk uses for the deep levels' nodes, are microcoded on
//! AMD's Zen cores (one 8-lane gather costs about as much as eight scalar loads plus bookkeeping),
//! so on those CPUs the 8-lane walk gained little over the row-by-row walk (941 against 1189
//! ns/row on a Zen 3 EPYC, `score_speed 2000000 iforest 8192`). Here a node is 16 bits
//! (`feature << 12 | key`, keys below 4,096) and a row's rank 16 bits, so a 256-bit register holds
//! 16 rows; a level's nodes are looked up with byte shuffles (`vpshufb`) of 8-node tables — one
//! shuffle per 8 nodes, then blends on the node number's bits — which every x86 core since 2013
//! runs at one or two per cycle. The comparisons, the leaves reached and the order of the sums are
//! those of the other walks, so the scores are the same bits.

use super::{LANES, NEVER, RankForest, RankTree, add_leaf_values, in_groups_of_four};
use std::arch::x86_64::*;

impl RankForest {
    /// `P` is a power of two ≥ width; features past the width are zeros no split looks at. Each
    /// 32-row block is two halves of sixteen 16-bit lanes.
    #[target_feature(enable = "avx2")]
    pub(super) fn walk_shuffle<const P: usize>(
        &self,
        ranks: &[u16],
        padded: usize,
        len: usize,
        out: &mut [f64],
    ) {
        let mut values = [[_mm256_setzero_si256(); P]; 2];
        for start in (0..padded).step_by(LANES) {
            for (h, half) in values.iter_mut().enumerate() {
                for (f, v) in half[..self.cuts.len()].iter_mut().enumerate() {
                    let lanes = &ranks[f * padded + start + 16 * h..][..16];
                    // SAFETY: `lanes` holds the 16 values read.
                    *v = unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) };
                }
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

/// Walks `K` trees side by side over one block's 32 rows (two halves of 16) and adds their path
/// lengths to `out`, tree by tree in order.
#[target_feature(enable = "avx2")]
#[inline]
fn walk_trees<const P: usize, const K: usize>(
    trees: &[RankTree; K],
    values: &[[__m256i; P]; 2],
    depth: usize,
    out: &mut [f64],
) {
    let mut leaves = [[0u16; LANES]; K];
    for (h, values) in values.iter().enumerate() {
        // each lane's node within its level, per tree
        let mut j = [_mm256_setzero_si256(); K];
        // Levels one by one with the level a constant, so each level's table count, loads and
        // blends unroll.
        macro_rules! level {
            ($l:literal) => {
                if depth > $l {
                    step::<$l, P, K>(trees, values, &mut j);
                }
            };
        }
        level!(0);
        level!(1);
        level!(2);
        level!(3);
        level!(4);
        level!(5);
        level!(6);
        level!(7);
        for (leaves, j) in leaves.iter_mut().zip(j) {
            let half = &mut leaves[16 * h..16 * h + 16];
            // SAFETY: `half` holds the 16 values written.
            unsafe { _mm256_storeu_si256(half.as_mut_ptr().cast(), j) };
        }
    }
    add_leaf_values(out, &leaves, trees);
}

/// One level of `K` trees: each lane looks its node up, compares its value of the node's feature
/// with the node's key, and moves to the left (2j) or right (2j + 1) child.
#[target_feature(enable = "avx2")]
#[inline]
fn step<const L: usize, const P: usize, const K: usize>(
    trees: &[RankTree; K],
    values: &[__m256i; P],
    j: &mut [__m256i; K],
) {
    for (tree, j) in trees.iter().zip(j.iter_mut()) {
        let node = lookup::<L>(&tree.packed16, *j);
        let key = _mm256_and_si256(node, _mm256_set1_epi16(NEVER as i16));
        let feature = _mm256_srli_epi16::<12>(node);
        // ranks and keys are below 2^15: the signed comparison is the unsigned one
        let right = _mm256_cmpgt_epi16(select_feature(values, feature), key);
        // 2j, plus 1 where right (the mask is -1 there)
        *j = _mm256_sub_epi16(_mm256_add_epi16(*j, *j), right);
    }
}

/// Each lane's node `j` of level `L` of a heap-ordered table of 256: a byte shuffle per eight
/// nodes of the level, then blends on bits 3.. of `j`.
#[target_feature(enable = "avx2")]
#[inline]
fn lookup<const L: usize>(table: &[u16; 256], j: __m256i) -> __m256i {
    let base = (1usize << L) - 1;
    // bytes 2·(j mod 8) and 2·(j mod 8) + 1 of a table of eight
    let low = _mm256_and_si256(j, _mm256_set1_epi16(7));
    let bytes = _mm256_add_epi16(
        _mm256_mullo_epi16(low, _mm256_set1_epi16(0x0202)),
        _mm256_set1_epi16(0x0100),
    );
    let eight = |at: usize| {
        // SAFETY: the (bounds-checked) slice holds the 8 values read; at + 8 ≤ 255 below.
        let t = unsafe { _mm_loadu_si128(table[at..at + 8].as_ptr().cast()) };
        _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(t), bytes)
    };
    let tables = (1usize << L).div_ceil(8);
    let mut candidates = [_mm256_setzero_si256(); 16];
    for (g, c) in candidates[..tables].iter_mut().enumerate() {
        *c = eight(base + 8 * g);
    }
    let mut n = tables;
    let mut bit = 8i16;
    while n > 1 {
        let b = _mm256_set1_epi16(bit);
        let upper = _mm256_cmpeq_epi16(_mm256_and_si256(j, b), b);
        for i in 0..n / 2 {
            candidates[i] = _mm256_blendv_epi8(candidates[2 * i], candidates[2 * i + 1], upper);
        }
        n /= 2;
        bit <<= 1;
    }
    candidates[0]
}

/// Each lane's value of its own feature: blends halve the candidates on each bit of the feature
/// number, lowest bit first.
#[target_feature(enable = "avx2")]
#[inline]
fn select_feature<const P: usize>(values: &[__m256i; P], feature: __m256i) -> __m256i {
    let mut candidates = *values;
    let mut n = P;
    let mut bit = 1i16;
    while n > 1 {
        let b = _mm256_set1_epi16(bit);
        let odd = _mm256_cmpeq_epi16(_mm256_and_si256(feature, b), b);
        for i in 0..n / 2 {
            candidates[i] = _mm256_blendv_epi8(candidates[2 * i], candidates[2 * i + 1], odd);
        }
        n /= 2;
        bit <<= 1;
    }
    candidates[0]
}

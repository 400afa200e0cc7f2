//! The rank walk with NEON (every 64-bit ARM core): 8 rows per instruction.
//!
//! NEON is part of every aarch64 target: no run-time check is needed.
//!
//! Why: ARM CPUs (Apple's, Graviton, Ampere, Snapdragon laptops) had only the row-by-row walk, a
//! chain of dependent loads per step. The shuffle walk's idea carries over with a better table
//! instruction: a node is 16 bits (`feature << 12 | key`, as in `shuffle`), a row's rank 16 bits,
//! and `TBL`/`TBX` look bytes up in tables of up to 64 bytes (32 nodes) per instruction, so a level
//! of up to 128 nodes costs at most four lookups and no blends. Ranks and keys compare unsigned
//! directly (`CMHI`). The comparisons, the leaves reached and the order of the sums are those of
//! the other walks, so the scores are the same bits (`every_layout_scores_the_same_bits` runs it
//! under qemu via `scripts/aarch64.sh`). Its speed was not measured on ARM hardware: the walk is
//! chosen only when it times faster than the row-by-row walk on the machine
//! (`ScoringLayout::new`), so it cannot make a CPU slower.

use super::{LANES, NEVER, RankForest, RankTree, add_leaf_values, in_groups_of_four};
use std::arch::aarch64::*;

/// Rows per register: eight 16-bit lanes.
const ROWS: usize = 8;

impl RankForest {
    /// `P` is a power of two ≥ width; features past the width are zeros no split looks at. Each
    /// 32-row block is four quarters of eight 16-bit lanes.
    #[target_feature(enable = "neon")]
    pub(super) fn walk_neon<const P: usize>(
        &self,
        ranks: &[u16],
        padded: usize,
        len: usize,
        out: &mut [f64],
    ) {
        let mut values = [[vdupq_n_u16(0); P]; LANES / ROWS];
        for start in (0..padded).step_by(LANES) {
            for (q, quarter) in values.iter_mut().enumerate() {
                for (f, v) in quarter[..self.cuts.len()].iter_mut().enumerate() {
                    let lanes = &ranks[f * padded + start + ROWS * q..][..ROWS];
                    // SAFETY: `lanes` holds the 8 values read.
                    *v = unsafe { vld1q_u16(lanes.as_ptr()) };
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

/// Walks `K` trees side by side over one block's 32 rows (four quarters of 8) and adds their path
/// lengths to `out`, tree by tree in order.
#[target_feature(enable = "neon")]
#[inline]
fn walk_trees<const P: usize, const K: usize>(
    trees: &[RankTree; K],
    values: &[[uint16x8_t; P]; LANES / ROWS],
    depth: usize,
    out: &mut [f64],
) {
    let mut leaves = [[0u16; LANES]; K];
    for (q, values) in values.iter().enumerate() {
        // each lane's node within its level, per tree
        let mut j = [vdupq_n_u16(0); K];
        for level in 0..depth {
            for (tree, j) in trees.iter().zip(j.iter_mut()) {
                let node = lookup(&tree.packed16, level, *j);
                let key = vandq_u16(node, vdupq_n_u16(NEVER));
                let feature = vshrq_n_u16::<12>(node);
                let right = vcgtq_u16(select_feature(values, feature), key);
                // 2j, plus 1 where right (the mask is all ones, -1, there)
                *j = vsubq_u16(vaddq_u16(*j, *j), right);
            }
        }
        for (leaves, j) in leaves.iter_mut().zip(j) {
            let quarter = &mut leaves[ROWS * q..ROWS * q + ROWS];
            // SAFETY: `quarter` holds the 8 values written.
            unsafe { vst1q_u16(quarter.as_mut_ptr(), j) };
        }
    }
    add_leaf_values(out, &leaves, trees);
}

/// Each lane's node `j` of level `level` of a heap-ordered table of 256 nodes: the level's bytes
/// looked up 64 at a time (`TBL`, then `TBX` for the next 64, which leaves lanes whose index is
/// out of its range as they were).
#[target_feature(enable = "neon")]
#[inline]
fn lookup(table: &[u16; 256], level: usize, j: uint16x8_t) -> uint16x8_t {
    let base = (1usize << level) - 1;
    // bytes 2j and 2j + 1 of the level: the lane's two byte indices
    let bytes = vreinterpretq_u8_u16(vmlaq_n_u16(vdupq_n_u16(0x0100), j, 0x0202));
    let sixteen = |at: usize| {
        // SAFETY: the (bounds-checked) slice holds the 8 nodes read.
        unsafe { vreinterpretq_u8_u16(vld1q_u16(table[at..at + 8].as_ptr())) }
    };
    let table64 = |at: usize| {
        uint8x16x4_t(
            sixteen(at),
            sixteen(at + 8),
            sixteen(at + 16),
            sixteen(at + 24),
        )
    };
    let found = match level {
        // up to 8 nodes: one 16-byte table
        0..=3 => vqtbl1q_u8(sixteen(base), bytes),
        // 16 nodes
        4 => vqtbl2q_u8(uint8x16x2_t(sixteen(base), sixteen(base + 8)), bytes),
        // 32 nodes
        5 => vqtbl4q_u8(table64(base), bytes),
        // 64 and 128 nodes: 64 bytes at a time, each lookup on the indices less the bytes before
        _ => {
            let mut found = vqtbl4q_u8(table64(base), bytes);
            for part in 1..(1usize << level) / 32 {
                let shifted = vsubq_u8(bytes, vdupq_n_u8((64 * part) as u8));
                found = vqtbx4q_u8(found, table64(base + 32 * part), shifted);
            }
            found
        }
    };
    vreinterpretq_u16_u8(found)
}

/// Each lane's value of its own feature: bit selects halve the candidates on each bit of the
/// feature number, lowest bit first.
#[target_feature(enable = "neon")]
#[inline]
fn select_feature<const P: usize>(values: &[uint16x8_t; P], feature: uint16x8_t) -> uint16x8_t {
    let mut candidates = *values;
    let mut n = P;
    let mut bit = 1u16;
    while n > 1 {
        let odd = vtstq_u16(feature, vdupq_n_u16(bit));
        for i in 0..n / 2 {
            candidates[i] = vbslq_u16(odd, candidates[2 * i + 1], candidates[2 * i]);
        }
        n /= 2;
        bit <<= 1;
    }
    candidates[0]
}

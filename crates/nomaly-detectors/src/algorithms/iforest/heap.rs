//! Trees in heap order (the children of node a are 2a+1 and 2a+2): the one traversal of a
//! [`FlatTree`] that the heap and rank layouts share, and the heap walk itself, row by row.

use super::{BLOCK, FlatTree};

/// Rows walked side by side through one tree: independent chains of loads hide each other's latency.
const LANES: usize = 8;
/// Deepest tree laid out as a perfect tree (2^depth leaves).
pub(super) const MAX_HEAP_DEPTH: usize = 11;

/// A tree re-laid as the perfect binary tree of its depth in heap order: the children of node a are
/// 2a+1 (x ≤ threshold) and 2a+2, so a step loads no child pointer. A leaf above the bottom level
/// becomes a chain of +∞ thresholds down to its leftmost descendant, which holds its path length —
/// the same comparisons and the same leaf values as the [`FlatTree`], so the same scores bit for bit.
#[derive(Debug, Clone)]
pub(super) struct HeapTree {
    depth: usize,
    thresholds: Vec<f64>,
    /// `feature · BLOCK`: the offset of the split feature's values in a scoring block.
    offsets: Vec<u32>,
    leaf_values: Vec<f64>,
}

impl FlatTree {
    /// Walks the tree in heap order (the children of heap node `at` are 2at+1 and 2at+2): `split(at,
    /// threshold, feature)` for each split, `leaf(at, level, path length)` for each leaf. `None`
    /// when the tree names a feature outside `0..width`, a node outside itself, or a split at or
    /// below its own depth. Shared by the heap and rank layouts, so both read a tree one way.
    pub(super) fn visit_heap_order(
        &self,
        width: usize,
        mut split: impl FnMut(usize, f64, u32),
        mut leaf: impl FnMut(usize, usize, f64),
    ) -> Option<()> {
        // (flat index, heap index, level); at most one pending node per level
        let mut stack = Vec::with_capacity(self.depth + 2);
        stack.push((0usize, 0usize, 0usize));
        while let Some((f, at, level)) = stack.pop() {
            let node = *self.nodes.get(f)?;
            if node.child as usize == f {
                leaf(at, level, *self.leaf_value.get(f)?);
                continue;
            }
            if level >= self.depth || node.feature as usize >= width {
                return None;
            }
            split(at, node.threshold, node.feature);
            stack.push((node.child as usize, 2 * at + 1, level + 1));
            stack.push((node.child as usize + 1, 2 * at + 2, level + 1));
        }
        Some(())
    }
}

/// The leftmost descendant at level `depth` of heap node `at` on `level`, counted from the first
/// node of level `depth`: where a leaf above the bottom level keeps its path length.
pub(super) fn bottom_position(at: usize, level: usize, depth: usize) -> usize {
    ((at + 1) << (depth - level)) - (1 << depth)
}

impl HeapTree {
    /// `None` when the tree is too deep or names a feature outside `0..width`.
    pub(super) fn from_flat(tree: &FlatTree, width: usize) -> Option<Self> {
        if tree.depth > MAX_HEAP_DEPTH {
            return None;
        }
        let internal = (1usize << tree.depth) - 1;
        let mut h = HeapTree {
            depth: tree.depth,
            thresholds: vec![f64::INFINITY; internal],
            offsets: vec![0; internal],
            leaf_values: vec![0.0; internal + 1],
        };
        tree.visit_heap_order(
            width,
            |at, threshold, feature| {
                h.thresholds[at] = threshold;
                h.offsets[at] = feature * BLOCK as u32;
            },
            |at, level, value| h.leaf_values[bottom_position(at, level, tree.depth)] = value,
        )?;
        Some(h)
    }

    /// Adds this tree's path length for the first `n` rows of a feature-major `block` to `out`.
    pub(super) fn add_path_lengths(&self, block: &[f64], n: usize, out: &mut [f64]) {
        let internal = self.thresholds.len();
        let mut leaves = [0usize; BLOCK];
        for group in (0..BLOCK).step_by(LANES) {
            let mut at = [0usize; LANES];
            for _ in 0..self.depth {
                for (r, a) in at.iter_mut().enumerate() {
                    // SAFETY: after l < depth steps a < 2^(l+1) - 1 ≤ internal = thresholds.len() =
                    // offsets.len(); offsets are feature · BLOCK with feature < width (checked in
                    // `from_flat`) and block.len() = width · BLOCK, so offset + group + r is in bounds.
                    let (threshold, x) = unsafe {
                        let offset = *self.offsets.get_unchecked(*a) as usize;
                        (
                            *self.thresholds.get_unchecked(*a),
                            *block.get_unchecked(offset + group + r),
                        )
                    };
                    *a = 2 * *a + 1 + usize::from(x > threshold);
                }
            }
            leaves[group..group + LANES].copy_from_slice(&at);
        }
        for (o, leaf) in out[..n].iter_mut().zip(&leaves[..n]) {
            *o += self.leaf_values[leaf - internal];
        }
    }
}

/// Copies `BLOCK` rows at a time into a feature-major block and calls `walk(block, rows, out)`
/// with the block's slice of `out`; rows past the batch's end keep stale values and are walked but
/// never read back.
pub(super) fn for_each_block(
    cols: &[&[f64]],
    len: usize,
    out: &mut [f64],
    mut walk: impl FnMut(&[f64], usize, &mut [f64]),
) {
    let mut block = vec![0.0f64; BLOCK * cols.len().max(1)];
    for start in (0..len).step_by(BLOCK) {
        let n = BLOCK.min(len - start);
        for (f, col) in cols.iter().enumerate() {
            block[f * BLOCK..f * BLOCK + n].copy_from_slice(&col[start..start + n]);
        }
        walk(&block, n, &mut out[start..start + n]);
    }
}

//! Scoring walks of the extended isolation forest. Rows walk a block at a time, level by level,
//! without a data-dependent branch: a leaf is its own child and never steps on, so every row takes
//! the tree's depth in steps. Every walk computes the growth's dot products in the growth's order,
//! so all of them give the same bits.

use super::{EifModel, EifTree};
use crate::categorical::{category_place_salted, category_salt};
use std::sync::OnceLock;

/// Rows walked together: their steps do not depend on each other, so the CPU overlaps them.
const BLOCK: usize = 64;

/// Widths with a copy of the dense walk (the dot product unrolled to a known length).
const DENSE_WIDTHS: std::ops::RangeInclusive<usize> = 2..=16;

/// Adds each row's path length in `tree` to `sums`, reading each node's features by index from
/// the columns; `value(feature, weight, x)` is what the plane sees of a row's `x`.
pub(super) fn add_path_lengths(
    tree: &EifTree,
    (k, cols, len): (usize, &[&[f64]], usize),
    sums: &mut [f64],
    value: impl Fn(usize, f64, f64) -> f64,
) {
    if tree.features.is_empty() {
        // a single leaf
        let v = tree.nodes[0].value;
        sums.iter_mut().for_each(|s| *s += v);
        return;
    }
    let depth = depth_of(tree);
    for start in (0..len).step_by(BLOCK) {
        let n = BLOCK.min(len - start);
        let mut at = [0u32; BLOCK];
        for _ in 0..depth {
            for (i, a) in at[..n].iter_mut().enumerate() {
                let node = tree.nodes[*a as usize];
                let leaf = node.child == *a;
                // A leaf reads the first normal (always there) and discards the result.
                let c = if leaf { 0 } else { node.coef as usize };
                let (fs, ws) = (&tree.features[c..c + k], &tree.weights[c..c + k]);
                let dot = fs.iter().zip(ws).fold(0.0, |acc, (&j, &w)| {
                    let j = j as usize;
                    acc + w * value(j, w, cols[j][start + i])
                });
                *a = node.child + u32::from(!leaf & (dot >= node.value));
            }
        }
        for (s, a) in sums[start..start + n].iter_mut().zip(&at[..n]) {
            *s += tree.nodes[*a as usize].value;
        }
    }
}

/// The longest root-to-leaf path (nodes are breadth-first: children after their parent).
fn depth_of(tree: &EifTree) -> usize {
    let mut depth = vec![0usize; tree.nodes.len()];
    let mut deepest = 0;
    for (i, node) in tree.nodes.iter().enumerate() {
        let c = node.child as usize;
        if c != i {
            depth[c] = depth[i] + 1;
            depth[c + 1] = depth[i] + 1;
            deepest = deepest.max(depth[i] + 1);
        }
    }
    deepest
}

/// A tree with planes through every feature (`components == d`: the `eif` package's full
/// extension and the default), laid out for the walk. Each node's features are then 0..d in order,
/// so its weights are a run of `d` read against a row's values in row-major order: no feature
/// index to load. A node is one record — its `d` weights, its offset (right when the dot product
/// reaches it) and its left child's index as the bits of an f64 — so a step reads one run; a leaf
/// has zero weights, an offset of +∞ and itself as child, so it stays without a test.
#[derive(Debug, Clone)]
struct DenseTree {
    records: Vec<f64>,
    /// Per node: a leaf's path length (0 for an inner node).
    path: Vec<f64>,
    /// Per node, `d` salts ([`category_salt`] of each weight) when there are text features, so a
    /// step hashes a category once, not twice; empty otherwise.
    salts: Vec<u64>,
    depth: usize,
}

impl DenseTree {
    fn new(tree: &EifTree, d: usize, text: bool) -> Self {
        let n = tree.nodes.len();
        let mut t = DenseTree {
            records: Vec::with_capacity(n * (d + 2)),
            path: Vec::with_capacity(n),
            salts: Vec::new(),
            depth: depth_of(tree),
        };
        for (i, node) in tree.nodes.iter().enumerate() {
            let child = f64::from_bits(u64::from(node.child));
            if node.child as usize == i {
                t.records.extend(std::iter::repeat_n(0.0, d));
                t.records.extend([f64::INFINITY, child]);
                t.path.push(node.value);
            } else {
                let c = node.coef as usize;
                t.records.extend_from_slice(&tree.weights[c..c + d]);
                t.records.extend([node.value, child]);
                t.path.push(0.0);
            }
        }
        if text {
            t.salts = (0..n)
                .flat_map(|i| {
                    let stride = d + 2;
                    t.records[i * stride..i * stride + d]
                        .iter()
                        .map(|&w| category_salt(w))
                })
                .collect();
        }
        t
    }

    /// Adds each row's path length to `sums`; `rows` are row-major, `D` values a row. With
    /// `TEXT`, the features `text` marks are category codes, seen at their places in each plane.
    fn walk<const D: usize, const TEXT: bool>(
        &self,
        rows: &[f64],
        sums: &mut [f64],
        text: &[bool],
    ) {
        let stride = D + 2;
        for (block, sums) in rows.chunks(BLOCK * D).zip(sums.chunks_mut(BLOCK)) {
            let mut at = [0u32; BLOCK];
            let at = &mut at[..sums.len()];
            for _ in 0..self.depth {
                for (a, x) in at.iter_mut().zip(block.chunks_exact(D)) {
                    let start = *a as usize * stride;
                    let record = &self.records[start..start + stride];
                    let w: &[f64; D] = record[..D].try_into().expect("D weights a node");
                    let x: &[f64; D] = x.try_into().expect("D values a row");
                    let mut dot = 0.0;
                    for j in 0..D {
                        let seen = if TEXT && text[j] {
                            category_place_salted(self.salts[*a as usize * D + j], x[j])
                        } else {
                            x[j]
                        };
                        dot += w[j] * seen;
                    }
                    *a = record[D + 1].to_bits() as u32 + u32::from(dot >= record[D]);
                }
            }
            for (s, a) in sums.iter_mut().zip(at.iter()) {
                *s += self.path[*a as usize];
            }
        }
    }
}

/// The dense layouts of a model's trees, built on first use: a cache, not part of the model (it
/// is never written and two models compare equal whatever it holds).
#[derive(Debug, Clone, Default)]
pub(super) struct DenseForest(OnceLock<Option<Vec<DenseTree>>>);

impl PartialEq for DenseForest {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl DenseForest {
    /// Adds every tree's path lengths to `sums` by the dense walk and returns true, or returns
    /// false when the model's planes do not go through every feature or its width has no copy.
    /// `text` marks the features that are category codes (empty: none); a model's are the same
    /// on every call.
    pub(super) fn walk(
        &self,
        model: &EifModel,
        text: &[bool],
        (cols, len): (&[&[f64]], usize),
        sums: &mut [f64],
    ) -> bool {
        let d = model.d;
        let has_text = text.contains(&true);
        let trees = self.0.get_or_init(|| {
            (model.components == d && DENSE_WIDTHS.contains(&d)).then(|| {
                let trees = model.trees.iter();
                trees.map(|t| DenseTree::new(t, d, has_text)).collect()
            })
        });
        let Some(trees) = trees else {
            return false;
        };
        if has_text && trees.iter().any(|t| t.salts.is_empty()) {
            // laid out by a call without text: walk by feature index instead
            return false;
        }
        let mut rows = vec![0.0; len * d];
        for (j, col) in cols.iter().enumerate() {
            for (x, &v) in rows.iter_mut().skip(j).step_by(d).zip(*col) {
                *x = v;
            }
        }
        macro_rules! widths {
            ($($w:literal)*) => {
                match (d, has_text) {
                    $(($w, false) => trees.iter().for_each(|t| t.walk::<$w, false>(&rows, sums, text)),
                      ($w, true) => trees.iter().for_each(|t| t.walk::<$w, true>(&rows, sums, text)),)*
                    _ => unreachable!("a width in DENSE_WIDTHS"),
                }
            };
        }
        widths!(2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
        true
    }
}

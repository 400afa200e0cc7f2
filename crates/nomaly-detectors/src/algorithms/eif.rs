//! `eif`: the extended isolation forest (Hariri, Carrasco Kind & Brunner 2021, the `eif`
//! package): an isolation forest whose nodes split by a random hyperplane instead of one feature.
//! A node draws a normal vector with `extension_level + 1` non-zero components (the others are
//! zero, so level 0 splits along one feature) and an intercept point uniform in the node's
//! bounding box; a row goes left when `(x − p) · n < 0`. Depth limit ⌈log₂ ψ⌉, path length
//! `depth + c(rows in the leaf)`, score `2^(−mean path length / c(ψ))` as iforest's.
//!
//! Trees take their rows from the row sample exactly as iforest's do (same `n_trees`,
//! `sample_size`). Normal components are Irwin–Hall normals (12 uniforms minus 6) and the
//! intercept is folded into one offset per node (`x · n < p · n`), so growing and scoring use
//! additions and multiplications only: the same bits on every CPU.
//!
//! A text feature enters each plane at its categories' places in that plane, in [0, 1)
//! ([`category_place`]: a hash of the plane's weight and the code), its normal component
//! multiplied by the median range of the numeric features (the `eif` package does not
//! standardise, so a place in [0, 1) next to amounts in the thousands would never cut); the
//! product is the weight kept, so scoring needs no scale and finds the same places.

mod walk;

use super::iforest::{TreePool, average_path_length, scores_from_path_sums, tree_rows};
use super::part_columns;
use crate::categorical::category_place;
use crate::hashing::{DeterministicRng, mix64};
use crate::sample::RowSample;
use serde::{Deserialize, Serialize};
use walk::{DenseForest, add_path_lengths};

/// Mixed into each tree's seed so its draws are not iforest's for the same seed.
const EIF_STREAM: u64 = 0x6569_6600_0000_0001;

/// One node: an inner node's children are `child` and `child + 1`; a leaf is its own child.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EifNode {
    pub child: u32,
    /// Inner node: where its normal's components start in the tree's `features` and `weights`.
    pub coef: u32,
    /// Inner node: the offset `p · n` (left when `x · n` is below it); leaf: its path length.
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EifTree {
    pub nodes: Vec<EifNode>,
    /// The normals' non-zero features, `components` per inner node, increasing within a node.
    pub features: Vec<u32>,
    pub weights: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EifModel {
    pub d: usize,
    /// Non-zero components per normal: `extension_level + 1`.
    pub components: usize,
    pub trees: Vec<EifTree>,
    /// c(ψ) for the ψ used.
    pub normaliser: f64,
    /// The trees laid out for the walk of planes through every feature, built on first use.
    #[serde(skip)]
    dense: DenseForest,
}

/// What growing one tree needs besides its rows.
struct Grower<'a> {
    data: &'a [f64],
    d: usize,
    components: usize,
    max_depth: usize,
    /// Multiplies each feature's normal component: 1 for a number, `weight_scales`' for text.
    weight_scale: &'a [f64],
    /// Per feature, whether it is text (its values are category codes).
    text: &'a [bool],
}

/// Per feature, what its normal components are multiplied by: 1 for a number; for a text feature
/// (places in [0, 1)), the median of the numeric features' ranges over the sample, so a plane
/// weighs a category's place about as much as a number's (1 when there is no numeric range).
fn weight_scales(pool: &[&[f64]], text: &[bool]) -> Vec<f64> {
    let mut ranges: Vec<f64> = (0..text.len())
        .filter(|&j| !text[j])
        .map(|j| {
            let (lo, hi) = pool
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |m, r| {
                    (m.0.min(r[j]), m.1.max(r[j]))
                });
            hi - lo
        })
        .filter(|r| r.is_finite() && *r > 0.0)
        .collect();
    ranges.sort_by(f64::total_cmp);
    let median = match ranges.len() {
        0 => 1.0,
        n if n % 2 == 1 => ranges[n / 2],
        n => ranges[n / 2 - 1] / 2.0 + ranges[n / 2] / 2.0,
    };
    text.iter().map(|&t| if t { median } else { 1.0 }).collect()
}

impl EifModel {
    /// Fits on the row sample; a `text` feature's codes enter each plane at their categories'
    /// places in it ([`category_place`]), as scoring takes them.
    pub fn fit(
        sample: &RowSample,
        text: &[bool],
        (n_trees, sample_size, max_depth): (usize, usize, Option<usize>),
        extension_level: Option<usize>,
        seed: u64,
    ) -> Self {
        let d = text.len();
        let pool = TreePool::new(sample);
        let weight_scale = weight_scales(pool.distinct(), text);
        let psi = sample_size.min(pool.total()).max(1);
        let max_depth = max_depth.unwrap_or_else(|| (psi.max(2) as f64).log2().ceil() as usize);
        let components = extension_level.map_or(d, |e| e + 1).clamp(1, d.max(1));
        let mut shuffled = Vec::new();
        let mut data = Vec::new();
        let trees = (0..n_trees)
            .map(|t| {
                let mut rng = DeterministicRng::new(mix64(seed ^ EIF_STREAM ^ mix64(t as u64 + 1)));
                tree_rows(&pool, (t, n_trees, psi), &mut rng, &mut shuffled, &mut data);
                let grower = Grower {
                    data: &data,
                    d,
                    components,
                    max_depth,
                    weight_scale: &weight_scale,
                    text,
                };
                grower.grow(&mut rng)
            })
            .collect();
        EifModel {
            d,
            components,
            trees,
            normaliser: average_path_length(psi as f64),
            dense: DenseForest::default(),
        }
    }

    /// Shapes and finite values; every child after its parent (so a walk ends) and in range.
    pub fn validate(&self, width: usize) -> Result<(), String> {
        if self.d != width || !(1..=width).contains(&self.components) || self.trees.is_empty() {
            return Err(format!(
                "a forest of {} trees with {} components for {} features, read for {width}",
                self.trees.len(),
                self.components,
                self.d
            ));
        }
        if !self.normaliser.is_finite() {
            return Err("the path-length normaliser is not a finite number".into());
        }
        for (t, tree) in self.trees.iter().enumerate() {
            let k = self.components;
            let n = tree.nodes.len();
            let inner = tree
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, node)| node.child as usize != *i)
                .count();
            let ok = n > 0
                && tree.features.len() == tree.weights.len()
                && tree.features.len() == inner * k
                && tree.features.iter().all(|&j| (j as usize) < width)
                && tree
                    .features
                    .chunks(k)
                    .all(|f| f.windows(2).all(|p| p[0] < p[1]))
                && tree.weights.iter().all(|w| w.is_finite())
                && tree.nodes.iter().enumerate().all(|(i, node)| {
                    let c = node.child as usize;
                    let leaf = c == i;
                    node.value.is_finite()
                        && (leaf
                            || (c > i
                                && c + 1 < n
                                && (node.coef as usize + k) <= tree.features.len()))
                });
            if !ok {
                return Err(format!("tree {t} is malformed"));
            }
        }
        Ok(())
    }
}

impl Grower<'_> {
    /// Feature `j` of `row` as the plane with weight `w` on it sees it.
    #[inline]
    fn at(&self, row: usize, j: usize, w: f64) -> f64 {
        let x = self.data[row * self.d + j];
        if self.text[j] {
            category_place(w, x)
        } else {
            x
        }
    }

    /// Grows breadth-first, so siblings are adjacent and every child comes after its parent.
    fn grow(&self, rng: &mut DeterministicRng) -> EifTree {
        let rows = self.data.len() / self.d.max(1);
        let mut idx: Vec<usize> = (0..rows).collect();
        let mut tree = EifTree {
            nodes: vec![leaf(0, rows)],
            features: Vec::new(),
            weights: Vec::new(),
        };
        // (node, rows lo..hi of idx, depth)
        let mut queue = std::collections::VecDeque::from([(0usize, 0usize, rows, 0usize)]);
        while let Some((node, lo, hi, depth)) = queue.pop_front() {
            if depth >= self.max_depth || hi - lo <= 1 {
                tree.nodes[node] = EifNode {
                    child: node as u32,
                    ..leaf(depth, hi - lo)
                };
                continue;
            }
            let chosen = self.draw_plane(&idx[lo..hi], rng);
            let offset = chosen.iter().fold(0.0, |acc, &(_, w, p)| acc + w * p);
            // Rows below the plane first: a stable partition of idx[lo..hi].
            let below = |&i: &usize| {
                chosen
                    .iter()
                    .fold(0.0, |acc, &(j, w, _)| acc + w * self.at(i, j as usize, w))
                    < offset
            };
            let (left, right): (Vec<usize>, Vec<usize>) =
                idx[lo..hi].iter().partition(|i| below(i));
            let mid = lo + left.len();
            idx[lo..mid].copy_from_slice(&left);
            idx[mid..hi].copy_from_slice(&right);
            let child = tree.nodes.len();
            tree.nodes[node] = EifNode {
                child: child as u32,
                coef: tree.features.len() as u32,
                value: offset,
            };
            for &(j, w, _) in &chosen {
                tree.features.push(j);
                tree.weights.push(w);
            }
            tree.nodes.push(leaf(depth + 1, 0));
            tree.nodes.push(leaf(depth + 1, 0));
            queue.push_back((child, lo, mid, depth + 1));
            queue.push_back((child + 1, mid, hi, depth + 1));
        }
        tree
    }

    /// The node's hyperplane: per non-zero component (feature, weight, intercept coordinate).
    fn draw_plane(&self, rows: &[usize], rng: &mut DeterministicRng) -> Vec<(u32, f64, f64)> {
        // A partial Fisher–Yates shuffle of the features picks the non-zero components.
        let mut features: Vec<u32> = (0..self.d as u32).collect();
        for t in 0..self.components {
            let r = t + rng.next_below(self.d - t);
            features.swap(t, r);
        }
        let mut chosen = features[..self.components].to_vec();
        chosen.sort_unstable();
        chosen
            .into_iter()
            .map(|j| {
                let w = ((0..12).fold(0.0, |s, _| s + rng.next_f64()) - 6.0)
                    * self.weight_scale[j as usize];
                let (lo, hi) = rows
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |m, &i| {
                        let v = self.at(i, j as usize, w);
                        (m.0.min(v), m.1.max(v))
                    });
                (j, w, lo + rng.next_f64() * (hi - lo))
            })
            .collect()
    }
}

/// A leaf's path length (its `child` is set to its own index when it is placed).
fn leaf(depth: usize, rows: usize) -> EifNode {
    EifNode {
        child: 0,
        coef: 0,
        value: depth as f64 + average_path_length(rows as f64),
    }
}

impl EifModel {
    /// Scores and, when `parts`, each feature's part of them: the score split over the features
    /// in proportion to their weights' magnitudes in the normals along the row's paths. `text`
    /// says per feature whether its values are category codes (empty: all are numbers).
    pub fn score_with_text(
        &self,
        cols: &[&[f64]],
        len: usize,
        parts: bool,
        text: &[bool],
    ) -> (Vec<f64>, Vec<Vec<f64>>) {
        if text.contains(&true) {
            let value = |j: usize, w: f64, x: f64| {
                if text[j] { category_place(w, x) } else { x }
            };
            self.score_seen((cols, len), parts, text, value)
        } else {
            self.score_seen((cols, len), parts, &[], |_, _, x| x)
        }
    }

    fn score_seen(
        &self,
        (cols, len): (&[&[f64]], usize),
        parts: bool,
        text: &[bool],
        value: impl Fn(usize, f64, f64) -> f64 + Copy,
    ) -> (Vec<f64>, Vec<Vec<f64>>) {
        let k = self.components;
        let mut sums = vec![0.0; len];
        if !parts {
            if !self.dense.walk(self, text, (cols, len), &mut sums) {
                for tree in &self.trees {
                    add_path_lengths(tree, (k, cols, len), &mut sums, value);
                }
            }
            return (
                scores_from_path_sums(sums, self.trees.len(), self.normaliser),
                vec![],
            );
        }
        let mut pulls = part_columns(parts, self.d, len);
        for tree in &self.trees {
            for (r, sum) in sums.iter_mut().enumerate() {
                let mut at = 0usize;
                loop {
                    let node = tree.nodes[at];
                    if node.child as usize == at {
                        *sum += node.value;
                        break;
                    }
                    let c = node.coef as usize;
                    let (fs, ws) = (&tree.features[c..c + k], &tree.weights[c..c + k]);
                    let dot = fs.iter().zip(ws).fold(0.0, |acc, (&j, &w)| {
                        let j = j as usize;
                        acc + w * value(j, w, cols[j][r])
                    });
                    let total: f64 = ws.iter().map(|w| w.abs()).sum();
                    for (&j, w) in fs.iter().zip(ws) {
                        pulls[j as usize][r] += w.abs() / total;
                    }
                    at = node.child as usize + usize::from(dot >= node.value);
                }
            }
        }
        let scores = scores_from_path_sums(sums, self.trees.len(), self.normaliser);
        if parts {
            for r in 0..len {
                let total: f64 = pulls.iter().map(|p| p[r]).sum();
                for p in pulls.iter_mut() {
                    p[r] = if total > 0.0 {
                        scores[r] * p[r] / total
                    } else {
                        scores[r] / self.d as f64
                    };
                }
            }
        }
        (scores, pulls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rows: &[Vec<f64>]) -> RowSample {
        let mut s = RowSample::new(100_000, rows[0].len(), 1);
        for r in rows {
            s.offer(r);
        }
        s.compact();
        s
    }

    #[test]
    fn far_rows_score_higher_and_parts_sum_to_the_score() {
        let mut rng = DeterministicRng::new(9);
        let rows: Vec<Vec<f64>> = (0..3_000)
            .map(|_| {
                let a = rng.next_f64();
                vec![a, a + 0.05 * rng.next_f64(), rng.next_f64()]
            })
            .collect();
        let m = EifModel::fit(&sample(&rows), &[false; 3], (100, 256, None), None, 42);
        m.validate(3).unwrap();
        // off the diagonal: an axis-parallel forest sees (0.1, 0.9) inside both ranges
        let cols: [&[f64]; 3] = [&[0.5, 0.1], &[0.52, 0.9], &[0.5, 0.5]];
        let (scores, parts) = m.score_with_text(&cols, 2, true, &[]);
        assert!(scores[1] > scores[0] + 0.1, "{scores:?}");
        for r in 0..2 {
            let sum: f64 = parts.iter().map(|p| p[r]).sum();
            assert!((sum - scores[r]).abs() <= 1e-12, "{sum} {scores:?}");
        }
        // The block walk scores as the row-by-row walk does, bit for bit (200 rows: 3 blocks).
        let cols: Vec<Vec<f64>> = (0..3)
            .map(|j| rows[..200].iter().map(|r| r[j] * 1.5 - 0.2).collect())
            .collect();
        let refs: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
        let (fast, _) = m.score_with_text(&refs, 200, false, &[]);
        let (slow, _) = m.score_with_text(&refs, 200, true, &[]);
        assert!(
            fast.iter()
                .zip(&slow)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        let again = EifModel::fit(&sample(&rows), &[false; 3], (100, 256, None), None, 42);
        assert_eq!(m, again);
        let level0 = EifModel::fit(&sample(&rows), &[false; 3], (10, 64, None), Some(0), 42);
        assert_eq!(level0.components, 1);
        assert!(
            level0
                .trees
                .iter()
                .all(|t| t.features.len() * 2 + 1 == t.nodes.len())
        );
    }

    #[test]
    fn a_malformed_tree_is_refused() {
        let rows: Vec<Vec<f64>> = (0..500).map(|i| vec![i as f64, (i % 7) as f64]).collect();
        let mut m = EifModel::fit(&sample(&rows), &[false; 2], (5, 64, None), None, 1);
        m.validate(2).unwrap();
        m.trees[0].nodes[0].child = 0;
        m.trees[0].nodes[1].child = 0; // points back to the root: a walk would never end
        assert!(m.validate(2).unwrap_err().contains("tree 0"));
    }
}

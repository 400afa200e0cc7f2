//! Growing one isolation tree from its sample rows: a random non-constant feature split at a
//! uniform threshold in the node's range, to the depth limit or a single row.

use super::{LEAF, Node, average_path_length};
use crate::hashing::DeterministicRng;
use crate::sample::RowSample;
use std::collections::HashMap;

/// Candidate split features kept on the stack (wider inputs spill the rest to the heap).
const MAX_SPLIT_FEATURES: usize = 64;

/// A tree's rows, row-major.
pub(super) struct RowMajor<'a> {
    pub(super) data: &'a [f64],
    pub(super) width: usize,
}

impl RowMajor<'_> {
    #[inline]
    fn at(&self, row: usize, feature: usize) -> f64 {
        self.data[row * self.width + feature]
    }
}

/// A leaf at `depth` holding `n` rows: its path length, corrected for the rows left unsplit.
fn leaf(depth: usize, n: usize) -> Node {
    Node {
        feature: LEAF,
        value: depth as f64 + average_path_length(n as f64),
        left: 0,
        right: 0,
    }
}

pub(super) fn build(
    rows: &RowMajor<'_>,
    idx: &mut [usize],
    depth: usize,
    max_depth: usize,
    rng: &mut DeterministicRng,
    nodes: &mut Vec<Node>,
) -> u32 {
    let me = nodes.len() as u32;
    if depth >= max_depth || idx.len() <= 1 {
        nodes.push(leaf(depth, idx.len()));
        return me;
    }
    // Non-constant features at this node; choose one uniformly (scikit-learn's random splitter with
    // max_features = 1 keeps drawing until it finds a non-constant feature). A feature is
    // non-constant when some row differs from the first (fit rows are finite, and -0.0 == 0.0 as
    // min/max see them), which a scan finds within a few rows; only the chosen feature's range is
    // computed. Building per-segment forests was half of a 1,000-segment run when every feature's
    // range was computed at every node.
    let first = idx[0];
    let mut candidates = [0u32; MAX_SPLIT_FEATURES];
    let mut n = 0;
    let mut wide = Vec::new();
    for f in 0..rows.width {
        let v0 = rows.at(first, f);
        if idx.iter().any(|&i| rows.at(i, f) != v0) {
            if n < MAX_SPLIT_FEATURES {
                candidates[n] = f as u32;
            } else {
                wide.push(f as u32);
            }
            n += 1;
        }
    }
    if n == 0 {
        nodes.push(leaf(depth, idx.len()));
        return me;
    }
    let pick = rng.next_below(n);
    let f = if pick < MAX_SPLIT_FEATURES {
        candidates[pick]
    } else {
        wide[pick - MAX_SPLIT_FEATURES]
    } as usize;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &i in idx.iter() {
        let v = rows.at(i, f);
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let u = rng.next_f64();
    let mut threshold = if (hi - lo).is_finite() {
        lo + (hi - lo) * u
    } else {
        // a range wider than f64::MAX: the same draw on halves, doubled (exact), instead of
        // ∞ (every split at the minimum) or NaN (no row goes left)
        (lo / 2.0 + (hi / 2.0 - lo / 2.0) * u) * 2.0
    };
    if threshold >= hi {
        threshold = lo;
    }
    // partition idx: left = x ≤ threshold
    // Without a branch (which row goes where is a coin flip the predictor loses half the time):
    // every row is swapped to the front and the front advances over rows going left. Rows keep
    // a different order than a conditional swap leaves, which no split depends on: ranges,
    // constancy and sizes are those of the same sets.
    let mut split = 0;
    for k in 0..idx.len() {
        let row = idx[k];
        let left = rows.at(row, f) <= threshold;
        idx[k] = idx[split];
        idx[split] = row;
        split += usize::from(left);
    }
    nodes.push(Node {
        feature: f as u32,
        value: threshold,
        left: 0,
        right: 0,
    });
    let (left_idx, right_idx) = idx.split_at_mut(split);
    let left = build(rows, left_idx, depth + 1, max_depth, rng, nodes);
    let right = build(rows, right_idx, depth + 1, max_depth, rng, nodes);
    nodes[me as usize].left = left;
    nodes[me as usize].right = right;
    me
}

/// The fit's row sample as the trees draw from it. The sample keeps each distinct row once with
/// the number of input rows it stands for; a tree draws input rows, so a row counted 1,000 times
/// is 1,000 times as likely to be drawn as one counted once (a frequent value, or category, then
/// fills its nodes as it fills the data, and sits deep).
pub(crate) struct TreePool<'a> {
    rows: Vec<&'a [f64]>,
    /// Running totals of the counts: row i stands for the input rows `ends[i - 1]..ends[i]`.
    ends: Vec<u64>,
}

impl<'a> TreePool<'a> {
    pub(crate) fn new(sample: &'a RowSample) -> Self {
        let mut total = 0u64;
        let (rows, ends) = sample
            .rows()
            .map(|(r, count)| {
                total += count.max(1);
                (r, total)
            })
            .unzip();
        TreePool { rows, ends }
    }

    /// The input rows the pool stands for.
    pub(crate) fn total(&self) -> usize {
        self.ends.last().map_or(0, |&e| e as usize)
    }

    /// The distinct rows, each once.
    pub(crate) fn distinct(&self) -> &[&'a [f64]] {
        &self.rows
    }

    /// The distinct row that input row `at` (of `total`) is.
    fn row_at(&self, at: usize) -> &'a [f64] {
        self.rows[self.ends.partition_point(|&e| e as usize <= at)]
    }
}

/// Tree `t`'s rows of the `n_trees` (ψ each), copied row-major into `data` (the splits scan them
/// many times). When every pooled row stands for one input row: rows [tψ, (t+1)ψ) of the pool
/// when it holds `n_trees · ψ`, else ψ drawn from the whole pool by a partial Fisher–Yates
/// shuffle with `rng`. Otherwise ψ of the input rows the pool stands for, drawn the same way
/// without replacement (a sparse shuffle over their positions: as many moves as rows drawn).
pub(crate) fn tree_rows(
    pool: &TreePool<'_>,
    (t, n_trees, psi): (usize, usize, usize),
    rng: &mut DeterministicRng,
    shuffled: &mut Vec<usize>,
    data: &mut Vec<f64>,
) {
    data.clear();
    let rows = pool.distinct();
    let total = pool.total();
    if total > rows.len() {
        let mut moved: HashMap<usize, usize> = HashMap::with_capacity(psi);
        for i in 0..psi.min(total) {
            let j = i + rng.next_below(total - i);
            let at_i = moved.get(&i).copied().unwrap_or(i);
            let at_j = moved.get(&j).copied().unwrap_or(j);
            moved.insert(j, at_i);
            data.extend_from_slice(pool.row_at(at_j));
        }
    } else if rows.len() >= n_trees * psi {
        rows[t * psi..(t + 1) * psi]
            .iter()
            .for_each(|r| data.extend_from_slice(r));
    } else {
        shuffled.clear();
        shuffled.extend(0..rows.len());
        for i in 0..psi.min(shuffled.len()) {
            let j = i + rng.next_below(shuffled.len() - i);
            shuffled.swap(i, j);
        }
        shuffled[..psi.min(rows.len())]
            .iter()
            .for_each(|&i| data.extend_from_slice(rows[i]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_of(rows: &[(f64, usize)]) -> RowSample {
        let mut s = RowSample::new(1_000, 1, 1);
        for &(v, n) in rows {
            for _ in 0..n {
                s.offer(&[v]);
            }
        }
        s.compact();
        s
    }

    #[test]
    fn trees_draw_input_rows_not_distinct_ones() {
        // three distinct rows standing for 900, 99 and 1 input rows
        let sample = pool_of(&[(1.0, 900), (2.0, 99), (3.0, 1)]);
        let pool = TreePool::new(&sample);
        assert_eq!((pool.distinct().len(), pool.total()), (3, 1_000));
        let (mut shuffled, mut data) = (Vec::new(), Vec::new());
        let mut seen = [0usize; 3];
        let mut rng = DeterministicRng::new(3);
        for t in 0..50 {
            tree_rows(&pool, (t, 50, 200), &mut rng, &mut shuffled, &mut data);
            assert_eq!(data.len(), 200);
            data.iter().for_each(|v| seen[*v as usize - 1] += 1);
        }
        // 10,000 draws: about 9,000, 990 and 10, and never more of a row than it stands for
        assert!((8_700..9_300).contains(&seen[0]), "{seen:?}");
        assert!((850..1_130).contains(&seen[1]), "{seen:?}");
        assert!(seen[2] <= 50, "{seen:?}");
        // a tree never draws the one row standing for one input row twice
        tree_rows(&pool, (0, 1, 1_000), &mut rng, &mut shuffled, &mut data);
        assert_eq!(data.iter().filter(|v| **v == 3.0).count(), 1);
        assert_eq!(data.iter().filter(|v| **v == 1.0).count(), 900);
    }

    #[test]
    fn rows_counted_once_are_drawn_as_before() {
        let sample = pool_of(&(0..300).map(|i| (i as f64, 1)).collect::<Vec<_>>());
        let pool = TreePool::new(&sample);
        let (mut shuffled, mut data) = (Vec::new(), Vec::new());
        let mut rng = DeterministicRng::new(9);
        tree_rows(&pool, (0, 10, 64), &mut rng, &mut shuffled, &mut data);
        // the partial Fisher–Yates over the distinct rows, as the draw was written first
        let mut again = DeterministicRng::new(9);
        let mut order: Vec<usize> = (0..300).collect();
        for i in 0..64 {
            let j = i + again.next_below(300 - i);
            order.swap(i, j);
        }
        let want: Vec<f64> = order[..64].iter().map(|&i| pool.distinct()[i][0]).collect();
        assert_eq!(data, want);
    }

    /// The split choice as first written: every feature's range at every node. `build` finds
    /// the non-constant features without their ranges and must grow the same trees.
    #[allow(clippy::needless_range_loop)]
    fn build_by_ranges(
        rows: &[&[f64]],
        width: usize,
        idx: &mut [usize],
        depth: usize,
        max_depth: usize,
        rng: &mut DeterministicRng,
        nodes: &mut Vec<Node>,
    ) -> u32 {
        let me = nodes.len() as u32;
        if depth >= max_depth || idx.len() <= 1 {
            nodes.push(leaf(depth, idx.len()));
            return me;
        }
        let mut candidates: Vec<(usize, f64, f64)> = Vec::new();
        for f in 0..width {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for &i in idx.iter() {
                lo = lo.min(rows[i][f]);
                hi = hi.max(rows[i][f]);
            }
            if hi > lo {
                candidates.push((f, lo, hi));
            }
        }
        if candidates.is_empty() {
            nodes.push(leaf(depth, idx.len()));
            return me;
        }
        let (f, lo, hi) = candidates[rng.next_below(candidates.len())];
        let u = rng.next_f64();
        let mut threshold = if (hi - lo).is_finite() {
            lo + (hi - lo) * u
        } else {
            (lo / 2.0 + (hi / 2.0 - lo / 2.0) * u) * 2.0
        };
        if threshold >= hi {
            threshold = lo;
        }
        let mut split = 0;
        for k in 0..idx.len() {
            if rows[idx[k]][f] <= threshold {
                idx.swap(k, split);
                split += 1;
            }
        }
        nodes.push(Node {
            feature: f as u32,
            value: threshold,
            left: 0,
            right: 0,
        });
        let (l, r) = idx.split_at_mut(split);
        let left = build_by_ranges(rows, width, l, depth + 1, max_depth, rng, nodes);
        let right = build_by_ranges(rows, width, r, depth + 1, max_depth, rng, nodes);
        nodes[me as usize].left = left;
        nodes[me as usize].right = right;
        me
    }

    #[test]
    fn trees_are_those_of_the_split_choice_by_ranges() {
        let mut rng = DeterministicRng::new(5);
        // widths around the stack's 64 candidates; constant, two-valued, signed-zero and
        // duplicated columns
        for width in [1, 3, 8, 70] {
            let rows: Vec<Vec<f64>> = (0..300)
                .map(|i| {
                    (0..width)
                        .map(|f| match f % 5 {
                            0 => 7.0,
                            1 => {
                                if i % 2 == 0 {
                                    -0.0
                                } else {
                                    0.0
                                }
                            }
                            2 => (i % 3) as f64,
                            _ => (rng.next_f64() * 100.0).round(),
                        })
                        .collect()
                })
                .collect();
            let views: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
            for seed in 0..20u64 {
                let grow = |by_ranges: bool| {
                    let mut rng = DeterministicRng::new(seed);
                    let mut idx: Vec<usize> = (0..views.len()).collect();
                    let mut nodes = Vec::new();
                    if by_ranges {
                        build_by_ranges(&views, width, &mut idx, 0, 9, &mut rng, &mut nodes);
                    } else {
                        let data: Vec<f64> = rows.concat();
                        let flat = RowMajor { data: &data, width };
                        build(&flat, &mut idx, 0, 9, &mut rng, &mut nodes);
                    }
                    nodes
                };
                assert_eq!(grow(false), grow(true), "width {width}, seed {seed}");
            }
        }
    }
}

//! `knn`: PyOD's `KNN` — a row's distance to its k-th nearest neighbour (`method = largest`), or
//! the mean or median of its k nearest distances, Euclidean. The neighbours come from the fit's
//! row sample (a bounded, partition-independent bottom-k hash sample with multiplicities; the
//! whole input when it has at most `sample_rows` distinct rows), kept in the model as a k-d tree
//! laid out in one array, so a query visits O(log n) leaves instead of every reference row.
//!
//! A row identical to a reference row is scored without one copy of it, as PyOD scores its
//! training rows without themselves: identical rows hash alike, so a training row equal to a
//! sampled row is one of that row's multiplicity.

use super::{WholeRowScorer, part_columns};
use crate::sample::RowSample;
use serde::{Deserialize, Serialize};

/// Rows per leaf of the tree.
const LEAF: usize = 16;
/// The most neighbours a model may ask for (the `n_neighbors` option's bound).
pub const MAX_NEIGHBOURS: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KnnMethod {
    Largest,
    Mean,
    Median,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnnModel {
    pub k: usize,
    pub method: KnnMethod,
    pub d: usize,
    /// Reference rows in the tree's order, column-major (feature j of row i at `j * n + i`), so
    /// a leaf's distances are one contiguous run per feature (a vector loop).
    pub points: Vec<f64>,
    /// Each reference row's multiplicity.
    pub weights: Vec<u64>,
    /// The split feature of each inner node (heap order: node i's children are 2i+1 and 2i+2;
    /// node ranges halve the row range).
    pub split_dims: Vec<u32>,
    /// Each inner node's split value: its left half's rows are at or below it on the split
    /// feature, its right half's at or above.
    pub split_values: Vec<f64>,
}

/// The inner nodes' count for `n` rows (nodes whose range holds more than a leaf).
fn inner_nodes(n: usize) -> usize {
    fn count(i: usize, lo: usize, hi: usize, out: &mut usize) {
        if hi - lo <= LEAF {
            return;
        }
        *out = (*out).max(i + 1);
        let mid = lo + (hi - lo) / 2;
        count(2 * i + 1, lo, mid, out);
        count(2 * i + 2, mid, hi, out);
    }
    let mut out = 0;
    count(0, 0, n, &mut out);
    out
}

impl KnnModel {
    pub fn fit(sample: &RowSample, d: usize, k: usize, method: KnnMethod) -> Self {
        let rows: Vec<(Vec<f64>, u64)> = sample.rows().map(|(r, w)| (r.to_vec(), w)).collect();
        let mut order: Vec<usize> = (0..rows.len()).collect();
        let mut split_dims = vec![0u32; inner_nodes(rows.len())];
        let mut split_values = vec![0.0; split_dims.len()];
        build(
            &rows,
            &mut order,
            0,
            (&mut split_dims, &mut split_values),
            d,
        );
        KnnModel {
            k,
            method,
            d,
            points: (0..d)
                .flat_map(|j| order.iter().map(|&i| rows[i].0[j]).collect::<Vec<_>>())
                .collect(),
            weights: order.iter().map(|&i| rows[i].1).collect(),
            split_dims,
            split_values,
        }
    }

    /// Feature j of reference row i.
    #[inline]
    fn value(&self, i: usize, j: usize) -> f64 {
        self.points[j * self.weights.len() + i]
    }

    /// Whether the tree is one a query can trust: lengths, split features in range, and every
    /// left-half row at or below its split row's value, every right-half row at or above.
    pub fn validate(&self, width: usize) -> Result<(), String> {
        let n = self.weights.len();
        if self.d != width || self.points.len() != n * width {
            return Err(format!(
                "{} reference values for {n} rows of {width}",
                self.points.len()
            ));
        }
        if !(1..=MAX_NEIGHBOURS).contains(&self.k)
            || self.split_dims.len() != inner_nodes(n)
            || self.split_values.len() != self.split_dims.len()
        {
            return Err("the neighbour count or the tree's size does not fit its rows".into());
        }
        if !self
            .points
            .iter()
            .chain(&self.split_values)
            .all(|x| x.is_finite())
        {
            return Err("a reference or split value is not a finite number".into());
        }
        // Weights are counts of rows: at least 1, and small enough that k of them never overflow.
        if self.weights.iter().any(|&w| w == 0 || w > 1 << 53) {
            return Err("a reference row's weight is 0 or more than 2^53".into());
        }
        self.check_node(0, 0, n)
    }

    fn check_node(&self, node: usize, lo: usize, hi: usize) -> Result<(), String> {
        if hi - lo <= LEAF {
            return Ok(());
        }
        let dim = self.split_dims[node] as usize;
        if dim >= self.d {
            return Err(format!("node {node} splits on feature {dim} of {}", self.d));
        }
        let mid = lo + (hi - lo) / 2;
        let split = self.split_values[node];
        if (lo..mid).any(|i| self.value(i, dim) > split)
            || (mid..hi).any(|i| self.value(i, dim) < split)
        {
            return Err(format!("node {node} is not split at its row {mid}"));
        }
        self.check_node(2 * node + 1, lo, mid)?;
        self.check_node(2 * node + 2, mid, hi)
    }

    /// The k nearest (distance², weight, reference row) of `x`, nearest first, weights summing
    /// to k (fewer if the reference has fewer rows); one copy of an identical row left out.
    pub(crate) fn neighbours(&self, x: &[f64], offsets: &mut [f64]) -> Vec<Near> {
        let mut best = Neighbours {
            k: self.k as u64,
            total: 0,
            list: Vec::with_capacity(self.k + 1),
            skip_self: true,
        };
        offsets.fill(0.0);
        self.search(0, 0, self.weights.len(), x, 0.0, offsets, &mut best);
        best.list
    }

    /// Visits the node covering rows `lo..hi`, whose cell is at squared distance at least `rd`
    /// from `x`; `offsets[j]` is that cell's distance from `x` along feature j (Arya and Mount's
    /// incremental distance: a far child changes one offset, so its bound costs O(1) and is the
    /// distance to the whole cell, not only to the last split plane).
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        node: usize,
        lo: usize,
        hi: usize,
        x: &[f64],
        rd: f64,
        offsets: &mut [f64],
        best: &mut Neighbours,
    ) {
        if hi - lo <= LEAF {
            // Feature by feature over the leaf's rows: each row's sum still adds its features in
            // order, so the distances are the same bits as row by row.
            let n = self.weights.len();
            let mut d2 = [0.0f64; LEAF];
            for (j, &q) in x.iter().enumerate() {
                let col = &self.points[j * n + lo..j * n + hi];
                for (acc, &p) in d2.iter_mut().zip(col) {
                    *acc += (p - q) * (p - q);
                }
            }
            for (i, &dist) in (lo..hi).zip(&d2) {
                best.offer(dist, self.weights[i], i);
            }
            return;
        }
        let dim = self.split_dims[node] as usize;
        let mid = lo + (hi - lo) / 2;
        let gap = x[dim] - self.split_values[node];
        let (near, far) = if gap < 0.0 {
            ((2 * node + 1, lo, mid), (2 * node + 2, mid, hi))
        } else {
            ((2 * node + 2, mid, hi), (2 * node + 1, lo, mid))
        };
        self.search(near.0, near.1, near.2, x, rd, offsets, best);
        let old = offsets[dim];
        let far_rd = rd - old * old + gap * gap;
        // Slack for the rounding of `far_rd` (a few ulps of a sum of squares): never prune a cell
        // that might hold a row at the bound.
        if far_rd * (1.0 - 1e-12) <= best.bound() {
            offsets[dim] = gap.abs();
            self.search(far.0, far.1, far.2, x, far_rd, offsets, best);
            offsets[dim] = old;
        }
    }

    /// Reference row i's values into `out`.
    pub(crate) fn copy_row(&self, i: usize, out: &mut [f64]) {
        for (j, v) in out.iter_mut().enumerate() {
            *v = self.value(i, j);
        }
    }

    /// Each feature's share (summing to 1) of the squared distances from `x` to its neighbours,
    /// each neighbour counted by its weight; equal shares when every distance is 0.
    pub(crate) fn distance_shares(&self, x: &[f64], near: &[Near], out: &mut [f64]) {
        out.fill(0.0);
        for n in near {
            for (j, s) in out.iter_mut().enumerate() {
                let diff = x[j] - self.value(n.2, j);
                *s += n.1 as f64 * diff * diff;
            }
        }
        let total: f64 = out.iter().sum();
        let d = out.len() as f64;
        for s in out.iter_mut() {
            *s = if total > 0.0 { *s / total } else { 1.0 / d };
        }
    }

    /// Which of the k neighbours (by rank, expanded by weight) make the score, with their shares.
    fn shares(&self, near: &[Near]) -> Vec<(usize, f64)> {
        let k: u64 = near.iter().map(|n| n.1).sum();
        if k == 0 {
            return vec![];
        }
        match self.method {
            KnnMethod::Largest => vec![(k as usize - 1, 1.0)],
            KnnMethod::Mean => (0..k as usize).map(|r| (r, 1.0 / k as f64)).collect(),
            KnnMethod::Median if k % 2 == 1 => vec![(k as usize / 2, 1.0)],
            KnnMethod::Median => vec![(k as usize / 2 - 1, 0.5), (k as usize / 2, 0.5)],
        }
    }

    /// Feature j's part of the distance to the neighbour of rank r: (x_j − n_j)² / ‖x − n‖.
    fn split_over_features(
        &self,
        x: &[f64],
        near: &[Near],
        used: &[(usize, f64)],
        row: usize,
        out: &mut [Vec<f64>],
    ) {
        for &(rank, share) in used {
            let Some(n) = at_rank(near, rank) else {
                continue;
            };
            let dist = n.0.sqrt();
            if dist == 0.0 {
                continue;
            }
            for (j, part) in out.iter_mut().enumerate() {
                let diff = x[j] - self.value(n.2, j);
                part[row] += share * diff * diff / dist;
            }
        }
    }
}

/// (distance², weight, reference row).
pub(crate) type Near = (f64, u64, usize);

/// The neighbour of rank `r` (ranks expand each entry by its weight).
fn at_rank(near: &[Near], r: usize) -> Option<&Near> {
    let mut seen = 0u64;
    near.iter().find(|n| {
        seen += n.1;
        (r as u64) < seen
    })
}

/// The distance of the neighbour of rank `r`.
fn near_distance(near: &[Near], r: usize) -> f64 {
    at_rank(near, r).map_or(0.0, |n| n.0.sqrt())
}

/// The k nearest so far, nearest first.
struct Neighbours {
    k: u64,
    /// The weights held in `list`.
    total: u64,
    list: Vec<Near>,
    /// Leave out one copy of a row at distance 0 (the row itself).
    skip_self: bool,
}

impl Neighbours {
    #[inline]
    fn offer(&mut self, d2: f64, mut w: u64, row: usize) {
        if d2 == 0.0 && self.skip_self {
            self.skip_self = false;
            w -= 1;
        }
        if w == 0 || d2 > self.bound() {
            return;
        }
        let at = self.list.partition_point(|n| n.0 <= d2);
        self.list.insert(at, (d2, w, row));
        self.total += w;
        // Drop from the far end what the k nearest no longer need.
        while let Some(last) = self.list.last_mut() {
            if self.total - last.1 >= self.k {
                self.total -= last.1;
                self.list.pop();
            } else {
                if self.total > self.k {
                    last.1 -= self.total - self.k;
                    self.total = self.k;
                }
                break;
            }
        }
    }

    /// The squared distance a farther row must beat (∞ until k are held).
    #[inline]
    fn bound(&self) -> f64 {
        if self.total < self.k {
            f64::INFINITY
        } else {
            self.list.last().map_or(f64::INFINITY, |n| n.0)
        }
    }
}

/// Orders `order[..]` (rows of `rows`) as the tree at `node`: the split feature is the one of
/// largest spread, the split value the median row's, which starts the right half.
fn build(
    rows: &[(Vec<f64>, u64)],
    order: &mut [usize],
    node: usize,
    splits: (&mut [u32], &mut [f64]),
    d: usize,
) {
    let (dims, values) = splits;
    if order.len() <= LEAF {
        return;
    }
    let spread = |j: usize| {
        let (lo, hi) = order
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &i| {
                (lo.min(rows[i].0[j]), hi.max(rows[i].0[j]))
            });
        hi - lo
    };
    let dim = (0..d)
        .max_by(|&a, &b| spread(a).total_cmp(&spread(b)).then(b.cmp(&a)))
        .unwrap_or(0);
    dims[node] = dim as u32;
    let mid = order.len() / 2;
    order.select_nth_unstable_by(mid, |&a, &b| {
        rows[a].0[dim].total_cmp(&rows[b].0[dim]).then(a.cmp(&b))
    });
    values[node] = rows[order[mid]].0[dim];
    let (left, right) = order.split_at_mut(mid);
    build(rows, left, 2 * node + 1, (&mut *dims, &mut *values), d);
    build(rows, right, 2 * node + 2, (dims, values), d);
}

impl WholeRowScorer for KnnModel {
    /// Scores and, per feature, the parts that sum to them.
    fn score_rows(&self, cols: &[&[f64]], len: usize, parts: bool) -> (Vec<f64>, Vec<Vec<f64>>) {
        let mut scores = vec![0.0; len];
        let mut split = part_columns(parts, self.d, len);
        let mut x = vec![0.0; self.d];
        let mut offsets = vec![0.0; self.d];
        for i in 0..len {
            for (v, c) in x.iter_mut().zip(cols) {
                *v = c[i];
            }
            let near = self.neighbours(&x, &mut offsets);
            // The neighbours (by rank among the k) the score is made of, with their shares.
            let used = self.shares(&near);
            scores[i] = used.iter().map(|&(r, s)| s * near_distance(&near, r)).sum();
            if parts {
                self.split_over_features(&x, &near, &used, i, &mut split);
            }
        }
        (scores, split)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::DeterministicRng;

    fn sample(n: usize, d: usize) -> (RowSample, Vec<Vec<f64>>) {
        let mut rng = DeterministicRng::new(11);
        let mut s = RowSample::new(100_000, d, 1);
        let mut rows = Vec::new();
        for _ in 0..n {
            let r: Vec<f64> = (0..d).map(|_| rng.next_f64() * 10.0).collect();
            s.offer(&r);
            rows.push(r);
        }
        s.compact();
        (s, rows)
    }

    #[test]
    fn the_tree_finds_what_brute_force_finds() {
        let (s, rows) = sample(1_200, 3);
        for method in [KnnMethod::Largest, KnnMethod::Mean, KnnMethod::Median] {
            let model = KnnModel::fit(&s, 3, 5, method);
            model.validate(3).unwrap();
            let cols = super::super::columns_of(&rows, 3);
            let refs: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
            let (scores, parts) = model.score_rows(&refs, rows.len(), true);
            for (i, x) in rows.iter().enumerate() {
                let mut d: Vec<f64> = rows
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, r)| {
                        r.iter()
                            .zip(x)
                            .map(|(a, b)| (a - b) * (a - b))
                            .sum::<f64>()
                            .sqrt()
                    })
                    .collect();
                d.sort_by(f64::total_cmp);
                let want = match method {
                    KnnMethod::Largest => d[4],
                    KnnMethod::Mean => d[..5].iter().sum::<f64>() / 5.0,
                    KnnMethod::Median => d[2],
                };
                assert!(
                    (scores[i] - want).abs() <= 1e-12 * want,
                    "{method:?} row {i}: {} vs {want}",
                    scores[i]
                );
                let sum: f64 = parts.iter().map(|p| p[i]).sum();
                assert!((sum - scores[i]).abs() <= 1e-9 * scores[i]);
            }
        }
    }
}

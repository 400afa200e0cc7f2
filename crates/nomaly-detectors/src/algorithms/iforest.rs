//! Isolation forest (Liu, Ting & Zhou 2008) with scikit-learn's semantics: `n_trees` trees, each grown
//! on `sample_size` rows (ψ) to depth ceil(log2 ψ); a node splits a random non-constant feature at a
//! uniform threshold in its (min, max); the score is `2^(-E[h(x)] / c(ψ))` with
//! `h = depth + c(leaf size)`, in (0, 1], higher = more anomalous (scikit-learn's `-score_samples`).
//!
//! The trees' rows come from the fit's bottom-k hash sample, whose order is a seeded random
//! permutation: with at least `n_trees · ψ` distinct rows, tree t takes rows [tψ, (t+1)ψ) of it — a
//! uniform sample without replacement, disjoint between trees. Smaller inputs draw each tree's rows
//! from the whole (distinct) input with a seeded generator. A sample row that stands for several
//! input rows (a repeated row: low-cardinality or text data) is drawn as that many rows, as
//! scikit-learn draws from the input ([`TreePool`]); ψ is then at most the input's row count, not
//! its distinct rows. Either way the forest is a function of the data and the seed only.

use crate::fit::FitState;
use crate::hashing::{DeterministicRng, mix64};
use crate::sample::RowSample;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

mod grow;
mod heap;
mod rank_walk;
use grow::{RowMajor, build};
pub(crate) use grow::{TreePool, tree_rows};
use heap::{HeapTree, for_each_block};
use rank_walk::RankForest;

const LEAF: u32 = u32::MAX;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Split feature, or `LEAF`.
    pub feature: u32,
    /// Split threshold (go left when x ≤ threshold); for a leaf, its path length depth + c(size).
    pub value: f64,
    pub left: u32,
    pub right: u32,
}

/// One node of a [`FlatTree`], 16 bytes: a step reads one cache line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FlatNode {
    pub threshold: f64,
    pub feature: u32,
    pub child: u32,
}

/// A tree laid out for branch-free scoring: the children of node n are `child` (x ≤ threshold) and
/// `child + 1`; a leaf is its own child with threshold +∞, so every row takes exactly `depth`
/// steps with no data-dependent branch, and the rows of a block overlap their memory loads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatTree {
    pub nodes: Vec<FlatNode>,
    /// Path length depth + c(size) at leaves (0 for internal nodes).
    pub leaf_value: Vec<f64>,
    /// Longest root-to-leaf path.
    pub depth: usize,
}

const LEAF_NODE: FlatNode = FlatNode {
    threshold: f64::INFINITY,
    feature: 0,
    child: 0,
};

impl FlatTree {
    /// Re-lays a pointer tree breadth-first so siblings are adjacent.
    fn from_nodes(nodes: &[Node]) -> Self {
        // Sized once: per-segment models grow thousands of forests, and the vectors' regrowth was
        // a tenth of a segmented iforest run.
        let mut t = FlatTree {
            nodes: Vec::with_capacity(nodes.len()),
            leaf_value: Vec::with_capacity(nodes.len()),
            depth: 0,
        };
        t.nodes.push(LEAF_NODE);
        t.leaf_value.push(0.0);
        // (old index, new index, depth)
        let mut queue = std::collections::VecDeque::with_capacity(nodes.len());
        queue.push_back((0usize, 0usize, 0usize));
        while let Some((old, new, depth)) = queue.pop_front() {
            let n = &nodes[old];
            if n.feature == LEAF {
                t.nodes[new].child = new as u32;
                t.leaf_value[new] = n.value;
                t.depth = t.depth.max(depth);
                continue;
            }
            let first = t.nodes.len();
            t.nodes[new] = FlatNode {
                threshold: n.value,
                feature: n.feature,
                child: first as u32,
            };
            for (k, old_child) in [n.left, n.right].into_iter().enumerate() {
                t.nodes.push(LEAF_NODE);
                t.leaf_value.push(0.0);
                queue.push_back((old_child as usize, first + k, depth + 1));
            }
        }
        t
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IsolationForestModel {
    pub trees: Vec<FlatTree>,
    /// ψ actually used.
    pub sample_size: usize,
    /// c(ψ).
    pub normaliser: f64,
    /// The trees re-laid for scoring, built on first use (derived, not serialised).
    #[serde(skip)]
    layout: OnceLock<ScoringLayout>,
}

/// How [`IsolationForestModel::score`] walks the trees; every layout gives the same bits.
#[derive(Debug, Clone)]
enum ScoringLayout {
    /// Threshold ranks, 8–32 rows per instruction (AVX2 or AVX-512BW, trees at most 8 deep).
    Ranked(RankForest),
    /// Perfect trees in heap order, eight rows side by side.
    Heap(Vec<HeapTree>),
    /// Trees deeper than `MAX_HEAP_DEPTH`: the breadth-first pointer layout.
    Pointer,
}

/// A tree walk to score with, for comparing them ([`IsolationForestModel::with_walk`]); scoring
/// otherwise picks the fastest the CPU and the trees allow. All give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeWalk {
    /// The fastest of the walks this CPU and these trees allow, timed on this forest when the
    /// model is first used (see [`IsolationForestModel::score`]).
    Fastest,
    /// Threshold ranks, 32 rows per instruction with AVX-512BW.
    Avx512Ranks,
    /// Threshold ranks, 16 rows per instruction with AVX2 byte shuffles (no gathers).
    Avx2Shuffle,
    /// Threshold ranks, 8 rows per instruction with AVX2, deep levels gathered.
    Avx2Ranks,
    /// Threshold ranks, 8 rows per instruction with NEON (64-bit ARM).
    NeonRanks,
    /// Heap-ordered trees, one row at a time (what CPUs without AVX2 or NEON use).
    RowByRow,
}

impl TreeWalk {
    pub const ALL: [TreeWalk; 6] = [
        TreeWalk::Fastest,
        TreeWalk::Avx512Ranks,
        TreeWalk::Avx2Shuffle,
        TreeWalk::Avx2Ranks,
        TreeWalk::NeonRanks,
        TreeWalk::RowByRow,
    ];

    /// The rank-walk kernel this walk runs (`None` for the heap and pointer walks).
    fn rank_kernel(self) -> Option<rank_walk::Kernel> {
        match self {
            TreeWalk::Avx512Ranks => Some(rank_walk::Kernel::Avx512),
            TreeWalk::Avx2Shuffle => Some(rank_walk::Kernel::Avx2Shuffle),
            TreeWalk::Avx2Ranks => Some(rank_walk::Kernel::Avx2),
            TreeWalk::NeonRanks => Some(rank_walk::Kernel::Neon),
            TreeWalk::Fastest | TreeWalk::RowByRow => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TreeWalk::Fastest => "fastest",
            TreeWalk::Avx512Ranks => "avx512",
            TreeWalk::Avx2Shuffle => "shuffle",
            TreeWalk::Avx2Ranks => "avx2",
            TreeWalk::NeonRanks => "neon",
            TreeWalk::RowByRow => "rows",
        }
    }
}

fn heap_trees(trees: &[FlatTree], width: usize) -> Option<Vec<HeapTree>> {
    trees
        .iter()
        .map(|t| HeapTree::from_flat(t, width))
        .collect()
}

impl ScoringLayout {
    /// The fastest walk for these trees on this CPU. Which one that is depends on the core more
    /// than on its instruction set (AVX2 gathers are several times dearer on AMD's Zen than on
    /// Intel's cores), so the first forest of each width in a process times every walk the CPU and
    /// the trees allow on rows drawn around its own thresholds (a few milliseconds in all), and
    /// later forests of that width (thousands, with per-segment models) take the fastest walk of
    /// that ranking they allow. All give the same bits, so the choice changes speed only.
    fn new(trees: &[FlatTree], width: usize) -> Self {
        static RANKING: Mutex<BTreeMap<usize, Vec<TreeWalk>>> = Mutex::new(BTreeMap::new());
        let known = RANKING.lock().ok().and_then(|r| r.get(&width).cloned());
        if let Some(ranking) = known {
            // Only the walk ranked fastest is laid out: laying out every candidate (a rank forest
            // per kernel) cost more than scoring a thousand-row segment with the one chosen.
            return Self::first_allowed(&ranking, trees, width);
        }
        let Some(heap) = heap_trees(trees, width) else {
            return ScoringLayout::Pointer;
        };
        let mut candidates = Vec::new();
        if let Some(ranked) = RankForest::new(trees, width) {
            for kernel in ranked.kernels() {
                candidates.extend(
                    ranked
                        .clone()
                        .with_kernel(kernel)
                        .map(ScoringLayout::Ranked),
                );
            }
        }
        candidates.push(ScoringLayout::Heap(heap));
        if candidates.len() == 1 {
            return candidates.remove(0);
        }
        let ranking = Self::time_walks(&candidates, trees, width);
        if let Ok(mut all) = RANKING.lock() {
            all.insert(width, ranking.clone());
        }
        let rank = |l: &ScoringLayout| ranking.iter().position(|w| *w == l.walk());
        let best = (0..candidates.len())
            .min_by_key(|&i| rank(&candidates[i]).unwrap_or(usize::MAX))
            .unwrap_or(0);
        candidates.swap_remove(best)
    }

    /// The first walk of `ranking` these trees allow, laid out; the heap walk, which every
    /// shallow forest allows, when no rank walk ranks above it (the pointer walk for deeper ones).
    fn first_allowed(ranking: &[TreeWalk], trees: &[FlatTree], width: usize) -> Self {
        // the rank walks ranked above the heap walk, fastest first
        let kernels: Vec<rank_walk::Kernel> =
            ranking.iter().map_while(|w| w.rank_kernel()).collect();
        // A rank forest is laid out from the trees themselves, without the heap trees, which
        // per-segment forests built only to drop them.
        if !kernels.is_empty()
            && let Some(forest) = RankForest::new(trees, width)
        {
            let allowed = forest.kernels();
            if let Some(kernel) = kernels.into_iter().find(|k| allowed.contains(k))
                && let Some(ranked) = forest.with_kernel(kernel)
            {
                return ScoringLayout::Ranked(ranked);
            }
        }
        heap_trees(trees, width).map_or(ScoringLayout::Pointer, ScoringLayout::Heap)
    }

    /// The candidates' walks, fastest first (the best of three runs each).
    fn time_walks(candidates: &[ScoringLayout], trees: &[FlatTree], width: usize) -> Vec<TreeWalk> {
        let cols = calibration_rows(trees, width, CALIBRATION_ROWS);
        let views: Vec<&[f64]> = cols.iter().map(Vec::as_slice).collect();
        let mut out = vec![0.0; CALIBRATION_ROWS];
        let mut timed: Vec<(std::time::Duration, TreeWalk)> = candidates
            .iter()
            .map(|layout| {
                let best = (0..3)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        layout.add_path_lengths(trees, &views, CALIBRATION_ROWS, &mut out);
                        std::hint::black_box(&out);
                        t.elapsed()
                    })
                    .min()
                    .unwrap_or_default();
                (best, layout.walk())
            })
            .collect();
        timed.sort_by_key(|t| t.0);
        timed.into_iter().map(|t| t.1).collect()
    }

    fn add_path_lengths(&self, flat: &[FlatTree], cols: &[&[f64]], len: usize, out: &mut [f64]) {
        match self {
            ScoringLayout::Ranked(ranked) => ranked.add_path_lengths(cols, len, out),
            ScoringLayout::Heap(trees) => for_each_block(cols, len, out, |block, n, out| {
                trees.iter().for_each(|t| t.add_path_lengths(block, n, out))
            }),
            ScoringLayout::Pointer => for_each_block(cols, len, out, |block, n, out| {
                for tree in flat {
                    let mut at = [0u32; BLOCK];
                    for _ in 0..tree.depth {
                        for (k, a) in at.iter_mut().enumerate() {
                            let node = tree.nodes[*a as usize];
                            let x = block[node.feature as usize * BLOCK + k];
                            *a = node.child + u32::from(x > node.threshold);
                        }
                    }
                    for (d, a) in out.iter_mut().zip(&at[..n]) {
                        *d += tree.leaf_value[*a as usize];
                    }
                }
            }),
        }
    }

    /// Which walk this is (for [`IsolationForestModel::walk`]).
    fn walk(&self) -> TreeWalk {
        match self {
            ScoringLayout::Ranked(r) => match r.kernel() {
                rank_walk::Kernel::Avx512 => TreeWalk::Avx512Ranks,
                rank_walk::Kernel::Avx2Shuffle => TreeWalk::Avx2Shuffle,
                rank_walk::Kernel::Avx2 => TreeWalk::Avx2Ranks,
                rank_walk::Kernel::Neon => TreeWalk::NeonRanks,
            },
            ScoringLayout::Heap(_) | ScoringLayout::Pointer => TreeWalk::RowByRow,
        }
    }
}

/// Rows timed per walk when choosing one.
const CALIBRATION_ROWS: usize = 2048;

/// Rows whose values sit on, just below and just above the forest's thresholds, feature by
/// feature at random (a fixed seed): rows that reach every level the way real rows do.
fn calibration_rows(trees: &[FlatTree], width: usize, rows: usize) -> Vec<Vec<f64>> {
    let mut thresholds = vec![Vec::new(); width];
    for tree in trees {
        for node in tree.nodes.iter().filter(|n| n.threshold.is_finite()) {
            if let Some(t) = thresholds.get_mut(node.feature as usize) {
                t.push(node.threshold);
            }
        }
    }
    let mut rng = DeterministicRng::new(0x6361_6c69_6272_6174);
    thresholds
        .iter()
        .map(|t| {
            (0..rows)
                .map(|_| {
                    let u = rng.next_u64();
                    match t.len() {
                        0 => 0.0,
                        n => {
                            let x = t[(u % n as u64) as usize];
                            if u >> 63 == 1 { x.next_up() } else { x }
                        }
                    }
                })
                .collect()
        })
        .collect()
}

/// `2^(-mean path length / c(ψ))` from path lengths summed over `n_trees` trees (see
/// [`IsolationForestModel`]'s scoring for why `libm`'s `exp2`).
pub(crate) fn scores_from_path_sums(sums: Vec<f64>, n_trees: usize, normaliser: f64) -> Vec<f64> {
    let n_trees = n_trees.max(1) as f64;
    let c = if normaliser > 0.0 { normaliser } else { 1.0 };
    sums.into_iter()
        .map(|d| libm::exp2(-(d / n_trees) / c))
        .collect()
}

impl PartialEq for IsolationForestModel {
    fn eq(&self, other: &Self) -> bool {
        self.trees == other.trees
            && self.sample_size == other.sample_size
            && self.normaliser == other.normaliser
    }
}

/// Rows scored together: the block's features stay in L1 while every tree walks them.
pub(super) const BLOCK: usize = 64;
/// Average path length of an unsuccessful BST search among n points (scikit-learn's definition).
pub fn average_path_length(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n <= 2.0 {
        1.0
    } else {
        // libm's log, not the platform's: see `scores_from_depth_sums`
        2.0 * (libm::log(n - 1.0) + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
    }
}

impl IsolationForestModel {
    /// Grows the forest from `sample`, the state's row sample compacted.
    pub fn fit(state: &FitState, sample: &RowSample) -> Self {
        let p = &state.params;
        let width = state.n_features;
        let pool = TreePool::new(sample);
        let psi = p.sample_size.min(pool.total()).max(1);
        let max_depth = p
            .max_depth
            .unwrap_or_else(|| (psi.max(2) as f64).log2().ceil() as usize);
        let mut trees = Vec::with_capacity(p.n_trees);
        // Buffers reused by every tree: with per-segment models a fit builds thousands of forests,
        // and their allocations cost as much as the trees.
        let mut shuffled: Vec<usize> = Vec::new();
        let mut data: Vec<f64> = Vec::with_capacity(psi * width);
        let mut idx: Vec<usize> = Vec::with_capacity(psi);
        let mut nodes: Vec<Node> = Vec::with_capacity(2 * psi);
        for t in 0..p.n_trees {
            let mut rng = DeterministicRng::new(mix64(p.seed ^ mix64(t as u64 + 1)));
            tree_rows(
                &pool,
                (t, p.n_trees, psi),
                &mut rng,
                &mut shuffled,
                &mut data,
            );
            nodes.clear();
            let n = data.len() / width.max(1);
            if n == 0 {
                nodes.push(Node {
                    feature: LEAF,
                    value: 0.0,
                    left: 0,
                    right: 0,
                });
            } else {
                idx.clear();
                idx.extend(0..n);
                let rows = RowMajor { data: &data, width };
                build(&rows, &mut idx, 0, max_depth, &mut rng, &mut nodes);
            }
            trees.push(FlatTree::from_nodes(&nodes));
        }
        Self {
            trees,
            sample_size: psi,
            normaliser: average_path_length(psi as f64),
            layout: OnceLock::new(),
        }
    }

    /// The same model scoring `width` features with the given walk; `None` when the CPU lacks the
    /// instructions or the trees are too deep for it.
    pub fn with_walk(self, walk: TreeWalk, width: usize) -> Option<Self> {
        let layout = match (walk, walk.rank_kernel()) {
            (TreeWalk::Fastest, _) => ScoringLayout::new(&self.trees, width),
            (_, Some(kernel)) => {
                ScoringLayout::Ranked(RankForest::new(&self.trees, width)?.with_kernel(kernel)?)
            }
            (_, None) => ScoringLayout::Heap(heap_trees(&self.trees, width)?),
        };
        let model = Self {
            layout: OnceLock::new(),
            ..self
        };
        model.layout.set(layout).ok()?;
        Some(model)
    }

    /// Scores rows given as feature columns.
    pub fn score(&self, cols: &[&[f64]], len: usize) -> Vec<f64> {
        let layout = self
            .layout
            .get_or_init(|| ScoringLayout::new(&self.trees, cols.len()));
        self.score_with(layout, cols, len)
    }

    /// The walk scoring uses (chosen on first use, for `width` features).
    pub fn walk(&self, width: usize) -> TreeWalk {
        self.layout
            .get_or_init(|| ScoringLayout::new(&self.trees, width))
            .walk()
    }

    fn score_with(&self, layout: &ScoringLayout, cols: &[&[f64]], len: usize) -> Vec<f64> {
        let mut depth_sum = vec![0.0f64; len];
        layout.add_path_lengths(&self.trees, cols, len, &mut depth_sum);
        self.scores_from_depth_sums(depth_sum)
    }

    /// `2^(-mean path length / c(ψ))` from the path lengths summed over trees.
    ///
    /// The power is the `libm` crate's `exp2`, plain IEEE arithmetic in Rust, not the C library's
    /// `pow`: glibc picks an FMA variant of `pow` on x86-64 and is built with FMA on ARM, and the
    /// two round some results differently (`scripts/aarch64.sh` found the same forest scoring
    /// different bits on aarch64). Basic operations round the same everywhere, so these scores do
    /// too. `exp2`, not `libm::pow(2, y)`: 8 ns a call against 61 (glibc's `pow`: 4), which at
    /// 10M rows was a tenth of a second per core.
    fn scores_from_depth_sums(&self, depth_sum: Vec<f64>) -> Vec<f64> {
        scores_from_path_sums(depth_sum, self.trees.len(), self.normaliser)
    }

    /// Splits on each feature along a row's paths, summed over trees (path-length attribution).
    pub fn split_counts(&self, row: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        for tree in &self.trees {
            let mut at = 0usize;
            while tree.nodes[at].child as usize != at {
                let node = tree.nodes[at];
                let f = node.feature as usize;
                out[f] += 1.0;
                at = node.child as usize + usize::from(row[f] > node.threshold);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Algorithm, DetectorParams};
    use arrow_array::{ArrayRef, Float64Array};
    use std::sync::Arc;

    /// A forest of `n_trees` over `width` random features (the last one constant on every third
    /// row, so some nodes see it constant), and the columns it was fitted on.
    fn forest(
        max_depth: Option<usize>,
        sample_size: usize,
        rows: usize,
        width: usize,
        n_trees: usize,
    ) -> (IsolationForestModel, Vec<Vec<f64>>) {
        let mut rng = DeterministicRng::new(5);
        let cols: Vec<Vec<f64>> = (0..width)
            .map(|j| {
                (0..rows)
                    .map(|i| {
                        if width > 1 && j + 1 == width && i % 3 == 0 {
                            1.0
                        } else {
                            rng.next_f64() * (j + 1) as f64
                        }
                    })
                    .collect()
            })
            .collect();
        let mut params = DetectorParams::new(Algorithm::IsolationForest);
        params.max_depth = max_depth;
        params.n_trees = n_trees;
        params.sample_size = sample_size;
        let mut fit = FitState::new(params, width);
        let arrays: Vec<ArrayRef> = cols
            .iter()
            .map(|c| Arc::new(Float64Array::from(c.clone())) as ArrayRef)
            .collect();
        fit.update(&arrays).unwrap();
        (IsolationForestModel::fit(&fit, &fit.compact_sample()), cols)
    }

    /// Columns that put rows exactly on, just below and just above every threshold, plus signed
    /// zeros and non-finite values: where a walk in another layout could go the other way.
    fn rows_on_thresholds(model: &IsolationForestModel, width: usize) -> Vec<Vec<f64>> {
        let mut cols = vec![vec![0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY]; width];
        for tree in &model.trees {
            for node in tree.nodes.iter().filter(|n| n.threshold.is_finite()) {
                let t = node.threshold;
                cols[node.feature as usize].extend([t, t.next_down(), t.next_up()]);
            }
        }
        let rows = cols.iter().map(Vec::len).max().unwrap_or(0);
        for (f, col) in cols.iter_mut().enumerate() {
            // cycle each column to the longest, offset per feature so rows mix features' cuts
            let base = col.clone();
            col.clear();
            col.extend((0..rows).map(|i| base[(i + f * 7) % base.len()]));
        }
        cols
    }

    #[test]
    fn every_layout_scores_the_same_bits() {
        // (max_depth, sample_size, width, n_trees): every feature-choice width the rank walk
        // compiles (1, 2, 4, 8, 16, 32 lanes of features), tree counts with and without a group
        // of four left over, trees of mixed depths, and trees too deep for the rank walk
        let cases = [
            (None, 256, 3, 20),
            (Some(3), 256, 3, 20),
            (Some(11), 256, 3, 20),
            (None, 256, 1, 7),
            (None, 16, 2, 5),
            (Some(5), 256, 6, 9),
            (None, 256, 9, 6),
            (None, 64, 20, 3),
        ];
        for (max_depth, sample_size, width, n_trees) in cases {
            let case =
                format!("max_depth {max_depth:?}, ψ {sample_size}, width {width}, {n_trees} trees");
            let (model, mut cols) = forest(max_depth, sample_size, 5_000, width, n_trees);
            // 1_234 random rows: a partial last block
            cols.iter_mut().for_each(|c| c.truncate(1_234));
            let edges = rows_on_thresholds(&model, width);
            for (col, extra) in cols.iter_mut().zip(edges) {
                col.extend(extra);
            }
            let views: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
            let len = views[0].len();
            let bits = |layout: &ScoringLayout| -> Vec<u64> {
                let scores = model.score_with(layout, &views, len);
                scores.iter().map(|v| v.to_bits()).collect()
            };
            let plain = bits(&ScoringLayout::Pointer);
            // the first row whose score differs, not two vectors of thousands of bits
            let same = |layout: &ScoringLayout, name: &str| {
                let got = bits(layout);
                let first = got.iter().zip(&plain).position(|(a, b)| a != b);
                assert!(
                    first.is_none(),
                    "{name}, {case}: row {first:?} differs from the pointer walk"
                );
            };
            let heap: Vec<HeapTree> = model
                .trees
                .iter()
                .map(|t| HeapTree::from_flat(t, width).expect("shallow enough"))
                .collect();
            same(&ScoringLayout::Heap(heap.clone()), "heap");
            match RankForest::new(&model.trees, width) {
                Some(ranked) => {
                    let kernels = ranked.kernels();
                    if width <= 16 && rank_walk::cpu_has_avx2() {
                        assert!(
                            kernels.contains(&rank_walk::Kernel::Avx2Shuffle),
                            "{case}: no shuffle walk"
                        );
                    }
                    if width <= 16 && cfg!(target_arch = "aarch64") {
                        assert!(
                            kernels.contains(&rank_walk::Kernel::Neon),
                            "{case}: no NEON walk"
                        );
                    }
                    for kernel in kernels {
                        let walk = ranked.clone().with_kernel(kernel).unwrap();
                        same(&ScoringLayout::Ranked(walk), &format!("ranks, {kernel:?}"));
                    }
                }
                None => assert!(
                    max_depth == Some(11)
                        || !(rank_walk::cpu_has_avx512bw()
                            || cfg!(target_arch = "aarch64") && width <= 16),
                    "ranks refused {case} on an AVX-512BW or ARM CPU"
                ),
            }
        }
    }

    #[test]
    fn splits_are_drawn_across_ranges_wider_than_the_largest_double() {
        let mut rng = DeterministicRng::new(9);
        let values: Vec<f64> = (0..2_000)
            .map(|_| (rng.next_f64() * 2.0 - 1.0) * 1.7e308)
            .collect();
        let mut fit = FitState::new(DetectorParams::new(Algorithm::IsolationForest), 1);
        let column: ArrayRef = Arc::new(Float64Array::from(values.clone()));
        fit.update(&[column]).unwrap();
        let model = IsolationForestModel::fit(&fit, &fit.compact_sample());
        let thresholds: Vec<f64> = model
            .trees
            .iter()
            .flat_map(|t| t.nodes.iter().map(|n| n.threshold))
            .filter(|t| !t.is_infinite())
            .collect();
        assert!(thresholds.iter().all(|t| !t.is_nan()));
        // drawn between values, not pinned to each node's minimum (what an infinite range gave)
        let at_a_value = thresholds.iter().filter(|t| values.contains(t)).count();
        assert!(
            at_a_value * 10 < thresholds.len(),
            "{at_a_value} of {} thresholds sit on a value",
            thresholds.len()
        );
    }

    #[test]
    fn deep_trees_fall_back_and_bad_structure_is_rejected() {
        let (model, _) = forest(Some(14), 4096, 40_000, 3, 20);
        assert!(model.trees.iter().any(|t| t.depth > heap::MAX_HEAP_DEPTH));
        assert!(model.validate(3).is_ok());
        assert!(model.validate(2).is_err(), "feature 2 is outside width 2");
        let mut broken = model.clone();
        broken.trees[0].nodes[0].child = 1_000_000;
        assert!(broken.validate(3).is_err());
    }
}

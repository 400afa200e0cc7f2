//! The mergeable fit state shared by every detector.
//!
//! A [`FitState`] is what one partition learns from its rows: per-feature exact sums (z-score),
//! quantile sketches (robust z-score, IQR, HBOS, ECOD, COPOD), exact min/max, and a bottom-k hash
//! sample of rows (isolation trees, and the threshold for every detector). Each part merges exactly,
//! so `finish()` returns the same bits however the rows were split and in whatever order the partial
//! states were merged.

use crate::algorithms::covariance::{CrossProducts, LARGEST_COVARIANCE_VALUE};
use crate::categorical::CategoryCounts;
use crate::error::{DetectorError, Result};
use crate::exact_sum::{ExactSquareSum, ExactSum, SparseExactSum};
use crate::features::Features;
use crate::hashing::{hash_column, row_hash_start};
use crate::model::Model;
use crate::params::{Algorithm, DetectorParams, MAX_COVARIANCE_FEATURES};
use crate::quantile::QuantileSketch;
use crate::sample::RowSample;
use arrow_array::ArrayRef;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    pub(crate) sum: Option<SparseOrDense>,
    pub(crate) sum_sq: Option<ExactSquareSum>,
    pub(crate) sketch: Option<QuantileSketch>,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

/// An [`ExactSum`] that serialises sparsely.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "SparseExactSum", into = "SparseExactSum")]
pub struct SparseOrDense(pub ExactSum);

impl From<SparseExactSum> for SparseOrDense {
    fn from(s: SparseExactSum) -> Self {
        SparseOrDense(ExactSum::from_sparse(&s))
    }
}

impl From<SparseOrDense> for SparseExactSum {
    fn from(s: SparseOrDense) -> Self {
        s.0.to_sparse()
    }
}

impl FeatureStats {
    fn new(algorithm: Algorithm) -> Self {
        let (sum, sum_sq, sketch) = match algorithm {
            Algorithm::ZScore => (true, true, false),
            Algorithm::RobustZScore
            | Algorithm::Iqr
            | Algorithm::Hbos
            | Algorithm::Ecod
            | Algorithm::Copod => (false, false, true),
            Algorithm::IsolationForest
            | Algorithm::Mcd
            | Algorithm::Knn
            | Algorithm::Lof
            | Algorithm::Loda
            | Algorithm::Eif => (false, false, false),
            // The squares are the diagonal of the fit's cross products.
            Algorithm::Pca | Algorithm::Mahalanobis => (true, false, false),
        };
        Self {
            sum: sum.then(|| SparseOrDense(ExactSum::new())),
            sum_sq: sum_sq.then(ExactSquareSum::default),
            sketch: sketch.then(QuantileSketch::new),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn merge(&mut self, other: &FeatureStats) {
        if let (Some(a), Some(b)) = (&mut self.sum, &other.sum) {
            a.0.merge(&b.0);
        }
        if let (Some(a), Some(b)) = (&mut self.sum_sq, &other.sum_sq) {
            a.merge(b);
        }
        if let (Some(a), Some(b)) = (&mut self.sketch, &other.sketch) {
            a.merge(b);
        }
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// Minimum and maximum of finite values, in eight independent lanes: one running `min` is a chain
/// of dependent instructions, eight are a vector. The result is the same (min and max of a set of
/// finite values do not depend on order; ±0 is made canonical by the caller).
fn min_max(values: &[f64]) -> (f64, f64) {
    let mut lo = [f64::INFINITY; 8];
    let mut hi = [f64::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for k in 0..8 {
            lo[k] = if chunk[k] < lo[k] { chunk[k] } else { lo[k] };
            hi[k] = if chunk[k] > hi[k] { chunk[k] } else { hi[k] };
        }
    }
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for k in 0..8 {
        min = min.min(lo[k]);
        max = max.max(hi[k]);
    }
    for &x in rest {
        min = min.min(x);
        max = max.max(x);
    }
    (min, max)
}

/// Partial fit of one detector over some rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitState {
    pub(crate) params: DetectorParams,
    pub(crate) n_features: usize,
    /// Rows used (all features finite).
    pub(crate) rows: u64,
    /// Rows skipped for a null/NaN/±Inf feature.
    pub(crate) skipped: u64,
    pub(crate) features: Vec<FeatureStats>,
    pub(crate) sample: RowSample,
    /// pca: the exact sums of every product of two features.
    pub(crate) products: Option<CrossProducts>,
    /// Which features are text, once a batch has been seen, with their category counts.
    pub(crate) categories: Option<Vec<Option<CategoryCounts>>>,
}

impl FitState {
    pub fn new(params: DetectorParams, n_features: usize) -> Self {
        let features = (0..n_features)
            .map(|_| FeatureStats::new(params.algorithm))
            .collect();
        let sample = RowSample::new(params.effective_sample_rows(), n_features, params.seed);
        let products = (params.algorithm.uses_covariance()
            && n_features <= MAX_COVARIANCE_FEATURES)
            .then(|| CrossProducts::new(n_features));
        Self {
            params,
            n_features,
            rows: 0,
            skipped: 0,
            features,
            sample,
            products,
            categories: None,
        }
    }

    pub fn params(&self) -> &DetectorParams {
        &self.params
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Per feature, whether it is text (all false before the first batch and for numbers).
    pub(crate) fn text_features(&self) -> Vec<bool> {
        match &self.categories {
            Some(c) => c.iter().map(Option::is_some).collect(),
            None => vec![false; self.n_features],
        }
    }

    pub fn skipped_rows(&self) -> u64 {
        self.skipped
    }

    /// Learns from a batch of feature columns.
    pub fn update(&mut self, columns: &[ArrayRef]) -> Result<()> {
        if columns.len() != self.n_features {
            return Err(DetectorError::FeatureCountMismatch {
                expected: self.n_features,
                actual: columns.len(),
            });
        }
        let f = Features::from_arrays(columns)?;
        self.update_categories(&f)?;
        if self.params.algorithm.uses_covariance() {
            self.check_covariance(&f)?;
        }
        if let Some(level) = self
            .params
            .extension_level
            .filter(|&e| e >= self.n_features)
        {
            return Err(DetectorError::InvalidOption {
                name: "extension_level".into(),
                value: level.to_string(),
                expected: format!(
                    "at most the number of features minus one ({})",
                    self.n_features - 1
                ),
            });
        }
        self.update_features(&f);
        Ok(())
    }

    /// Checks which features are text (the same in every batch, and only for detectors that take
    /// them) and counts their categories.
    fn update_categories(&mut self, f: &Features<'_>) -> Result<()> {
        if let Some(j) = f.categorical.iter().position(|c| *c)
            && !self.params.algorithm.takes_categorical()
        {
            return Err(DetectorError::CategoricalNotSupported {
                index: j + 1,
                algorithm: self.params.algorithm.name().to_string(),
            });
        }
        let counts = self.categories.get_or_insert_with(|| {
            f.categorical
                .iter()
                .map(|c| c.then(CategoryCounts::default))
                .collect()
        });
        for (j, (kept, col)) in counts.iter_mut().zip(&f.columns).enumerate() {
            match (kept, f.categorical[j]) {
                (Some(c), true) => c.add(j + 1, col, &f.valid)?,
                (None, false) => {}
                (kept, _) => return Err(kind_mismatch(j, kept.is_some())),
            }
        }
        Ok(())
    }

    /// What pca and mahalanobis cannot take: more features than [`MAX_COVARIANCE_FEATURES`], more
    /// components than features, values whose products overflow.
    fn check_covariance(&self, f: &Features<'_>) -> Result<()> {
        let p = &self.params;
        if self.n_features > MAX_COVARIANCE_FEATURES {
            return Err(DetectorError::TooManyFeatures {
                algorithm: p.algorithm.name().to_string(),
                features: self.n_features,
                max: MAX_COVARIANCE_FEATURES,
            });
        }
        for (name, value) in [
            ("n_components", p.n_components),
            ("n_selected_components", p.n_selected_components),
        ] {
            if let Some(v) = value.filter(|&v| v > self.n_features) {
                return Err(DetectorError::InvalidOption {
                    name: name.to_string(),
                    value: v.to_string(),
                    expected: format!("at most the number of features ({})", self.n_features),
                });
            }
        }
        if let (Some(sel), Some(kept)) = (p.n_selected_components, p.n_components)
            && sel > kept
        {
            return Err(DetectorError::InvalidOption {
                name: "n_selected_components".into(),
                value: sel.to_string(),
                expected: format!("at most n_components ({kept})"),
            });
        }
        for (j, col) in f.columns.iter().enumerate() {
            let big = col
                .iter()
                .zip(&f.valid)
                .find(|(x, ok)| **ok && x.abs() >= LARGEST_COVARIANCE_VALUE);
            if let Some((&value, _)) = big {
                return Err(DetectorError::ValueOutOfRange {
                    algorithm: p.algorithm.name().to_string(),
                    index: j + 1,
                    value,
                    limit: "magnitudes below 2^500 (about 3.3e150); rescale the feature".into(),
                });
            }
        }
        Ok(())
    }

    fn update_features(&mut self, f: &Features<'_>) {
        let valid_rows = f.valid_count();
        self.rows += valid_rows as u64;
        self.skipped += (f.len - valid_rows) as u64;
        if valid_rows == 0 {
            return;
        }
        let all_valid = valid_rows == f.len;
        for (j, (stats, col)) in self.features.iter_mut().zip(&f.columns).enumerate() {
            if f.categorical.get(j) == Some(&true) {
                // Counted in `categories`; a sketch of hash codes would mean nothing.
                continue;
            }
            // One pass per statistic: each loop is simple enough to pipeline (or vectorise).
            let values = || {
                col.iter()
                    .zip(&f.valid)
                    .filter(move |(_, ok)| all_valid || **ok)
                    .map(|(x, _)| *x)
            };
            let (mut min, mut max) = (stats.min, stats.max);
            if all_valid {
                let (lo, hi) = min_max(col);
                min = min.min(lo);
                max = max.max(hi);
            } else {
                for x in values() {
                    min = min.min(x);
                    max = max.max(x);
                }
            }
            if stats.sum.is_some() || stats.sum_sq.is_some() || stats.sketch.is_some() {
                let valid: std::borrow::Cow<[f64]> = if all_valid {
                    std::borrow::Cow::Borrowed(col)
                } else {
                    std::borrow::Cow::Owned(values().collect())
                };
                if let Some(s) = &mut stats.sum {
                    s.0.add_slice(&valid);
                }
                if let Some(s) = &mut stats.sum_sq {
                    s.add_slice(&valid);
                }
                if let Some(s) = &mut stats.sketch {
                    s.add_slice(&valid);
                }
            }
            // -0.0 and 0.0 compare equal; keep min/max canonical so merges give the same bits.
            stats.min = if min == 0.0 { 0.0 } else { min };
            stats.max = if max == 0.0 { 0.0 } else { max };
        }
        if let Some(products) = &mut self.products {
            if all_valid {
                let cols: Vec<&[f64]> = f.columns.iter().map(|c| c.as_ref()).collect();
                products.add_columns(&cols);
            } else {
                let kept: Vec<Vec<f64>> = f
                    .columns
                    .iter()
                    .map(|c| {
                        c.iter()
                            .zip(&f.valid)
                            .filter(|(_, ok)| **ok)
                            .map(|(x, _)| *x)
                            .collect()
                    })
                    .collect();
                let cols: Vec<&[f64]> = kept.iter().map(Vec::as_slice).collect();
                products.add_columns(&cols);
            }
        }
        // Hash column by column: the same per-row hash as `row_hash`, but rows are independent
        // chains the CPU overlaps, and only the rare rows under the cutoff are gathered.
        let mut hashes = vec![row_hash_start(self.sample.seed()); f.len];
        for col in &f.columns {
            hash_column(&mut hashes, col);
        }
        let mut row = vec![0.0; self.n_features];
        for (i, &h) in hashes.iter().enumerate() {
            if !f.valid[i] || !self.sample.admits(h) {
                continue;
            }
            for (j, col) in f.columns.iter().enumerate() {
                row[j] = col[i];
            }
            self.sample.offer_hashed(h, &row);
        }
    }

    /// Folds another partial state in. Both must come from the same detector and options.
    pub fn merge(&mut self, other: &FitState) -> Result<()> {
        if self.params != other.params || self.n_features != other.n_features {
            return Err(DetectorError::IncompatibleStates {
                left: format!(
                    "{} [{}] on {} features",
                    self.params.algorithm,
                    self.params.to_options_string(),
                    self.n_features
                ),
                right: format!(
                    "{} [{}] on {} features",
                    other.params.algorithm,
                    other.params.to_options_string(),
                    other.n_features
                ),
            });
        }
        match (&mut self.categories, &other.categories) {
            (Some(mine), Some(theirs)) => {
                for (j, (a, b)) in mine.iter_mut().zip(theirs).enumerate() {
                    match (a, b) {
                        (Some(a), Some(b)) => a.merge(j + 1, b)?,
                        (None, None) => {}
                        (a, _) => return Err(kind_mismatch(j, a.is_some())),
                    }
                }
            }
            (None, Some(theirs)) => self.categories = Some(theirs.clone()),
            (_, None) => {}
        }
        self.rows += other.rows;
        self.skipped += other.skipped;
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            a.merge(b);
        }
        if let (Some(a), Some(b)) = (&mut self.products, &other.products) {
            a.merge(b);
        }
        self.sample.merge(&other.sample);
        Ok(())
    }

    /// Freezes the state into a model (fits the detector, then its threshold).
    pub fn finish(&self) -> Model {
        Model::fit(self, &self.compact_sample())
    }

    /// The row sample compacted (k rows at most, duplicates folded). Only the sample is copied:
    /// per-segment models finish thousands of states, and copying each whole state, sketches
    /// included, cost as much as fitting a z-score model.
    pub(crate) fn compact_sample(&self) -> RowSample {
        let mut sample = self.sample.clone();
        sample.compact();
        sample
    }

    /// Serialised partial state (crosses partitions and executors in two-phase aggregation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"NMFS".to_vec();
        out.extend(postcard::to_stdvec(self).expect("fit state serialises"));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let body = bytes
            .strip_prefix(b"NMFS")
            .ok_or_else(|| DetectorError::CorruptModel {
                reason: "missing fit-state header".into(),
            })?;
        postcard::from_bytes(body).map_err(|e| DetectorError::CorruptModel {
            reason: format!("fit state: {e}"),
        })
    }

    /// Approximate heap size, for memory accounting in the engine: the state, and the model it
    /// will fit ([`model_bytes_estimate`](Self::model_bytes_estimate)), so that a budget refuses
    /// a forest too large for it before it is grown.
    pub fn size_bytes(&self) -> usize {
        self.state_bytes() + self.model_bytes_estimate()
    }

    /// Bytes of the model this state fits, as far as it can grow from the rows sampled so far:
    /// iforest's trees (`n_trees` × at most 2ψ − 1 nodes, ψ = min(sample_size, rows sampled),
    /// bounded by the depth limit; 24 bytes a node). The other detectors' models are a few
    /// numbers per feature (bins and edges, counted by their sketches).
    pub fn model_bytes_estimate(&self) -> usize {
        let p = &self.params;
        // eif's nodes also keep their normals: up to one weight and feature per feature.
        let node_bytes = match p.algorithm {
            Algorithm::IsolationForest => 24,
            Algorithm::Eif => 16 + 12 * self.n_features,
            _ => return 0,
        };
        let psi = p.sample_size.min(self.sample.len()).max(1);
        let depth = p
            .max_depth
            .unwrap_or_else(|| (psi.max(2) as f64).log2().ceil() as usize);
        let by_depth = if depth >= 62 {
            usize::MAX
        } else {
            (1usize << (depth + 1)) - 1
        };
        let nodes = (2 * psi - 1).min(by_depth);
        p.n_trees.saturating_mul(nodes).saturating_mul(node_bytes)
    }

    fn state_bytes(&self) -> usize {
        let mut total = std::mem::size_of::<Self>();
        for f in &self.features {
            total += std::mem::size_of::<FeatureStats>();
            total += f.sum.as_ref().map_or(0, |s| s.0.size_bytes());
            total += f.sum_sq.as_ref().map_or(0, ExactSquareSum::size_bytes);
            if let Some(s) = &f.sketch {
                total += s.size_bytes();
            }
        }
        total
            + self.sample.size_bytes()
            + self.products.as_ref().map_or(0, CrossProducts::size_bytes)
    }
}

/// A feature that is text in one batch, partial fit or model and numbers in another; `was_text`
/// is what came first.
pub(crate) fn kind_mismatch(j: usize, was_text: bool) -> DetectorError {
    let kind = |text: bool| if text { "text" } else { "numeric" }.to_string();
    DetectorError::FeatureKindMismatch {
        index: j + 1,
        expected: kind(was_text),
        found: kind(!was_text),
    }
}

//! The frozen, versioned, serialisable model and its vectorised scoring.

use crate::algorithms::WholeRowScorer;
use crate::algorithms::ecdf::{EcdfModel, EcdfVariant};
use crate::algorithms::hbos::HbosModel;
use crate::algorithms::iforest::IsolationForestModel;
use crate::algorithms::mahalanobis::MahalanobisModel;
use crate::algorithms::moments::CentreScaleModel;
use crate::algorithms::pca::PcaModel;
use crate::categorical::{CategoryTable, CategoryTerm};
use crate::error::{DetectorError, Result};
use crate::features::Features;
use crate::fit::FitState;
use crate::params::{Algorithm, Combine, DetectorParams};
use crate::quantile::quantile_linear;
use crate::sample::RowSample;
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array};
use arrow_buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use serde::{Deserialize, Serialize};

/// Version of the serialised model format; bumped on any incompatible change. 2 added pca's
/// options to the parameters; version 1 models still load ([`crate::model_v1`]). 3 appends the
/// category tables of text features; models without them are still written as version 2, so
/// their bytes do not change and older builds read them.
pub const MODEL_FORMAT_VERSION: u32 = 3;
/// The version written for models whose features are all numeric.
pub const NUMERIC_MODEL_FORMAT_VERSION: u32 = 2;
const MAGIC: &[u8; 4] = b"NMLY";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ModelBody {
    CentreScale(CentreScaleModel),
    Hbos(HbosModel),
    Ecdf(EcdfModel),
    IsolationForest(IsolationForestModel),
    Pca(PcaModel),
    Mahalanobis(MahalanobisModel),
    Knn(crate::algorithms::knn::KnnModel),
    Lof(crate::algorithms::lof::LofModel),
    Loda(crate::algorithms::loda::LodaModel),
    Eif(crate::algorithms::eif::EifModel),
}

/// A fitted detector: immutable, small, and the same bits on every engine for the same data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub params: DetectorParams,
    pub n_features: usize,
    /// Rows the fit used (all features finite).
    pub training_rows: u64,
    /// Rows the fit skipped (a null/NaN/±Inf feature).
    pub skipped_rows: u64,
    /// Scores strictly above this are anomalies.
    pub threshold: f64,
    pub body: ModelBody,
    /// Per feature, the category table of a text feature; empty when every feature is numeric.
    /// Written after the rest (format version 3), so numeric models keep version 2's bytes.
    #[serde(skip)]
    pub categories: Vec<Option<CategoryTable>>,
}

impl Model {
    /// Fits on `state`, whose row sample compacted is `sample`.
    pub(crate) fn fit(state: &FitState, sample: &RowSample) -> Model {
        let p = &state.params;
        let body = match p.algorithm {
            Algorithm::ZScore | Algorithm::RobustZScore | Algorithm::Iqr => {
                ModelBody::CentreScale(CentreScaleModel::fit(state))
            }
            Algorithm::Hbos => ModelBody::Hbos(HbosModel::fit(state)),
            Algorithm::Ecod => ModelBody::Ecdf(EcdfModel::fit(state, EcdfVariant::Ecod)),
            Algorithm::Copod => ModelBody::Ecdf(EcdfModel::fit(state, EcdfVariant::Copod)),
            Algorithm::IsolationForest => {
                ModelBody::IsolationForest(IsolationForestModel::fit(state, sample))
            }
            Algorithm::Pca => ModelBody::Pca(PcaModel::fit(state)),
            Algorithm::Mahalanobis => ModelBody::Mahalanobis(MahalanobisModel::fit(state)),
            Algorithm::Knn => ModelBody::Knn(crate::algorithms::knn::KnnModel::fit(
                sample,
                state.n_features,
                p.n_neighbors,
                p.knn_method,
            )),
            Algorithm::Lof => ModelBody::Lof(crate::algorithms::lof::LofModel::fit(
                sample,
                state.n_features,
                p.n_neighbors,
            )),
            Algorithm::Loda => ModelBody::Loda(crate::algorithms::loda::LodaModel::fit(
                sample,
                state.n_features,
                p.n_bins,
                p.n_random_cuts,
                p.seed,
            )),
            Algorithm::Eif => ModelBody::Eif(crate::algorithms::eif::EifModel::fit(
                sample,
                &state.text_features(),
                (p.n_trees, p.sample_size, p.max_depth),
                p.extension_level,
                p.seed,
            )),
            Algorithm::Mcd => ModelBody::Mahalanobis(crate::algorithms::mcd::fit(
                sample,
                state.n_features,
                p.seed,
            )),
        };
        let mut model = Model {
            params: p.clone(),
            n_features: state.n_features,
            training_rows: state.rows,
            skipped_rows: state.skipped,
            threshold: f64::NAN,
            body,
            categories: state
                .categories
                .as_ref()
                .filter(|c| c.iter().any(Option::is_some))
                .map(|c| c.iter().map(|c| c.as_ref().map(|c| c.table())).collect())
                .unwrap_or_default(),
        };
        model.threshold = match (p.threshold, p.algorithm) {
            (Some(t), _) => t,
            (None, Algorithm::Iqr) if !p.contamination_set => 1.5,
            _ if p.contamination_auto => model.sample_fence(sample),
            _ => model.sample_threshold(sample),
        };
        model
    }

    /// The (1 - contamination) quantile of the scores of the fit's row sample, weighted by row
    /// multiplicity, interpolated as NumPy's `percentile` (so it equals PyOD's `threshold_` when the
    /// sample is the whole input).
    fn sample_threshold(&self, sample: &RowSample) -> f64 {
        match self.sample_scores(sample) {
            Some(weighted) => quantile_linear(&weighted, 1.0 - self.params.contamination),
            None => f64::NAN,
        }
    }

    /// `contamination=auto`: the upper Tukey fence of the row sample's scores, Q3 + 1.5·IQR
    /// (quartiles as [`Self::sample_threshold`]'s quantiles). Scores beyond it lie outside the
    /// bulk of the training scores, however many that is (none, for data without outliers).
    fn sample_fence(&self, sample: &RowSample) -> f64 {
        match self.sample_scores(sample) {
            Some(weighted) => {
                let q1 = quantile_linear(&weighted, 0.25);
                let q3 = quantile_linear(&weighted, 0.75);
                q3 + 1.5 * (q3 - q1)
            }
            None => f64::NAN,
        }
    }

    /// The row sample's scores with their multiplicities, sorted by score; `None` if empty.
    fn sample_scores(&self, sample: &RowSample) -> Option<Vec<(f64, u64)>> {
        if sample.is_empty() {
            return None;
        }
        let width = self.n_features;
        let rows: Vec<(&[f64], u64)> = sample.rows().collect();
        let cols: Vec<Vec<f64>> = (0..width)
            .map(|j| rows.iter().map(|r| r.0[j]).collect())
            .collect();
        let col_refs: Vec<&[f64]> = cols.iter().map(|c| c.as_slice()).collect();
        let scores = self.raw_scores(&col_refs, rows.len());
        let mut weighted: Vec<(f64, u64)> =
            scores.into_iter().zip(rows.iter().map(|r| r.1)).collect();
        // equal scores are one value whatever their weights' order: unstable gives the same quantile
        weighted.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        Some(weighted)
    }

    pub fn algorithm(&self) -> Algorithm {
        self.params.algorithm
    }

    /// The per-feature parts of the scores of the detectors that score a row whole (pca,
    /// mahalanobis and mcd, knn, lof, loda, eif), which sum to the score; none for the others.
    fn distance_parts(&self, cols: &[&[f64]], len: usize) -> Vec<Vec<f64>> {
        match &self.body {
            ModelBody::Pca(m) => m.explain(cols, len),
            ModelBody::Mahalanobis(m) => m.explain(cols, len),
            ModelBody::Eif(m) => m.score_with_text(cols, len, true, &self.text_features()).1,
            _ => self
                .whole_row_scorer()
                .map(|s| s.score_rows(cols, len, true).1)
                .unwrap_or_default(),
        }
    }

    /// Per feature, whether it is text (empty when all are numbers).
    fn text_features(&self) -> Vec<bool> {
        self.categories.iter().map(Option::is_some).collect()
    }

    /// The body of a detector that scores a row whole, as such.
    fn whole_row_scorer(&self) -> Option<&dyn WholeRowScorer> {
        match &self.body {
            ModelBody::Knn(m) => Some(m),
            ModelBody::Lof(m) => Some(m),
            ModelBody::Loda(m) => Some(m),
            // eif is scored with its text features (`score_with_text`), not through this trait
            _ => None,
        }
    }

    /// Scores over clean columns (all rows valid); invalid rows are masked by the callers.
    fn raw_scores(&self, cols: &[&[f64]], len: usize) -> Vec<f64> {
        match &self.body {
            ModelBody::IsolationForest(m) => return m.score(cols, len),
            ModelBody::Pca(m) => return m.score(cols, len),
            ModelBody::Mahalanobis(m) => return m.score(cols, len),
            ModelBody::Eif(m) => {
                return m.score_with_text(cols, len, false, &self.text_features()).0;
            }
            _ => {}
        }
        if let Some(s) = self.whole_row_scorer() {
            return s.score_rows(cols, len, false).0;
        }
        let mut acc = vec![0.0f64; len];
        let mut term = vec![0.0f64; len];
        let combine_max =
            matches!(self.body, ModelBody::CentreScale(_)) && self.params.combine == Combine::Max;
        for (j, col) in cols.iter().enumerate() {
            self.feature_terms(j, col, &mut term);
            if combine_max {
                for (a, t) in acc.iter_mut().zip(&term) {
                    *a = a.max(*t);
                }
            } else {
                for (a, t) in acc.iter_mut().zip(&term) {
                    *a += *t;
                }
            }
        }
        acc
    }

    fn feature_terms(&self, j: usize, col: &[f64], out: &mut [f64]) {
        if let Some(Some(table)) = self.categories.get(j) {
            let kind = match self.body {
                ModelBody::Hbos(_) => CategoryTerm::Histogram {
                    alpha: self.params.alpha,
                },
                _ => CategoryTerm::TailShare,
            };
            return table.terms(kind, col, out);
        }
        match &self.body {
            ModelBody::CentreScale(m) => m.terms(j, col, out),
            ModelBody::Hbos(m) => m.terms(j, col, out),
            ModelBody::Ecdf(m) => m.terms(j, col, out),
            ModelBody::IsolationForest(_)
            | ModelBody::Pca(_)
            | ModelBody::Mahalanobis(_)
            | ModelBody::Knn(_)
            | ModelBody::Lof(_)
            | ModelBody::Loda(_)
            | ModelBody::Eif(_) => {
                unreachable!("scored whole")
            }
        }
    }

    fn check_width(&self, columns: &[ArrayRef]) -> Result<()> {
        if columns.len() != self.n_features {
            return Err(DetectorError::FeatureCountMismatch {
                expected: self.n_features,
                actual: columns.len(),
            });
        }
        Ok(())
    }

    /// Scores a batch: one `Float64` per row, null where a feature is null/NaN/±Inf or the model was
    /// fitted on no rows.
    pub fn score(&self, columns: &[ArrayRef]) -> Result<Float64Array> {
        self.check_width(columns)?;
        let f = Features::from_arrays(columns)?;
        self.check_kinds(&f)?;
        Ok(self.score_features(&f))
    }

    /// Text columns where the model has category tables, numbers elsewhere.
    pub fn check_kinds(&self, f: &Features<'_>) -> Result<()> {
        for (j, text) in f.categorical.iter().enumerate() {
            let fitted_text = matches!(self.categories.get(j), Some(Some(_)));
            if *text != fitted_text {
                return Err(crate::fit::kind_mismatch(j, fitted_text));
            }
        }
        Ok(())
    }

    pub fn score_features(&self, f: &Features<'_>) -> Float64Array {
        if self.training_rows == 0 {
            return Float64Array::new_null(f.len);
        }
        let cols: Vec<&[f64]> = f.columns.iter().map(|c| c.as_ref()).collect();
        let scores = self.raw_scores(&cols, f.len);
        // The scores vector becomes the array's buffer; invalid rows are masked, not rewritten.
        let nulls = f
            .valid
            .iter()
            .any(|ok| !ok)
            .then(|| NullBuffer::from(f.valid.as_slice()));
        Float64Array::new(ScalarBuffer::from(scores), nulls)
    }

    /// `score > threshold`, null where the score is null.
    pub fn flags(&self, scores: &Float64Array) -> BooleanArray {
        let values = scores.values();
        BooleanArray::new(
            BooleanBuffer::collect_bool(values.len(), |i| values[i] > self.threshold),
            scores.nulls().cloned(),
        )
    }

    /// Per-feature contributions, one array per feature. For additive detectors (HBOS, ECOD, COPOD,
    /// z-scores with `combine=sum`) they sum to the score; with `combine=max` each is that feature's
    /// own z-score and the score is their maximum; for iforest the score is split over features in
    /// proportion to how often each splits along the row's paths.
    pub fn explain(&self, columns: &[ArrayRef]) -> Result<Vec<Float64Array>> {
        self.check_width(columns)?;
        let f = Features::from_arrays(columns)?;
        self.check_kinds(&f)?;
        if self.training_rows == 0 {
            return Ok((0..self.n_features)
                .map(|_| Float64Array::new_null(f.len))
                .collect());
        }
        let mut out = Vec::with_capacity(self.n_features);
        match &self.body {
            ModelBody::Pca(_)
            | ModelBody::Mahalanobis(_)
            | ModelBody::Knn(_)
            | ModelBody::Lof(_)
            | ModelBody::Loda(_)
            | ModelBody::Eif(_) => {
                let cols: Vec<&[f64]> = f.columns.iter().map(|c| c.as_ref()).collect();
                for part in self.distance_parts(&cols, f.len) {
                    out.push(
                        part.into_iter()
                            .zip(&f.valid)
                            .map(|(v, &ok)| ok.then_some(v))
                            .collect(),
                    );
                }
            }
            ModelBody::IsolationForest(m) => {
                let cols: Vec<&[f64]> = f.columns.iter().map(|c| c.as_ref()).collect();
                let scores = m.score(&cols, f.len);
                let mut per_feature = vec![vec![0.0; f.len]; self.n_features];
                let mut row = vec![0.0; self.n_features];
                let mut counts = vec![0.0; self.n_features];
                for i in 0..f.len {
                    if !f.valid[i] {
                        continue;
                    }
                    for (j, c) in cols.iter().enumerate() {
                        row[j] = c[i];
                    }
                    m.split_counts(&row, &mut counts);
                    let total: f64 = counts.iter().sum();
                    for j in 0..self.n_features {
                        per_feature[j][i] = if total > 0.0 {
                            scores[i] * counts[j] / total
                        } else {
                            0.0
                        };
                    }
                }
                for pf in per_feature {
                    out.push(
                        pf.into_iter()
                            .zip(&f.valid)
                            .map(|(v, &ok)| ok.then_some(v))
                            .collect(),
                    );
                }
            }
            _ => {
                let mut term = vec![0.0; f.len];
                for (j, col) in f.columns.iter().enumerate() {
                    self.feature_terms(j, col, &mut term);
                    out.push(
                        term.iter()
                            .zip(&f.valid)
                            .map(|(v, &ok)| ok.then_some(*v))
                            .collect(),
                    );
                }
            }
        }
        Ok(out)
    }

    /// Versioned binary form: `NMLY`, the format version (u32 LE), then the postcard body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        let version = if self.categories.is_empty() {
            NUMERIC_MODEL_FORMAT_VERSION
        } else {
            MODEL_FORMAT_VERSION
        };
        out.extend_from_slice(&version.to_le_bytes());
        // written in place, not into a second vector that is then copied
        let out = postcard::to_extend(self, out).expect("model serialises");
        if self.categories.is_empty() {
            return out;
        }
        postcard::to_extend(&self.categories, out).expect("category tables serialise")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(DetectorError::CorruptModel {
                reason: "missing 'NMLY' header (is this column a fit_detector(...) result?)".into(),
            });
        }
        let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let corrupt = |e: postcard::Error| DetectorError::CorruptModel {
            reason: e.to_string(),
        };
        let model: Model = match version {
            NUMERIC_MODEL_FORMAT_VERSION => postcard::from_bytes(&bytes[8..]).map_err(corrupt)?,
            MODEL_FORMAT_VERSION => {
                let (mut model, rest) =
                    postcard::take_from_bytes::<Model>(&bytes[8..]).map_err(corrupt)?;
                let (categories, rest) = postcard::take_from_bytes(rest).map_err(corrupt)?;
                if !rest.is_empty() {
                    return Err(DetectorError::CorruptModel {
                        reason: format!("{} bytes after the category tables", rest.len()),
                    });
                }
                model.categories = categories;
                model
            }
            1 => postcard::from_bytes::<crate::model_v1::ModelV1>(&bytes[8..])
                .map_err(corrupt)?
                .into(),
            _ => {
                return Err(DetectorError::UnsupportedModelVersion {
                    found: version,
                    supported: MODEL_FORMAT_VERSION,
                });
            }
        };
        crate::validate::check_model(&model)
            .map_err(|reason| DetectorError::CorruptModel { reason })?;
        Ok(model)
    }

    /// A human-readable summary (what `anomaly_model_info` returns).
    /// One line for people: what was fitted on what, and how big the stored model is (SQL has no
    /// length function for the model's binary type).
    pub fn describe(&self) -> String {
        let text: String = self
            .categories
            .iter()
            .enumerate()
            .filter_map(|(j, t)| {
                t.as_ref()
                    .map(|t| format!(", feature {} text ({} categories)", j + 1, t.codes.len()))
            })
            .collect();
        format!(
            "{} on {} features [{}], trained on {} rows ({} skipped), threshold {}{text}, {} bytes",
            self.params.algorithm,
            self.n_features,
            self.params.to_options_string(),
            self.training_rows,
            self.skipped_rows,
            self.threshold,
            self.to_bytes().len()
        )
    }
}

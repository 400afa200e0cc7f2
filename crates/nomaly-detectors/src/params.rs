//! Detector choice and options, parsed from the `'key=value, key=value'` strings used in SQL and
//! pipeline files. Every option is validated here, so a typo fails at planning time with the list of
//! what is valid rather than at run time.

pub use crate::algorithms::knn::KnnMethod;
use crate::algorithms::knn::MAX_NEIGHBOURS;
use crate::algorithms::loda::MAX_RANDOM_CUTS;
use crate::error::{DetectorError, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The detectors Nomaly implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// |x - mean| / std per feature (population std), combined by max or sum.
    ZScore,
    /// |x - median| / (1.4826 · MAD) per feature, combined by max or sum.
    RobustZScore,
    /// Distance outside [Q1, Q3] in IQR units per feature; default threshold = Tukey's 1.5.
    Iqr,
    /// Histogram-based outlier score (PyOD HBOS, static bins).
    Hbos,
    /// Empirical-CDF-based outlier detection (PyOD ECOD).
    Ecod,
    /// Copula-based outlier detection (PyOD COPOD).
    Copod,
    /// Isolation forest (Liu et al. 2008; scikit-learn semantics).
    IsolationForest,
    /// Principal components of the (standardised) covariance; PyOD `PCA` scores.
    Pca,
    /// Squared Mahalanobis distance under the features' covariance (scikit-learn
    /// `EmpiricalCovariance`).
    Mahalanobis,
    /// Squared Mahalanobis distance under a robust covariance (PyOD `MCD`, FastMCD on the row
    /// sample).
    Mcd,
    /// Distance to the k-th nearest row of the row sample, or the mean or median of the k
    /// nearest (PyOD `KNN`).
    Knn,
    /// Local outlier factor against the row sample's neighbourhoods (PyOD `LOF`).
    Lof,
    /// Histograms of sparse random projections (PyOD `LODA`).
    Loda,
    /// Extended isolation forest: random hyperplane splits (Hariri et al., the `eif` package).
    Eif,
}

impl Algorithm {
    pub const ALL: [Algorithm; 14] = [
        Algorithm::ZScore,
        Algorithm::RobustZScore,
        Algorithm::Iqr,
        Algorithm::Hbos,
        Algorithm::Ecod,
        Algorithm::Copod,
        Algorithm::IsolationForest,
        Algorithm::Pca,
        Algorithm::Mahalanobis,
        Algorithm::Mcd,
        Algorithm::Knn,
        Algorithm::Lof,
        Algorithm::Loda,
        Algorithm::Eif,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::ZScore => "zscore",
            Algorithm::RobustZScore => "robust_zscore",
            Algorithm::Iqr => "iqr",
            Algorithm::Hbos => "hbos",
            Algorithm::Ecod => "ecod",
            Algorithm::Copod => "copod",
            Algorithm::IsolationForest => "iforest",
            Algorithm::Pca => "pca",
            Algorithm::Mahalanobis => "mahalanobis",
            Algorithm::Mcd => "mcd",
            Algorithm::Knn => "knn",
            Algorithm::Lof => "lof",
            Algorithm::Loda => "loda",
            Algorithm::Eif => "eif",
        }
    }

    /// Whether the fit keeps the exact cross products of the features (pca, mahalanobis).
    pub fn uses_covariance(self) -> bool {
        matches!(self, Algorithm::Pca | Algorithm::Mahalanobis)
    }

    pub fn valid_names() -> String {
        Self::ALL
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Other names [`Algorithm::parse`] accepts besides each algorithm's [`Algorithm::name`].
    const ALIASES: [(&'static str, Algorithm); 5] = [
        ("z_score", Algorithm::ZScore),
        ("mad", Algorithm::RobustZScore),
        ("modified_zscore", Algorithm::RobustZScore),
        ("tukey", Algorithm::Iqr),
        ("isolation_forest", Algorithm::IsolationForest),
    ];

    /// Every accepted name with its algorithm: the canonical names, then the aliases.
    fn names() -> impl Iterator<Item = (&'static str, Algorithm)> {
        Self::ALL
            .iter()
            .map(|&a| (a.name(), a))
            .chain(Self::ALIASES)
    }

    /// Parses a name, case-insensitively; a few common aliases are accepted.
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        match Self::names().find(|(n, _)| *n == lower) {
            Some((_, alg)) => Ok(alg),
            None => Err(DetectorError::UnknownAlgorithm {
                name: name.to_string(),
                hint: crate::suggest::closest(&lower, Self::names().map(|(n, _)| n))
                    .map(|n| format!(" (did you mean '{n}'?)"))
                    .unwrap_or_default(),
                valid: Self::valid_names(),
            }),
        }
    }

    /// For a name that is not an option of `self`: the algorithms it is an option of, else the
    /// nearest option of `self`, as the parenthesised hint of [`DetectorError::UnknownOption`].
    fn option_hint(self, key: &str) -> String {
        let owners: Vec<&str> = Self::ALL
            .iter()
            .filter(|a| a.specific_options().contains(&key))
            .map(|a| a.name())
            .collect();
        if !owners.is_empty() {
            return format!(" ('{key}' is an option of {})", owners.join(", "));
        }
        crate::suggest::closest(key, self.valid_options())
            .map(|n| format!(" (did you mean '{n}'?)"))
            .unwrap_or_default()
    }

    /// Whether the detector takes text (categorical) features ([`crate::categorical`]).
    pub fn takes_categorical(self) -> bool {
        matches!(
            self,
            Algorithm::Hbos
                | Algorithm::Ecod
                | Algorithm::Copod
                | Algorithm::IsolationForest
                | Algorithm::Eif
        )
    }

    fn specific_options(self) -> &'static [&'static str] {
        match self {
            Algorithm::ZScore | Algorithm::RobustZScore | Algorithm::Iqr => &["combine"],
            Algorithm::Hbos => &["n_bins", "alpha", "tol"],
            Algorithm::Ecod | Algorithm::Copod | Algorithm::Mahalanobis | Algorithm::Mcd => &[],
            Algorithm::IsolationForest => &["n_trees", "sample_size", "max_depth"],
            Algorithm::Knn => &["n_neighbors", "method"],
            Algorithm::Lof => &["n_neighbors"],
            Algorithm::Loda => &["n_bins", "n_random_cuts"],
            Algorithm::Eif => &["n_trees", "sample_size", "max_depth", "extension_level"],
            Algorithm::Pca => &[
                "n_components",
                "n_selected_components",
                "standardization",
                "weighted",
            ],
        }
    }

    pub fn valid_options(self) -> Vec<&'static str> {
        let mut v = vec!["contamination", "threshold", "seed", "sample_rows"];
        v.extend_from_slice(self.specific_options());
        v
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The most features `pca` and `mahalanobis` take: their fit keeps an exact sum per pair of
/// features, and the eigen-decomposition is cubic in the count.
pub const MAX_COVARIANCE_FEATURES: usize = 256;

/// How per-feature scores of the z-score family combine into one score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Combine {
    /// The most extreme feature decides (default): a row is as anomalous as its worst feature.
    Max,
    /// Sum over features: many moderately unusual features add up.
    Sum,
}

/// All options of a detector, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorParams {
    pub algorithm: Algorithm,
    /// Expected share of anomalies, (0, 0.5]; sets the threshold as that upper quantile of the
    /// training scores. Default 0.1 (as PyOD).
    pub contamination: f64,
    /// Whether `contamination` was given explicitly (iqr then uses it instead of Tukey's fence).
    pub contamination_set: bool,
    /// `contamination=auto`: the threshold is the upper Tukey fence of the training scores
    /// (Q3 + 1.5·IQR of the row sample's scores) instead of a fixed share.
    pub contamination_auto: bool,
    /// An explicit score threshold; overrides contamination.
    pub threshold: Option<f64>,
    pub seed: u64,
    /// Rows kept (bottom-k hash sample) to estimate the threshold; iforest keeps at least
    /// n_trees × sample_size.
    pub sample_rows: usize,
    pub combine: Combine,
    pub n_bins: usize,
    pub alpha: f64,
    pub tol: f64,
    pub n_trees: usize,
    pub sample_size: usize,
    /// `None` = ceil(log2(sample_size)), as scikit-learn.
    pub max_depth: Option<usize>,
    /// pca: components kept (`None` = all, one per feature).
    pub n_components: Option<usize>,
    /// pca: how many of the kept components, the last (least variance) ones, score (`None` = all).
    pub n_selected_components: Option<usize>,
    /// pca: standardise features (mean 0, population std 1) first, as PyOD's default.
    pub standardization: bool,
    /// pca: divide each component's distance by its explained variance ratio.
    pub weighted: bool,
    /// knn, lof: how many neighbours (knn 5, lof 20, as PyOD).
    pub n_neighbors: usize,
    /// knn: the k-th distance, or the mean or median of the k.
    pub knn_method: KnnMethod,
    /// loda: how many random projections.
    pub n_random_cuts: usize,
    /// eif: non-zero components of each split's normal, minus one (`None` = all features: the
    /// fully extended forest; 0 = splits along one feature).
    pub extension_level: Option<usize>,
}

impl DetectorParams {
    pub fn new(algorithm: Algorithm) -> Self {
        Self {
            algorithm,
            contamination: 0.1,
            contamination_set: false,
            contamination_auto: false,
            threshold: None,
            seed: 42,
            sample_rows: 16_384,
            combine: Combine::Max,
            n_bins: 10,
            alpha: 0.1,
            tol: 0.5,
            n_trees: 100,
            sample_size: 256,
            max_depth: None,
            n_components: None,
            n_selected_components: None,
            standardization: true,
            weighted: true,
            n_neighbors: if algorithm == Algorithm::Lof { 20 } else { 5 },
            knn_method: KnnMethod::Largest,
            n_random_cuts: 100,
            extension_level: None,
        }
    }

    /// Parses `'contamination=0.05, seed=7'`. Empty text gives the defaults.
    pub fn parse(algorithm: Algorithm, options: &str) -> Result<Self> {
        let mut p = Self::new(algorithm);
        for part in options.split([',', ';']) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(DetectorError::MalformedOptions {
                    text: options.to_string(),
                    reason: format!("'{part}' has no '='"),
                });
            };
            p.set(key.trim(), value.trim())?;
        }
        Ok(p)
    }

    /// Sets one option by name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key_lower = key.to_ascii_lowercase();
        if !self.algorithm.valid_options().contains(&key_lower.as_str()) {
            return Err(DetectorError::UnknownOption {
                algorithm: self.algorithm.name().to_string(),
                name: key.to_string(),
                hint: self.algorithm.option_hint(&key_lower),
                valid: self.algorithm.valid_options().join(", "),
            });
        }
        let invalid = |expected: &str| DetectorError::InvalidOption {
            name: key_lower.clone(),
            value: value.to_string(),
            expected: expected.to_string(),
        };
        let float = |lo: f64, hi: f64, what: &str| -> Result<f64> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= lo && *v <= hi)
                .ok_or_else(|| invalid(what))
        };
        let int = |lo: usize, hi: usize, what: &str| -> Result<usize> {
            value
                .parse::<usize>()
                .ok()
                .filter(|v| *v >= lo && *v <= hi)
                .ok_or_else(|| invalid(what))
        };
        match key_lower.as_str() {
            "contamination" if value.eq_ignore_ascii_case("auto") => {
                self.contamination_auto = true;
                self.contamination_set = true;
            }
            "contamination" => {
                let c = float(0.0, 0.5, "a number in (0, 0.5], or 'auto'")?;
                if c <= 0.0 {
                    return Err(invalid("a number in (0, 0.5], or 'auto'"));
                }
                self.contamination = c;
                self.contamination_auto = false;
                self.contamination_set = true;
            }
            "threshold" => self.threshold = Some(float(f64::MIN, f64::MAX, "a finite number")?),
            "seed" => {
                self.seed = value
                    .parse::<u64>()
                    .map_err(|_| invalid("a non-negative integer"))?
            }
            "sample_rows" => {
                self.sample_rows = int(64, 10_000_000, "an integer in [64, 10000000]")?
            }
            "combine" => {
                self.combine = match value.to_ascii_lowercase().as_str() {
                    "max" => Combine::Max,
                    "sum" => Combine::Sum,
                    _ => return Err(invalid("'max' or 'sum'")),
                }
            }
            "n_bins" => self.n_bins = int(2, 10_000, "an integer in [2, 10000]")?,
            "alpha" => self.alpha = float(1e-12, 1e6, "a positive number")?,
            "tol" => self.tol = float(0.0, 1e6, "a non-negative number")?,
            "n_trees" => self.n_trees = int(1, 10_000, "an integer in [1, 10000]")?,
            "sample_size" => self.sample_size = int(2, 1_000_000, "an integer in [2, 1000000]")?,
            "max_depth" => self.max_depth = Some(int(1, 64, "an integer in [1, 64]")?),
            "n_components" => {
                self.n_components = Some(int(1, MAX_COVARIANCE_FEATURES, "an integer in [1, 256]")?)
            }
            "n_selected_components" => {
                self.n_selected_components =
                    Some(int(1, MAX_COVARIANCE_FEATURES, "an integer in [1, 256]")?)
            }
            "n_neighbors" => self.n_neighbors = int(1, MAX_NEIGHBOURS, "an integer in [1, 1000]")?,
            "extension_level" => {
                self.extension_level = Some(int(0, 4095, "an integer in [0, 4095]")?)
            }
            "n_random_cuts" => {
                self.n_random_cuts = int(1, MAX_RANDOM_CUTS, "an integer in [1, 10000]")?
            }
            "method" => {
                self.knn_method = match value.to_ascii_lowercase().as_str() {
                    "largest" => KnnMethod::Largest,
                    "mean" => KnnMethod::Mean,
                    "median" => KnnMethod::Median,
                    _ => return Err(invalid("'largest', 'mean' or 'median'")),
                }
            }
            "standardization" | "weighted" => {
                let on = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err(invalid("true or false")),
                };
                if key_lower == "weighted" {
                    self.weighted = on;
                } else {
                    self.standardization = on;
                }
            }
            _ => unreachable!("checked against valid_options"),
        }
        Ok(())
    }

    /// Size of the row sample the fit keeps.
    pub fn effective_sample_rows(&self) -> usize {
        match self.algorithm {
            Algorithm::IsolationForest | Algorithm::Eif => {
                self.sample_rows.max(self.n_trees * self.sample_size)
            }
            _ => self.sample_rows,
        }
    }

    /// A canonical `key=value` rendering (stable: used in plan display and model metadata).
    pub fn to_options_string(&self) -> String {
        let mut parts = vec![if self.contamination_auto {
            "contamination=auto".to_string()
        } else {
            format!("contamination={}", self.contamination)
        }];
        if let Some(t) = self.threshold {
            parts.push(format!("threshold={t}"));
        }
        parts.push(format!("seed={}", self.seed));
        match self.algorithm {
            Algorithm::ZScore | Algorithm::RobustZScore | Algorithm::Iqr => {
                parts.push(format!(
                    "combine={}",
                    if self.combine == Combine::Max {
                        "max"
                    } else {
                        "sum"
                    }
                ));
            }
            Algorithm::Hbos => {
                parts.push(format!("n_bins={}", self.n_bins));
                parts.push(format!("alpha={}", self.alpha));
                parts.push(format!("tol={}", self.tol));
            }
            Algorithm::IsolationForest => {
                parts.push(format!("n_trees={}", self.n_trees));
                parts.push(format!("sample_size={}", self.sample_size));
                if let Some(d) = self.max_depth {
                    parts.push(format!("max_depth={d}"));
                }
            }
            Algorithm::Knn => {
                parts.push(format!("n_neighbors={}", self.n_neighbors));
                parts.push(format!("method={:?}", self.knn_method).to_ascii_lowercase());
            }
            Algorithm::Lof => parts.push(format!("n_neighbors={}", self.n_neighbors)),
            Algorithm::Eif => {
                parts.push(format!("n_trees={}", self.n_trees));
                parts.push(format!("sample_size={}", self.sample_size));
                if let Some(d) = self.max_depth {
                    parts.push(format!("max_depth={d}"));
                }
                if let Some(e) = self.extension_level {
                    parts.push(format!("extension_level={e}"));
                }
            }
            Algorithm::Loda => {
                parts.push(format!("n_bins={}", self.n_bins));
                parts.push(format!("n_random_cuts={}", self.n_random_cuts));
            }
            Algorithm::Pca => {
                if let Some(n) = self.n_components {
                    parts.push(format!("n_components={n}"));
                }
                if let Some(n) = self.n_selected_components {
                    parts.push(format!("n_selected_components={n}"));
                }
                parts.push(format!("standardization={}", self.standardization));
                parts.push(format!("weighted={}", self.weighted));
            }
            Algorithm::Ecod | Algorithm::Copod | Algorithm::Mahalanobis | Algorithm::Mcd => {}
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates_options() {
        let p = DetectorParams::parse(
            Algorithm::IsolationForest,
            "n_trees=50, seed=7 ,contamination=0.02",
        )
        .unwrap();
        assert_eq!((p.n_trees, p.seed, p.contamination), (50, 7, 0.02));
        let e = DetectorParams::parse(Algorithm::Ecod, "n_trees=5").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown option 'n_trees' for algorithm 'ecod' ('n_trees' is an option of iforest, eif); valid options are: contamination, threshold, seed, sample_rows"
        );
        let e = DetectorParams::parse(Algorithm::IsolationForest, "ntrees=5").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown option 'ntrees' for algorithm 'iforest' (did you mean 'n_trees'?); valid options are: contamination, threshold, seed, sample_rows, n_trees, sample_size, max_depth"
        );
        let e = DetectorParams::parse(Algorithm::ZScore, "combine=max, colour=red").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown option 'colour' for algorithm 'zscore'; valid options are: contamination, threshold, seed, sample_rows, combine"
        );
        let e = DetectorParams::parse(Algorithm::Hbos, "contamination=0.9").unwrap_err();
        assert_eq!(
            e.to_string(),
            "option 'contamination' has invalid value '0.9': a number in (0, 0.5], or 'auto'"
        );
        assert!(matches!(
            DetectorParams::parse(Algorithm::Hbos, "n_bins"),
            Err(DetectorError::MalformedOptions { .. })
        ));
        assert_eq!(
            Algorithm::parse("nope").unwrap_err().to_string(),
            "unknown algorithm 'nope'; valid algorithms are: zscore, robust_zscore, iqr, hbos, ecod, copod, iforest, pca, mahalanobis, mcd, knn, lof, loda, eif"
        );
        assert_eq!(
            Algorithm::parse("IsolationForest").unwrap_err().to_string(),
            "unknown algorithm 'IsolationForest' (did you mean 'isolation_forest'?); valid algorithms are: zscore, robust_zscore, iqr, hbos, ecod, copod, iforest, pca, mahalanobis, mcd, knn, lof, loda, eif"
        );
        for (name, alg) in Algorithm::names() {
            assert_eq!(Algorithm::parse(&name.to_uppercase()).unwrap(), alg);
        }
        assert_eq!(
            Algorithm::parse("IForest").unwrap(),
            Algorithm::IsolationForest
        );
    }
}

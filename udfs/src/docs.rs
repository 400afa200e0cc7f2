//! Documentation sections for `SHOW FUNCTIONS` / generated docs.

use datafusion::logical_expr::DocSection;

pub const DOC_SECTION_ANOMALY: DocSection = DocSection {
    include: true,
    label: "Anomaly Detection Functions",
    description: Some(
        "Nomaly's detectors. Fit is a mergeable aggregate, score is a vectorised map, so results are \
         identical for any partitioning and on local or Ballista engines.",
    ),
};

pub const ALGORITHM_ARG: &str = "Detector name, a string literal: zscore, robust_zscore, iqr, hbos, ecod, copod, iforest, pca, mahalanobis, mcd, knn, lof, loda, eif.";
pub const FEATURES_ARG: &str = "One or more numeric expressions: the features. Rows with a NULL, NaN or ±Infinity feature are skipped by the fit and score NULL.";
pub const OPTIONS_ARG: &str = "Optional string literal 'key=value, ...': contamination (default 0.1, or auto), threshold, seed (42), sample_rows (16384); combine=max|sum (z-score family); n_bins, alpha, tol (hbos); n_trees (100), sample_size (256), max_depth (iforest); n_components, n_selected_components, standardization (true), weighted (true) (pca); n_neighbors (5), method=largest|mean|median (knn); n_neighbors (20) (lof); n_bins (10), n_random_cuts (100) (loda); n_trees, sample_size, max_depth, extension_level (features - 1) (eif).";
pub const MODEL_ARG: &str = "A model: the BINARY value returned by fit_detector(...).";

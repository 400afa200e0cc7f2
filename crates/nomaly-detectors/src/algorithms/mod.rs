//! One module per detector family. Each turns a finished [`crate::fit::FitState`] into its model body
//! and scores feature columns. Scores are "higher = more anomalous" everywhere.

pub mod chi2;
pub mod covariance;
pub mod ecdf;
pub mod eif;
pub mod eigen;
pub mod hbos;
pub mod iforest;
pub mod knn;
pub mod loda;
pub mod lof;
pub mod mahalanobis;
pub mod mcd;
pub mod moments;
pub mod pca;

//! Errors of the pure detector layer. They name the option or column at fault and say what is valid,
//! because they surface verbatim in SQL planning errors and pipeline reports.

use thiserror::Error;

/// Everything that can go wrong while configuring, fitting or applying a detector.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DetectorError {
    /// `hint` is empty or a parenthesised suggestion, e.g. ` (did you mean 'ecod'?)`.
    #[error("unknown algorithm '{name}'{hint}; valid algorithms are: {valid}")]
    UnknownAlgorithm {
        name: String,
        hint: String,
        valid: String,
    },

    /// `hint` is empty, ` (did you mean 'n_trees'?)`, or names the algorithms the option belongs to.
    #[error(
        "unknown option '{name}' for algorithm '{algorithm}'{hint}; valid options are: {valid}"
    )]
    UnknownOption {
        algorithm: String,
        name: String,
        hint: String,
        valid: String,
    },

    #[error("option '{name}' has invalid value '{value}': {expected}")]
    InvalidOption {
        name: String,
        value: String,
        expected: String,
    },

    #[error("malformed options string '{text}': expected 'key=value, key=value' ({reason})")]
    MalformedOptions { text: String, reason: String },

    #[error(
        "feature column {index} has type {data_type}, which is not numeric; cast it to DOUBLE or choose a numeric column"
    )]
    NonNumericColumn { index: usize, data_type: String },

    #[error(
        "expected {expected} feature columns (the model was fitted on {expected}), got {actual}"
    )]
    FeatureCountMismatch { expected: usize, actual: usize },

    #[error("feature columns have different lengths ({first} and {other})")]
    ColumnLengthMismatch { first: usize, other: usize },

    #[error("cannot merge fit states of different detectors ({left} vs {right})")]
    IncompatibleStates { left: String, right: String },

    #[error("the model bytes are not a Nomaly model: {reason}")]
    CorruptModel { reason: String },

    #[error("{algorithm} takes at most {max} features, got {features}")]
    TooManyFeatures {
        algorithm: String,
        features: usize,
        max: usize,
    },

    #[error(
        "feature column {index} has the value {value}, which {algorithm} cannot take: it takes {limit}"
    )]
    ValueOutOfRange {
        algorithm: String,
        index: usize,
        value: f64,
        limit: String,
    },

    #[error(
        "feature column {index} has more than {limit} distinct values; a categorical feature may have at most {limit}: bucket it (e.g. keep the most frequent values and map the rest to 'other') or leave it out"
    )]
    TooManyCategories { index: usize, limit: usize },

    #[error(
        "feature column {index} is text (categorical), which {algorithm} cannot take: hbos, ecod, copod, iforest and eif take text columns; cast it to a number or choose one of those"
    )]
    CategoricalNotSupported { index: usize, algorithm: String },

    #[error(
        "feature column {index} is {found}, but the model was fitted on {expected} values there"
    )]
    FeatureKindMismatch {
        index: usize,
        expected: String,
        found: String,
    },

    #[error("model format version {found} is not supported by this build (supports {supported})")]
    UnsupportedModelVersion { found: u32, supported: u32 },
}

pub type Result<T, E = DetectorError> = std::result::Result<T, E>;

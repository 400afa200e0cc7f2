//! Engine errors. Each says whether the input is at fault (exit code 2: fix the query or the file)
//! or the run failed (exit code 1: a retry may help).

use ballista_core::error::BallistaError;
use datafusion::error::DataFusionError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("invalid size '{text}': {reason}. Examples: 512MB, 2GiB, 1073741824")]
    InvalidSize { text: String, reason: String },

    #[error("--table '{spec}': {reason}. Expected NAME=PATH_OR_GLOB, e.g. tx=data/tx/*.parquet")]
    InvalidTableSpec { spec: String, reason: String },

    #[error(
        "{path}: no input matches this path or glob; check the path, or quote the glob so the shell does not expand it"
    )]
    InputNotFound { path: String },

    #[error(
        "{path}: cannot tell the file format from the extension '{extension}'; use .csv, .parquet, .json/.ndjson/.jsonl, .arrow/.feather/.ipc or .avro"
    )]
    UnknownFormat { path: String, extension: String },

    #[error("{path}: {reason}")]
    UnsupportedFormat { path: String, reason: String },

    #[error("output {path}: {reason}")]
    Output { path: PathBuf, reason: String },

    #[error("{location}: {reason}. {hint}")]
    ObjectStore {
        location: String,
        reason: String,
        hint: String,
    },

    /// Starting or reaching a Ballista scheduler or executor failed (the text says which).
    #[error("Ballista: {0}")]
    Ballista(String),

    #[error(transparent)]
    DataFusion(#[from] DataFusionError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl EngineError {
    /// True when the user's input (query, file, option) is at fault, false for runtime failures.
    pub fn is_user_error(&self) -> bool {
        match self {
            EngineError::DataFusion(e) => is_user_datafusion_error(e),
            EngineError::Ballista(_) | EngineError::Io { .. } => false,
            _ => true,
        }
    }

    /// The message for people: DataFusion's context wrappers (e.g. the name of the analyzer rule
    /// that failed) are dropped, the root cause is kept.
    pub fn user_message(&self) -> String {
        match self {
            EngineError::DataFusion(e) => e.find_root().to_string(),
            other => other.to_string(),
        }
    }

    /// Process exit code: 2 for bad input, 1 for runtime failures.
    pub fn exit_code(&self) -> i32 {
        if self.is_user_error() { 2 } else { 1 }
    }
}

/// Classifies DataFusion errors: SQL, planning and schema errors are the user's to fix.
pub fn is_user_datafusion_error(e: &DataFusionError) -> bool {
    match e.find_root() {
        DataFusionError::SQL(..)
        | DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => true,
        DataFusionError::Execution(msg) => {
            // Input data the user pointed us at, not a fault of the run.
            msg.contains("No files found") || msg.contains("does not exist")
        }
        // Input files that cannot be parsed (ragged CSV rows, text in a numeric column, corrupt
        // Parquet) are the user's to fix, like a bad query.
        DataFusionError::ArrowError(a, _) => {
            use datafusion::arrow::error::ArrowError;
            matches!(
                a.as_ref(),
                ArrowError::CsvError(_)
                    | ArrowError::JsonError(_)
                    | ArrowError::ParseError(_)
                    | ArrowError::CastError(_)
                    | ArrowError::SchemaError(_)
            )
        }
        // ...unless the reader failed on I/O underneath (a store error wrapped as `External`).
        DataFusionError::ParquetError(_) => !is_transient_datafusion_error(e),
        _ => false,
    }
}

/// True when running the same work again may succeed: I/O and object-store failures (not "not
/// found"), memory exhaustion. Parse, schema and plan errors are deterministic and never are. The
/// whole source chain is searched, because readers wrap store errors (e.g. Parquet's `External`).
pub fn is_transient_datafusion_error(e: &DataFusionError) -> bool {
    use datafusion::object_store::Error as StoreError;
    let root = e.find_root();
    match root {
        DataFusionError::ObjectStore(s) => !matches!(s.as_ref(), StoreError::NotFound { .. }),
        DataFusionError::IoError(io) => io.kind() != std::io::ErrorKind::NotFound,
        DataFusionError::ResourcesExhausted(_) => true,
        // Ballista's client turns some of its errors into text (`Execution("GrpcConnectionError(
        // ..)")`): an executor that left after its task finished, whose results can no longer be
        // fetched, arrives this way. Only those two variants are read from the text.
        DataFusionError::Execution(text)
            if text.starts_with("GrpcConnectionError(") || text.starts_with("FetchFailed(") =>
        {
            true
        }
        _ => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(root);
            while let Some(err) = cur {
                if let Some(s) = err.downcast_ref::<StoreError>() {
                    return !matches!(s, StoreError::NotFound { .. });
                }
                if let Some(io) = err.downcast_ref::<std::io::Error>() {
                    return io.kind() != std::io::ErrorKind::NotFound;
                }
                if let Some(b) = err.downcast_ref::<BallistaError>() {
                    return is_transient_ballista_error(b);
                }
                if let Some(status) = err.downcast_ref::<tonic::Status>() {
                    return is_transient_status(status);
                }
                cur = err.source();
            }
            false
        }
    }
}

/// A Ballista failure that another attempt may not meet: results that could not be fetched from
/// an executor (lost since the job finished, or unreachable), transport failures.
fn is_transient_ballista_error(e: &BallistaError) -> bool {
    match e {
        BallistaError::FetchFailed(..)
        | BallistaError::TonicError(_)
        | BallistaError::GrpcConnectionError(_) => true,
        BallistaError::IoError(io) => io.kind() != std::io::ErrorKind::NotFound,
        BallistaError::GrpcError(status) => is_transient_status(status),
        _ => false,
    }
}

/// A gRPC/Flight status another attempt may not meet: the peer unreachable or gone (an executor
/// killed while its results stream, which tonic reports as `Unknown` with the transport error as
/// its source), overloaded, or too slow.
fn is_transient_status(status: &tonic::Status) -> bool {
    use std::error::Error;
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted => {
            true
        }
        Code::Unknown | Code::Internal => status.source().is_some(),
        _ => false,
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// An executor gone after its task: Ballista's client reports the failed fetch as text, and it
    /// is still worth another attempt; other execution errors are not.
    #[test]
    fn results_an_executor_took_with_it_are_transient() {
        let gone = DataFusionError::Execution(
            "GrpcConnectionError(\"Error connecting to Ballista scheduler or executor at \
             http://127.0.0.1:40517: tcp connect error\")"
                .into(),
        );
        assert!(is_transient_datafusion_error(&gone));
        let fetch = DataFusionError::Execution("FetchFailed(\"e1\", 1, 0, \"gone\")".into());
        assert!(is_transient_datafusion_error(&fetch));
        let plan = DataFusionError::Execution("division by zero".into());
        assert!(!is_transient_datafusion_error(&plan));
        let wrapped = DataFusionError::Context("chunk 4".into(), Box::new(gone));
        assert!(is_transient_datafusion_error(&wrapped));
    }
}

//! Pipeline errors. Each names the place (file:line:column, the source, step, column or chunk) and
//! the fix, and says whether the input is at fault (exit code 2) or the run failed (exit code 1).

use nomaly_engine::EngineError;
use std::path::PathBuf;
use thiserror::Error;

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("{}: cannot read the pipeline file: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{}:{line}:{column}: {message}", path.display())]
    Substitution {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("--set {setting}: {reason}")]
    Override { setting: String, reason: String },

    /// A semantic problem in the file: `place` is e.g. "p.toml:7:1 [detect] columns".
    #[error("{place}: {message}")]
    Invalid { place: String, message: String },

    #[error("{place}: {source}")]
    Engine {
        place: String,
        #[source]
        source: EngineError,
    },

    #[error("output {}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },

    #[error("chunk {chunk} ({range}): {message}")]
    Chunk {
        chunk: usize,
        range: String,
        message: String,
        user_error: bool,
        /// A retry may help (I/O, object store, memory); see [`PipelineError::is_transient`].
        transient: bool,
    },

    #[error(
        "the run exceeded its timeout of {limit} ([resources] timeout); raise it or give the run more cpus"
    )]
    Timeout { limit: String },

    #[error(
        "output {} has an unfinished run ({committed} of {chunks} chunks committed, in {}); continue it with `nomaly resume {}`, or discard it and start over with `nomaly run --restart {}`",
        output.display(), run_dir.display(), file.display(), file.display()
    )]
    UnfinishedRun {
        output: PathBuf,
        run_dir: PathBuf,
        committed: usize,
        chunks: usize,
        file: PathBuf,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl PipelineError {
    pub fn invalid(place: impl Into<String>, message: impl Into<String>) -> Self {
        PipelineError::Invalid {
            place: place.into(),
            message: message.into(),
        }
    }

    pub fn engine(place: impl Into<String>, source: impl Into<EngineError>) -> Self {
        PipelineError::Engine {
            place: place.into(),
            source: source.into(),
        }
    }

    /// True when the pipeline file or its input is at fault.
    pub fn is_user_error(&self) -> bool {
        match self {
            PipelineError::Engine { source, .. } => source.is_user_error(),
            PipelineError::Chunk { user_error, .. } => *user_error,
            PipelineError::Io { .. } | PipelineError::Timeout { .. } => false,
            _ => true,
        }
    }

    /// True when doing the same work again may succeed, so a chunk is retried with backoff.
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Chunk { transient, .. } => *transient,
            PipelineError::Io { source, .. } => source.kind() != std::io::ErrorKind::NotFound,
            PipelineError::Engine {
                source: EngineError::DataFusion(e),
                ..
            } => nomaly_engine::error::is_transient_datafusion_error(e),
            _ => false,
        }
    }

    /// 2 for invalid input, 1 for a failed run.
    pub fn exit_code(&self) -> i32 {
        if self.is_user_error() { 2 } else { 1 }
    }

    /// One paragraph for people: DataFusion's wrappers dropped, the root cause kept.
    pub fn user_message(&self) -> String {
        match self {
            PipelineError::Engine { place, source } => {
                format!("{place}: {}", source.user_message())
            }
            other => other.to_string(),
        }
    }
}

//! Pipeline errors. Each names the place (file:line:column, the source, step, column or chunk) and
//! the fix, and has a kind ([`ErrorKind`]): the input is at fault (exit code 2), a retry may help,
//! or the run failed for good (exit code 1). A cancelled run is its own variant (exit code 130).

use nomaly_engine::EngineError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use thiserror::Error;

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Whose fault an error is and whether doing the same work again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The pipeline file or its input: fix them, a retry cannot help (exit code 2).
    User,
    /// I/O, an object store, memory: the same work may succeed again, so it is retried.
    Transient,
    /// The run failed and retrying will not help (exit code 1).
    Permanent,
}

/// Where in a run an error happened, for errors that are not about a place in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "place", rename_all = "snake_case")]
pub enum RunPlace {
    /// The fit (all of it, or the partition named).
    Fit { partition: Option<usize> },
    /// Writing the detect input once so it can be chunked.
    Materialize,
    /// Planning the scoring over the chunks.
    Plan,
    /// One chunk: its id and what it holds ("tx.parquet row groups 0..3").
    Chunk { id: usize, range: String },
    /// The end-of-run check that every row went in and came out (of the chunk, if one is named).
    Consistency { chunk: Option<usize> },
    /// The run as a whole (its task failed).
    Run,
}

impl fmt::Display for RunPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunPlace::Fit { partition: None } => write!(f, "fit"),
            RunPlace::Fit { partition: Some(i) } => write!(f, "fit partition {i}"),
            RunPlace::Materialize => write!(f, "materializing the detect input"),
            RunPlace::Plan => write!(f, "scoring plan"),
            RunPlace::Chunk { id, range } => write!(f, "chunk {id} ({range})"),
            RunPlace::Consistency { chunk: None } => write!(f, "consistency check"),
            RunPlace::Consistency { chunk: Some(c) } => write!(f, "chunk {c} (consistency check)"),
            RunPlace::Run => write!(f, "the run"),
        }
    }
}

impl RunPlace {
    /// The chunk this place is in, if any.
    pub fn chunk(&self) -> Option<usize> {
        match self {
            RunPlace::Chunk { id, .. } => Some(*id),
            RunPlace::Consistency { chunk } => *chunk,
            _ => None,
        }
    }
}

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

    /// Something the pipeline names that its sandbox does not allow (a path outside the
    /// allowed roots, a location or variable not allowed): see SECURITY.md.
    #[error("{place}: {message}")]
    Refused { place: String, message: String },

    #[error("{place}: {source}")]
    Engine {
        place: String,
        #[source]
        source: EngineError,
    },

    #[error("output {}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },

    /// A failure of the run's own work (the fit, a chunk, the end-of-run check).
    #[error("{place}: {message}")]
    Run {
        place: RunPlace,
        kind: ErrorKind,
        message: String,
    },

    #[error(
        "the run exceeded its timeout of {limit} ([resources] timeout); raise it or give the run more cpus. {resume}"
    )]
    Timeout { limit: String, resume: Resumable },

    /// The run was cancelled (Ctrl-C, or its [`crate::Run`] handle): in-flight chunks stopped,
    /// committed chunks are kept.
    #[error("the run was cancelled. {resume}")]
    Cancelled { resume: Resumable },

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

    /// Another run holds the output (SECURITY.md, "One writer per output").
    #[error(
        "output {} is being written by another run: {holder}; wait for it to end (or stop it), then run again",
        output.display()
    )]
    OutputLocked { output: PathBuf, holder: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a stopped run left behind and the command that continues it.
#[derive(Debug, Clone, Default)]
pub struct Resumable {
    /// Chunks committed (kept) and chunks in all; 0 of 0 before chunking began.
    pub committed: usize,
    pub chunks: usize,
    /// The pipeline file `nomaly resume` takes.
    pub file: PathBuf,
}

impl fmt::Display for Resumable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.committed == 0 {
            write!(
                f,
                "No chunk was committed, so nothing was kept; `nomaly resume {}` starts it again",
                self.file.display()
            )
        } else {
            write!(
                f,
                "{} of {} chunks are committed and kept; `nomaly resume {}` continues from them",
                self.committed,
                self.chunks,
                self.file.display()
            )
        }
    }
}

impl PipelineError {
    pub fn invalid(place: impl Into<String>, message: impl Into<String>) -> Self {
        PipelineError::Invalid {
            place: place.into(),
            message: message.into(),
        }
    }

    /// A sandbox refusal at `place`.
    pub fn refused(place: impl Into<String>, refusal: crate::sandbox::Refused) -> Self {
        PipelineError::Refused {
            place: place.into(),
            message: refusal.0,
        }
    }

    pub fn engine(place: impl Into<String>, source: impl Into<EngineError>) -> Self {
        PipelineError::Engine {
            place: place.into(),
            source: source.into(),
        }
    }

    /// A failure of the run's own work at `place`.
    pub fn at(place: RunPlace, kind: ErrorKind, message: impl Into<String>) -> Self {
        PipelineError::Run {
            place,
            kind,
            message: message.into(),
        }
    }

    /// Whose fault this is and whether a retry may help.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PipelineError::Engine { source, .. } => match source {
                EngineError::DataFusion(e)
                    if nomaly_engine::error::is_transient_datafusion_error(e) =>
                {
                    ErrorKind::Transient
                }
                s if s.is_user_error() => ErrorKind::User,
                _ => ErrorKind::Permanent,
            },
            PipelineError::Run { kind, .. } => *kind,
            PipelineError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::Permanent
            }
            PipelineError::Io { .. } => ErrorKind::Transient,
            PipelineError::Timeout { .. } | PipelineError::Cancelled { .. } => ErrorKind::Permanent,
            _ => ErrorKind::User,
        }
    }

    /// True when the pipeline file or its input is at fault.
    pub fn is_user_error(&self) -> bool {
        self.kind() == ErrorKind::User
    }

    /// True when doing the same work again may succeed, so a chunk is retried with backoff.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// 2 for invalid input, 130 for a cancelled run (as for SIGINT), 1 for a failed run.
    pub fn exit_code(&self) -> i32 {
        match self {
            PipelineError::Cancelled { .. } => 130,
            e if e.is_user_error() => 2,
            _ => 1,
        }
    }

    /// The chunk this error is about, if any (failures are reported in chunk order).
    pub fn chunk(&self) -> Option<usize> {
        match self {
            PipelineError::Run { place, .. } => place.chunk(),
            _ => None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_exit_codes() {
        let chunk = RunPlace::Chunk {
            id: 3,
            range: "a.parquet row groups 3..4".into(),
        };
        let e = PipelineError::at(chunk.clone(), ErrorKind::Transient, "read failed");
        assert_eq!(
            e.to_string(),
            "chunk 3 (a.parquet row groups 3..4): read failed"
        );
        assert!(e.is_transient() && !e.is_user_error());
        assert_eq!((e.exit_code(), e.chunk()), (1, Some(3)));
        let e = PipelineError::at(chunk, ErrorKind::User, "bad value");
        assert_eq!(e.exit_code(), 2);
        let io = |kind| PipelineError::Io {
            path: "x".into(),
            source: std::io::Error::from(kind),
        };
        assert_eq!(
            io(std::io::ErrorKind::NotFound).kind(),
            ErrorKind::Permanent
        );
        assert_eq!(
            io(std::io::ErrorKind::Interrupted).kind(),
            ErrorKind::Transient
        );
        let cancelled = PipelineError::Cancelled {
            resume: Resumable {
                committed: 2,
                chunks: 5,
                file: "p.toml".into(),
            },
        };
        assert_eq!(cancelled.exit_code(), 130);
        assert!(
            cancelled
                .to_string()
                .contains("2 of 5 chunks are committed and kept; `nomaly resume p.toml`"),
            "{cancelled}"
        );
        assert_eq!(PipelineError::invalid("p.toml", "x").exit_code(), 2);
    }
}

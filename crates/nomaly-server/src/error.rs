//! What can go wrong in the server, with the place (file, run, pipeline) and the HTTP status it
//! maps to.

use std::path::PathBuf;

pub type Result<T, E = ServerError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("job store {path}: {source}")]
    Store {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "job store {path} has schema version {version}, newer than this nomaly knows ({known}); \
         use the nomaly that wrote it, or another --db"
    )]
    StoreTooNew {
        path: PathBuf,
        version: i64,
        known: usize,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The request is wrong (400): a bad pipeline, a bad option, a path outside the roots.
    #[error("{0}")]
    BadRequest(String),
    /// The request is refused by a rule (403): a path outside the allowed roots, a command notify.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the run's state (409): cancel a finished run, retry a running one.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Config(String),
    /// A client holds as many event streams as it may (429).
    #[error("{0}")]
    TooMany(String),
    /// A service this server reads from (the Ballista scheduler) failed or did not answer (502).
    #[error("{0}")]
    Upstream(String),
}

impl ServerError {
    pub fn status(&self) -> u16 {
        match self {
            ServerError::BadRequest(_) => 400,
            ServerError::Forbidden(_) => 403,
            ServerError::NotFound(_) => 404,
            ServerError::Conflict(_) => 409,
            ServerError::TooMany(_) => 429,
            ServerError::Upstream(_) => 502,
            _ => 500,
        }
    }
}

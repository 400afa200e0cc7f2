//! The Cluster view's data: `nomaly serve --scheduler` reads a Ballista scheduler's REST API
//! (executors, jobs, stages, plans) through the engine's typed client and cancels its jobs, so
//! the dashboard shows the cluster without the browser reaching the scheduler itself.

use crate::error::{Result, ServerError};
use nomaly_engine::ballista::rest::SchedulerState;
use nomaly_engine::ballista::{RestError, SchedulerRest};
use serde::Serialize;

/// `GET /api/cluster`: which scheduler this server reads, and its state.
#[derive(Debug, Serialize)]
pub struct ClusterOverview {
    /// The scheduler's REST base (`http(s)://host:port`).
    pub scheduler: String,
    pub state: SchedulerState,
}

/// The client of `--scheduler` (`ballista://HOST:PORT`, `http://HOST:PORT` or `HOST:PORT`).
pub fn scheduler_rest(engine: &str) -> Result<SchedulerRest> {
    SchedulerRest::new(engine).map_err(|e| {
        ServerError::Config(format!(
            "--scheduler {engine}: {e}; give the scheduler as ballista://HOST:PORT"
        ))
    })
}

/// A bad job id (checked by the client before it reaches the scheduler's URL) is the caller's
/// fault; a scheduler that does not answer, or answers badly, is a 502.
impl From<RestError> for ServerError {
    fn from(e: RestError) -> ServerError {
        match e {
            RestError::NotFound { .. } => ServerError::NotFound(e.to_string()),
            RestError::Config(m) => ServerError::BadRequest(m),
            other => ServerError::Upstream(other.to_string()),
        }
    }
}

//! The bodies of the HTTP API that are not a stored record as it is: a run with its live state,
//! the lists, health and errors. Every body the API sends is a Rust type here or in the store,
//! and `openapi.json` is generated from them (`openapi.rs`).

use crate::events::RunEventBody;
use crate::server::{QueueEntry, ScheduleView, Server};
use crate::store::{ChunkRecord, RunRecord, RunState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A run with its live progress and, while queued, its place in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    #[serde(flatten)]
    pub run: RunRecord,
    pub queue: Option<QueueEntry>,
}

impl RunView {
    /// `run` with the server's live progress (while it runs) and its queue entry (while queued).
    pub fn of(server: &Server, mut run: RunRecord, queue: Option<&[QueueEntry]>) -> RunView {
        if run.state == RunState::Running
            && let Some(p) = server.progress(run.id)
        {
            run.progress = Some(p);
        }
        let queue = (run.state == RunState::Queued)
            .then(|| queue.and_then(|q| q.iter().find(|e| e.id == run.id).cloned()))
            .flatten();
        RunView { run, queue }
    }
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    pub version: String,
    /// The job store's schema version.
    pub schema_version: i64,
}

/// `GET /api/runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    pub runs: Vec<RunView>,
    /// Runs the filters match in all (`runs` is the page `limit` and `offset` ask for).
    pub total: u64,
}

/// `GET /api/runs/{id}/chunks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChunkList {
    pub run: i64,
    pub chunks: Vec<ChunkRecord>,
}

/// `GET /api/runs/{id}/history`: the run's stored events (all but progress samples).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct History {
    pub run: i64,
    pub events: Vec<StoredEvent>,
}

/// One stored event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredEvent {
    /// Its place among the run's events, from 1.
    pub seq: i64,
    pub at_ms: i64,
    #[serde(flatten)]
    pub event: RunEventBody,
}

/// `GET /api/schedules`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// `POST /api/schedules`: register the pipeline file at `path` (on the server).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    pub path: String,
    /// The priority of the runs it queues (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

/// Every error: a 4xx says whose fault it is, a 5xx that it is the server's (or its scheduler's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

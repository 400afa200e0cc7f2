//! What happens to a run, as `nomaly serve` stores and streams it: one typed event per kind,
//! written `{"kind": "...", "data": {...}}` (an SSE message's `event:` name is its kind). The
//! pipeline's own [`nomaly_pipeline::RunEvent`]s become these in `server/execution.rs`; the
//! server adds the queue's (`queued`, `requeued`, `cancelling`, `finished`) and the stream's
//! first message (`snapshot`).

use crate::bodies::RunView;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One event of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum RunEventBody {
    /// Entered the queue (submitted, fired by a schedule or a dependency).
    Queued {
        pipeline: String,
        priority: i64,
        memory_bytes: u64,
        trigger: String,
    },
    /// The run began; `resume`: it continues an interrupted run.
    Started {
        pipeline: String,
        resume: bool,
    },
    /// A phase began: "reading sources", "fit", "score", "validate", ...
    Phase {
        phase: String,
    },
    FitDone {
        input_rows: u64,
        models: u64,
        reused: bool,
    },
    /// Scoring began over `chunks` chunks (`rows` in all, when known).
    ScoringStarted {
        chunks: u64,
        rows: Option<u64>,
    },
    /// A chunk committed by an earlier attempt was kept.
    ChunkReused {
        chunk: u64,
        rows: u64,
    },
    /// A chunk's part files are in place and its manifest line is on disk.
    ChunkCommitted {
        chunk: u64,
        rows: u64,
        anomalies: u64,
        seconds: f64,
        /// The manifest line's commit time (ms since the epoch).
        committed_at_ms: u64,
    },
    /// A transient failure, tried again after `wait_seconds`.
    Retry {
        place: String,
        attempt: u32,
        error: String,
        wait_seconds: f64,
    },
    /// Sampled by the server while the run is active (streamed, not stored).
    Progress(Progress),
    /// A `[[validate]]` check's result.
    Check {
        check: String,
        passed: bool,
        detail: String,
    },
    Warning {
        warning: String,
    },
    /// Cancel was asked for; the run stops at its next batch.
    Cancelling {},
    /// Back in the queue: retried or resumed (`mode`), or after a server restart (`reason`).
    Requeued {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The run ended: `succeeded`, `failed`, `cancelled` or `timed_out`.
    Finished {
        state: String,
        error: Option<String>,
    },
    /// The first message of `/api/runs/{id}/events`: the run as it is.
    Snapshot(Box<RunView>),
}

impl RunEventBody {
    /// The kind, as it is written.
    pub fn kind(&self) -> &'static str {
        match self {
            RunEventBody::Queued { .. } => "queued",
            RunEventBody::Started { .. } => "started",
            RunEventBody::Phase { .. } => "phase",
            RunEventBody::FitDone { .. } => "fit_done",
            RunEventBody::ScoringStarted { .. } => "scoring_started",
            RunEventBody::ChunkReused { .. } => "chunk_reused",
            RunEventBody::ChunkCommitted { .. } => "chunk_committed",
            RunEventBody::Retry { .. } => "retry",
            RunEventBody::Progress(_) => "progress",
            RunEventBody::Check { .. } => "check",
            RunEventBody::Warning { .. } => "warning",
            RunEventBody::Cancelling {} => "cancelling",
            RunEventBody::Requeued { .. } => "requeued",
            RunEventBody::Finished { .. } => "finished",
            RunEventBody::Snapshot(_) => "snapshot",
        }
    }

    /// The event's `data`, as stored beside its kind.
    pub fn data(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => map.remove("data").unwrap_or_default(),
            _ => serde_json::Value::Null,
        }
    }

    /// An event from its stored kind and data; `None` for a kind or shape this version does not
    /// know (a store written by another version).
    pub fn from_stored(kind: &str, data: serde_json::Value) -> Option<RunEventBody> {
        let mut map = serde_json::Map::new();
        map.insert("kind".into(), serde_json::Value::String(kind.to_string()));
        map.insert("data".into(), data);
        serde_json::from_value(serde_json::Value::Object(map)).ok()
    }
}

/// One message of an event stream (`/api/events`, `/api/runs/{id}/events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamEvent {
    pub run: i64,
    /// When the server sent it (ms since the epoch).
    pub at_ms: i64,
    #[serde(flatten)]
    pub event: RunEventBody,
}

/// A run's progress while it is active (and its last sample after).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct Progress {
    pub phase: String,
    /// Of the rows (or, before they are known, of the chunks).
    pub percent: Option<f64>,
    pub rows_done: u64,
    pub rows_total: Option<u64>,
    pub chunks_done: u64,
    pub chunks_total: Option<u64>,
    pub rows_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub elapsed_seconds: f64,
    pub bytes_written: u64,
    /// Bytes its memory pool holds now.
    pub memory_bytes: u64,
    /// The budget it was admitted with.
    pub memory_budget_bytes: Option<u64>,
    pub retries: u64,
    pub errors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire shape is `{"run", "at_ms", "kind", "data"}`, and what is stored reads back.
    #[test]
    fn events_keep_their_wire_shape() {
        let e = StreamEvent {
            run: 3,
            at_ms: 9,
            event: RunEventBody::ChunkCommitted {
                chunk: 1,
                rows: 10,
                anomalies: 2,
                seconds: 0.5,
                committed_at_ms: 7,
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "chunk_committed");
        assert_eq!(v["data"]["committed_at_ms"], 7);
        assert_eq!(v["run"], 3);
        assert_eq!(serde_json::from_value::<StreamEvent>(v).unwrap(), e);
        let back = RunEventBody::from_stored(e.event.kind(), e.event.data()).unwrap();
        assert_eq!(back, e.event);
        let cancelling = RunEventBody::Cancelling {};
        assert_eq!(cancelling.data(), serde_json::json!({}));
        assert_eq!(
            RunEventBody::from_stored("cancelling", serde_json::json!({})),
            Some(cancelling)
        );
        assert_eq!(
            RunEventBody::from_stored("no_such_kind", serde_json::json!({})),
            None
        );
    }
}

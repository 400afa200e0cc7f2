//! A run's log: its stored events as lines (time, level, message), the way `nomaly logs` and
//! `/api/runs/{id}/logs` show them. The events are the one record of what a run did; the log is
//! how a person reads it.

use crate::bodies::StoredEvent;
use crate::events::RunEventBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    /// The event's place among the run's events (`?after=` takes it).
    pub seq: i64,
    pub at_ms: i64,
    /// `info`, `warn` or `error`.
    pub level: String,
    pub message: String,
}

/// `GET /api/runs/{id}/logs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LogList {
    pub run: i64,
    /// After `?after=`, oldest first.
    pub lines: Vec<LogLine>,
    /// The run has ended: no line will follow.
    pub finished: bool,
}

impl LogLine {
    /// The line of a stored event.
    pub fn of(e: &StoredEvent) -> LogLine {
        let (level, message) = describe(&e.event);
        LogLine {
            seq: e.seq,
            at_ms: e.at_ms,
            level: level.to_string(),
            message,
        }
    }
}

fn describe(e: &RunEventBody) -> (&'static str, String) {
    use RunEventBody as E;
    match e {
        E::Queued {
            pipeline,
            priority,
            memory_bytes,
            trigger,
        } => (
            "info",
            format!(
                "queued {pipeline} (priority {priority}, memory {}, by {trigger})",
                crate::server::human_bytes(*memory_bytes)
            ),
        ),
        E::Started { pipeline, resume } => (
            "info",
            format!(
                "started {pipeline}{}",
                if *resume { ", resuming" } else { "" }
            ),
        ),
        E::Phase { phase } => ("info", format!("phase: {phase}")),
        E::FitDone {
            input_rows,
            models,
            reused,
        } => (
            "info",
            format!(
                "{} {models} model(s) on {input_rows} rows",
                if *reused { "reused" } else { "fitted" }
            ),
        ),
        E::ScoringStarted { chunks, rows } => (
            "info",
            match rows {
                Some(r) => format!("scoring {chunks} chunk(s), {r} rows"),
                None => format!("scoring {chunks} chunk(s)"),
            },
        ),
        E::ChunkReused { chunk, rows } => (
            "info",
            format!("chunk {chunk} kept from an earlier attempt ({rows} rows)"),
        ),
        E::ChunkCommitted {
            chunk,
            rows,
            anomalies,
            seconds,
            ..
        } => (
            "info",
            format!(
                "chunk {chunk} committed: {rows} rows, {anomalies} anomalies in {seconds:.2} s"
            ),
        ),
        E::Retry {
            place,
            attempt,
            error,
            wait_seconds,
        } => (
            "warn",
            format!("{place}: {error}; retry {attempt} in {wait_seconds:.2} s"),
        ),
        E::Progress(p) => ("info", format!("progress: {}", p.phase)),
        E::Check {
            check,
            passed,
            detail,
        } => (
            if *passed { "info" } else { "error" },
            format!(
                "check {check} {}: {detail}",
                if *passed { "passed" } else { "FAILED" }
            ),
        ),
        E::Warning { warning } => ("warn", warning.clone()),
        E::Cancelling {} => (
            "warn",
            "cancel requested: stopping at the next batch".into(),
        ),
        E::Requeued { mode, reason } => (
            "info",
            format!(
                "queued again{}{}",
                mode.as_ref().map(|m| format!(" ({m})")).unwrap_or_default(),
                reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ),
        E::Finished { state, error } => (
            if state == "succeeded" {
                "info"
            } else {
                "error"
            },
            match error {
                Some(e) => format!("finished {state}: {e}"),
                None => format!("finished {state}"),
            },
        ),
        E::Snapshot(_) => ("info", "snapshot".into()),
    }
}

//! Progress events a run emits; the CLI draws them as a bar or log lines.

use std::time::Duration;

#[derive(Debug, Clone)]
pub enum ProgressEvent {
    /// A phase began: "register sources", "fit", "score", "validate", ...
    Phase(String),
    /// Scoring starts over `chunks` chunks holding about `rows` rows (exact for Parquet).
    ScoringStarted {
        chunks: usize,
        rows: Option<u64>,
    },
    /// One chunk committed.
    ChunkDone {
        chunk: usize,
        rows: u64,
        anomalies: u64,
    },
    /// A chunk an interrupted run committed, kept by `resume` (counts toward progress, not speed).
    ChunkReused {
        chunk: usize,
        rows: u64,
    },
    /// Periodic sample (at least once a second while scoring).
    Tick {
        elapsed: Duration,
        memory_reserved: usize,
    },
    Warning(String),
}

/// Receives progress; must be cheap (called from the run's tasks).
pub trait ProgressObserver: Send + Sync {
    fn on_event(&self, event: &ProgressEvent);
}

/// Ignores everything.
pub struct NoProgress;

impl ProgressObserver for NoProgress {
    fn on_event(&self, _event: &ProgressEvent) {}
}

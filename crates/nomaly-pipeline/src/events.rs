//! What a run tells while it runs: typed events, in the order things happen. The CLI draws them as
//! a progress bar or log lines; `nomaly serve` stores and streams them.
//!
//! Order guarantees: `Started` is first and `Finished` last (once, with the report, whatever the
//! outcome); `ChunkCommitted` comes once per chunk this run committed, in the order of the
//! manifest's commit lines (it is sent after the commit line is on disk, from one place).

use crate::error::RunPlace;
use crate::report::{CheckResult, RunReport};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The run began: its pipeline, and whether it continues an interrupted run.
    Started {
        pipeline: String,
        resume: bool,
    },
    /// A phase began: "reading sources", "fit", "score", "validate", ...
    Phase(String),
    /// The model(s) are fitted (or, on resume, read back from the run directory).
    FitDone {
        input_rows: u64,
        models: usize,
        reused: bool,
    },
    /// Scoring starts over `chunks` chunks holding about `rows` rows (exact for Parquet).
    ScoringStarted {
        chunks: usize,
        rows: Option<u64>,
    },
    /// A chunk an interrupted run committed, kept by `resume` (counts toward progress, not speed).
    ChunkReused {
        chunk: usize,
        rows: u64,
    },
    /// One chunk committed: its part files are in place and its manifest line is on disk.
    ChunkCommitted {
        chunk: usize,
        rows: u64,
        anomalies: u64,
        /// How long the committing attempt took.
        seconds: f64,
        /// The commit time written in the manifest line.
        committed_at_unix_ms: u64,
    },
    /// A unit of work failed transiently and is tried again after `wait`.
    Retry {
        place: RunPlace,
        attempt: u32,
        error: String,
        wait: Duration,
    },
    /// A sample, at least twice a second while the run works.
    Progress {
        /// Rows scored so far, by chunks in flight too (a failed attempt's rows are taken back).
        rows_done: u64,
        /// The rows to score, when known (Parquet row counts, or the fit's count).
        rows_total: Option<u64>,
        /// Bytes of committed part files.
        bytes: u64,
        /// Bytes reserved in the memory pool now.
        memory: usize,
        elapsed: Duration,
    },
    /// A `[[validate]]` check ran.
    CheckResult(CheckResult),
    Warning(String),
    /// The run ended; `report.status` says how.
    Finished {
        report: Box<RunReport>,
    },
}

/// Receives a run's events; must be cheap (called from the run's tasks).
pub trait RunObserver: Send + Sync {
    fn on_event(&self, event: &RunEvent);
}

/// Ignores everything.
pub struct NoObserver;

impl RunObserver for NoObserver {
    fn on_event(&self, _event: &RunEvent) {}
}

/// Sends every event into a channel (the [`crate::Run`] handle's stream).
pub(crate) struct ChannelObserver(pub tokio::sync::mpsc::UnboundedSender<RunEvent>);

impl RunObserver for ChannelObserver {
    fn on_event(&self, event: &RunEvent) {
        // A receiver that is gone (nobody listening) is no reason to stop the run.
        let _ = self.0.send(event.clone());
    }
}

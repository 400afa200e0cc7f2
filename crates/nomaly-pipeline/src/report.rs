//! The run report (JSON): what went in, what came out, how long each part took, what it cost.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Not finished yet (the report of a run in progress).
    #[default]
    Running,
    Succeeded,
    /// The run finished but a `[[validate]]` check failed (exit code 3).
    ValidationFailed,
    Failed,
    /// `--dry-run`: every step planned and run on zero rows.
    DryRun,
    /// Cancelled (Ctrl-C, or the run's handle): committed chunks are kept for `nomaly resume`.
    Cancelled,
    /// Stopped at its `[resources] timeout`; committed chunks are kept for `nomaly resume`.
    TimedOut,
    /// An incremental source had no file that an earlier run has not read: nothing was read or
    /// written (exit code 0).
    NothingNew,
}

impl RunStatus {
    /// The name used in reports and messages ("succeeded", "validation_failed", ...).
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::ValidationFailed => "validation_failed",
            RunStatus::Failed => "failed",
            RunStatus::DryRun => "dry_run",
            RunStatus::Cancelled => "cancelled",
            RunStatus::TimedOut => "timed_out",
            RunStatus::NothingNew => "nothing_new",
        }
    }
}

/// How a run's input splits into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkingMode {
    /// Chunks are slices of the first source; partition i of the scoring plan is chunk i.
    #[default]
    Source,
    /// The steps mix rows across chunks, so the detect input was written once and that is chunked.
    Materialized,
    /// `partition_by`: the detect input was written once in buckets by segment; each bucket is a
    /// chunk that fits and scores its own segments.
    Segments,
}

impl std::fmt::Display for ChunkingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChunkingMode::Source => "source",
            ChunkingMode::Materialized => "materialized",
            ChunkingMode::Segments => "segments",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepTiming {
    pub step: String,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    pub path: String,
    pub format: String,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub pipeline: String,
    pub file: String,
    pub status: RunStatus,
    pub started_at_unix_ms: u128,
    pub seconds: f64,
    pub algorithm: Option<String>,
    pub options: Option<String>,
    /// Rows read by the detect step.
    pub input_rows: u64,
    /// Rows scored (= input rows when nothing was lost).
    pub output_rows: u64,
    pub anomalies: u64,
    pub anomaly_rate: f64,
    /// Rows with a null/NaN/±Inf feature: skipped by the fit, scored null (the documented policy).
    pub rows_with_missing_features: u64,
    /// Lines of the input that could not be parsed, set aside under `on_bad_rows = "quarantine"`.
    pub quarantined_rows: u64,
    /// Where they are: `<output>/_nomaly/quarantine/` (NDJSON: chunk, byte offset, reason, line).
    pub quarantine_dir: Option<String>,
    pub models: usize,
    pub chunks: usize,
    /// "source" (chunks are slices of the first source) or "materialized" (the detect input was
    /// written once and chunked, because the steps mix rows across chunks).
    pub chunking: ChunkingMode,
    /// "local" (DataFusion in this process), "standalone" (Ballista scheduler and executor in this
    /// process) or "ballista://HOST:PORT" (a cluster).
    pub engine: String,
    /// Ballista jobs the run submitted (the fit, then one per chunk).
    pub ballista_jobs: usize,
    /// What ends the names of this run's Ballista jobs (`<pipeline>: chunk 3 [tag]`).
    pub ballista_job_tag: Option<String>,
    /// Bytes of Arrow data this process received from Ballista (the rows' buffers): the fit's
    /// model states and each chunk's summary rows.
    pub bytes_from_cluster: u64,
    /// Of those, what the chunk jobs returned: a few rows per chunk naming its part files. The
    /// executors write the part files, so scored rows never come back to this process.
    pub chunk_bytes_from_cluster: u64,
    pub chunk_rows: u64,
    pub retries: u64,
    pub steps: Vec<StepTiming>,
    pub sinks: Vec<SinkReport>,
    pub checks: Vec<CheckResult>,
    pub memory_limit_bytes: usize,
    /// How the budget was shared (nomaly_engine::BudgetSplit): the process's own footprint, as
    /// measured when the run started ...
    #[serde(default)]
    pub memory_process_bytes: usize,
    /// ... the Parquet reader buffers its sources need outside the pool ...
    #[serde(default)]
    pub memory_reader_bytes: usize,
    /// ... and the operators' pool, the rest.
    #[serde(default)]
    pub memory_pool_bytes: usize,
    /// Peak bytes reserved in the memory pool (sampled every 50 ms).
    pub peak_pool_bytes: usize,
    /// The process's peak resident set (VmHWM), as the kernel counts it.
    pub peak_rss_bytes: u64,
    /// Peak bytes of spill files on disk.
    pub spill_bytes: u64,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    /// The run directory (manifest, model, fingerprint): `<output>/_nomaly` once published.
    pub run_dir: Option<String>,
    pub recovery: Recovery,
    /// With an incremental source: the files this run took (none were read by an earlier run
    /// that published), and how many earlier runs had read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<IncrementalReport>,
    /// A model fitted on a `train` query or read from the registry, and the scores' drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelReport>,
}

/// Where the run's model came from, when not from a fit of its input, and how far its scores
/// drifted from the model's training scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// "train" (fitted on the `train` query) or "registry".
    pub source: String,
    /// The registered model's name (a training run registers under it on success).
    pub name: Option<String>,
    /// The version scored with, or registered by this run.
    pub version: Option<u32>,
    pub training_rows: u64,
    /// The training scores' decile edges and the share of them in each bin.
    pub score_edges: Vec<f64>,
    pub score_shares: Vec<f64>,
    /// Population-stability index of this run's scores over those bins.
    pub drift_psi: Option<f64>,
    pub drift_above: f64,
}

/// See [`RunReport::incremental`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncrementalReport {
    pub new_files: u64,
    pub consumed_before: u64,
    /// The ledger of consumed files (`.nomaly-state/<pipeline>/consumed.json`).
    pub ledger: String,
}

/// What it took to get here: retries, and what a resume reused and redid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    /// This run continued an interrupted one (`nomaly resume`).
    pub resumed: bool,
    /// The fitted model(s) came from the run directory, not a new fit.
    pub model_reused: bool,
    /// Chunks committed by earlier attempts, verified against the manifest and kept.
    pub chunks_reused: usize,
    /// Chunks that were in flight when the earlier attempt stopped, done again.
    pub chunks_redone: usize,
    /// Committed chunks whose files no longer matched the manifest, done again.
    pub chunks_invalid: usize,
    /// Temp files and uncommitted part files an earlier attempt left, removed.
    pub orphan_files_removed: usize,
    /// Part files of Ballista task attempts that were not published (a task Ballista re-ran after
    /// losing its executor, or retried), removed.
    pub task_attempt_files_removed: u64,
    /// Retries of chunks ("chunk 3") and fit partitions ("fit 3") that needed any.
    pub retries: BTreeMap<String, u32>,
    /// Work thrown away: failed attempts, plus the redone chunks at the mean chunk time.
    pub time_lost_seconds: f64,
}

/// Peak resident set size of this process (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

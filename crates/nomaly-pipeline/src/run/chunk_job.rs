//! One chunk's work: execute partition `chunk` of the scoring plan, write it to every sink's part
//! files, commit it to the manifest — retried on transient failures, stopped when the run stops.

use super::retry::Attempts;
use super::scope::Counters;
use super::session::cluster_of;
use crate::compile::RetryPolicy;
use crate::error::{ErrorKind, PipelineError, Result, Resumable, RunPlace};
use crate::events::{RunEvent, RunObserver};
use crate::faults::FaultPlan;
use crate::quarantine::QuarantineLog;
use crate::run_dir::{CommitEntry, ManifestEvent, PartEntry, RunDir, now_ms, write_quarantine};
use crate::sink_writer::{
    ChunkCounter, ChunkCounts, ChunkSummary, ChunkWriter, PartWriteExec, SinkOnExecutor,
    SinkTarget, WrittenPart, remove_attempt_files_in,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use futures::{StreamExt, TryStreamExt};
use nomaly_engine::{ClusterClient, EngineError, narrow_to_partition};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What every chunk of a run shares.
pub(crate) struct ChunkContext {
    /// The pipeline's name: Ballista jobs are named after it and the chunk.
    pub pipeline: String,
    pub plan: Arc<dyn ExecutionPlan>,
    /// The first file of every chunk, by id: picks the chunk scan out of the plan on Ballista.
    pub chunk_files: Vec<String>,
    pub task_ctx: Arc<TaskContext>,
    pub sinks: Vec<(Arc<SinkTarget>, PathBuf)>,
    pub schema: SchemaRef,
    /// Cancelled when the run is cancelled, or when a chunk fails on its input (bad data stops
    /// the run).
    pub stop: CancellationToken,
    pub run_dir: RunDir,
    pub policy: RetryPolicy,
    pub observer: Arc<dyn RunObserver>,
    /// Set when chunks read the quarantining source directly.
    pub quarantine: Option<Arc<QuarantineLog>>,
    pub faults: Option<Arc<FaultPlan>>,
    pub counters: Arc<Counters>,
}

/// How a chunk's work ended, with the seconds its failed attempts cost.
pub(crate) enum ChunkEnd {
    Committed {
        entry: CommitEntry,
        lost: f64,
    },
    Failed {
        error: PipelineError,
        lost: f64,
    },
    /// Stopped because the run is stopping (cancelled, or another chunk's input was bad).
    Stopped {
        lost: f64,
    },
}

pub(crate) struct ChunkJob {
    pub chunk: usize,
    pub describe: String,
    pub shared: Arc<ChunkContext>,
}

/// Counts each attempt's rows into the run's progress and takes them back if it does not commit.
struct RowsInFlight<'a> {
    counters: &'a Counters,
    rows: u64,
}

impl RowsInFlight<'_> {
    fn add(&mut self, rows: u64) {
        self.rows += rows;
        self.counters.rows_done.fetch_add(rows, Ordering::Relaxed);
    }
}

impl Drop for RowsInFlight<'_> {
    fn drop(&mut self) {
        self.counters
            .rows_done
            .fetch_sub(self.rows, Ordering::Relaxed);
    }
}

/// Counts of one chunk's output, before its commit.
#[derive(Debug, Default)]
struct ChunkOutcome {
    counts: ChunkCounts,
    quarantined: u64,
    source_lines: Option<u64>,
    parts: Vec<(usize, WrittenPart)>,
}

impl ChunkJob {
    fn place(&self) -> RunPlace {
        RunPlace::Chunk {
            id: self.chunk,
            range: self.describe.clone(),
        }
    }

    fn stopped() -> PipelineError {
        PipelineError::Cancelled {
            resume: Resumable::default(),
        }
    }

    pub async fn run(self) -> ChunkEnd {
        let span = tracing::info_span!("chunk", chunk = self.chunk, range = %self.describe);
        self.run_attempts().instrument(span).await
    }

    async fn run_attempts(&self) -> ChunkEnd {
        let shared = &self.shared;
        if shared.stop.is_cancelled() {
            return ChunkEnd::Stopped { lost: 0.0 };
        }
        let start = ManifestEvent::Start {
            chunk: self.chunk,
            at_unix_ms: now_ms(),
        };
        if let Err(error) = shared.run_dir.append(&start, false) {
            return ChunkEnd::Failed { error, lost: 0.0 };
        }
        let mut attempts = Attempts::new(self.place(), shared.policy);
        loop {
            let t = Instant::now();
            let mut error = match self.attempt(attempts.retries, t).await {
                Ok(entry) => {
                    let lost = attempts.lost_seconds;
                    return ChunkEnd::Committed { entry, lost };
                }
                Err(PipelineError::Cancelled { .. }) => {
                    let lost = attempts.lost_seconds + t.elapsed().as_secs_f64();
                    return ChunkEnd::Stopped { lost };
                }
                Err(e) => e,
            };
            let transient = error.is_transient() && !shared.stop.is_cancelled();
            match attempts.retry_after(&error.user_message(), transient, t) {
                Some((wait, event)) => {
                    shared.observer.on_event(&event);
                    if let Some(w) = attempts.warnings.last() {
                        shared.observer.on_event(&RunEvent::Warning(w.clone()));
                    }
                    tokio::select! {
                        _ = shared.stop.cancelled() => {
                            return ChunkEnd::Stopped { lost: attempts.lost_seconds };
                        }
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                None => {
                    if let PipelineError::Run { message, .. } = &mut error
                        && attempts.retries > 0
                    {
                        message.push_str(&format!(
                            " (gave up after {} retries; the other chunks' output is kept — fix the cause and run `nomaly resume`)",
                            attempts.retries
                        ));
                    }
                    let lost = attempts.lost_seconds;
                    return ChunkEnd::Failed { error, lost };
                }
            }
        }
    }

    /// Partition `chunk` of the scoring plan narrowed to that chunk's file group, ending in the
    /// executor-side writer of its part files: one Ballista job.
    fn write_plan(&self) -> DfResult<PartWriteExec> {
        let shared = &self.shared;
        let files = &shared.chunk_files;
        let is_chunk_scan = |config: &FileScanConfig| {
            config.file_groups.len() == files.len()
                && config.file_groups.iter().zip(files.iter()).all(|(g, f)| {
                    g.files()
                        .first()
                        .is_some_and(|pf| pf.object_meta.location.as_ref() == f)
                })
        };
        let one = narrow_to_partition(shared.plan.clone(), self.chunk, is_chunk_scan)?;
        // A chunk smaller than its row group reads a row selection, which must reach the executor.
        let one = nomaly_physical::keep_row_selections(one)?;
        let sinks = shared
            .sinks
            .iter()
            .map(|(target, staging)| SinkOnExecutor {
                target: target.clone(),
                staging: staging.clone(),
                upload_to: target.remote.as_ref().map(|r| r.staging_url()),
            })
            .collect();
        PartWriteExec::try_new(one, self.chunk, shared.schema.clone(), sinks)
    }

    /// The root cause of a DataFusion error as a retry-aware chunk error.
    fn chunk_error(&self, e: DataFusionError) -> PipelineError {
        let kind = if nomaly_engine::error::is_user_datafusion_error(&e) {
            ErrorKind::User
        } else if nomaly_engine::error::is_transient_datafusion_error(&e) {
            ErrorKind::Transient
        } else {
            ErrorKind::Permanent
        };
        PipelineError::at(
            self.place(),
            kind,
            EngineError::DataFusion(e).user_message(),
        )
    }

    /// A sink that cannot write (disk, permissions, an injected fault) may work on a retry; a bad
    /// `where` cannot.
    fn write_error(&self, e: PipelineError) -> PipelineError {
        match e {
            PipelineError::Invalid { .. } => e,
            other => PipelineError::at(self.place(), ErrorKind::Transient, other.user_message()),
        }
    }

    /// Executes partition `chunk` of the scoring plan and writes it to every sink's part files.
    async fn score(&self, rows: &mut RowsInFlight<'_>) -> Result<ChunkOutcome> {
        let shared = &self.shared;
        if let Some(delay) = shared.faults.as_ref().and_then(|f| f.chunk_delay) {
            tokio::select! {
                _ = shared.stop.cancelled() => return Err(Self::stopped()),
                _ = tokio::time::sleep(delay) => {}
            }
        }
        if let Some(cluster) = cluster_of(shared.task_ctx.session_config()) {
            return self.score_on_cluster(&cluster, rows).await;
        }
        let schema = &shared.schema;
        let mut stream = shared
            .plan
            .execute(self.chunk, shared.task_ctx.clone())
            .map_err(|e| self.chunk_error(e))?;
        let mut writers = shared
            .sinks
            .iter()
            .map(|(t, staging)| {
                let faults = shared.faults.clone();
                ChunkWriter::new(
                    t.clone(),
                    staging.clone(),
                    self.chunk,
                    schema.clone(),
                    faults,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let mut counter = ChunkCounter::new(schema);
        let mut out = ChunkOutcome::default();
        loop {
            let next = tokio::select! {
                biased;
                _ = shared.stop.cancelled() => return Err(Self::stopped()),
                next = stream.next() => next,
            };
            let Some(batch) = next else { break };
            let batch: RecordBatch = batch.map_err(|e| self.chunk_error(e))?;
            counter.add(&batch);
            rows.add(batch.num_rows() as u64);
            for w in writers.iter_mut() {
                w.write(&batch).map_err(|e| self.write_error(e))?;
            }
        }
        out.counts = counter.counts;
        if let Some(log) = &shared.quarantine {
            let found = log.get(self.chunk);
            out.quarantined = write_quarantine(&shared.run_dir.path, self.chunk, &found.bad)
                .map_err(|e| self.write_error(e))?;
            out.source_lines = Some(found.lines);
        }
        for (s, w) in writers.into_iter().enumerate() {
            for part in w.commit().map_err(|e| self.write_error(e))? {
                out.parts.push((s, part));
            }
        }
        Ok(out)
    }

    /// Scores the chunk as a Ballista job whose executor writes the part files (temp names), then
    /// publishes them here: only the chunk's summary rows come back.
    async fn score_on_cluster(
        &self,
        cluster: &ClusterClient,
        rows: &mut RowsInFlight<'_>,
    ) -> Result<ChunkOutcome> {
        let shared = &self.shared;
        let plan = self.write_plan().map_err(|e| self.chunk_error(e))?;
        let name = format!("{}: chunk {}", shared.pipeline, self.chunk);
        let run = async {
            let stream = cluster.execute(Arc::new(plan), &name).await?;
            stream.try_collect::<Vec<RecordBatch>>().await
        };
        let batches = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Err(Self::stopped()),
            batches = run => batches.map_err(|e| self.chunk_error(e))?,
        };
        let stagings = shared
            .sinks
            .iter()
            .map(|(_, staging)| staging.clone())
            .collect::<Vec<_>>();
        let received: u64 = batches.iter().map(nomaly_engine::batch_bytes).sum();
        shared
            .counters
            .scored_bytes_received
            .fetch_add(received, Ordering::Relaxed);
        let summary = ChunkSummary::from_batches(&batches, &stagings)
            .map_err(|e| PipelineError::at(self.place(), ErrorKind::Permanent, e))?;
        rows.add(summary.counts.rows);
        let mut out = ChunkOutcome {
            counts: summary.counts,
            ..ChunkOutcome::default()
        };
        for (s, staged) in summary.parts {
            let published = staged.publish().map_err(|e| match e {
                // Storage the executors do not share with this process: a retry cannot help.
                PipelineError::Output { .. } => {
                    PipelineError::at(self.place(), ErrorKind::Permanent, e.user_message())
                }
                other => self.write_error(other),
            })?;
            out.parts.push((s, published));
        }
        // Attempts Ballista gave up on (a lost executor, a retried task) may have left parts,
        // beside the published ones (a chunk's rows, so its directories, are the same on every
        // attempt): look in those directories only, not the whole output. Publishing the run
        // sweeps the rest.
        let dirs: std::collections::BTreeSet<&std::path::Path> = out
            .parts
            .iter()
            .filter_map(|(_, p)| p.path.parent())
            .collect();
        let discarded: usize = dirs
            .into_iter()
            .map(|dir| remove_attempt_files_in(dir, Some(self.chunk), None))
            .sum();
        shared
            .counters
            .attempts_discarded
            .fetch_add(discarded as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// One attempt: score and write, then commit (the chunk is done once its manifest line is on
    /// disk; its `ChunkCommitted` event goes out in manifest order).
    async fn attempt(&self, retries: u32, started: Instant) -> Result<CommitEntry> {
        let shared = &self.shared;
        let mut rows = RowsInFlight {
            counters: &shared.counters,
            rows: 0,
        };
        let o = self.score(&mut rows).await?;
        let parts: Vec<PartEntry> = o
            .parts
            .iter()
            .map(|(s, w)| {
                let staging = &shared.sinks[*s].1;
                let rel = w.path.strip_prefix(staging).unwrap_or(&w.path);
                PartEntry {
                    sink: *s,
                    path: rel.to_string_lossy().replace('\\', "/"),
                    rows: w.rows,
                    bytes: w.bytes,
                    crc32: w.crc32,
                }
            })
            .collect();
        let entry = CommitEntry {
            chunk: self.chunk,
            range: self.describe.clone(),
            rows: o.counts.rows,
            anomalies: o.counts.anomalies,
            missing: o.counts.missing,
            retries,
            seconds: started.elapsed().as_secs_f64(),
            committed_at_unix_ms: now_ms(),
            parts,
            quarantined: o.quarantined,
            source_lines: o.source_lines,
        };
        let committed = RunEvent::ChunkCommitted {
            chunk: self.chunk,
            rows: entry.rows,
            anomalies: entry.anomalies,
            seconds: entry.seconds,
            committed_at_unix_ms: entry.committed_at_unix_ms,
        };
        shared
            .run_dir
            .append_then(&ManifestEvent::Commit(entry.clone()), true, || {
                shared.observer.on_event(&committed)
            })?;
        // Committed: these rows stay counted.
        rows.rows = 0;
        let bytes: u64 = entry.parts.iter().map(|p| p.bytes).sum();
        shared.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(entry)
    }
}

//! The chunk jobs of a run: one task per chunk not yet committed, as many at once as the session
//! has partitions. Bad data in one chunk stops the others; a chunk that kept failing on I/O does
//! not, so everything that can be committed is and a resume redoes only what failed. A cancelled
//! run waits for its in-flight chunks to stop (their temp files removed) before it returns.

use super::chunk_job::{ChunkContext, ChunkEnd, ChunkJob};
use super::scoring_plan::ScoringPlan;
use super::session::cluster_of;
use super::{PreparedSession, RunScope};
use crate::error::{ErrorKind, PipelineError, Result, RunPlace};
use crate::events::RunEvent;
use crate::report::{ChunkingMode, RunReport};
use crate::run_dir::{CommitEntry, QUARANTINE_DIR, RUN_DIR, RunDir};
use crate::sink_writer::{SinkTarget, staging_dir};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(crate) struct ChunkRunner<'a> {
    scope: &'a RunScope<'a>,
    shared: Arc<ChunkContext>,
    /// (id, what it holds, rows if known) of every chunk.
    chunks: Vec<(usize, String, Option<u64>)>,
    parallel: usize,
}

impl<'a> ChunkRunner<'a> {
    pub fn new(
        scope: &'a RunScope<'a>,
        session: &PreparedSession,
        scoring: &ScoringPlan,
        sinks: Vec<Arc<SinkTarget>>,
        run_dir: RunDir,
    ) -> Self {
        let p = scope.p;
        // Absolute: on Ballista the executors write there, from working directories of their own.
        let staging = p.sinks.iter().map(|s| {
            let dir = staging_dir(&s.path);
            std::path::absolute(&dir).unwrap_or(dir)
        });
        let shared = ChunkContext {
            pipeline: p.name.clone(),
            plan: scoring.plan.clone(),
            chunk_files: scoring
                .chunks
                .chunks
                .iter()
                .map(|c| c.file.clone())
                .collect(),
            task_ctx: Arc::new(scoring.df.task_ctx()),
            sinks: sinks.into_iter().zip(staging).collect(),
            schema: Arc::new(scoring.df.schema().as_arrow().clone()),
            stop: scope.cancel.child_token(),
            run_dir,
            policy: p.retry,
            observer: scope.opts.observer.clone(),
            quarantine: session
                .quarantine
                .clone()
                .filter(|_| scoring.chunking == ChunkingMode::Source),
            faults: scope.opts.faults.clone(),
            counters: scope.counters.clone(),
        };
        let chunks = scoring
            .chunks
            .chunks
            .iter()
            .map(|c| (c.id, c.describe(), c.rows))
            .collect();
        ChunkRunner {
            scope,
            shared: Arc::new(shared),
            chunks,
            // One chunk job is one task: on a cluster, as many at once as it has task slots.
            parallel: cluster_of(session.ctx.state().config())
                .map_or(0, |c| c.task_slots())
                .max(session.partitions)
                .max(1),
        }
    }

    /// Runs every chunk not in `committed`; returns all committed chunks, or the first failure
    /// (in chunk order, naming the others), or the cancellation.
    pub async fn run(
        self,
        mut committed: BTreeMap<usize, CommitEntry>,
        report: &mut RunReport,
    ) -> Result<BTreeMap<usize, CommitEntry>> {
        self.announce(&committed, report);
        let limit = Arc::new(tokio::sync::Semaphore::new(self.parallel));
        let mut tasks = tokio::task::JoinSet::new();
        let mut task_chunks = HashMap::new();
        for (id, describe, _) in self.chunks.iter().filter(|c| !committed.contains_key(&c.0)) {
            let job = ChunkJob {
                chunk: *id,
                describe: describe.clone(),
                shared: self.shared.clone(),
            };
            let limit = limit.clone();
            let handle = tasks.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("never closed");
                (job.chunk, job.run().await)
            });
            task_chunks.insert(handle.id(), (*id, describe.clone()));
        }
        let mut failures: Vec<PipelineError> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let end = match joined {
                Ok((_, end)) => end,
                Err(join) => {
                    let (id, range) = task_chunks.get(&join.id()).cloned().unwrap_or_default();
                    let place = RunPlace::Chunk { id, range };
                    let message = format!("the chunk's task failed: {join}");
                    ChunkEnd::Failed {
                        error: PipelineError::at(place, ErrorKind::Permanent, message),
                        lost: 0.0,
                    }
                }
            };
            match end {
                ChunkEnd::Committed { entry, lost } => {
                    report.recovery.time_lost_seconds += lost;
                    if entry.retries > 0 {
                        report.retries += entry.retries as u64;
                        let key = format!("chunk {}", entry.chunk);
                        report.recovery.retries.insert(key, entry.retries);
                    }
                    committed.insert(entry.chunk, entry);
                }
                ChunkEnd::Stopped { lost } => report.recovery.time_lost_seconds += lost,
                ChunkEnd::Failed { error, lost } => {
                    report.recovery.time_lost_seconds += lost;
                    if error.kind() == ErrorKind::User {
                        self.shared.stop.cancel();
                    }
                    failures.push(error);
                }
            }
        }
        if !failures.is_empty() {
            return Err(first_failure(failures));
        }
        if self.scope.cancel.is_cancelled() {
            return Err(self.scope.cancelled_error());
        }
        Ok(committed)
    }

    /// Tells the observer what is to be scored and what a resume kept.
    fn announce(&self, committed: &BTreeMap<usize, CommitEntry>, report: &mut RunReport) {
        let (scope, p) = (self.scope, self.scope.p);
        let known_rows: Option<u64> = self.chunks.iter().map(|c| c.2).sum();
        let rows = known_rows.or(Some(report.input_rows).filter(|r| *r > 0));
        let counters = &scope.counters;
        counters
            .rows_total
            .store(rows.unwrap_or(0), Ordering::Relaxed);
        scope.emit(RunEvent::Phase("score".into()));
        scope.emit(RunEvent::ScoringStarted {
            chunks: self.chunks.len(),
            rows,
        });
        for c in committed.values() {
            counters.rows_done.fetch_add(c.rows, Ordering::Relaxed);
            let bytes: u64 = c.parts.iter().map(|p| p.bytes).sum();
            counters.bytes.fetch_add(bytes, Ordering::Relaxed);
            scope.emit(RunEvent::ChunkReused {
                chunk: c.chunk,
                rows: c.rows,
            });
        }
        if p.quarantine {
            let dir = p.sinks[0].path.join(RUN_DIR).join(QUARANTINE_DIR);
            report.quarantine_dir = Some(dir.display().to_string());
        }
    }
}

/// The failure of the lowest chunk, naming the other chunks that failed.
fn first_failure(mut failures: Vec<PipelineError>) -> PipelineError {
    failures.sort_by_key(|e| e.chunk().unwrap_or(usize::MAX));
    let mut first = failures.remove(0);
    if !failures.is_empty()
        && let PipelineError::Run { message, .. } = &mut first
    {
        let others: Vec<String> = failures
            .iter()
            .filter_map(|e| e.chunk().map(|c| c.to_string()))
            .collect();
        message.push_str(&format!(
            " ({} more chunk(s) failed: {})",
            failures.len(),
            others.join(", ")
        ));
    }
    first
}

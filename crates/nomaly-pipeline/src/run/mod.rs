//! Running a pipeline: register → steps → fit once → score chunk by chunk → check → publish → notify.
//!
//! The detect step is the same plan the SQL functions build: `fit_detector` as an aggregate over
//! the detect input, then `anomaly_detect(model, ...)` with the one-row model table as the build
//! side of a cross join (a join on the segment keys with `partition_by`). The chunked source's scan
//! has one partition per chunk; when the steps keep rows within their partition (filters,
//! projections, joins against broadcast lookups) partition `i` of the scoring plan *is* chunk `i`
//! and is executed and written on its own. Otherwise the detect input is written once to a work
//! directory and that is chunked ("materialized").
//!
//! One module per step of a run, in the order [`execute`] calls them: [`session`] (stores,
//! listings, steps), [`preflight`] (the detect input and its columns), [`resume`] (whether to
//! continue an unfinished run, and what of it is still good), [`scoring_plan`] and [`fit`] (the
//! scoring plan over chunks, with the fit and its retries), [`new_run_dir`] (the run directory),
//! [`chunk_runner`] and [`chunk_job`] (score and commit each chunk), [`tally`] (counts and the
//! consistency check), [`checks`] (`[[validate]]`), [`publish`]. [`inspect`] holds explain,
//! validate and the dry run; [`handle`] the [`Run`] handle a caller starts, watches and cancels.

mod checks;
mod chunk_job;
mod chunk_runner;
mod deadline;
mod detect_plan;
mod fit;
mod fit_states;
mod handle;
mod inspect;
mod model_use;
pub(crate) use model_use::distribution_of;
mod new_run_dir;
mod preflight;
mod publish;
mod resume;
mod retry;
mod sampler;
mod scope;
mod scoring_plan;
mod segmented;
mod session;
mod sink_targets;
mod tally;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_slices;
mod work_dir;

pub use checks::register_published_output;
pub use handle::Run;
pub use inspect::{explain, validate};
pub use publish::{completed_run, publish_interrupted};
pub(crate) use session::register_stores;
pub use session::{PreparedSession, prepare};

use crate::compile::CompiledPipeline;
use crate::error::{PipelineError, Result};
use crate::events::{NoObserver, RunEvent, RunObserver};
use crate::faults::FaultPlan;
use crate::output_lock::{Holder, OutputLocks};
use crate::report::{RunReport, RunStatus, StepTiming};
use crate::run_dir::{RUN_DIR, RunDir, fingerprint};
use crate::sink_writer::staging_dir;
use scope::RunScope;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Whether a run starts fresh or continues an interrupted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunMode {
    /// A new run; refused when an unfinished run of the same output exists.
    #[default]
    Run,
    /// Discard an unfinished run, then run.
    Restart,
    /// Continue an unfinished run (skip committed chunks, reuse the model); start one when there
    /// is none. With `refit`, a run whose pipeline or input changed starts over instead of
    /// being refused.
    Resume { refit: bool },
}

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// Plan and run every step on zero rows; write nothing.
    pub dry_run: bool,
    pub mode: RunMode,
    /// Receives the run's events (the [`Run`] handle puts a channel here).
    pub observer: Arc<dyn RunObserver>,
    /// Cancels the run: in-flight chunks stop, committed chunks stay, the run is resumable.
    pub cancel: CancellationToken,
    /// Faults to inject (recovery tests; see [`crate::faults`]). Per run, never process-wide.
    pub faults: Option<Arc<FaultPlan>>,
    /// What this run is called in its outputs' lock files, which a second run of the same
    /// output names when it is refused ("nomaly run p.toml", "served run 42").
    pub holder: Option<String>,
    /// When the run was asked for (ms since the epoch; a server's queue time): its
    /// `[resources] deadline` counts from here (default: its start).
    pub asked_at_unix_ms: Option<u64>,
    /// False when a failure of this run will be retried (a server's `run_retries`): its
    /// failure notifications are then left to the last attempt.
    pub final_attempt: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dry_run: false,
            mode: RunMode::Run,
            observer: Arc::new(NoObserver),
            cancel: CancellationToken::new(),
            faults: None,
            holder: None,
            asked_at_unix_ms: None,
            final_attempt: true,
        }
    }
}

impl RunOptions {
    pub fn with_mode(mode: RunMode) -> Self {
        RunOptions {
            mode,
            ..Default::default()
        }
    }
}

/// A run that did not succeed: why, and its report (status failed, cancelled or timed out, the
/// error inside).
#[derive(Debug)]
pub struct RunFailure {
    pub error: PipelineError,
    pub report: Box<RunReport>,
}

/// What a run ends with: its report (succeeded, validation failed, dry run), or a failure.
pub type RunOutcome = std::result::Result<RunReport, RunFailure>;

/// Runs a compiled pipeline to its end. The observer sees `Started` first and `Finished` (with
/// the report) last, whatever the outcome.
pub async fn run(p: &CompiledPipeline, opts: &RunOptions) -> RunOutcome {
    let span = tracing::info_span!("run", pipeline = %p.name);
    run_traced(p, opts).instrument(span).await
}

async fn run_traced(p: &CompiledPipeline, opts: &RunOptions) -> RunOutcome {
    // An incremental source: the files this run reads, taken from the ledger (held to the end).
    let taken = crate::incremental::take(p, &opts.mode, opts.dry_run, &holder(p, opts)).await;
    let pipeline = match &taken {
        Ok(Some(t)) => Some(t.pipeline.clone()),
        _ => None,
    };
    let p = pipeline.as_deref().unwrap_or(p);
    let scope = RunScope::new(p, opts);
    scope.emit(RunEvent::Started {
        pipeline: p.name.clone(),
        resume: matches!(opts.mode, RunMode::Resume { .. }),
    });
    let started = Instant::now();
    let mut report = RunReport {
        started_at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        ..base_report(p)
    };
    let timer = scope.start_timeout();
    let _deadline = deadline::watch(p, opts);
    let take = match taken {
        Ok(t) => t,
        Err(e) => {
            report.seconds = started.elapsed().as_secs_f64();
            return finished(&scope, publish::conclude(&scope, report, Err(e)).await);
        }
    };
    if let Some(t) = &take {
        report.incremental = Some(crate::report::IncrementalReport {
            new_files: t.new_files,
            consumed_before: t.consumed_before,
            ledger: t.ledger.display().to_string(),
        });
    }
    // Held until the run has published (or kept) its outputs: one writer per output.
    let (locks, result) = match lock_outputs(p, opts).await {
        Ok(locks) if take.as_ref().is_some_and(|t| t.new_files == 0) => {
            report.status = RunStatus::NothingNew;
            report.warnings.push(format!(
                "no new files in source '{}' since the last run; nothing was read or written",
                p.sources[0].name
            ));
            (locks, Ok(()))
        }
        Ok(locks) => (locks, attempt(&scope, &mut report).await),
        Err(e) => (None, Err(e)),
    };
    drop(timer);
    report.seconds = started.elapsed().as_secs_f64();
    let mut outcome = publish::conclude(&scope, report, result).await;
    if let (Ok(r), Some(t)) = (&mut outcome, &take)
        && r.status == RunStatus::Succeeded
        && let Err(e) = crate::incremental::settle_after_publish(t)
    {
        r.warnings
            .push(format!("{e}; the next run settles the ledger"));
    }
    if let Some(locks) = locks {
        locks.release().await;
    }
    drop(take);
    finished(&scope, outcome)
}

/// Announces a run's end with its report.
fn finished(scope: &RunScope<'_>, outcome: RunOutcome) -> RunOutcome {
    let report = match &outcome {
        Ok(r) => r.clone(),
        Err(f) => (*f.report).clone(),
    };
    scope.emit(RunEvent::Finished {
        report: Box::new(report),
    });
    outcome
}

/// Who a run's locks name.
fn holder(p: &CompiledPipeline, opts: &RunOptions) -> Holder {
    Holder {
        run: opts
            .holder
            .clone()
            .unwrap_or_else(|| format!("nomaly run {}", p.file.path.display())),
    }
}

/// Locks every sink's output for the run (a dry run writes nothing and locks nothing).
/// A remote output is locked in its store too, against runs on other machines.
async fn lock_outputs(p: &CompiledPipeline, opts: &RunOptions) -> Result<Option<OutputLocks>> {
    if opts.dry_run {
        return Ok(None);
    }
    let outputs: Vec<&std::path::Path> = p.sinks.iter().map(|s| s.path.as_path()).collect();
    let holder = holder(p, opts);
    let mut locks = OutputLocks::acquire(&outputs, &holder)?;
    let remote: Vec<_> = p.sinks.iter().filter_map(|s| s.remote.as_ref()).collect();
    for warning in locks.lock_remote(&remote, &holder).await? {
        tracing::warn!("{warning}");
    }
    Ok(Some(locks))
}

/// Everything of a run up to publishing: prepare the session, then [`execute`] with memory
/// sampling around it.
async fn attempt(scope: &RunScope<'_>, report: &mut RunReport) -> Result<()> {
    let p = scope.p;
    if scope.opts.mode != RunMode::Restart && !scope.opts.dry_run {
        publish_interrupted(p).await?;
    }
    for s in &p.sinks {
        if let Some(remote) = &s.remote {
            scope.guard(remote.check_writable(s.mode)).await?;
        }
    }
    let observer = scope.opts.observer.as_ref();
    let session = scope
        .guard(prepare(p, observer, scope.opts.faults.clone()))
        .await?;
    scope
        .guard(session::start_cluster(p, &session, scope))
        .await?;
    report.chunks = session.chunks.chunks.len();
    report.steps = session.timings.clone();
    report.memory_limit_bytes = session.memory.budget;
    report.memory_process_bytes = session.memory.process;
    report.memory_reader_bytes = session.memory.readers;
    report.memory_pool_bytes = session.memory.pool;
    let sampler = sampler::Sampler::start(&session, scope);
    let result = execute(scope, &session, report).await;
    sampler.stop(report).await;
    if let Some(cluster) = session::cluster_of(session.ctx.state().config()) {
        if result.is_err() {
            // Chunk jobs in flight when the run stopped would go on running on the cluster.
            let cancelled = cluster.cancel_unfinished().await;
            if cancelled > 0 {
                report.warnings.push(format!(
                    "cancelled {cancelled} Ballista job(s) of this run still in flight"
                ));
            }
        }
        report.ballista_jobs = cluster.jobs();
        report.ballista_job_tag = Some(cluster.tag().to_string());
        report.bytes_from_cluster = cluster.bytes_received();
        report.chunk_bytes_from_cluster =
            scope.counters.scored_bytes_received.load(Ordering::Relaxed);
    }
    report.recovery.task_attempt_files_removed =
        scope.counters.attempts_discarded.load(Ordering::Relaxed);
    result
}

/// The run's steps in order, over a prepared session.
async fn execute(
    scope: &RunScope<'_>,
    session: &PreparedSession,
    report: &mut RunReport,
) -> Result<()> {
    let p = scope.p;
    if scope.opts.dry_run {
        return inspect::dry_run(scope, session, report).await;
    }
    let run_dir = RunDir::at(&staging_dir(&p.sinks[0].path));
    report.run_dir = Some(p.sinks[0].path.join(RUN_DIR).display().to_string());
    let sources_now = scope.guard(fingerprint(&session.ctx, &p.sources)).await?;
    let earlier = resume::decide(scope, &run_dir, &sources_now)?;
    scope.arm_faults();
    let scoring = match &earlier {
        Some(e) => resume::scoring_plan(scope, session, &run_dir, &e.record, report).await?,
        None => scoring_plan::scoring_plan(scope, session, report).await?,
    };
    report.chunks = scoring.chunks.chunks.len();
    report.chunking = scoring.chunking;
    let sinks = sink_targets::compile_sinks(&session.ctx, p, scoring.df.schema())?;
    scope.touch_output();
    let committed = match earlier {
        None => new_run_dir::create(scope, &run_dir, &sinks, &scoring, sources_now, report)?,
        Some(e) => {
            // Parts executors put in an object store's staging prefix are checked there.
            let mut remote = Vec::new();
            for s in &p.sinks {
                remote.push(match &s.remote {
                    Some(r) => Some(scope.guard(r.staged_sizes()).await?),
                    None => None,
                });
            }
            resume::keep_verified(scope, &run_dir, e.manifest, &scoring, &remote, report)?
        }
    };
    let t = Instant::now();
    let jobs = chunk_runner::ChunkRunner::new(scope, session, &scoring, sinks, run_dir);
    let committed = jobs.run(committed, report).await?;
    report.steps.push(StepTiming {
        step: "score and write".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    tally::tally(p, &scoring, &committed, report)?;
    checks::validate_output(scope, session, report).await?;
    if report.status == RunStatus::Succeeded {
        let run_dir = RunDir::at(&staging_dir(&p.sinks[0].path));
        model_use::register_trained(scope, &run_dir, report)?;
    }
    Ok(())
}

/// A report with what is known before running: the pipeline, its detector, its settings.
fn base_report(p: &CompiledPipeline) -> RunReport {
    RunReport {
        pipeline: p.name.clone(),
        file: p.file.path.display().to_string(),
        algorithm: p.detect.as_ref().map(|d| d.algorithm.name().to_string()),
        options: p.detect.as_ref().map(|d| d.options.clone()),
        engine: p.engine.to_string(),
        chunk_rows: p.chunk_rows,
        ..Default::default()
    }
}

/// Maps a DataFusion error to a pipeline error at `place`.
fn classify(place: String, e: datafusion::error::DataFusionError) -> PipelineError {
    PipelineError::engine(place, nomaly_engine::EngineError::DataFusion(e))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The status a run that stopped with `e` ends with.
fn status_of(e: &PipelineError) -> RunStatus {
    match e {
        PipelineError::Cancelled { .. } => RunStatus::Cancelled,
        PipelineError::Timeout { .. } => RunStatus::TimedOut,
        _ => RunStatus::Failed,
    }
}

//! The scoring plan over chunks. When partition `i` of the plan reads exactly chunk `i` (the steps
//! keep rows within their partition), chunks are slices of the first source. Otherwise the detect
//! input is written once to a work directory ("materialized") and that is chunked, before the fit,
//! so the steps run once rather than once for the fit and again per chunk.

use super::detect_plan::score_frame;
use super::fit::{FitRetry, FittedModels, runtime};
use super::preflight::{empty_input, reads, scored_input};
use super::session::{register_listing, register_steps};
use super::work_dir::WorkDir;
use super::{PreparedSession, RunScope, classify};
use crate::chunk_plan::{ChunkPlan, ChunkTable, SourceReader, plan_chunks};
use crate::compile::CompiledPipeline;
use crate::error::{ErrorKind, PipelineError, Result, RunPlace};
use crate::events::RunEvent;
use crate::quarantine::{ChunkBadRows, QuarantineScanExec};
use crate::report::{ChunkingMode, RunReport, StepTiming};
use crate::spec::FileFormat;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PartitionMode,
};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use nomaly_engine::EngineConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// Name of a materialized detect input.
pub(crate) const STAGED_INPUT: &str = "__nomaly_detect_input";

/// What the chunk jobs execute: the scoring plan, whose partition `i` is chunk `i`.
pub(crate) struct ScoringPlan {
    pub df: DataFrame,
    pub plan: Arc<dyn ExecutionPlan>,
    pub chunks: ChunkPlan,
    pub chunking: ChunkingMode,
    /// The fit's models (a fresh run; a resume reads them from the run directory).
    pub models: Option<FittedModels>,
    /// Bad lines of the whole source, when it was read whole to materialize it.
    pub bad_rows: Option<BTreeMap<usize, ChunkBadRows>>,
}

/// A fresh run's scoring plan: fit, then score over source chunks, or materialize and do both
/// over the materialized input's chunks.
pub(crate) async fn scoring_plan(
    scope: &RunScope<'_>,
    session: &PreparedSession,
    report: &mut RunReport,
) -> Result<ScoringPlan> {
    if super::segmented::applies(scope.p) {
        return super::segmented::scoring_plan(scope, session, report).await;
    }
    let (p, ctx) = (scope.p, &session.ctx);
    let mut input = scored_input(p);
    let mut chunks = session.chunks.clone();
    let input_plan = physical_plan(ctx, p, &format!("SELECT * FROM {input}")).await?;
    let mut chunking = match is_chunk_preserving(&input_plan, &chunks) {
        true => ChunkingMode::Source,
        false => ChunkingMode::Materialized,
    };
    let mut bad_rows = None;
    loop {
        if chunking == ChunkingMode::Materialized {
            chunks = materialize(scope, session, &input, report).await?;
            // The source was read whole: its bad lines are known now, not per chunk.
            bad_rows = session.quarantine.as_ref().map(|log| log.all());
            input = STAGED_INPUT.to_string();
        }
        scope.emit(RunEvent::Phase("fit".into()));
        let (df, models) = scored_frame(scope, ctx, &input, report).await?;
        if let Some(d) = &p.detect
            && report.input_rows == 0
        {
            return Err(empty_input(d, &reads(p)));
        }
        let plan = df
            .clone()
            .create_physical_plan()
            .await
            .map_err(|e| classify(p.file.path.display().to_string(), e))?;
        if is_chunk_preserving(&plan, &chunks) {
            return Ok(ScoringPlan {
                df,
                plan,
                chunks,
                chunking,
                models,
                bad_rows,
            });
        }
        if chunking == ChunkingMode::Materialized {
            return Err(PipelineError::at(
                RunPlace::Plan,
                ErrorKind::Permanent,
                format!(
                    "the scoring plan does not keep chunks apart even over the materialized input; plan:\n{}",
                    datafusion::physical_plan::displayable(plan.as_ref()).indent(false)
                ),
            ));
        }
        // The input keeps chunks apart but the scoring join does not: materialize.
        chunking = ChunkingMode::Materialized;
    }
}

pub(crate) async fn physical_plan(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    sql: &str,
) -> Result<Arc<dyn ExecutionPlan>> {
    let place = || p.file.path.display().to_string();
    ctx.sql(sql)
        .await
        .map_err(|e| classify(place(), e))?
        .create_physical_plan()
        .await
        .map_err(|e| classify(place(), e))
}

/// The scoring DataFrame over `input`, fitting first when there is a detect step (the fit's
/// counts go into the report).
pub(crate) async fn scored_frame(
    scope: &RunScope<'_>,
    ctx: &SessionContext,
    input: &str,
    report: &mut RunReport,
) -> Result<(DataFrame, Option<FittedModels>)> {
    let p = scope.p;
    let Some(d) = &p.detect else {
        let df = ctx
            .sql(&format!("SELECT * FROM {input}"))
            .await
            .map_err(|e| classify(p.file.path.display().to_string(), e))?;
        return Ok((df, None));
    };
    let t = Instant::now();
    let parallel = EngineConfig {
        target_partitions: p.cpus,
        ..Default::default()
    }
    .partitions();
    let retry = FitRetry::of(scope, parallel);
    let fitted =
        super::model_use::fit_or_load(scope, ctx, d, input, &reads(p), &retry, report).await?;
    report.input_rows = fitted.rows;
    report.rows_with_missing_features = fitted.skipped;
    report.models = fitted.models;
    report.steps.retain(|s| s.step != "fit");
    report.steps.push(StepTiming {
        step: "fit".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    scope.emit(RunEvent::FitDone {
        input_rows: fitted.rows,
        models: fitted.models,
        reused: false,
    });
    let df = score_frame(ctx, d, input)
        .await
        .map_err(|e| classify(d.place.clone(), e))?;
    Ok((df, Some(fitted)))
}

/// Writes the detect input once to the run's work directory and chunks that.
async fn materialize(
    scope: &RunScope<'_>,
    session: &PreparedSession,
    input: &str,
    report: &mut RunReport,
) -> Result<ChunkPlan> {
    let (p, ctx) = (scope.p, &session.ctx);
    scope.emit(RunEvent::Phase("materializing the detect input".into()));
    scope.touch_output();
    let t = Instant::now();
    let work = fresh_work_dir(ctx, p).await?;
    ctx.sql(&format!("SELECT * FROM {input}"))
        .await
        .map_err(|e| classify(p.file.path.display().to_string(), e))?
        .write_parquet(
            &format!("{}/", work.local.display()),
            DataFrameWriteOptions::new(),
            Some(work_file_options(p.chunk_rows)),
        )
        .await
        .map_err(|e| {
            let user = nomaly_engine::error::is_user_datafusion_error(&e);
            let err = classify("materializing the detect input".into(), e);
            if user {
                err
            } else {
                runtime(err, RunPlace::Materialize)
            }
        })?;
    work.share().await?;
    let chunks = chunk_materialized(ctx, p, &work).await?;
    report.steps.push(StepTiming {
        step: "materialize".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    Ok(chunks)
}

/// An empty work directory for the detect input written once (materialized or in segment
/// buckets), with the first source registered as a plain table to read it from.
pub(crate) async fn fresh_work_dir(ctx: &SessionContext, p: &CompiledPipeline) -> Result<WorkDir> {
    let work = WorkDir::of(ctx, p)?;
    work.fresh().await?;
    if !p.quarantine {
        // Chunks are of no use to a plan that mixes them, and a scan of one partition per chunk
        // would read every chunk at once (a sort starts all its inputs), each holding a row group
        // outside the memory pool: read the source as a plain table, steps and all.
        let first = &p.sources[0];
        let _ = ctx.deregister_table(&first.name);
        register_listing(ctx, first).await?;
        register_steps(ctx, p).await?;
    }
    Ok(work)
}

/// The work directory an unfinished run chunked, or the error saying it is gone.
pub(crate) async fn existing_work_dir(
    ctx: &SessionContext,
    p: &CompiledPipeline,
) -> Result<WorkDir> {
    let work = WorkDir::of(ctx, p)?;
    if work.exists().await? {
        return Ok(work);
    }
    Err(PipelineError::invalid(
        p.file.path.display().to_string(),
        format!(
            "cannot resume: the run chunked the detect input it wrote to {}, which is gone; \
             start over with `nomaly run --restart {}`",
            work.display(),
            p.file.path.display()
        ),
    ))
}

/// Row groups of at most `chunk_rows` (chunks are runs of whole row groups) and at most 128Ki
/// rows: the writer, and later each chunk's reader, hold one row group outside the memory pool.
fn work_file_options(chunk_rows: u64) -> datafusion::config::TableParquetOptions {
    let mut o = datafusion::config::TableParquetOptions::default();
    o.global.max_row_group_size = (chunk_rows as usize).min(128 * 1024);
    // The parallel row-group encoder buffers whole row groups outside the memory pool.
    o.global.allow_single_file_parallelism = false;
    o
}

/// Chunks the materialized detect input in `work` and registers it as the staged input table.
pub(crate) async fn chunk_materialized(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    work: &WorkDir,
) -> Result<ChunkPlan> {
    register_staged(ctx, work, p.chunk_rows, p.chunk_rows_set(), vec![]).await
}

/// Plans chunks of about `chunk_rows` over the Parquet files in `work` and registers them as the
/// staged input table (declared partitioned by `keys` when there are any: segment buckets).
pub(crate) async fn register_staged(
    ctx: &SessionContext,
    work: &WorkDir,
    chunk_rows: u64,
    slice_unindexed: bool,
    keys: Vec<String>,
) -> Result<ChunkPlan> {
    let staged = SourceReader {
        name: STAGED_INPUT.into(),
        path: work.display(),
        location: work.location(),
        format: FileFormat::Parquet,
        has_header: true,
        delimiter: b',',
        incremental: false,
        only: None,
    };
    let plan = plan_chunks(ctx, &staged, chunk_rows, slice_unindexed).await?;
    let table = match keys.is_empty() {
        true => ChunkTable::new(plan.clone()),
        false => ChunkTable::partitioned_by(plan.clone(), keys),
    };
    let _ = ctx.deregister_table(STAGED_INPUT);
    ctx.register_table(STAGED_INPUT, Arc::new(table))
        .map_err(|e| classify("materialized input".into(), e))?;
    Ok(plan)
}

/// True when partition `i` of `plan` reads exactly chunk `i` of `chunks` (rows never cross).
pub(crate) fn is_chunk_preserving(plan: &Arc<dyn ExecutionPlan>, chunks: &ChunkPlan) -> bool {
    let n = chunks.chunks.len();
    if plan.output_partitioning().partition_count() != n {
        return false;
    }
    let any = plan.as_ref();
    if let Some(q) = any.downcast_ref::<QuarantineScanExec>() {
        return q.chunk_count() == n;
    }
    if let Some(ds) = any.downcast_ref::<DataSourceExec>() {
        let Some(config) = ds.data_source().as_ref().downcast_ref::<FileScanConfig>() else {
            return false;
        };
        return config.file_groups.len() == n
            && config.file_groups.iter().zip(&chunks.chunks).all(|(g, c)| {
                g.files().len() == 1 && g.files()[0].object_meta.location.as_ref() == c.file
            });
    }
    if any.is::<RepartitionExec>()
        || any.is::<CoalescePartitionsExec>()
        || any.is::<SortPreservingMergeExec>()
        || any.is::<UnionExec>()
    {
        return false;
    }
    let children = plan.children();
    if let Some(h) = any.downcast_ref::<HashJoinExec>() {
        return *h.partition_mode() == PartitionMode::CollectLeft
            && is_chunk_preserving(children[1], chunks);
    }
    if any.is::<CrossJoinExec>() || any.is::<NestedLoopJoinExec>() {
        return is_chunk_preserving(children[1], chunks);
    }
    children.len() == 1 && is_chunk_preserving(children[0], chunks)
}

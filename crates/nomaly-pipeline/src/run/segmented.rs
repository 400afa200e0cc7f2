//! `[detect] partition_by`: segments as chunks, one pass per segment, on every engine.
//!
//! The general plan fits every segment's model first (one aggregate holding every segment's
//! state) and joins the models back to the rows chunk by chunk, which no budget bounds once the
//! segments are many. Here the detect input is written once to the work directory in buckets by
//! a hash of the segment key (a segment's rows all land in one bucket); each bucket is a chunk,
//! and its table declares itself hash-partitioned by the key, so the plan of
//! `detect_anomalies(...) OVER (PARTITION BY key)` needs no exchange: the plan (built here for
//! a cluster too, whose codec carries the operator) becomes a per-partition sort (which spills)
//! under `SegmentFitScoreExec`, and partition `i` of the plan is bucket `i`. A chunk fits and scores its own segments, with the same accumulators as
//! the SQL form (the same scores), one segment's rows held at a time. A resume re-reads the
//! buckets and redoes only the chunks not committed.

use super::fit::runtime;
use super::preflight::{empty_input, reads, scored_input};
use super::scoring_plan::{
    STAGED_INPUT, ScoringPlan, fresh_work_dir, is_chunk_preserving, register_staged,
};
use super::work_dir::WorkDir;
use super::{PreparedSession, RunScope, classify};
use crate::chunk_plan::ChunkPlan;
use crate::compile::{CompiledPipeline, Detect, ModelSource};
use crate::error::{ErrorKind, PipelineError, Result, RunPlace};
use crate::events::RunEvent;
use crate::report::{ChunkingMode, RunReport, StepTiming};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SessionStateBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_expr::{Partitioning, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::expressions::col;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use nomaly_physical::FuseSegmentFitAndScore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// The most buckets (chunks) a segmented run writes (`explain` says the same).
pub(crate) const MAX_BUCKETS: usize = 4096;

/// Whether this run's detection goes segment by segment: `partition_by` and a model fitted on
/// the detect input itself (a registered model is scored by the general plan), on any engine.
pub(crate) fn applies(p: &CompiledPipeline) -> bool {
    p.detect
        .as_ref()
        .is_some_and(|d| !d.partition_by.is_empty() && matches!(d.model, ModelSource::Input))
}

/// A fresh segmented run's scoring plan: write the buckets, then plan over them.
pub(crate) async fn scoring_plan(
    scope: &RunScope<'_>,
    session: &PreparedSession,
    report: &mut RunReport,
) -> Result<ScoringPlan> {
    let (p, ctx) = (scope.p, &session.ctx);
    let d = p
        .detect
        .as_ref()
        .expect("applies() checked the detect step");
    scope.emit(RunEvent::Phase(
        "writing the detect input in buckets by segment".into(),
    ));
    scope.touch_output();
    let t = Instant::now();
    let work = fresh_work_dir(ctx, p).await?;
    let input = scored_input(p);
    let buckets = session.chunks.chunks.len().clamp(1, MAX_BUCKETS);
    write_buckets(ctx, p, d, &input, &work.local, buckets, session.memory.pool).await?;
    work.share().await?;
    let bad_rows = session.quarantine.as_ref().map(|log| log.all());
    report.steps.push(StepTiming {
        step: "materialize".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    let chunks = chunk_buckets(ctx, p, d, &work).await?;
    scope.emit(RunEvent::Phase("fit".into()));
    let t = Instant::now();
    let (rows, skipped, models) = count_segments(ctx, d).await?;
    report.input_rows = rows;
    report.rows_with_missing_features = skipped;
    report.models = models;
    report.steps.push(StepTiming {
        step: "fit".into(),
        seconds: t.elapsed().as_secs_f64(),
    });
    scope.emit(RunEvent::FitDone {
        input_rows: rows,
        models,
        reused: false,
    });
    let (df, plan) = plan_over(ctx, p, d, &chunks).await?;
    Ok(ScoringPlan {
        df,
        plan,
        chunks,
        chunking: ChunkingMode::Segments,
        models: None,
        bad_rows,
    })
}

/// A continued segmented run's chunks and plan, over the buckets it wrote to `work`.
pub(crate) async fn resume_plan(
    session: &PreparedSession,
    p: &CompiledPipeline,
    work: &WorkDir,
) -> Result<(ChunkPlan, DataFrame, Arc<dyn ExecutionPlan>)> {
    let d = p
        .detect
        .as_ref()
        .expect("a segmented run has a detect step");
    let chunks = chunk_buckets(&session.ctx, p, d, work).await?;
    let (df, plan) = plan_over(&session.ctx, p, d, &chunks).await?;
    Ok((chunks, df, plan))
}

/// The session's config for a state built from it: the state shares the session's catalogs, and
/// must not make a fresh default catalog (which would replace the session's, tables and all).
fn sharing_catalogs(ctx: &SessionContext) -> datafusion::prelude::SessionConfig {
    ctx.state()
        .config()
        .clone()
        .with_create_default_catalog_and_schema(false)
}

/// The per-segment plan over the bucket table, with as many target partitions as buckets (so
/// the optimizer adds no exchange to reach more); checked to keep chunks apart.
async fn plan_over(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    d: &Detect,
    chunks: &ChunkPlan,
) -> Result<(DataFrame, Arc<dyn ExecutionPlan>)> {
    let df = super::detect_plan::segment_frame(ctx, d, STAGED_INPUT)
        .await
        .map_err(|e| classify(d.place.clone(), e))?;
    let mut config = sharing_catalogs(ctx);
    config.options_mut().execution.target_partitions = chunks.chunks.len();
    // The per-segment operator on every engine: a cluster's plan is built here too, and the
    // codec carries the operator to its executors.
    let local = ctx
        .state()
        .physical_optimizers()
        .iter()
        .any(|r| r.name() == FuseSegmentFitAndScore.name());
    let rules = match local {
        true => ctx.state().physical_optimizers().to_vec(),
        false => nomaly_physical::cluster_optimizer_rules(),
    };
    let state = SessionStateBuilder::new_from_existing(ctx.state())
        .with_config(config)
        .with_physical_optimizer_rules(rules)
        .build();
    let (_, logical) = df.into_parts();
    let df = DataFrame::new(state, logical);
    let plan = df
        .clone()
        .create_physical_plan()
        .await
        .map_err(|e| classify(p.file.path.display().to_string(), e))?;
    if !is_chunk_preserving(&plan, chunks) {
        return Err(PipelineError::at(
            RunPlace::Plan,
            ErrorKind::Permanent,
            format!(
                "the per-segment plan does not keep the segment buckets apart; plan:\n{}",
                datafusion::physical_plan::displayable(plan.as_ref()).indent(false)
            ),
        ));
    }
    Ok((df, plan))
}

/// Writes the rows of `input` into `buckets` Parquet files by a hash of the segment key, all
/// buckets at once (the exchange holds little for any of them), each through a temporary name.
/// Row groups are small enough that every writer's open row group fits an eighth of the pool.
async fn write_buckets(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    d: &Detect,
    input: &str,
    work: &Path,
    buckets: usize,
    pool: usize,
) -> Result<()> {
    let place = || "writing the detect input in buckets by segment".to_string();
    let fail = |e: datafusion::error::DataFusionError| {
        let user = nomaly_engine::error::is_user_datafusion_error(&e);
        let err = classify(place(), e);
        if user {
            err
        } else {
            runtime(err, RunPlace::Materialize)
        }
    };
    // One input partition: the exchange then hands each bucket its rows in the input's order,
    // so a bucket's bytes (and the output's) are the same on every run. Input partitions read
    // at once would interleave in whatever order they happen to run.
    let mut config = sharing_catalogs(ctx);
    config.options_mut().execution.target_partitions = 1;
    let sequential = SessionStateBuilder::new_from_existing(ctx.state())
        .with_config(config)
        .build();
    let (_, logical) = ctx
        .sql(&format!("SELECT * FROM {input}"))
        .await
        .map_err(|e| classify(p.file.path.display().to_string(), e))?
        .into_parts();
    let plan = DataFrame::new(sequential, logical)
        .create_physical_plan()
        .await
        .map_err(|e| classify(p.file.path.display().to_string(), e))?;
    let schema = plan.schema();
    let keys = d
        .partition_by
        .iter()
        .map(|k| col(k, &schema))
        .collect::<datafusion::error::Result<Vec<Arc<dyn PhysicalExpr>>>>()
        .map_err(fail)?;
    let exchange =
        Arc::new(RepartitionExec::try_new(plan, Partitioning::Hash(keys, buckets)).map_err(fail)?);
    let row_bytes: usize = schema
        .fields()
        .iter()
        .map(|f| f.data_type().primitive_width().unwrap_or(32))
        .sum::<usize>()
        .max(1);
    let group_rows = (pool / 8 / buckets / row_bytes).clamp(1024, 128 * 1024);
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows.min(p.chunk_rows as usize).max(1024)))
        .build();
    let task = ctx.task_ctx();
    futures::stream::iter(0..buckets)
        .map(|i| {
            let (exchange, task, properties) = (exchange.clone(), task.clone(), properties.clone());
            let path = work.join(format!("bucket-{i:05}.parquet"));
            async move {
                let mut stream = exchange.execute(i, task).map_err(fail)?;
                write_bucket(&mut stream, &path, properties).await
            }
        })
        .buffer_unordered(buckets)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// One bucket's rows to `path` (nothing when it has none).
async fn write_bucket(
    stream: &mut datafusion::execution::SendableRecordBatchStream,
    path: &Path,
    properties: WriterProperties,
) -> Result<()> {
    let io = |source| PipelineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let temporary: PathBuf = path.with_extension("parquet.tmp");
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| classify(path.display().to_string(), e))?;
        if batch.num_rows() == 0 {
            continue;
        }
        let w = match &mut writer {
            Some(w) => w,
            None => {
                let file = std::fs::File::create(&temporary).map_err(io)?;
                writer.insert(
                    ArrowWriter::try_new(file, batch.schema(), Some(properties.clone()))
                        .map_err(|e| classify(path.display().to_string(), e.into()))?,
                )
            }
        };
        w.write(&batch)
            .map_err(|e| classify(path.display().to_string(), e.into()))?;
    }
    if let Some(w) = writer {
        w.close()
            .map_err(|e| classify(path.display().to_string(), e.into()))?;
        std::fs::rename(&temporary, path).map_err(io)?;
    }
    Ok(())
}

/// The buckets in `work` as chunks, one per file, registered as the staged input table.
async fn chunk_buckets(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    d: &Detect,
    work: &WorkDir,
) -> Result<ChunkPlan> {
    if !work.has_parquet().await? {
        // No rows at all.
        return Err(empty_input(d, &reads(p)));
    }
    // Whole files: a bucket is never split, or a segment would span two chunks.
    register_staged(ctx, work, u64::MAX, false, d.partition_by.clone()).await
}

/// (rows, rows with a missing feature, segments) of the bucketed input: the counts the fit
/// reports, in one grouped pass over the key and feature columns.
async fn count_segments(ctx: &SessionContext, d: &Detect) -> Result<(u64, u64, usize)> {
    let q = super::quote_ident;
    // A feature is missing when null, NaN or infinite (x - x is 0 only for finite x).
    let finite: Vec<String> = d
        .columns
        .iter()
        .map(|c| {
            format!(
                "coalesce(CAST({0} AS DOUBLE) - CAST({0} AS DOUBLE) = 0.0, false)",
                q(c)
            )
        })
        .collect();
    let keys: Vec<String> = d.partition_by.iter().map(|k| q(k)).collect();
    let sql = format!(
        "SELECT CAST(count(*) AS BIGINT), CAST(coalesce(sum(n), 0) AS BIGINT), \
         CAST(coalesce(sum(m), 0) AS BIGINT) FROM (SELECT count(*) AS n, \
         sum(CASE WHEN {} THEN 0 ELSE 1 END) AS m FROM {STAGED_INPUT} GROUP BY {})",
        finite.join(" AND "),
        keys.join(", ")
    );
    let batches = ctx
        .sql(&sql)
        .await
        .map_err(|e| classify(d.place.clone(), e))?
        .collect()
        .await
        .map_err(|e| classify(d.place.clone(), e))?;
    let value = |i: usize| {
        batches
            .first()
            .filter(|b| b.num_rows() > 0 && b.column(i).data_type() == &DataType::Int64)
            .map(|b| b.column(i).as_primitive::<Int64Type>())
            .filter(|a| !a.is_null(0))
            .map(|a| a.value(0).max(0) as u64)
            .unwrap_or(0)
    };
    Ok((value(1), value(2), value(0) as usize))
}

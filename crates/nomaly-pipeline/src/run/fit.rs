//! The fit: `fit_detector` over the detect input, with retries. Its partial aggregate runs
//! partition by partition, each partition retried on a transient failure, and the final aggregate
//! merges the partial states — so a flaky read costs one partition, not the fit. When partitions
//! are not independent, or on Ballista (one job), the whole fit is retried.

use super::detect_plan::{MODELS, fit_frame};
use super::fit_states::FoldedStates;
use super::retry::Attempts;
use super::session::cluster_of;
use super::{RunScope, classify};
use crate::compile::{Detect, RetryPolicy};
use crate::error::{ErrorKind, PipelineError, Result, RunPlace};
use crate::events::RunObserver;
use crate::report::RunReport;
use datafusion::arrow::array::{Array, AsArray, BinaryArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::SessionContext;
use nomaly_detectors::Algorithm;
use nomaly_engine::ClusterClient;
use std::sync::Arc;
use std::time::Instant;

/// A fit's result: counts, and the models table (kept in the run directory for resume).
pub(crate) struct FittedModels {
    pub rows: u64,
    pub skipped: u64,
    pub models: usize,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// How the fit retries: the policy, how many partitions run at once, who hears of retries.
pub(crate) struct FitRetry {
    pub policy: RetryPolicy,
    pub parallel: usize,
    pub observer: Arc<dyn RunObserver>,
}

impl FitRetry {
    pub fn of(scope: &RunScope<'_>, parallel: usize) -> Self {
        FitRetry {
            policy: scope.p.retry,
            parallel,
            observer: scope.opts.observer.clone(),
        }
    }
}

/// Fits the model(s) over `input` and registers them as the models table.
pub(crate) async fn fit_models(
    ctx: &SessionContext,
    d: &Detect,
    input: &str,
    reads: &str,
    retry: &FitRetry,
    report: &mut RunReport,
) -> Result<FittedModels> {
    let fit = fit_frame(ctx, d, input)
        .await
        .map_err(|e| classify(d.place.clone(), e))?;
    // The plan's schema, not the first batch's: an empty input has no batches.
    let schema: SchemaRef = Arc::new(fit.schema().as_arrow().clone());
    let batches = collect_fit(fit, retry, report).await.map_err(|e| {
        let e = with_forest_hint(d, e);
        let user = nomaly_engine::error::is_user_datafusion_error(&e);
        let err = classify(format!("{} (fit, reading {reads})", d.place), e);
        if user {
            err
        } else {
            runtime(err, RunPlace::Fit { partition: None })
        }
    })?;
    let (rows, skipped, models) = count_models(d, &batches)?;
    register_models(ctx, schema.clone(), batches.clone())
        .map_err(|e| classify(d.place.clone(), e))?;
    Ok(FittedModels {
        rows,
        skipped,
        models,
        schema,
        batches,
    })
}

/// A fit that ran out of memory with iforest says which options size its trees (the aggregate
/// counts the forest the state will grow: `FitState::size_bytes`).
fn with_forest_hint(d: &Detect, e: DataFusionError) -> DataFusionError {
    let exhausted = matches!(e.find_root(), DataFusionError::ResourcesExhausted(_));
    if exhausted && matches!(d.algorithm, Algorithm::IsolationForest | Algorithm::Eif) {
        DataFusionError::ResourcesExhausted(format!(
            "{}; {}'s trees count against the budget: lower n_trees or sample_size (the \
             trees take n_trees × 2·sample_size nodes), or raise the memory limit",
            e.find_root(),
            d.algorithm
        ))
    } else {
        e
    }
}

/// (rows the fit read, rows it skipped for missing features, models) from the models' own counts.
fn count_models(d: &Detect, batches: &[RecordBatch]) -> Result<(u64, u64, usize)> {
    let (mut rows, mut skipped, mut models) = (0u64, 0u64, 0usize);
    for b in batches {
        let col = b.column(b.num_columns() - 1);
        let col = datafusion::arrow::compute::cast(col, &DataType::Binary)
            .map_err(|e| classify(d.place.clone(), e.into()))?;
        let bin: &BinaryArray = col.as_binary();
        for i in 0..bin.len() {
            if bin.is_null(i) {
                continue;
            }
            let m = nomaly_detectors::Model::from_bytes(bin.value(i))
                .map_err(|e| PipelineError::invalid(&d.place, e.to_string()))?;
            rows += m.training_rows + m.skipped_rows;
            skipped += m.skipped_rows;
            models += 1;
        }
    }
    Ok((rows, skipped, models))
}

/// Registers (or replaces) the models table the scoring plan joins.
pub(crate) fn register_models(
    ctx: &SessionContext,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> DfResult<()> {
    let _ = ctx.deregister_table(MODELS);
    let table = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
    ctx.register_table(MODELS, Arc::new(table))?;
    Ok(())
}

/// A failed read or write of the run itself is not the input's fault, whatever DataFusion says:
/// keep the message, make it a permanent failure at `place`.
pub(crate) fn runtime(e: PipelineError, place: RunPlace) -> PipelineError {
    match e {
        PipelineError::Engine {
            place: what,
            source,
        } if source.is_user_error() => PipelineError::at(
            place,
            ErrorKind::Permanent,
            format!("{what}: {}", source.user_message()),
        ),
        other => other,
    }
}

/// The first partial aggregate under `plan` (the fit's per-partition state builder).
fn find_partial_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    if let Some(agg) = plan.as_ref().downcast_ref::<AggregateExec>()
        && *agg.mode() == AggregateMode::Partial
    {
        return Some(plan.clone());
    }
    plan.children().into_iter().find_map(find_partial_aggregate)
}

/// True when each partition of `plan` can be executed (and re-executed) on its own: no operator
/// under it moves rows between partitions.
pub(crate) fn partitions_are_independent(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let any = plan.as_ref();
    !(any.is::<RepartitionExec>()
        || any.is::<CoalescePartitionsExec>()
        || any.is::<SortPreservingMergeExec>())
        && plan.children().into_iter().all(partitions_are_independent)
}

/// Runs the fit: by partition where partitions are independent, else whole.
async fn collect_fit(
    df: DataFrame,
    retry: &FitRetry,
    report: &mut RunReport,
) -> DfResult<Vec<RecordBatch>> {
    let task_ctx = Arc::new(df.task_ctx());
    if let Some(cluster) = cluster_of(task_ctx.session_config()) {
        let name = format!("{}: fit", report.pipeline);
        return fit_on_cluster(df, &cluster, &name, retry, report).await;
    }
    let plan = df.clone().create_physical_plan().await?;
    let partial = find_partial_aggregate(&plan)
        .filter(|p| p.children().into_iter().all(partitions_are_independent));
    let Some(partial) = partial else {
        return whole_fit(retry, report, || df.clone().collect()).await;
    };
    let states = fit_partitions(&df, &partial, &task_ctx, retry, report).await?;
    let memory = MemorySourceConfig::try_new_exec(&states, partial.schema(), None)?;
    let merged = plan
        .transform_down(|node| {
            Ok(
                if std::ptr::addr_eq(Arc::as_ptr(&node), Arc::as_ptr(&partial)) {
                    Transformed::yes(memory.clone() as Arc<dyn ExecutionPlan>)
                } else {
                    Transformed::no(node)
                },
            )
        })?
        .data;
    datafusion::physical_plan::collect(merged, task_ctx).await
}

/// The partial aggregate's states, partition by partition, `retry.parallel` at a time. The tasks
/// live in a `JoinSet`, so a cancelled run (which drops this future) aborts them.
async fn fit_partitions(
    df: &DataFrame,
    partial: &Arc<dyn ExecutionPlan>,
    task_ctx: &Arc<TaskContext>,
    retry: &FitRetry,
    report: &mut RunReport,
) -> DfResult<Vec<Vec<RecordBatch>>> {
    let n = partial.output_partitioning().partition_count();
    let limit = Arc::new(tokio::sync::Semaphore::new(retry.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (df, task_ctx, first) = (df.clone(), task_ctx.clone(), partial.clone());
        let (policy, observer, limit) = (retry.policy, retry.observer.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("never closed");
            let r = fit_partition(i, df, first, task_ctx, policy, observer).await;
            (i, r)
        });
    }
    // States are folded as they arrive: holding every chunk's until the end would cost memory in
    // proportion to the input (fit_states.rs).
    // A failure is reported for the first failing partition in partition order (the first bad
    // line of the input), whichever finished first.
    let mut states = FoldedStates::new(partial.clone());
    let mut failed: Option<(usize, DataFusionError)> = None;
    while let Some(joined) = tasks.join_next().await {
        let (i, r) = joined.map_err(|e| DataFusionError::External(Box::new(e)))?;
        match r {
            Ok((batches, attempts)) => {
                attempts.record(format!("fit {i}"), report);
                if failed.is_none() {
                    states.push(i, batches)?;
                }
            }
            Err(e) => {
                if failed.as_ref().is_none_or(|(j, _)| i < *j) {
                    failed = Some((i, e));
                }
            }
        }
    }
    match failed {
        Some((_, e)) => Err(e),
        None => Ok(states.finish()),
    }
}

/// Partition `i` of the partial aggregate, retried on transient failures with a fresh plan.
async fn fit_partition(
    i: usize,
    df: DataFrame,
    first: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    policy: RetryPolicy,
    observer: Arc<dyn RunObserver>,
) -> DfResult<(Vec<RecordBatch>, Attempts)> {
    let mut node = first;
    let mut attempts = Attempts::new(RunPlace::Fit { partition: Some(i) }, policy);
    loop {
        let t = Instant::now();
        let attempt = match node.execute(i, task_ctx.clone()) {
            Ok(stream) => datafusion::physical_plan::common::collect(stream).await,
            Err(e) => Err(e),
        };
        let e = match attempt {
            Ok(b) => return Ok((b, attempts)),
            Err(e) => e,
        };
        let transient = nomaly_engine::error::is_transient_datafusion_error(&e);
        let error = format!("fit partition {i}: {}", e.find_root());
        let Some((wait, event)) = attempts.retry_after(&error, transient, t) else {
            return Err(e);
        };
        observer.on_event(&event);
        tokio::time::sleep(wait).await;
        // A fresh plan: nothing of the failed attempt is reused.
        let fresh = df.clone().create_physical_plan().await?;
        node = find_partial_aggregate(&fresh).ok_or_else(|| {
            DataFusionError::Internal("the fit plan changed between attempts".into())
        })?;
    }
}

/// The fit as one Ballista job (the scheduler spreads the partial aggregates over the executor's
/// slots and retries failed tasks); the whole job is retried on a transient failure.
async fn fit_on_cluster(
    df: DataFrame,
    cluster: &ClusterClient,
    job_name: &str,
    retry: &FitRetry,
    report: &mut RunReport,
) -> DfResult<Vec<RecordBatch>> {
    whole_fit(retry, report, || async {
        let plan = df.clone().create_physical_plan().await?;
        let plan = nomaly_physical::keep_row_selections(plan)?;
        datafusion::physical_plan::common::collect(cluster.execute(plan, job_name).await?).await
    })
    .await
}

/// Runs the whole fit, again after a transient failure, and records its retries as "fit".
async fn whole_fit<F, Fut>(
    retry: &FitRetry,
    report: &mut RunReport,
    mut fit: F,
) -> DfResult<Vec<RecordBatch>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = DfResult<Vec<RecordBatch>>>,
{
    let mut attempts = Attempts::new(RunPlace::Fit { partition: None }, retry.policy);
    let result = loop {
        let t = Instant::now();
        match fit().await {
            Ok(b) => break Ok(b),
            Err(e) => {
                let transient = nomaly_engine::error::is_transient_datafusion_error(&e);
                match attempts.retry_after(&format!("fit: {}", e.find_root()), transient, t) {
                    Some((wait, event)) => {
                        retry.observer.on_event(&event);
                        tokio::time::sleep(wait).await
                    }
                    None => break Err(e),
                }
            }
        }
    };
    attempts.record("fit".into(), report);
    result
}

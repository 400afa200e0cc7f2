//! One-pass fit and score on a local session: [`FuseFitAndScore`] turns the rewrite's
//! `CrossJoin(fit aggregate over T, T)` into a [`FitScoreExec`] that reads `T` once.
//!
//! ```text
//! CrossJoinExec                                        FitScoreExec: fits=[__nomaly_model_0]
//!   AggregateExec: mode=Final, fit_detector(...)   ==>   DataSourceExec: projection=[id, f1, f2]
//!     CoalescePartitionsExec
//!       AggregateExec: mode=Partial, fit_detector(...)
//!         DataSourceExec: projection=[f1, f2]
//!   DataSourceExec: projection=[id, f1, f2]
//! ```
//! The cross join reads the table twice: once to fit, once to score. The fused operator reads every
//! input partition once, feeding each batch to the same `fit_detector` accumulators the aggregate
//! would use (so the model is the same bits) while keeping the batch; when all partitions are fitted
//! it emits the kept batches with the model columns in front, exactly the rows and columns the cross
//! join would have produced. Kept batches are reserved in the memory pool and capped at half the
//! budget; when the input does not fit, every partition drops what it kept and the input is read
//! again for scoring — the two-pass plan — so the budget holds on any input size.
//!
//! Local only: the operator spans all partitions of its input, which a Ballista stage (one task per
//! partition, possibly on other executors) cannot do, so Ballista sessions keep the standard plan.

use crate::fit_detector::FitDetector;
use crate::fit_score_plan::MODEL_PREFIX;
use crate::same_rows::same_rows;
use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, ScalarValue, internal_err};
use datafusion::common::{JoinSide, JoinType};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{CrossJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;

/// The physical optimizer rule; add it to local sessions only (see the module docs).
#[derive(Debug, Default)]
pub struct FuseFitAndScore;

impl PhysicalOptimizerRule for FuseFitAndScore {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let fused = if let Some(join) = node.as_ref().downcast_ref::<CrossJoinExec>() {
                FitScoreExec::try_fuse(join.left(), join.right())?
                    .map(|f| Arc::new(f) as Arc<dyn ExecutionPlan>)
            } else if let Some(join) = node.as_ref().downcast_ref::<NestedLoopJoinExec>() {
                fuse_filtered_join(join)?
            } else {
                None
            };
            match fused {
                // Only a replacement with exactly the join's output schema (the optimizer checks too).
                Some(f) if f.schema() == node.schema() => Ok(Transformed::yes(f)),
                _ => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "nomaly_fuse_fit_and_score"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// One fit: the aggregate expression (for its accumulators) and its arguments bound to the
/// scored input's schema.
#[derive(Debug, Clone)]
pub(crate) struct Fit {
    pub(crate) aggregate: Arc<AggregateFunctionExpr>,
    pub(crate) args: Vec<Arc<dyn PhysicalExpr>>,
}

/// Reads its input once, fits, then emits `model columns ++ input columns` (see the module docs).
#[derive(Debug)]
pub struct FitScoreExec {
    /// The fit side of the cross join it replaces (its properties follow from both sides).
    fit_side: Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
    fits: Vec<Fit>,
    /// The cross join's properties: its schema, partitions and order.
    properties: Arc<PlanProperties>,
    state: Arc<OnceCell<std::result::Result<Arc<Fitted>, Arc<DataFusionError>>>>,
    /// `kept_rows` (served from memory) and `partitions_read_again`.
    metrics: ExecutionPlanMetricsSet,
}

/// What the first pass leaves: the model values and where the rows to score come from.
#[derive(Debug)]
struct Fitted {
    /// The model values as columns, shared by every partition's output.
    models: Mutex<ModelColumns>,
    rows: ScoredRows,
}

#[derive(Debug)]
enum ScoredRows {
    /// Each partition's batches, taken by the stream that emits them.
    Kept(Vec<Mutex<Option<KeptBatches>>>),
    /// The input did not fit: a fresh instance of the input plan, whose partitions are all read
    /// again. All or none: sibling file streams may steal each other's files
    /// (`enable_file_stream_work_stealing`), so which rows a partition holds is only fixed within
    /// one execution of the plan.
    ReadAgain(Arc<dyn ExecutionPlan>),
}

#[derive(Debug)]
struct KeptBatches {
    batches: VecDeque<RecordBatch>,
    reservation: MemoryReservation,
}

impl FitScoreExec {
    /// `Some` when `join` is a rewrite's fit-and-score join whose fit reads the same rows as the
    /// scored side.
    fn try_fuse(
        left: &Arc<dyn ExecutionPlan>,
        right: &Arc<dyn ExecutionPlan>,
    ) -> Result<Option<FitScoreExec>> {
        let Some((aggregates, fit_input)) = fit_aggregates(left) else {
            return Ok(None);
        };
        let input = Arc::clone(right);
        if !same_rows(&fit_input, &input) {
            return Ok(None);
        }
        let schema = input.schema();
        let mut fits = Vec::with_capacity(aggregates.len());
        for aggregate in aggregates {
            let mut args = Vec::new();
            for arg in aggregate.expressions() {
                match rebind(&arg, &fit_input.schema(), &schema)? {
                    Some(a) => args.push(a),
                    None => return Ok(None),
                }
            }
            fits.push(Fit { aggregate, args });
        }
        Ok(Some(FitScoreExec {
            properties: cross_join_properties(left, &input),
            fit_side: Arc::clone(left),
            input,
            fits,
            state: Arc::new(OnceCell::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    /// A fresh operator (no fit yet) over `input`.
    fn with_input(&self, input: Arc<dyn ExecutionPlan>, recompute: bool) -> FitScoreExec {
        FitScoreExec {
            properties: if recompute {
                cross_join_properties(&self.fit_side, &input)
            } else {
                Arc::clone(&self.properties)
            },
            fit_side: Arc::clone(&self.fit_side),
            input,
            fits: self.fits.clone(),
            state: Arc::new(OnceCell::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The first pass: every input partition at once, each in its own task.
    async fn fit_all(
        input: Arc<dyn ExecutionPlan>,
        fits: Vec<Fit>,
        context: Arc<TaskContext>,
        metrics: ExecutionPlanMetricsSet,
    ) -> Result<Arc<Fitted>> {
        let partitions = input.output_partitioning().partition_count();
        let pool = context.memory_pool();
        // Kept batches may use half the budget; the other half is for the operators above (the
        // scores, the writer), which would fail if this operator had taken it all.
        let cap = match pool.memory_limit() {
            MemoryLimit::Finite(n) => n / 2,
            MemoryLimit::Infinite | MemoryLimit::Unknown => usize::MAX,
        };
        let kept_total = Arc::new(AtomicUsize::new(0));
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::with_capacity(partitions);
        for p in 0..partitions {
            let stream = input.execute(p, Arc::clone(&context))?;
            let reservation = MemoryConsumer::new(format!("FitScoreExec[{p}]")).register(pool);
            let fit_reservation =
                MemoryConsumer::new(format!("FitScoreExec[{p}] fit states")).register(pool);
            let budget = KeepBudget {
                kept_total: Arc::clone(&kept_total),
                overflowed: Arc::clone(&overflowed),
                cap,
            };
            tasks.push(SpawnedTask::spawn(first_pass(
                stream,
                fits.clone(),
                reservation,
                fit_reservation,
                budget,
            )));
        }
        let mut states: Vec<Vec<Vec<ScalarValue>>> = Vec::with_capacity(partitions);
        let mut kept = Vec::with_capacity(partitions);
        for task in tasks {
            let (state, batches) = task
                .join_unwind()
                .await
                .map_err(|e| DataFusionError::ExecutionJoin(Box::new(e)))??;
            states.push(state);
            kept.push(batches);
        }
        let rows = if overflowed.load(Ordering::Relaxed) {
            // Dropping the kept batches returns their memory.
            drop(kept);
            MetricBuilder::new(&metrics)
                .global_counter("partitions_read_again")
                .add(partitions);
            ScoredRows::ReadAgain(reset_plan_states(Arc::clone(&input))?)
        } else {
            let rows = kept
                .iter()
                .flat_map(|k| k.batches.iter().map(|b| b.num_rows()))
                .sum();
            MetricBuilder::new(&metrics)
                .global_counter("kept_rows")
                .add(rows);
            ScoredRows::Kept(kept.into_iter().map(|k| Mutex::new(Some(k))).collect())
        };
        // The Final aggregate's merge, in partition order (fit states merge to the same bits in
        // any order, so this equals the two-pass plan's model).
        let mut models = Vec::with_capacity(fits.len());
        for (i, fit) in fits.iter().enumerate() {
            let mut acc = fit.aggregate.create_accumulator()?;
            for state in &states {
                let arrays = state[i]
                    .iter()
                    .map(|v| v.to_array())
                    .collect::<Result<Vec<ArrayRef>>>()?;
                acc.merge_batch(&arrays)?;
            }
            models.push(acc.evaluate()?);
        }
        Ok(Arc::new(Fitted {
            models: Mutex::new(ModelColumns::new(models)),
            rows,
        }))
    }
}

/// How much the first pass may keep, shared by its partitions.
struct KeepBudget {
    kept_total: Arc<AtomicUsize>,
    /// Set by the first partition that does not fit; then none keeps anything.
    overflowed: Arc<AtomicBool>,
    cap: usize,
}

/// Fits one partition, keeping its batches while all partitions' fit in the cap and the pool.
/// The fit states (and the models they will grow, as the accumulators count them) are held in
/// `fit_reservation`: a state the budget cannot hold is an error, not an allocation past it.
async fn first_pass(
    mut stream: SendableRecordBatchStream,
    fits: Vec<Fit>,
    reservation: MemoryReservation,
    fit_reservation: MemoryReservation,
    budget: KeepBudget,
) -> Result<(Vec<Vec<ScalarValue>>, KeptBatches)> {
    let mut accumulators = fits
        .iter()
        .map(|f| f.aggregate.create_accumulator())
        .collect::<Result<Vec<_>>>()?;
    let mut kept = VecDeque::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for (fit, acc) in fits.iter().zip(accumulators.iter_mut()) {
            let values = fit
                .args
                .iter()
                .map(|e| e.evaluate(&batch)?.into_array(batch.num_rows()))
                .collect::<Result<Vec<_>>>()?;
            acc.update_batch(&values)?;
        }
        // The fit states come first: kept batches only save a second read, so they make room.
        let states: usize = accumulators.iter().map(|a| a.size()).sum();
        if fit_reservation.try_resize(states).is_err() {
            budget.overflowed.store(true, Ordering::Relaxed);
            kept.clear();
            reservation.free();
            fit_reservation
                .try_resize(states)
                .map_err(|e| fit_too_large(states, e))?;
        }
        if !budget.overflowed.load(Ordering::Relaxed) {
            let size = batch.get_array_memory_size();
            let total = budget.kept_total.fetch_add(size, Ordering::Relaxed) + size;
            if total <= budget.cap && reservation.try_grow(size).is_ok() {
                kept.push_back(batch);
                continue;
            }
            // Past overflow the total no longer matters: nothing is kept any more.
            budget.overflowed.store(true, Ordering::Relaxed);
        }
        if !kept.is_empty() {
            kept.clear();
            reservation.free();
        }
    }
    let states = accumulators
        .iter_mut()
        .map(|acc| acc.state())
        .collect::<Result<Vec<_>>>()?;
    Ok((
        states,
        KeptBatches {
            batches: kept,
            reservation,
        },
    ))
}

/// The error of a fit whose states (with the models they will grow) exceed the memory budget.
pub(crate) fn fit_too_large(bytes: usize, cause: DataFusionError) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "the detector's fit needs about {} MiB for its state and model, more than the memory \
         budget leaves ({cause}); for iforest lower n_trees or sample_size (the trees take \
         n_trees × 2·sample_size nodes), or raise the memory limit",
        bytes.div_ceil(1 << 20)
    ))
}

/// The properties of `CrossJoin(fit_side, input)`: the fused operator's rows are the join's, in
/// the same partitions and order.
fn cross_join_properties(
    fit_side: &Arc<dyn ExecutionPlan>,
    input: &Arc<dyn ExecutionPlan>,
) -> Arc<PlanProperties> {
    Arc::clone(CrossJoinExec::new(Arc::clone(fit_side), Arc::clone(input)).properties())
}

/// The optimizer turns `WHERE` on a score into the join's filter (a nested-loop join on the model
/// row): fuse it as FitScoreExec → FilterExec → ProjectionExec with the join's filter and projection.
fn fuse_filtered_join(join: &NestedLoopJoinExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    if join.join_type() != &JoinType::Inner {
        return Ok(None);
    }
    let Some(fused) = FitScoreExec::try_fuse(join.left(), join.right())? else {
        return Ok(None);
    };
    let n_left = join.left().schema().fields().len();
    let schema = fused.schema();
    let mut plan: Arc<dyn ExecutionPlan> = Arc::new(fused);
    if let Some(filter) = join.filter() {
        let indices = filter.column_indices();
        let expr = Arc::clone(filter.expression())
            .transform(|e| {
                let Some(c) = e.as_ref().downcast_ref::<Column>() else {
                    return Ok(Transformed::no(e));
                };
                let Some(ci) = indices.get(c.index()) else {
                    return internal_err!("join filter column {} out of range", c.index());
                };
                let at = match ci.side {
                    JoinSide::Left => ci.index,
                    JoinSide::Right => n_left + ci.index,
                    JoinSide::None => return internal_err!("join filter column on no side"),
                };
                Ok(Transformed::yes(
                    Arc::new(Column::new(schema.field(at).name(), at)) as Arc<dyn PhysicalExpr>,
                ))
            })?
            .data;
        plan = Arc::new(FilterExec::try_new(expr, plan)?);
    }
    if let Some(projection) = join.projection() {
        let exprs: Vec<ProjectionExpr> = projection
            .iter()
            .map(|&i| {
                let name = schema.field(i).name();
                ProjectionExpr {
                    expr: Arc::new(Column::new(name, i)),
                    alias: name.clone(),
                }
            })
            .collect();
        plan = Arc::new(ProjectionExec::try_new(exprs, plan)?);
    }
    Ok(Some(plan))
}

/// A rewrite's fit aggregates and the plan they read.
type FitSide = (Vec<Arc<AggregateFunctionExpr>>, Arc<dyn ExecutionPlan>);

/// The fit aggregates of a rewrite's model side and the plan they read, or `None`.
fn fit_aggregates(left: &Arc<dyn ExecutionPlan>) -> Option<FitSide> {
    let top = left.as_ref().downcast_ref::<AggregateExec>()?;
    let is_fit = |a: &AggregateExec| {
        a.group_expr().is_empty()
            && a.filter_expr().iter().all(Option::is_none)
            && !a.aggr_expr().is_empty()
            && a.aggr_expr()
                .iter()
                .all(|e| e.fun().inner().is::<FitDetector>() && e.name().starts_with(MODEL_PREFIX))
    };
    if !is_fit(top) {
        return None;
    }
    match top.mode() {
        AggregateMode::Single => Some((top.aggr_expr().to_vec(), Arc::clone(top.input()))),
        AggregateMode::Final => {
            let coalesce = top
                .input()
                .as_ref()
                .downcast_ref::<CoalescePartitionsExec>()?;
            let partial = coalesce.input().as_ref().downcast_ref::<AggregateExec>()?;
            (partial.mode() == &AggregateMode::Partial && is_fit(partial))
                .then(|| (partial.aggr_expr().to_vec(), Arc::clone(partial.input())))
        }
        _ => None,
    }
}

/// `expr` with its columns looked up by name in `to` (`None` if a name is missing or ambiguous).
pub(crate) fn rebind(
    expr: &Arc<dyn PhysicalExpr>,
    from: &SchemaRef,
    to: &SchemaRef,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let mut missing = false;
    let rebound = Arc::clone(expr)
        .transform(|e| {
            let Some(c) = e.as_ref().downcast_ref::<Column>() else {
                return Ok(Transformed::no(e));
            };
            let name = from.field(c.index()).name();
            let matches: Vec<usize> = to
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name() == name)
                .map(|(i, _)| i)
                .collect();
            match matches.as_slice() {
                [i] => Ok(Transformed::yes(
                    Arc::new(Column::new(name, *i)) as Arc<dyn PhysicalExpr>
                )),
                _ => {
                    missing = true;
                    Ok(Transformed::no(e))
                }
            }
        })?
        .data;
    Ok((!missing).then_some(rebound))
}

impl DisplayAs for FitScoreExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.fits.iter().map(|x| x.aggregate.name()).collect();
        write!(
            f,
            "FitScoreExec: fits=[{}], one pass (input kept in memory up to half the budget, else read again)",
            names.join(", ")
        )
    }
}

impl ExecutionPlan for FitScoreExec {
    fn name(&self) -> &'static str {
        "FitScoreExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for arg in self.fits.iter().flat_map(|x| &x.args) {
            if f(arg)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("FitScoreExec takes one child, got {}", children.len());
        }
        let recompute = options.children_properties == ChildrenPropertiesMode::Recompute;
        Ok(Arc::new(self.with_input(children.remove(0), recompute)))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(self.with_input(Arc::clone(&self.input), false)))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let state = Arc::clone(&self.state);
        let metrics = self.metrics.clone();
        // Rows scored so far: progress reporting adds them to the rows read (the input is read
        // once, during the fit, so rows read alone reach 100% long before the end).
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let (input, fits, schema) = (Arc::clone(&self.input), self.fits.clone(), self.schema());
        let out_schema = Arc::clone(&schema);
        let stream = futures::stream::once(async move {
            let fitted = state
                .get_or_init(|| {
                    let (input, context) = (Arc::clone(&input), Arc::clone(&context));
                    async move {
                        FitScoreExec::fit_all(input, fits, context, metrics)
                            .await
                            .map_err(Arc::new)
                    }
                })
                .await
                .clone()
                .map_err(DataFusionError::Shared)?;
            let rows: SendableRecordBatchStream = match &fitted.rows {
                ScoredRows::ReadAgain(fresh) => fresh.execute(partition, context)?,
                ScoredRows::Kept(kept) => {
                    let kept = kept
                        .get(partition)
                        .and_then(|k| k.lock().ok()?.take())
                        .ok_or_else(|| {
                            DataFusionError::Internal(format!(
                                "FitScoreExec: partition {partition} executed twice; reset the plan's state first"
                            ))
                        })?;
                    Box::pin(RecordBatchStreamAdapter::new(input.schema(), kept_stream(kept)))
                }
            };
            Ok::<_, DataFusionError>(rows.map(move |batch| {
                let batch = batch?;
                let mut columns = fitted
                    .models
                    .lock()
                    .map_err(|_| DataFusionError::Internal("model columns poisoned".into()))?
                    .sized(batch.num_rows())?;
                columns.extend(batch.columns().iter().cloned());
                output_rows.add(batch.num_rows());
                Ok(RecordBatch::try_new(Arc::clone(&schema), columns)?)
            }))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}

/// The model columns of the output, built once and sliced for each batch of every partition:
/// building them per batch copied every model's bytes into a fresh array each time (megabytes for
/// ECOD), and slices share one values buffer, which the scoring functions' model cache recognises
/// without comparing bytes.
#[derive(Debug)]
struct ModelColumns {
    models: Vec<ScalarValue>,
    columns: Vec<ArrayRef>,
    rows: usize,
}

impl ModelColumns {
    fn new(models: Vec<ScalarValue>) -> Self {
        Self {
            models,
            columns: Vec::new(),
            rows: 0,
        }
    }

    fn sized(&mut self, rows: usize) -> Result<Vec<ArrayRef>> {
        if rows > self.rows || self.columns.len() != self.models.len() {
            // the usual batch size, so later batches fit
            self.rows = rows.max(8192);
            self.columns = self
                .models
                .iter()
                .map(|m| m.to_array_of_size(self.rows))
                .collect::<Result<_>>()?;
        }
        Ok(self.columns.iter().map(|c| c.slice(0, rows)).collect())
    }
}

/// Emits kept batches, returning each one's memory as it leaves.
fn kept_stream(kept: KeptBatches) -> impl futures::Stream<Item = Result<RecordBatch>> + Send {
    futures::stream::unfold(kept, |mut k| async move {
        let batch = k.batches.pop_front()?;
        k.reservation.shrink(batch.get_array_memory_size());
        Some((Ok(batch), k))
    })
}

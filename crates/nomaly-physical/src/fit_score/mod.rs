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

mod first_pass;
mod fuse;

use crate::fit::Fit;
use first_pass::{KeepBudget, first_pass};
pub use fuse::FuseFitAndScore;
pub(crate) use fuse::{cross_join_properties, is_fit_aggregate};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, ScalarValue, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
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
pub(crate) struct ModelColumns {
    models: Vec<ScalarValue>,
    columns: Vec<ArrayRef>,
    rows: usize,
}

impl ModelColumns {
    pub(crate) fn new(models: Vec<ScalarValue>) -> Self {
        Self {
            models,
            columns: Vec::new(),
            rows: 0,
        }
    }

    pub(crate) fn sized(&mut self, rows: usize) -> Result<Vec<ArrayRef>> {
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

#[cfg(test)]
mod tests {
    use crate::test_util::{
        assert_dropping_the_output_releases_the_input, find, fused_and_two_pass, metric, plan,
        register_rows, session, sorted_rows,
    };
    use datafusion::physical_plan::{ExecutionPlanProperties, displayable};

    const SQL: &str = "SELECT id, detect_anomalies('zscore', x) AS a FROM t";

    /// No row passes the filter (which both sides apply): no row out, no error.
    #[tokio::test]
    async fn empty_input_scores_no_rows() {
        let sql = "SELECT id, detect_anomalies('zscore', x) AS a FROM t WHERE x < 0";
        let (op, got, expected) =
            fused_and_two_pass("FitScoreExec", sql, (1_000, 3, 1), None).await;
        assert_eq!(op.name(), "FitScoreExec");
        assert_eq!(got, expected);
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(metric(&op, "kept_rows"), Some(0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn any_number_of_partitions_scores_like_the_two_pass_plan() {
        for partitions in [1, 2, 7] {
            let (op, got, expected) =
                fused_and_two_pass("FitScoreExec", SQL, (2_000, partitions, 1), None).await;
            assert_eq!(got.len(), 2_000);
            assert_eq!(got, expected, "{partitions} partitions");
            assert_eq!(op.output_partitioning().partition_count(), partitions);
            // Every row was served from memory; none was read twice.
            assert_eq!(metric(&op, "kept_rows"), Some(2_000));
            assert_eq!(metric(&op, "partitions_read_again"), None);
        }
    }

    /// Under a budget whose half cannot keep the input, every partition is read again, and the
    /// scores are still the two-pass plan's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_memory_limit_reads_the_input_again_with_the_same_scores() {
        // Small samples: the fit states count against the budget too.
        let sql = "SELECT id, detect_anomalies('zscore', x, 'sample_rows=64') AS a FROM t";
        let (op, got, expected) =
            fused_and_two_pass("FitScoreExec", sql, (40_000, 3, 1), Some(1 << 20)).await;
        assert_eq!(op.name(), "FitScoreExec");
        assert_eq!(got.len(), 40_000);
        assert_eq!(got, expected);
        assert_eq!(metric(&op, "partitions_read_again"), Some(3));
        assert_eq!(metric(&op, "kept_rows"), None);
    }

    /// A fit whose state cannot fit the budget fails with a message naming the fix, rather than
    /// allocating past it.
    #[tokio::test]
    async fn a_fit_larger_than_the_budget_is_a_clear_error() {
        let ctx = session(true, 2, Some(64 << 10));
        register_rows(&ctx, 1_000, 2, 1);
        let sql =
            "SELECT id, detect_anomalies('iforest', x, 'n_trees=500, sample_size=256') FROM t";
        let fused = plan(&ctx, sql).await;
        assert!(find(&fused, "FitScoreExec").is_some());
        let err = sorted_rows(fused, &ctx).await.unwrap_err().to_string();
        assert!(err.contains("more than the memory budget"), "{err}");
        assert!(err.contains("lower n_trees or sample_size"), "{err}");
    }

    /// Dropping an output stream while the first pass waits on its input cancels the pass: the
    /// input's streams, held by the spawned per-partition tasks, are all dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_output_cancels_the_first_pass() {
        let ctx = session(true, 3, None);
        register_rows(&ctx, 1_000, 3, 1);
        let op = find(&plan(&ctx, SQL).await, "FitScoreExec").expect("fused");
        assert_dropping_the_output_releases_the_input(op, 3, 0, &ctx).await;
    }

    /// The operator replaces the cross join exactly: its schema, partitions and order.
    #[tokio::test]
    async fn properties_are_the_cross_joins() {
        let fused = session(true, 4, None);
        register_rows(&fused, 500, 4, 1);
        let op = find(&plan(&fused, SQL).await, "FitScoreExec").expect("fused");
        let two = session(false, 4, None);
        register_rows(&two, 500, 4, 1);
        let join = find(&plan(&two, SQL).await, "CrossJoinExec").expect("two-pass");
        assert_eq!(op.schema(), join.schema());
        assert_eq!(
            op.output_partitioning().partition_count(),
            join.output_partitioning().partition_count()
        );
        assert_eq!(op.output_ordering(), join.output_ordering());
        assert_eq!(op.children().len(), 1);
        let shown = displayable(op.as_ref()).one_line().to_string();
        assert!(
            shown.starts_with("FitScoreExec: fits=[__nomaly_model_0]"),
            "{shown}"
        );
    }
}

//! Per-segment fit and score in one pass on a local session: `detect_anomalies(...) OVER
//! (PARTITION BY k)` with any number of segments in bounded memory.
//!
//! ```text
//! HashJoinExec: on=[(__nomaly_key_0_0, k)]              SegmentFitScoreExec: keys=[k]
//!   AggregateExec: FinalPartitioned, gby=[k], fit(...)   ==>   SortExec: [k], preserve_partitioning
//!     AggregateExec: Partial, gby=[k], fit(...)                  RepartitionExec: Hash([k])
//!       DataSourceExec                                             DataSourceExec
//!   DataSourceExec
//! ```
//! The rule runs before the optimizer's `EnsureRequirements`, which then places the exchange and
//! the sort the operator asks for (and the sorts above it that its output order no longer meets);
//! after that pass the join would also have pushed a dynamic filter into the scored side's scan.
//! The rewrite's plan fits every segment's model first and joins them back to the rows: the
//! join's build side holds all models at once (10,000 iforest models are gigabytes) and the rows
//! arrive with the segments interleaved, so the models are looked up again and again. Here the rows
//! are hash-partitioned and sorted by the key (the sort spills past the memory budget), so each
//! segment's rows are contiguous: the operator feeds them to the same `fit_detector` accumulators
//! the aggregate would use (the same model bits), keeps them (reserved in the memory pool), and when
//! the key changes emits them with the key and model columns in front — the join's rows and
//! columns, in key order. One model exists at a time per partition, and each is decoded once by the
//! scoring projection above (its dictionary values are shared by all the segment's batches).
//!
//! Local only, like the one-pass fusion: Ballista sessions keep the standard plan. Pipelines keep
//! it too (their chunks are the scan's partitions, which a re-partitioning by key would mix).

use crate::fit_detector::FitDetector;
use crate::fit_score_plan::MODEL_PREFIX;
use crate::one_pass::{Fit, rebind};
use crate::same_rows::same_rows;
use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::kernels::partition::partition;
use datafusion::arrow::compute::{cast, concat, concat_batches, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinType, NullEquality, Result, ScalarValue, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, LexRequirement, OrderingRequirements, Partitioning,
    PhysicalExpr, PhysicalSortRequirement,
};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions,
};
use futures::StreamExt;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

/// What the operator needs from the join it replaces.
#[derive(Debug, Clone)]
struct SegmentJoin {
    /// The join's left (model) schema: the key columns, then the model columns.
    left: SchemaRef,
    /// The join's output projection over left ++ right columns.
    projection: Option<Arc<[usize]>>,
    /// The join's output schema.
    schema: SchemaRef,
}

/// Fits and scores segment by segment over rows sorted by the key (see the module docs).
#[derive(Debug)]
pub struct SegmentFitScoreExec {
    /// The scored rows, hash-partitioned and sorted by `keys`.
    input: Arc<dyn ExecutionPlan>,
    /// The segment key, over `input`'s schema.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    fits: Vec<Fit>,
    join: SegmentJoin,
    properties: Arc<PlanProperties>,
    /// `segments` fitted.
    metrics: ExecutionPlanMetricsSet,
}

impl SegmentFitScoreExec {
    /// `Some` when `join` is a rewrite's per-segment fit-and-score join (models on the left, an
    /// inner join on the key with NULLs equal) whose fit reads the same rows as its right side.
    pub(crate) fn try_fuse(join: &HashJoinExec) -> Result<Option<Self>> {
        if join.join_type() != &JoinType::Inner
            || join.filter().is_some()
            || join.null_equality() != NullEquality::NullEqualsNull
            || join.fetch().is_some()
        {
            return Ok(None);
        }
        let Some((aggregates, fit_input, group)) = grouped_fit(join.left()) else {
            return Ok(None);
        };
        // The join's left keys must be the aggregate's group columns, in order.
        let left_schema = join.left().schema();
        if join.on().len() != group
            || join.on().iter().enumerate().any(|(i, (l, _))| {
                l.as_ref()
                    .downcast_ref::<Column>()
                    .is_none_or(|c| c.index() != i || left_schema.field(i).name() != c.name())
            })
        {
            return Ok(None);
        }
        // The scored rows: the right side without the exchanges the planner put above its scan
        // (the operator repartitions by the key itself). Either side's exchanges only move rows
        // between partitions, and a segment's fit sees all its rows whichever partition read them.
        let rows = below_exchanges(join.right());
        if !same_rows(row_source(&fit_input), row_source(rows)) {
            return Ok(None);
        }
        let keys: Vec<Arc<dyn PhysicalExpr>> =
            join.on().iter().map(|(_, r)| Arc::clone(r)).collect();
        let schema = rows.schema();
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
        // The operator states what it needs of its input (hash-partitioned and sorted by the key);
        // the optimizer's EnsureRequirements, which runs after this rule, puts the exchange and
        // the sort there.
        if LexRequirement::new(
            keys.iter()
                .map(|k| PhysicalSortRequirement::new(Arc::clone(k), Some(Default::default()))),
        )
        .is_none()
        {
            return Ok(None);
        }
        let join = SegmentJoin {
            left: left_schema,
            projection: join.projection.clone(),
            schema: join.schema(),
        };
        Ok(Some(Self::new(Arc::clone(rows), keys, fits, join)))
    }

    fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        fits: Vec<Fit>,
        join: SegmentJoin,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&join.schema)),
            Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            input,
            keys,
            fits,
            join,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

/// `plan` without the repartitions and coalesces on top of it.
fn below_exchanges(plan: &Arc<dyn ExecutionPlan>) -> &Arc<dyn ExecutionPlan> {
    let any = plan.as_ref();
    if let Some(r) = any.downcast_ref::<RepartitionExec>() {
        return below_exchanges(r.input());
    }
    if let Some(c) = any.downcast_ref::<CoalescePartitionsExec>() {
        return below_exchanges(c.input());
    }
    plan
}

/// What decides `plan`'s rows: below every projection and exchange on top of it (those choose
/// columns and move rows between partitions; the fit of a segment sees all its rows either way).
fn row_source(plan: &Arc<dyn ExecutionPlan>) -> &Arc<dyn ExecutionPlan> {
    if let Some(p) = plan.as_ref().downcast_ref::<ProjectionExec>() {
        return row_source(p.input());
    }
    if let Some(c) = plan.as_ref().downcast_ref::<CooperativeExec>() {
        return row_source(c.input());
    }
    let below = below_exchanges(plan);
    if Arc::ptr_eq(below, plan) {
        plan
    } else {
        row_source(below)
    }
}

type FitSide = (
    Vec<Arc<datafusion::physical_expr::aggregate::AggregateFunctionExpr>>,
    Arc<dyn ExecutionPlan>,
    usize,
);

/// The fits of a grouped fit aggregate (`Final`/`FinalPartitioned` over a `Partial`, or
/// `Single`), the rows they read, and how many group columns it has.
fn grouped_fit(left: &Arc<dyn ExecutionPlan>) -> Option<FitSide> {
    // A collect-left join gathers the models' partitions first.
    let top = below_exchanges(left)
        .as_ref()
        .downcast_ref::<AggregateExec>()?;
    let is_fit = |a: &AggregateExec| {
        !a.group_expr().is_empty()
            && a.group_expr().groups().len() == 1
            && a.filter_expr().iter().all(Option::is_none)
            && !a.aggr_expr().is_empty()
            && a.aggr_expr()
                .iter()
                .all(|e| e.fun().inner().is::<FitDetector>() && e.name().starts_with(MODEL_PREFIX))
    };
    if !is_fit(top) {
        return None;
    }
    let group = top.group_expr().expr().len();
    match top.mode() {
        AggregateMode::Single | AggregateMode::SinglePartitioned => {
            Some((top.aggr_expr().to_vec(), Arc::clone(top.input()), group))
        }
        AggregateMode::Final | AggregateMode::FinalPartitioned => {
            // Partial → RepartitionExec (or CoalescePartitionsExec) → Final
            let exchange = top.input();
            let below = exchange.children();
            let partial = match below.as_slice() {
                [p] if exchange.as_ref().is::<RepartitionExec>()
                    || exchange.as_ref().is::<CoalescePartitionsExec>() =>
                {
                    p.as_ref().downcast_ref::<AggregateExec>()?
                }
                _ => exchange.as_ref().downcast_ref::<AggregateExec>()?,
            };
            (partial.mode() == &AggregateMode::Partial && is_fit(partial)).then(|| {
                (
                    partial.aggr_expr().to_vec(),
                    Arc::clone(partial.input()),
                    group,
                )
            })
        }
        _ => None,
    }
}

impl DisplayAs for SegmentFitScoreExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        let fits: Vec<&str> = self.fits.iter().map(|x| x.aggregate.name()).collect();
        write!(
            f,
            "SegmentFitScoreExec: keys=[{}], fits=[{}]",
            keys.join(", "),
            fits.join(", ")
        )
    }
}

impl ExecutionPlan for SegmentFitScoreExec {
    fn name(&self) -> &'static str {
        "SegmentFitScoreExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(
            &Arc<dyn PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        use datafusion::common::tree_node::TreeNodeRecursion;
        for e in self
            .keys
            .iter()
            .chain(self.fits.iter().flat_map(|x| &x.args))
        {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!(
                "SegmentFitScoreExec takes one child, got {}",
                children.len()
            );
        }
        Ok(Arc::new(Self::new(
            children.remove(0),
            self.keys.clone(),
            self.fits.clone(),
            self.join.clone(),
        )))
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

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::KeyPartitioned(self.keys.clone())]
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        let requirement = LexRequirement::new(
            self.keys
                .iter()
                .map(|k| PhysicalSortRequirement::new(Arc::clone(k), Some(Default::default()))),
        );
        vec![requirement.map(OrderingRequirements::new)]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let reservation = MemoryConsumer::new(format!("SegmentFitScoreExec[{partition}]"))
            .register(context.memory_pool());
        let segments = MetricBuilder::new(&self.metrics).counter("segments", partition);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let state = Segments {
            input,
            keys: self.keys.clone(),
            fits: self.fits.clone(),
            join: self.join.clone(),
            current: None,
            ready: Vec::new(),
            ready_rows: 0,
            ready_bytes: 0,
            batch_size: context.session_config().batch_size().max(1),
            pending: VecDeque::new(),
            reservation,
            done: false,
        };
        let stream = futures::stream::unfold(state, move |mut s| {
            let (segments, output_rows) = (segments.clone(), output_rows.clone());
            async move {
                loop {
                    if let Some(batch) = s.pending.pop_front() {
                        output_rows.add(batch.num_rows());
                        return Some((Ok(batch), s));
                    }
                    if s.done {
                        return None;
                    }
                    let step = match s.input.next().await {
                        Some(Ok(batch)) => s.add(&batch, &segments),
                        Some(Err(e)) => Err(e),
                        None => {
                            s.done = true;
                            s.finish_segment(&segments).and_then(|_| s.flush_ready())
                        }
                    };
                    if let Err(e) = step {
                        s.done = true;
                        s.pending.clear();
                        return Some((Err(e), s));
                    }
                }
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }
}

/// One partition's progress: the segment being read and the batches ready to emit.
struct Segments {
    input: SendableRecordBatchStream,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    fits: Vec<Fit>,
    join: SegmentJoin,
    current: Option<Segment>,
    /// Fitted segments smaller than a batch, waiting to leave together: 10,000 segments of a
    /// thousand rows make 1,250 batches, not 10,000 (each batch costs every operator above a
    /// fixed amount, and the scorer groups a batch's rows by model anyway).
    ready: Vec<FittedSegment>,
    ready_rows: usize,
    ready_bytes: usize,
    batch_size: usize,
    pending: VecDeque<RecordBatch>,
    /// The rows held (the current segment's and the ready ones') and the ready ones' models.
    reservation: MemoryReservation,
    done: bool,
}

/// A segment's one-row key and model arrays (the join's left columns) and its rows.
struct FittedSegment {
    ones: Vec<ArrayRef>,
    rows: Vec<RecordBatch>,
    row_count: usize,
}

/// The rows of one key read so far, and its fits' accumulators.
struct Segment {
    key: Vec<ScalarValue>,
    rows: Vec<RecordBatch>,
    /// Bytes of `rows` reserved in the pool.
    bytes: usize,
    accumulators: Vec<Box<dyn Accumulator>>,
}

impl Segments {
    /// Splits `batch` into runs of equal keys, finishing a segment where the key changes.
    fn add(
        &mut self,
        batch: &RecordBatch,
        segments: &datafusion::physical_plan::metrics::Count,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = self
            .keys
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<ArrayRef>>>()?;
        for run in partition(&keys)?.ranges() {
            let key = keys
                .iter()
                .map(|k| ScalarValue::try_from_array(k, run.start))
                .collect::<Result<Vec<_>>>()?;
            if self.current.as_ref().is_some_and(|c| c.key != key) {
                self.finish_segment(segments)?;
            }
            if self.current.is_none() {
                let accumulators = self
                    .fits
                    .iter()
                    .map(|f| f.aggregate.create_accumulator())
                    .collect::<Result<Vec<_>>>()?;
                self.current = Some(Segment {
                    key,
                    rows: Vec::new(),
                    bytes: 0,
                    accumulators,
                });
            }
            let rows = batch.slice(run.start, run.len());
            let bytes = self.reserve(&rows)?;
            let segment = self.current.as_mut().expect("set above");
            segment.bytes += bytes;
            for (fit, acc) in self.fits.iter().zip(segment.accumulators.iter_mut()) {
                let values = fit
                    .args
                    .iter()
                    .map(|e| e.evaluate(&rows)?.into_array(rows.num_rows()))
                    .collect::<Result<Vec<_>>>()?;
                acc.update_batch(&values)?;
            }
            segment.rows.push(rows);
        }
        Ok(())
    }

    /// Keeps a segment's rows within the memory pool; a segment larger than the budget is an
    /// error that says so (the rows of one segment must be held until its model is fitted).
    fn reserve(&mut self, rows: &RecordBatch) -> Result<usize> {
        let bytes: usize = rows
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum();
        self.reservation.try_grow(bytes).map_err(|e| {
            let held: usize = self
                .current
                .as_ref()
                .map_or(0, |c| c.rows.iter().map(RecordBatch::num_rows).sum());
            let key = self
                .current
                .as_ref()
                .map(|c| c.key.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            datafusion::common::DataFusionError::ResourcesExhausted(format!(
                "detect_anomalies(...) OVER (PARTITION BY ...): the segment ({key}) holds more than \
                 {held} rows, more than the memory budget leaves for one segment's rows, which are \
                 kept until its model is fitted; raise --memory-limit, or split the segment with \
                 another PARTITION BY column ({e})"
            ))
        })?;
        Ok(bytes)
    }

    /// Fits the current segment's model and queues its rows with the key and model columns.
    fn finish_segment(
        &mut self,
        segments: &datafusion::physical_plan::metrics::Count,
    ) -> Result<()> {
        let Some(segment) = self.current.take() else {
            return Ok(());
        };
        segments.add(1);
        let left = Arc::clone(&self.join.left);
        let keys = segment.key.len();
        // The model the two-pass plan fits: its Final aggregate merges the partial states into an
        // empty one, and fit states merge exactly (sums, counts, the bottom-k sample), so the one
        // partial state here gives the same bits without its round trip through bytes (which
        // cost a serialisation, a decode and a re-sampling per segment).
        // The fit states and the models they grow count against the budget while they live.
        let fitting: usize = segment.accumulators.iter().map(|a| a.size()).sum();
        self.grow_for_models(fitting)?;
        let mut models = Vec::with_capacity(segment.accumulators.len());
        for mut acc in segment.accumulators {
            models.push(acc.evaluate()?);
        }
        self.reservation.shrink(fitting);
        // One-row arrays of the left columns, in the left schema's types; each batch takes its
        // rows from them, so a dictionary-encoded model keeps one values array for the segment.
        let ones = segment
            .key
            .iter()
            .chain(&models)
            .enumerate()
            .map(|(i, v)| {
                let one = v.to_array_of_size(1)?;
                let want = left.field(i).data_type();
                if one.data_type() == want {
                    Ok(one)
                } else {
                    Ok(cast(&one, want)?)
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        if ones.len() != left.fields().len() || keys + self.fits.len() != ones.len() {
            return internal_err!("SegmentFitScoreExec: the model side has an unexpected schema");
        }
        let rows: usize = segment.rows.iter().map(RecordBatch::num_rows).sum();
        if self.ready_rows + rows > self.batch_size {
            self.flush_ready()?;
        }
        // The models wait with their rows until a batch is full: they count against the budget.
        let model_bytes: usize = ones.iter().map(|a| a.get_array_memory_size()).sum();
        self.grow_for_models(model_bytes)?;
        let held = segment.bytes + model_bytes;
        if rows < self.batch_size {
            self.ready.push(FittedSegment {
                ones,
                rows: segment.rows,
                row_count: rows,
            });
            self.ready_rows += rows;
            self.ready_bytes += held;
            return Ok(());
        }
        // A segment of a batch or more leaves in its own batches, sharing its one-row arrays.
        for rows in segment.rows {
            let zeros = UInt32Array::from(vec![0u32; rows.num_rows()]);
            let columns = ones
                .iter()
                .map(|one| Ok(take(one.as_ref(), &zeros, None)?))
                .collect::<Result<Vec<ArrayRef>>>()?;
            self.emit(columns, rows.columns())?;
        }
        self.reservation.shrink(held.min(self.reservation.size()));
        Ok(())
    }

    /// Reserves `bytes` for fit states or models, sending the waiting segments on first when
    /// the pool is short; an error says how much one segment's fit needs.
    fn grow_for_models(&mut self, bytes: usize) -> Result<()> {
        if self.reservation.try_grow(bytes).is_err() {
            self.flush_ready()?;
            let grown = self.reservation.try_grow(bytes);
            grown.map_err(|e| crate::one_pass::fit_too_large(bytes, e))?;
        }
        Ok(())
    }

    /// Queues the ready segments as one batch: each left column is the segments' one-row arrays
    /// concatenated and taken per row (a model column keeps one dictionary value per segment).
    fn flush_ready(&mut self) -> Result<()> {
        if self.ready.is_empty() {
            return Ok(());
        }
        let ready = std::mem::take(&mut self.ready);
        let mut index = Vec::with_capacity(self.ready_rows);
        for (i, segment) in ready.iter().enumerate() {
            index.extend(std::iter::repeat_n(i as u32, segment.row_count));
        }
        let index = UInt32Array::from(index);
        let left = (0..ready[0].ones.len())
            .map(|c| {
                let ones: Vec<&dyn datafusion::arrow::array::Array> =
                    ready.iter().map(|s| s.ones[c].as_ref()).collect();
                Ok(take(concat(&ones)?.as_ref(), &index, None)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let batches: Vec<&RecordBatch> = ready.iter().flat_map(|s| &s.rows).collect();
        let schema = batches[0].schema();
        let right = concat_batches(&schema, batches)?;
        self.emit(left, right.columns())?;
        self.reservation
            .shrink(self.ready_bytes.min(self.reservation.size()));
        self.ready_rows = 0;
        self.ready_bytes = 0;
        Ok(())
    }

    /// Queues one output batch: the left (key, model) columns, then the rows' columns, through
    /// the join's projection.
    fn emit(&mut self, mut columns: Vec<ArrayRef>, rows: &[ArrayRef]) -> Result<()> {
        columns.extend(rows.iter().cloned());
        let columns = match &self.join.projection {
            Some(p) => p.iter().map(|&i| Arc::clone(&columns[i])).collect(),
            None => columns,
        };
        self.pending.push_back(RecordBatch::try_new(
            Arc::clone(&self.join.schema),
            columns,
        )?);
        Ok(())
    }
}

/// The physical optimizer rule; add it to local sessions only (see the module docs), before
/// `EnsureRequirements`.
#[derive(Debug, Default)]
pub struct FuseSegmentFitAndScore;

impl PhysicalOptimizerRule for FuseSegmentFitAndScore {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.as_ref().downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if !matches!(
                join.partition_mode(),
                PartitionMode::Partitioned | PartitionMode::CollectLeft
            ) {
                return Ok(Transformed::no(node));
            }
            match SegmentFitScoreExec::try_fuse(join)? {
                // Only a replacement with exactly the join's output schema.
                Some(f) if f.schema() == node.schema() => Ok(Transformed::yes(Arc::new(f) as _)),
                _ => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "nomaly_fuse_segment_fit_and_score"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

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
//! SQL on Ballista keeps the standard plan (its sessions do not run this rule). A pipeline with
//! `partition_by` runs it over segment buckets on every engine: its plan is built on the client,
//! and a cluster's codec carries the operator to the executors (`codec.rs`).

mod codec;
mod fuse;
mod held;
mod segments;

pub use fuse::FuseSegmentFitAndScore;
use segments::Segments;

use crate::fit::Fit;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{Result, internal_err};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, LexRequirement, OrderingRequirements, Partitioning,
    PhysicalExpr, PhysicalSortRequirement,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
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
        let reservation = held::Held::new(
            MemoryConsumer::new(format!("SegmentFitScoreExec[{partition}]"))
                .register(context.memory_pool()),
            context.memory_pool().memory_limit(),
            self.properties.partitioning.partition_count(),
        );
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

#[cfg(test)]
mod tests {
    use crate::test_util::{
        assert_dropping_the_output_releases_the_input, find, fused_and_two_pass, metric, plan,
        register_rows, session, sorted_rows,
    };
    use datafusion::physical_plan::{Distribution, ExecutionPlanProperties};

    const SQL: &str =
        "SELECT id, k, detect_anomalies('zscore', x) OVER (PARTITION BY k) AS a FROM t";

    /// No row passes the filter: no segment, no row, no error.
    #[tokio::test]
    async fn empty_input_scores_no_rows() {
        let sql = "SELECT id, detect_anomalies('zscore', x) OVER (PARTITION BY k) AS a \
                   FROM t WHERE x < 0";
        let (op, got, expected) =
            fused_and_two_pass("SegmentFitScoreExec", sql, (1_000, 3, 5), None).await;
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(got, expected);
        assert_eq!(metric(&op, "segments"), Some(0));
    }

    /// Whatever the partitions and segments, the rows are the two-pass plan's, bit for bit, and
    /// each segment is fitted once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn any_partitions_and_segments_score_like_the_two_pass_plan() {
        for (partitions, segments) in [(1, 1), (2, 7), (5, 300)] {
            let (op, got, expected) = fused_and_two_pass(
                "SegmentFitScoreExec",
                SQL,
                (3_000, partitions, segments),
                None,
            )
            .await;
            assert_eq!(got.len(), 3_000);
            assert_eq!(
                got, expected,
                "{partitions} partitions, {segments} segments"
            );
            assert_eq!(metric(&op, "segments"), Some(segments));
            assert_eq!(op.output_partitioning().partition_count(), partitions);
        }
    }

    /// A budget that holds one segment's rows but not all of them: the sort below spills and
    /// the operator holds a segment at a time, so the rows are still the two-pass plan's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_budget_smaller_than_the_input_holds_one_segment_at_a_time() {
        let sql = "SELECT id, k, detect_anomalies('zscore', x, 'sample_rows=64') \
                   OVER (PARTITION BY k) AS a FROM t";
        let (op, got, expected) =
            fused_and_two_pass("SegmentFitScoreExec", sql, (60_000, 2, 600), Some(1 << 20)).await;
        assert_eq!(got.len(), 60_000);
        assert_eq!(got, expected);
        assert_eq!(metric(&op, "segments"), Some(600));
        let sort = op.children()[0];
        assert_eq!(sort.name(), "SortExec");
        let spills = sort.metrics().and_then(|m| m.spill_count()).unwrap_or(0);
        assert!(
            spills > 0,
            "the input fitted the budget: the test proves nothing"
        );
    }

    /// One segment larger than the budget: an error that names the segment and the fix.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_segment_larger_than_the_budget_is_a_clear_error() {
        let ctx = session(true, 1, Some(1 << 20));
        register_rows(&ctx, 100_000, 1, 1);
        let sql = "SELECT id, detect_anomalies('zscore', x, 'sample_rows=64') \
                   OVER (PARTITION BY k) AS a FROM t";
        let fused = plan(&ctx, sql).await;
        assert!(find(&fused, "SegmentFitScoreExec").is_some());
        let err = sorted_rows(fused, &ctx).await.unwrap_err().to_string();
        assert!(err.contains("the segment (s0) needs more than"), "{err}");
        assert!(err.contains(" MiB for its rows ("), "{err}");
        assert!(err.contains("raise --memory-limit"), "{err}");
    }

    /// Dropping the output stream while the operator waits on its input drops the input's stream.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_output_releases_the_input() {
        let ctx = session(true, 2, None);
        register_rows(&ctx, 1_000, 2, 3);
        let op = find(&plan(&ctx, SQL).await, "SegmentFitScoreExec").expect("fused");
        assert_dropping_the_output_releases_the_input(op, 2, 1, &ctx).await;
    }

    /// It asks for its input hashed and sorted by the key, keeps the partition count, and yields
    /// the join's columns (key, model, then the rows'), so the plan above is the two-pass plan's.
    #[tokio::test]
    async fn properties_are_the_joins_and_the_input_is_keyed_and_sorted() {
        let fused = session(true, 3, None);
        register_rows(&fused, 600, 3, 4);
        let fused_plan = plan(&fused, SQL).await;
        let op = find(&fused_plan, "SegmentFitScoreExec").expect("fused");
        let two = session(false, 3, None);
        register_rows(&two, 600, 3, 4);
        assert_eq!(fused_plan.schema(), plan(&two, SQL).await.schema());
        let names: Vec<String> = op
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(
            names,
            ["__nomaly_key_0_0", "__nomaly_model_0", "id", "k", "x"]
        );
        assert_eq!(op.output_partitioning().partition_count(), 3);
        #[allow(deprecated)]
        match &op.required_input_distribution()[..] {
            [Distribution::KeyPartitioned(keys)] => assert_eq!(keys[0].to_string(), "k@1"),
            other => panic!("{other:?}"),
        }
        let order = op.required_input_ordering()[0].clone().expect("an order");
        assert!(format!("{order:?}").contains("k"), "{order:?}");
        assert_eq!(op.maintains_input_order(), vec![false]);
        let input = op.children()[0];
        assert_eq!(input.output_partitioning().partition_count(), 3);
        assert!(
            input.output_ordering().is_some(),
            "the input is sorted by the key"
        );
    }
}

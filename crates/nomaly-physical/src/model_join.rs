//! [`ModelJoinExec`]: the rewrite's fit-and-score cross join where [`FitScoreExec`] cannot go (a
//! Ballista stage runs one partition per task, so one read for fit and score is not possible),
//! without the cross join's copy of the model into every batch.
//!
//! ```text
//! CrossJoinExec                                   ModelJoinExec
//!   AggregateExec: mode=Final, fit_detector(...)  ==>  AggregateExec: mode=Final, fit_detector(...)
//!     ...                                                ...
//!   DataSourceExec                                     DataSourceExec
//! ```
//! `CrossJoinExec` repeats its one left row for each right batch: the model's bytes (megabytes
//! for ECOD) are copied into a fresh array per batch, and the scoring functions' model cache,
//! seeing a new array each time, hashes them again. This operator reads the model row once per
//! task and hands every batch a slice of one array built once, which the cache recognises by
//! address. Same schema, partitions, order and rows as the join. [`BroadcastModels`] places it in
//! the plans a cluster runs.
//!
//! [`FitScoreExec`]: crate::FitScoreExec

use crate::fit_score::ModelColumns;
use datafusion::arrow::array::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::CrossJoinExec;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use std::fmt;
use std::sync::Arc;

/// The model row (left) beside every row of the input (right), as the cross join it replaces.
#[derive(Debug)]
pub struct ModelJoinExec {
    model: Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ModelJoinExec {
    /// `model` must produce exactly one row (a fit aggregate without groups: checked by
    /// [`BroadcastModels`]; a run that sees another count fails).
    pub fn new(model: Arc<dyn ExecutionPlan>, input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = crate::fit_score::cross_join_properties(&model, &input);
        Self {
            model,
            input,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// For the codec: the operator has no state beyond its children.
    pub fn from_children(children: &[Arc<dyn ExecutionPlan>]) -> Result<Self> {
        match children {
            [model, input] => Ok(Self::new(Arc::clone(model), Arc::clone(input))),
            _ => internal_err!("ModelJoinExec has two children, got {}", children.len()),
        }
    }
}

impl DisplayAs for ModelJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ModelJoinExec")
    }
}

impl ExecutionPlan for ModelJoinExec {
    fn name(&self) -> &'static str {
        "ModelJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.model, &self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::from_children(&children)?))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (model, input) = (Arc::clone(&self.model), Arc::clone(&self.input));
        let schema = self.schema();
        let out_schema = Arc::clone(&schema);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let stream = futures::stream::once(async move {
            let batches = datafusion::physical_plan::collect(model, Arc::clone(&context)).await?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if rows != 1 {
                return internal_err!("ModelJoinExec: the model side gave {rows} rows, not 1");
            }
            let row = batches
                .iter()
                .find(|b| b.num_rows() == 1)
                .expect("one batch holds the row");
            let models = row
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, 0))
                .collect::<Result<Vec<_>>>()?;
            let mut columns = ModelColumns::new(models);
            let rows = input.execute(partition, context)?;
            Ok(rows.map(move |batch| {
                let batch = batch?;
                let mut all = columns.sized(batch.num_rows())?;
                all.extend(batch.columns().iter().cloned());
                output_rows.add(batch.num_rows());
                Ok(RecordBatch::try_new(Arc::clone(&schema), all)?)
            }))
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }
}

/// The physical optimizer rule for plans a cluster runs: every cross join of a rewrite's fit
/// aggregate (no groups: one row) with the rows it scores becomes a [`ModelJoinExec`].
#[derive(Debug, Default)]
pub struct BroadcastModels;

impl PhysicalOptimizerRule for BroadcastModels {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(join) = node.as_ref().downcast_ref::<CrossJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if !crate::fit_score::is_fit_aggregate(join.left()) {
                return Ok(Transformed::no(node));
            }
            let joined = ModelJoinExec::new(Arc::clone(join.left()), Arc::clone(join.right()));
            Ok(Transformed::yes(Arc::new(joined) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "nomaly_broadcast_models"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{find, plan, register_rows, session, sorted_rows};

    /// The two-pass plan of a local session without the fusions, and the same plan with
    /// [`BroadcastModels`] applied: the same rows, for any number of partitions and models.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scores_like_the_cross_join() {
        let queries = [
            "SELECT id, detect_anomalies('ecod', x) AS a FROM t",
            "SELECT id, detect_anomalies('iforest', x) AS a, detect_anomalies('zscore', x) AS b FROM t",
            "SELECT id, detect_anomalies('hbos', x) AS a FROM t WHERE x < 0",
        ];
        for partitions in [1, 3] {
            for sql in queries {
                let ctx = session(false, partitions, None);
                register_rows(&ctx, 3_000, partitions, 1);
                let two_pass = plan(&ctx, sql).await;
                assert!(find(&two_pass, "CrossJoinExec").is_some(), "{sql}");
                let joined = BroadcastModels
                    .optimize(Arc::clone(&two_pass), &ConfigOptions::default())
                    .unwrap();
                assert!(find(&joined, "CrossJoinExec").is_none(), "{sql}");
                let op = find(&joined, "ModelJoinExec").expect("placed");
                let join = find(&two_pass, "CrossJoinExec").unwrap();
                assert_eq!(op.schema(), join.schema());
                let expected = sorted_rows(two_pass, &ctx).await.unwrap();
                let got = sorted_rows(joined, &ctx).await.unwrap();
                assert_eq!(got, expected, "{sql}, {partitions} partitions");
            }
        }
    }
}

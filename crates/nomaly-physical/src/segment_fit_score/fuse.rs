//! [`FuseSegmentFitAndScore`]: finds the rewrite's per-segment fit-and-score join and puts a
//! [`SegmentFitScoreExec`] in its place.

use super::{SegmentFitScoreExec, SegmentJoin};
use crate::fit::{Fit, rebind};
use crate::same_rows::same_rows;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinType, NullEquality, Result};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    LexRequirement, PhysicalExpr, PhysicalExprRef, PhysicalSortRequirement,
};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode, SortMergeJoinExec};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use nomaly_udfs::fit_detector::FitDetector;
use nomaly_udfs::fit_score_plan::MODEL_PREFIX;
use std::sync::Arc;

/// The parts of a join the fusion reads: a hash join (local sessions) or a sort-merge join
/// (Ballista prefers those).
struct JoinParts<'a> {
    left: &'a Arc<dyn ExecutionPlan>,
    right: &'a Arc<dyn ExecutionPlan>,
    on: &'a [(PhysicalExprRef, PhysicalExprRef)],
    projection: Option<Arc<[usize]>>,
    schema: datafusion::arrow::datatypes::SchemaRef,
}

impl<'a> JoinParts<'a> {
    /// An inner join on the key with NULLs equal, no filter, no limit.
    fn of(node: &'a Arc<dyn ExecutionPlan>) -> Option<Self> {
        let any = node.as_ref();
        if let Some(join) = any.downcast_ref::<HashJoinExec>() {
            let plain = join.join_type() == &JoinType::Inner
                && join.filter().is_none()
                && join.null_equality() == NullEquality::NullEqualsNull
                && join.fetch().is_none()
                && matches!(
                    join.partition_mode(),
                    PartitionMode::Partitioned | PartitionMode::CollectLeft
                );
            return plain.then(|| JoinParts {
                left: join.left(),
                right: join.right(),
                on: join.on(),
                projection: join.projection.clone(),
                schema: join.schema(),
            });
        }
        let join = any.downcast_ref::<SortMergeJoinExec>()?;
        let plain = join.join_type() == JoinType::Inner
            && join.filter().is_none()
            && join.null_equality() == NullEquality::NullEqualsNull
            && join.fetch().is_none();
        plain.then(|| JoinParts {
            left: join.left(),
            right: join.right(),
            on: join.on(),
            projection: None,
            schema: join.schema(),
        })
    }
}

/// `Some` when `join` is a rewrite's per-segment fit-and-score join (models on the left, an
/// inner join on the key with NULLs equal) whose fit reads the same rows as its right side.
fn try_fuse(join: &JoinParts<'_>) -> Result<Option<SegmentFitScoreExec>> {
    let Some((aggregates, fit_input, group)) = grouped_fit(join.left) else {
        return Ok(None);
    };
    // The join's left keys must be the aggregate's group columns, in order.
    let left_schema = join.left.schema();
    if join.on.len() != group
        || join.on.iter().enumerate().any(|(i, (l, _))| {
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
    let rows = below_exchanges(join.right);
    if !same_rows(row_source(&fit_input), row_source(rows)) {
        return Ok(None);
    }
    let keys: Vec<Arc<dyn PhysicalExpr>> = join.on.iter().map(|(_, r)| Arc::clone(r)).collect();
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
        schema: Arc::clone(&join.schema),
    };
    Ok(Some(SegmentFitScoreExec::new(
        Arc::clone(rows),
        keys,
        fits,
        join,
    )))
}

/// `plan` without the repartitions, coalesces and sorts on top of it (a sort-merge join sorts
/// both sides; the operator asks for its own sort).
fn below_exchanges(plan: &Arc<dyn ExecutionPlan>) -> &Arc<dyn ExecutionPlan> {
    let any = plan.as_ref();
    if let Some(s) = any.downcast_ref::<SortExec>()
        && s.fetch().is_none()
    {
        return below_exchanges(s.input());
    }
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
            let Some(join) = JoinParts::of(&node) else {
                return Ok(Transformed::no(node));
            };
            match try_fuse(&join)? {
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

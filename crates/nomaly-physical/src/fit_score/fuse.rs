//! [`FuseFitAndScore`]: finds the rewrite's fit-and-score cross join (or the nested-loop join a
//! filter on a score makes of it) and puts a [`FitScoreExec`] in its place.

use super::FitScoreExec;
use crate::fit::{Fit, rebind};

use crate::same_rows::same_rows;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{JoinSide, JoinType};
use datafusion::common::{Result, internal_err};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{CrossJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, PlanProperties};
use nomaly_udfs::fit_detector::FitDetector;
use nomaly_udfs::fit_score_plan::MODEL_PREFIX;
use std::sync::Arc;
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
                try_fuse(join.left(), join.right())?.map(|f| Arc::new(f) as Arc<dyn ExecutionPlan>)
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

/// `Some` when `join` is a rewrite's fit-and-score join whose fit reads the same rows as the
/// scored side.
pub(super) fn try_fuse(
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

/// The properties of `CrossJoin(fit_side, input)`: the fused operator's rows are the join's, in
/// the same partitions and order.
pub(crate) fn cross_join_properties(
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
    let Some(fused) = try_fuse(join.left(), join.right())? else {
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
/// An aggregate of the rewrite's fits without groups (so exactly one row out).
fn is_fit(a: &AggregateExec) -> bool {
    a.group_expr().is_empty()
        && a.filter_expr().iter().all(Option::is_none)
        && !a.aggr_expr().is_empty()
        && a.aggr_expr()
            .iter()
            .all(|e| e.fun().inner().is::<FitDetector>() && e.name().starts_with(MODEL_PREFIX))
}

/// `plan` is a fit aggregate of the rewrite without groups (it gives exactly one row).
pub(crate) fn is_fit_aggregate(plan: &Arc<dyn ExecutionPlan>) -> bool {
    plan.as_ref()
        .downcast_ref::<AggregateExec>()
        .is_some_and(is_fit)
}

fn fit_aggregates(left: &Arc<dyn ExecutionPlan>) -> Option<FitSide> {
    let top = left.as_ref().downcast_ref::<AggregateExec>()?;
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

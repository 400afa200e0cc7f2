//! The analyzer rule that plans `detect_anomalies`: the heart of the engine.
//!
//! ```text
//! Projection: id, detect_anomalies('iforest', a, b)            Projection: id, anomaly_detect(__nomaly_model_0, a, b)
//!   TableScan: tx                                   ==>          Cross Join
//!                                                                  Aggregate: fit_detector('iforest', a, b) AS __nomaly_model_0
//!                                                                    TableScan: tx
//!                                                                  TableScan: tx
//! ```
//! The one-row model is the *left* (build) side of the join and the table the streamed side, so
//! scoring keeps the table's partitions (a cross join collects its left input). With
//! `OVER (PARTITION BY k)` the fit is grouped by `k` and joined on `k IS NOT DISTINCT FROM` (NULL keys
//! form a segment, as in a window), again with the small model side on the left. All calls in one
//! node share one Aggregate, i.e. one extra scan. Only standard operators appear, so nothing custom
//! has to cross the wire to Ballista executors.

use crate::call::parse_detector_call_exprs;
use crate::detect_anomalies::NAME as DETECT;
use crate::fit_score_plan::{Detector, FitScorePlan};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::{
    Expr, ExprSchemable, LogicalPlan, Projection, Window, WindowFunctionDefinition,
};
use datafusion::optimizer::AnalyzerRule;
use std::cell::Cell;
use std::sync::Arc;

pub use crate::fit_score_plan::MODEL_PREFIX;

/// Rewrites `detect_anomalies` calls into fit-aggregate → join → score plans (built by
/// [`FitScorePlan`]).
#[derive(Debug, Default)]
pub struct DetectAnomaliesRewrite {
    plan: FitScorePlan,
}

fn is_detect_scalar(e: &Expr) -> bool {
    matches!(e, Expr::ScalarFunction(f) if f.func.name() == DETECT)
}

fn is_detect_window(e: &Expr) -> bool {
    match e {
        Expr::WindowFunction(w) => {
            matches!(&w.fun, WindowFunctionDefinition::AggregateUDF(u) if u.name() == DETECT)
        }
        Expr::Alias(a) => is_detect_window(&a.expr),
        _ => false,
    }
}

fn contains(e: &Expr, pred: fn(&Expr) -> bool) -> bool {
    e.exists(|x| Ok(pred(x))).unwrap_or(false)
}

impl AnalyzerRule for DetectAnomaliesRewrite {
    fn name(&self) -> &str {
        "nomaly_detect_anomalies"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        // Names are numbered per plan, so EXPLAIN output is the same on every run and engine.
        let next_id = Cell::new(0usize);
        plan.transform_up_with_subqueries(|node| self.rewrite_node(node, &next_id))
            .map(|t| t.data)
    }
}

impl DetectAnomaliesRewrite {
    fn rewrite_node(
        &self,
        plan: LogicalPlan,
        next_id: &Cell<usize>,
    ) -> Result<Transformed<LogicalPlan>> {
        let fresh_id = || {
            let id = next_id.get();
            next_id.set(id + 1);
            id
        };
        match plan {
            LogicalPlan::Projection(p) if p.expr.iter().any(|e| contains(e, is_detect_scalar)) => {
                self.rewrite_projection(p, &fresh_id).map(Transformed::yes)
            }
            LogicalPlan::Window(w) if w.window_expr.iter().any(is_detect_window) => {
                self.rewrite_window(w, &fresh_id).map(Transformed::yes)
            }
            other => {
                self.check_other(&other)?;
                Ok(Transformed::no(other))
            }
        }
    }

    /// detect_anomalies anywhere else (WHERE, GROUP BY, ORDER BY, aggregates) is a planning error;
    /// fit_detector calls are validated here so typos fail before execution.
    fn check_other(&self, plan: &LogicalPlan) -> Result<()> {
        let schema = plan
            .inputs()
            .first()
            .map(|i| Arc::clone(i.schema()))
            .unwrap_or_else(|| Arc::clone(plan.schema()));
        let mut error = None;
        plan.apply_expressions(|e| {
            e.apply(|x| {
                let detect_aggregate = matches!(x, Expr::AggregateFunction(af) if af.func.name() == DETECT);
                if is_detect_scalar(x) || is_detect_window(x) || detect_aggregate {
                    error = Some(format!(
                        "detect_anomalies(...) can only appear in a SELECT list (optionally with OVER (PARTITION BY ...)), \
                         not in {}; select it in a subquery and filter/aggregate the result: \
                         SELECT * FROM (SELECT *, detect_anomalies(...) AS a FROM t) WHERE a.is_anomaly",
                        plan.display()
                    ));
                    return Ok(TreeNodeRecursion::Stop);
                }
                if let Expr::AggregateFunction(af) = x
                    && af.func.name() == "fit_detector"
                {
                    let types: Vec<DataType> = af
                        .params
                        .args
                        .iter()
                        .map(|a| a.get_type(schema.as_ref()))
                        .collect::<Result<_>>()?;
                    parse_detector_call_exprs("fit_detector", &af.params.args, &types)?;
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })?;
        match error {
            Some(msg) => plan_err!("{msg}"),
            None => Ok(()),
        }
    }

    /// The detector a `detect_anomalies(alg, f1, ... [, opts])` call fits as number `id`.
    fn detector(id: usize, args: &[Expr], has_options: bool, keys: Vec<Expr>) -> Detector {
        let n = args.len() - usize::from(has_options);
        Detector {
            id,
            fit_args: args.to_vec(),
            features: args[1..n].to_vec(),
            keys,
        }
    }

    fn rewrite_projection(
        &self,
        p: Projection,
        fresh_id: &dyn Fn() -> usize,
    ) -> Result<LogicalPlan> {
        let input = Arc::clone(&p.input);
        let schema = input.schema();
        // Distinct calls, in order of appearance.
        let mut calls: Vec<(Expr, Detector)> = Vec::new();
        for e in &p.expr {
            e.apply(|x| {
                if let Expr::ScalarFunction(f) = x
                    && f.func.name() == DETECT
                    && !calls.iter().any(|(c, _)| c == x)
                {
                    let types: Vec<DataType> = f
                        .args
                        .iter()
                        .map(|a| a.get_type(schema.as_ref()))
                        .collect::<Result<_>>()?;
                    let call = parse_detector_call_exprs(DETECT, &f.args, &types)?;
                    let detector = Self::detector(fresh_id(), &f.args, call.has_options, vec![]);
                    calls.push((x.clone(), detector));
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
        }
        // One aggregate fits every call: one extra scan (none with the one-pass rule).
        let detectors: Vec<Detector> = calls.iter().map(|(_, d)| d.clone()).collect();
        let models = self.plan.models(input.as_ref().clone(), &detectors)?;
        let joined = self
            .plan
            .join(models, input.as_ref().clone(), &detectors[0])?;
        let exprs = p
            .expr
            .into_iter()
            .map(|e| {
                let original = e.schema_name().to_string();
                let rewritten = e
                    .transform_up(|x| {
                        if let Some((_, d)) = calls.iter().find(|(c, _)| c == &x) {
                            let score = self.plan.detect_expr(&d.model(), &d.features);
                            return Ok(Transformed::yes(score));
                        }
                        Ok(Transformed::no(x))
                    })?
                    .data;
                rewritten.alias_if_changed(original)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(LogicalPlan::Projection(Projection::try_new(
            exprs,
            Arc::new(joined),
        )?))
    }

    fn rewrite_window(&self, w: Window, fresh_id: &dyn Fn() -> usize) -> Result<LogicalPlan> {
        let input = Arc::clone(&w.input);
        let mut current: LogicalPlan = input.as_ref().clone();
        let mut others = Vec::new();
        for wexpr in w.window_expr {
            if !is_detect_window(&wexpr) {
                others.push(wexpr);
                continue;
            }
            let output_name = wexpr.schema_name().to_string();
            let Expr::WindowFunction(wf) = wexpr.unalias() else {
                unreachable!()
            };
            let WindowFunction { params, .. } = *wf;
            if !params.order_by.is_empty() {
                return plan_err!(
                    "detect_anomalies(...) OVER (...) takes PARTITION BY only: one model is fitted per partition \
                     over all its rows, so ORDER BY and frames do not apply; remove the ORDER BY"
                );
            }
            let schema = Arc::clone(input.schema());
            let types: Vec<DataType> = params
                .args
                .iter()
                .map(|a| a.get_type(schema.as_ref()))
                .collect::<Result<_>>()?;
            let call = parse_detector_call_exprs(DETECT, &params.args, &types)?;
            let detector = Self::detector(
                fresh_id(),
                &params.args,
                call.has_options,
                params.partition_by.clone(),
            );
            let models = self
                .plan
                .models(input.as_ref().clone(), std::slice::from_ref(&detector))?;
            let joined = self.plan.join(models, current.clone(), &detector)?;
            let mut exprs: Vec<Expr> = current
                .schema()
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            exprs.push(
                self.plan
                    .detect_expr(&detector.model(), &detector.features)
                    .alias(output_name),
            );
            current = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(joined))?);
        }
        if others.is_empty() {
            Ok(current)
        } else {
            Ok(LogicalPlan::Window(Window::try_new(
                others,
                Arc::new(current),
            )?))
        }
    }
}

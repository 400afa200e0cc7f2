//! The detect step over a run's session, built by the same builder as the SQL functions
//! ([`nomaly_udfs::fit_score_plan`]): the fit (the models table, grouped by `partition_by`), and
//! the scoring of the input against the stored models (the models table joined to every row, each
//! row scored once). Internal columns follow the builder's one naming scheme.

use crate::compile::Detect;
use datafusion::common::Column;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, LogicalPlan, lit};
use datafusion::prelude::SessionContext;
use nomaly_udfs::fit_score_plan::{Detector, FitScorePlan};

/// Name of the fitted-models table in a run's session.
pub(crate) const MODELS: &str = "__nomaly_models";

/// A column by its exact name (no parsing of dots or quotes).
fn column(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

/// The detect step as the builder's detector (fit number 0).
fn detector(d: &Detect) -> Detector {
    let features: Vec<Expr> = d.columns.iter().map(|c| column(c)).collect();
    let mut fit_args = vec![lit(d.algorithm.name())];
    fit_args.extend(features.iter().cloned());
    if !d.options.trim().is_empty() {
        fit_args.push(lit(d.options.clone()));
    }
    Detector {
        id: 0,
        fit_args,
        features,
        keys: d.partition_by.iter().map(|k| column(k)).collect(),
    }
}

/// The rows of `input` (a table name or a parenthesised query), as a plan.
async fn input_plan(ctx: &SessionContext, input: &str) -> DfResult<LogicalPlan> {
    Ok(ctx
        .sql(&format!("SELECT * FROM {input}"))
        .await?
        .into_unoptimized_plan())
}

/// Every column of `plan`, as expressions (the scored rows keep them all).
fn columns_of(plan: &LogicalPlan) -> Vec<Expr> {
    plan.schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect()
}

/// The fit: one row per segment (one row without `partition_by`): its keys, then its model.
pub(crate) async fn fit_frame(
    ctx: &SessionContext,
    d: &Detect,
    input: &str,
) -> DfResult<DataFrame> {
    let input = input_plan(ctx, input).await?;
    let plan = FitScorePlan::default().models(input, &[detector(d)])?;
    Ok(DataFrame::new(ctx.state(), plan))
}

/// The input's rows scored against the models table: the input's columns, `anomaly_score`,
/// `is_anomaly` (and `anomaly_explanation` with `explain = true`).
pub(crate) async fn score_frame(
    ctx: &SessionContext,
    d: &Detect,
    input: &str,
) -> DfResult<DataFrame> {
    let models = ctx.table(MODELS).await?.into_unoptimized_plan();
    let input = input_plan(ctx, input).await?;
    let columns = columns_of(&input);
    let plan =
        FitScorePlan::default().score_joined(models, input, columns, &detector(d), d.explain)?;
    Ok(DataFrame::new(ctx.state(), plan))
}

/// The input's rows fitted and scored segment by segment, as `detect_anomalies(...) OVER
/// (PARTITION BY ...)` is: the grouped fit joined to the rows, which a local session's
/// physical optimizer turns into one pass per segment (`SegmentFitScoreExec`). Over a table
/// whose chunks hold whole segments, partition `i` of that plan is chunk `i`.
pub(crate) async fn segment_frame(
    ctx: &SessionContext,
    d: &Detect,
    input: &str,
) -> DfResult<DataFrame> {
    let input = input_plan(ctx, input).await?;
    let columns = columns_of(&input);
    let plan = FitScorePlan::default().scored_rows(input, columns, &detector(d), d.explain)?;
    Ok(DataFrame::new(ctx.state(), plan))
}

//! # nomaly-udfs
//!
//! Nomaly's DataFusion functions, one file each:
//!
//! | function | kind | what |
//! |---|---|---|
//! | `detect_anomalies(alg, f, ... [, opts]) [OVER (PARTITION BY ...)]` | planned by rule | `{score, is_anomaly}` per row |
//! | `detect_anomalies('<table>', alg, 'c1, c2' [, opts])` | table function | the rows + `anomaly_score`, `is_anomaly` |
//! | `fit_detector(alg, f, ... [, opts])` | aggregate | a model (BINARY) |
//! | `anomaly_score` / `is_anomaly` / `anomaly_detect` / `anomaly_explain` `(model, f, ...)` | scalar | score with a model |
//! | `anomaly_model_info(model)` | scalar | describe a model (options, rows, threshold, size) |
//! | `anomaly_score_zscore` / `_mad` / `_iqr` `(v) OVER (...)` | window | score against the frame |
//! | `anomaly_score_seasonal` / `_rolling`, `is_anomaly_esd` `(v [, opts]) OVER (PARTITION BY s ORDER BY ts)` | window | time series: score each series |
//! | `synthetic_rows(rows, features [, seed [, planted_fraction]])` | table function | rows made from a seed |
//!
//! [`register_all`] installs everything — functions and the [`rewrite::DetectAnomaliesRewrite`]
//! analyzer rule — on a `SessionContext`; [`with_nomaly`] does the same on a `SessionStateBuilder`
//! (for sessions built before a context exists, e.g. Ballista schedulers and executors).

/// UDF structs that hold a cache compare and hash by signature only.
#[macro_export]
#[doc(hidden)]
macro_rules! identity_by_signature {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.signature == other.signature
            }
        }
        impl Eq for $t {}
        impl std::hash::Hash for $t {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.signature.hash(state)
            }
        }
    };
}

pub mod anomaly_detect;
pub mod anomaly_explain;
pub mod anomaly_model_info;
pub mod anomaly_score;
pub mod call;
pub mod detect_anomalies;
pub mod detect_anomalies_table;
pub mod docs;
pub mod fit_detector;
pub mod fit_score_plan;
mod fitted_models;
pub mod is_anomaly;
pub mod model_column;
pub mod model_names;
pub mod rewrite;
pub mod series_window;
pub mod synthetic_rows;
pub mod window_score;

use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::planner::ExprPlanner;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;
use nomaly_detectors::series::SeriesDetector;
use series_window::SeriesWindow;
use std::sync::Arc;
use window_score::{AnomalyScoreWindow, FrameScore};

/// Every scalar function.
pub fn scalar_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::from(anomaly_detect::AnomalyDetect::default())),
        Arc::new(ScalarUDF::from(anomaly_score::AnomalyScore::default())),
        Arc::new(ScalarUDF::from(is_anomaly::IsAnomaly::default())),
        Arc::new(ScalarUDF::from(anomaly_explain::AnomalyExplain::default())),
        Arc::new(ScalarUDF::from(
            anomaly_model_info::AnomalyModelInfo::default(),
        )),
    ]
}

/// Every aggregate function.
pub fn aggregate_functions() -> Vec<Arc<AggregateUDF>> {
    vec![
        Arc::new(AggregateUDF::from(fit_detector::FitDetector::default())),
        Arc::new(AggregateUDF::from(
            detect_anomalies::DetectAnomaliesAggregate::default(),
        )),
    ]
}

/// The expression planner that plans `detect_anomalies(...)` without `OVER`.
pub fn expr_planner() -> Arc<dyn ExprPlanner> {
    Arc::new(detect_anomalies::DetectAnomaliesPlanner::default())
}

/// Every window function.
pub fn window_functions() -> Vec<Arc<WindowUDF>> {
    vec![
        Arc::new(WindowUDF::from(AnomalyScoreWindow::new(FrameScore::ZScore))),
        Arc::new(WindowUDF::from(AnomalyScoreWindow::new(FrameScore::Mad))),
        Arc::new(WindowUDF::from(AnomalyScoreWindow::new(FrameScore::Iqr))),
        Arc::new(WindowUDF::from(SeriesWindow::new(SeriesDetector::Seasonal))),
        Arc::new(WindowUDF::from(SeriesWindow::new(SeriesDetector::Rolling))),
        Arc::new(WindowUDF::from(SeriesWindow::new(SeriesDetector::Esd))),
    ]
}

/// The analyzer rule that plans `detect_anomalies`.
pub fn analyzer_rule() -> Arc<dyn AnalyzerRule + Send + Sync> {
    Arc::new(rewrite::DetectAnomaliesRewrite::default())
}

/// Registers every function on `ctx` (additive: call it again after anything that replaces the
/// function lists, such as Ballista's `upgrade_for_ballista`).
pub fn register_functions(ctx: &SessionContext) {
    for f in scalar_functions() {
        ctx.register_udf(f.as_ref().clone());
    }
    for f in aggregate_functions() {
        ctx.register_udaf(f.as_ref().clone());
    }
    for f in window_functions() {
        ctx.register_udwf(f.as_ref().clone());
    }
    ctx.register_udtf(
        detect_anomalies::NAME,
        Arc::new(detect_anomalies_table::DetectAnomaliesTable),
    );
    ctx.register_udtf(
        synthetic_rows::NAME,
        Arc::new(synthetic_rows::SyntheticRowsFunction),
    );
}

/// Registers every function, the expression planner and the rewrite rule on `ctx` (the planner and
/// rule only once).
pub fn register_all(ctx: &SessionContext) -> datafusion::common::Result<()> {
    register_functions(ctx);
    let has_rule = ctx
        .state()
        .analyzer()
        .rules
        .iter()
        .any(|r| r.name() == "nomaly_detect_anomalies");
    if !has_rule {
        ctx.add_analyzer_rule(analyzer_rule());
        ctx.add_analyzer_rule(Arc::new(model_names::ResolveModelNames));
        ctx.state_ref()
            .write()
            .register_expr_planner(expr_planner())?;
    }
    Ok(())
}

/// Adds every function and the rewrite rule to a state builder. Builder lists that are still unset
/// are first filled with DataFusion's defaults, so nothing built in is lost.
pub fn with_nomaly(mut builder: SessionStateBuilder) -> SessionStateBuilder {
    if builder.scalar_functions().is_none() || builder.aggregate_functions().is_none() {
        builder = builder.with_default_features();
    }
    builder
        .scalar_functions()
        .get_or_insert_with(Vec::new)
        .extend(scalar_functions());
    builder
        .aggregate_functions()
        .get_or_insert_with(Vec::new)
        .extend(aggregate_functions());
    builder
        .window_functions()
        .get_or_insert_with(Vec::new)
        .extend(window_functions());
    let table_functions: [(&str, Arc<dyn datafusion::catalog::TableFunctionImpl>); 2] = [
        (
            detect_anomalies::NAME,
            Arc::new(detect_anomalies_table::DetectAnomaliesTable),
        ),
        (
            synthetic_rows::NAME,
            Arc::new(synthetic_rows::SyntheticRowsFunction),
        ),
    ];
    for (name, function) in table_functions {
        builder
            .table_functions()
            .get_or_insert_with(Default::default)
            .insert(
                name.to_string(),
                Arc::new(datafusion::catalog::TableFunction::new(
                    name.to_string(),
                    function,
                )),
            );
    }
    builder
        .expr_planners()
        .get_or_insert_with(Vec::new)
        .insert(0, expr_planner());
    builder
        .with_analyzer_rule(analyzer_rule())
        .with_analyzer_rule(Arc::new(model_names::ResolveModelNames))
}

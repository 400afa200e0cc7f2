//! `detect_anomalies(algorithm, feature, ... [, options]) [OVER (PARTITION BY ...)]`: fit and score
//! in one call, returning `{score, is_anomaly}` per row.
//!
//! These two functions (scalar and window forms) only *declare* the call: the
//! [`crate::rewrite::DetectAnomaliesRewrite`] analyzer rule replaces it with a `fit_detector`
//! aggregate (grouped by the PARTITION BY keys, if any) joined back to the rows and scored by
//! `anomaly_detect`, so no operator ever holds the whole table. If the rule is not installed, running
//! the call is an error that says how to install it.

use crate::anomaly_detect::detection_type;
use crate::call::{coerce_detector_args, lenient_coercion, parse_detector_call};
use crate::docs::{ALGORITHM_ARG, DOC_SECTION_ANOMALY, FEATURES_ARG, OPTIONS_ARG};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::function::AccumulatorArgs;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawAggregateExpr};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, Documentation, Expr, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::{Arc, LazyLock};

pub const NAME: &str = "detect_anomalies";

const NOT_REWRITTEN: &str = "detect_anomalies(...) reached execution without being planned: the session lacks \
Nomaly's rewrite rule. Build the session with nomaly_udfs::register_all(&ctx) (or the nomaly CLI), and use \
detect_anomalies only in a SELECT list (optionally with OVER (PARTITION BY ...))";

pub(crate) static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_ANOMALY,
        "Fits a detector on the input rows and scores every row: returns {score DOUBLE, is_anomaly BOOLEAN}. \
         With OVER (PARTITION BY k) one model is fitted per k. Planned as fit aggregate -> broadcast model -> \
         score, so it scales with partitions and executors, and the result does not depend on partitioning.",
        "detect_anomalies(algorithm, feature [, feature ...] [, options]) [OVER (PARTITION BY expr, ...)]",
    )
    .with_argument("algorithm", ALGORITHM_ARG)
    .with_argument("feature", FEATURES_ARG)
    .with_argument("options", OPTIONS_ARG)
    .with_sql_example(
        "```sql\nSELECT id, detect_anomalies('iforest', amount, latency_ms) AS a FROM tx;\nSELECT id, detect_anomalies('ecod', amount, 'contamination=0.02') OVER (PARTITION BY merchant) AS a FROM tx;\n```",
    )
    .with_related_udf("fit_detector")
    .with_related_udf("anomaly_detect")
    .build()
});

/// Scalar form (not registered by name: see [`DetectAnomaliesPlanner`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DetectAnomalies {
    signature: Signature,
}

impl Default for DetectAnomalies {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DetectAnomalies {
    fn name(&self) -> &str {
        NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(lenient_coercion(arg_types))
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        coerce_detector_args(NAME, arg_types)?;
        Ok(detection_type())
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        // Validate algorithm and options while the SQL is planned.
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        if args.scalar_arguments.first().is_some_and(|s| s.is_some()) {
            parse_detector_call(NAME, &types, args.scalar_arguments)?;
        }
        Ok(Arc::new(Field::new(NAME, detection_type(), true)))
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("{NOT_REWRITTEN}")
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// The registered form: an aggregate-shaped declaration, because DataFusion's SQL planner drops an
/// `OVER` clause on scalar functions but plans `OVER` on aggregates as window functions. Without
/// `OVER`, [`DetectAnomaliesPlanner`] turns the call into the scalar [`DetectAnomalies`] before the
/// planner would treat it as an aggregation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DetectAnomaliesAggregate {
    signature: Signature,
}

impl Default for DetectAnomaliesAggregate {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for DetectAnomaliesAggregate {
    fn name(&self) -> &str {
        NAME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(lenient_coercion(arg_types))
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        coerce_detector_args(NAME, arg_types)?;
        Ok(detection_type())
    }
    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        exec_err!("{NOT_REWRITTEN}")
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

/// Plans `detect_anomalies(...)` without `OVER` as the scalar [`DetectAnomalies`] call.
#[derive(Debug)]
pub struct DetectAnomaliesPlanner {
    scalar: Arc<ScalarUDF>,
}

impl Default for DetectAnomaliesPlanner {
    fn default() -> Self {
        Self {
            scalar: Arc::new(ScalarUDF::from(DetectAnomalies::default())),
        }
    }
}

impl ExprPlanner for DetectAnomaliesPlanner {
    fn plan_aggregate(&self, expr: RawAggregateExpr) -> Result<PlannerResult<RawAggregateExpr>> {
        if expr.func.name() != NAME {
            return Ok(PlannerResult::Original(expr));
        }
        if expr.distinct || expr.filter.is_some() || !expr.order_by.is_empty() {
            return plan_err!("detect_anomalies does not take DISTINCT, FILTER or ORDER BY");
        }
        Ok(PlannerResult::Planned(Expr::ScalarFunction(
            ScalarFunction::new_udf(Arc::clone(&self.scalar), expr.args),
        )))
    }
}

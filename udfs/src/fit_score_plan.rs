//! The one builder of the *fit → model → score* plan, used by the `detect_anomalies` rewrite (both
//! forms: per table and `OVER (PARTITION BY ...)`), the table function, and pipeline runs:
//!
//! ```text
//! Projection: <input columns>, d['score'] AS anomaly_score, d['is_anomaly'] AS is_anomaly
//!   Projection: <input columns>, anomaly_detect(__nomaly_model_0, f1, f2) AS __nomaly_detection_0
//!     Cross Join (or Inner Join ON __nomaly_key_0_0 IS NOT DISTINCT FROM k)
//!       Aggregate: [k AS __nomaly_key_0_0], [fit_detector('iforest', f1, f2) AS __nomaly_model_0]
//!         <input>
//!       <input>
//! ```
//!
//! The small model side is always the left (build) side of the join, so scoring keeps the input's
//! partitions. Internal columns have one naming scheme: `__nomaly_model_<id>` for a model,
//! `__nomaly_key_<id>_<i>` for its segment keys, `__nomaly_detection_<id>` for the score struct of a
//! row; the one-pass rule (`nomaly_physical::fit_score`) recognises fits by the model prefix.

use crate::anomaly_detect::AnomalyDetect;
use crate::anomaly_explain::AnomalyExplain;
use crate::fit_detector::FitDetector;
use datafusion::common::{Column, Result};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::{
    AggregateUDF, BinaryExpr, Expr, JoinType, LogicalPlan, LogicalPlanBuilder, Operator, ScalarUDF,
};
use std::sync::Arc;

/// The prefix of model columns (`__nomaly_model_0`, ...).
pub const MODEL_PREFIX: &str = "__nomaly_model_";
/// The prefix of segment-key columns of a model table (`__nomaly_key_0_0`, ...).
pub const KEY_PREFIX: &str = "__nomaly_key_";
/// The prefix of a row's score struct before it is split into columns.
pub const DETECTION_PREFIX: &str = "__nomaly_detection_";
/// The prefix of a row's explanation before it is named.
pub const EXPLANATION_PREFIX: &str = "__nomaly_explanation_";

/// The model column of fit number `id`.
pub fn model_column(id: usize) -> String {
    format!("{MODEL_PREFIX}{id}")
}

/// The `i`-th segment-key column of fit number `id`.
pub fn key_column(id: usize, i: usize) -> String {
    format!("{KEY_PREFIX}{id}_{i}")
}

/// The columns the scored rows add to the input.
pub const SCORE_COLUMNS: [&str; 3] = ["anomaly_score", "is_anomaly", "anomaly_explanation"];

/// Builds the plans; holds the function instances it puts in them.
#[derive(Debug, Clone)]
pub struct FitScorePlan {
    fit: Arc<AggregateUDF>,
    detect: Arc<ScalarUDF>,
    explain: Arc<ScalarUDF>,
}

impl Default for FitScorePlan {
    fn default() -> Self {
        FitScorePlan {
            fit: Arc::new(AggregateUDF::from(FitDetector::default())),
            detect: Arc::new(ScalarUDF::from(AnomalyDetect::default())),
            explain: Arc::new(ScalarUDF::from(AnomalyExplain::default())),
        }
    }
}

/// One detector applied to an input: fit number `id` of a plan.
#[derive(Debug, Clone)]
pub struct Detector {
    pub id: usize,
    /// `fit_detector`'s arguments: the algorithm, the features, the options if any.
    pub fit_args: Vec<Expr>,
    /// The feature expressions (over the input's columns).
    pub features: Vec<Expr>,
    /// The segment keys (`OVER (PARTITION BY ...)`, a pipeline's `partition_by`): one model each.
    pub keys: Vec<Expr>,
}

impl Detector {
    pub fn model(&self) -> String {
        model_column(self.id)
    }
}

impl FitScorePlan {
    /// `fit_detector(args) AS name`.
    pub fn fit_expr(&self, args: Vec<Expr>, name: &str) -> Expr {
        Expr::AggregateFunction(AggregateFunction::new_udf(
            Arc::clone(&self.fit),
            args,
            false,
            None,
            vec![],
            None,
        ))
        .alias(name)
    }

    /// `anomaly_detect(model, features)`: the `{score, is_anomaly}` struct.
    pub fn detect_expr(&self, model: &str, features: &[Expr]) -> Expr {
        self.model_call(&self.detect, model, features)
    }

    /// `anomaly_explain(model, features)`.
    pub fn explain_expr(&self, model: &str, features: &[Expr]) -> Expr {
        self.model_call(&self.explain, model, features)
    }

    fn model_call(&self, f: &Arc<ScalarUDF>, model: &str, features: &[Expr]) -> Expr {
        let mut args = vec![Expr::Column(Column::from_name(model))];
        args.extend_from_slice(features);
        Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(f), args))
    }

    /// The models table: `input` grouped by the detectors' keys (all detectors of one call share
    /// them), one model column per detector.
    pub fn models(&self, input: LogicalPlan, detectors: &[Detector]) -> Result<LogicalPlan> {
        let keys = detectors.first().map(|d| d.keys.as_slice()).unwrap_or(&[]);
        let id = detectors.first().map_or(0, |d| d.id);
        let group: Vec<Expr> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| k.clone().alias(key_column(id, i)))
            .collect();
        let fits: Vec<Expr> = detectors
            .iter()
            .map(|d| self.fit_expr(d.fit_args.clone(), &d.model()))
            .collect();
        LogicalPlanBuilder::from(input)
            .aggregate(group, fits)?
            .build()
    }

    /// The models beside every row of `input`: a cross join, or an inner join on the segment keys
    /// (`IS NOT DISTINCT FROM`: NULL keys form a segment, as in a window). The models are the
    /// left (build) side.
    pub fn join(
        &self,
        models: LogicalPlan,
        input: LogicalPlan,
        detector: &Detector,
    ) -> Result<LogicalPlan> {
        if detector.keys.is_empty() {
            return LogicalPlanBuilder::from(models).cross_join(input)?.build();
        }
        let on: Vec<Expr> = detector
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                Expr::BinaryExpr(BinaryExpr::new(
                    Box::new(Expr::Column(Column::from_name(key_column(detector.id, i)))),
                    Operator::IsNotDistinctFrom,
                    Box::new(k.clone()),
                ))
            })
            .collect();
        LogicalPlanBuilder::from(models)
            .join_on(input, JoinType::Inner, on)?
            .build()
    }

    /// The rows of `input` (its `columns`) plus `anomaly_score`, `is_anomaly` and, with `explain`,
    /// `anomaly_explanation`: fit, join, then score each row once (the struct is computed in one
    /// projection and split in the next).
    pub fn scored_rows(
        &self,
        input: LogicalPlan,
        columns: Vec<Expr>,
        detector: &Detector,
        explain: bool,
    ) -> Result<LogicalPlan> {
        let models = self.models(input.clone(), std::slice::from_ref(detector))?;
        self.score_joined(models, input, columns, detector, explain)
    }

    /// [`Self::scored_rows`] with the models already fitted (a pipeline fits once, then scores
    /// chunk by chunk against the stored models).
    pub fn score_joined(
        &self,
        models: LogicalPlan,
        input: LogicalPlan,
        columns: Vec<Expr>,
        detector: &Detector,
        explain: bool,
    ) -> Result<LogicalPlan> {
        let joined = self.join(models, input, detector)?;
        let model = detector.model();
        let detection = format!("{DETECTION_PREFIX}{}", detector.id);
        let explanation = format!("{EXPLANATION_PREFIX}{}", detector.id);
        let n = columns.len();
        let mut inner = columns;
        inner.push(
            self.detect_expr(&model, &detector.features)
                .alias(&detection),
        );
        if explain {
            inner.push(
                self.explain_expr(&model, &detector.features)
                    .alias(&explanation),
            );
        }
        let scored = LogicalPlanBuilder::from(joined).project(inner)?.build()?;
        // The input's columns as the inner projection outputs them (qualifiers kept).
        let mut outer: Vec<Expr> = scored
            .schema()
            .columns()
            .into_iter()
            .take(n)
            .map(Expr::Column)
            .collect();
        let d = || Expr::Column(Column::from_name(&detection));
        outer.push(get_field(d(), "score").alias(SCORE_COLUMNS[0]));
        outer.push(get_field(d(), "is_anomaly").alias(SCORE_COLUMNS[1]));
        if explain {
            outer.push(Expr::Column(Column::from_name(&explanation)).alias(SCORE_COLUMNS[2]));
        }
        LogicalPlanBuilder::from(scored).project(outer)?.build()
    }
}

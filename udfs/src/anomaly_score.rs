//! `anomaly_score(model, feature, ...)`: the anomaly score of each row under a fitted model.

use crate::docs::{DOC_SECTION_ANOMALY, FEATURES_ARG, MODEL_ARG};
use crate::model_column::{BatchScorer, ModelFunction, ModelScoringUdf, scatter_f64};
use datafusion::arrow::array::{ArrayRef, Float64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::logical_expr::Documentation;
use nomaly_detectors::Model;
use std::sync::{Arc, LazyLock};

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_ANOMALY,
        "Scores rows with a model from fit_detector: higher is more anomalous. Fit once, score many.",
        "anomaly_score(model, feature [, feature ...])",
    )
    .with_argument("model", MODEL_ARG)
    .with_argument("feature", FEATURES_ARG)
    .with_sql_example(
        "```sql\nCOPY (SELECT fit_detector('iforest', amount, latency_ms) AS model FROM train) TO 'model.parquet';\nCREATE EXTERNAL TABLE m STORED AS PARQUET LOCATION 'model.parquet';\nSELECT t.id, anomaly_score(m.model, t.amount, t.latency_ms) FROM m CROSS JOIN tx t;\n```",
    )
    .with_related_udf("fit_detector")
    .with_related_udf("is_anomaly")
    .build()
});

/// The `anomaly_score` function.
pub type AnomalyScore = ModelScoringUdf<Score>;

#[derive(Debug, Default)]
pub struct Score;

impl BatchScorer for Score {
    type Output = Float64Array;
    fn score(&self, model: &Model, features: &[ArrayRef]) -> Result<Float64Array> {
        model
            .score(features)
            .map_err(|e| exec_datafusion_err!("anomaly_score: {e}"))
    }
    fn nulls(&self, len: usize) -> Result<Float64Array> {
        Ok(Float64Array::new_null(len))
    }
    fn scatter(&self, len: usize, parts: Vec<(Vec<u32>, Float64Array)>) -> Result<Float64Array> {
        let refs: Vec<(Vec<u32>, &Float64Array)> =
            parts.iter().map(|(r, a)| (r.clone(), a)).collect();
        Ok(scatter_f64(len, &refs))
    }
}

impl ModelFunction for Score {
    const NAME: &'static str = "anomaly_score";
    fn output_type() -> DataType {
        DataType::Float64
    }
    fn doc() -> &'static Documentation {
        &DOC
    }
    fn into_array(out: Float64Array) -> Result<ArrayRef> {
        Ok(Arc::new(out))
    }
}

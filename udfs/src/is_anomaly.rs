//! `is_anomaly(model, feature, ...)`: whether each row's score exceeds the model's threshold.

use crate::docs::{DOC_SECTION_ANOMALY, FEATURES_ARG, MODEL_ARG};
use crate::model_column::{BatchScorer, ModelFunction, ModelScoringUdf, scatter_bool};
use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::logical_expr::Documentation;
use nomaly_detectors::Model;
use std::sync::{Arc, LazyLock};

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_ANOMALY,
        "True when the row's score is above the model's threshold (set at fit time from contamination or threshold=); NULL when a feature is NULL/NaN/±Infinity.",
        "is_anomaly(model, feature [, feature ...])",
    )
    .with_argument("model", MODEL_ARG)
    .with_argument("feature", FEATURES_ARG)
    .with_sql_example("```sql\nSELECT count(*) FROM m CROSS JOIN tx t WHERE is_anomaly(m.model, t.amount, t.latency_ms);\n```")
    .with_related_udf("anomaly_score")
    .build()
});

/// The `is_anomaly` function.
pub type IsAnomaly = ModelScoringUdf<Flag>;

#[derive(Debug, Default)]
pub struct Flag;

impl BatchScorer for Flag {
    type Output = BooleanArray;
    fn score(&self, model: &Model, features: &[ArrayRef]) -> Result<BooleanArray> {
        let s = model
            .score(features)
            .map_err(|e| exec_datafusion_err!("is_anomaly: {e}"))?;
        Ok(model.flags(&s))
    }
    fn nulls(&self, len: usize) -> Result<BooleanArray> {
        Ok(BooleanArray::new_null(len))
    }
    fn scatter(&self, len: usize, parts: Vec<(Vec<u32>, BooleanArray)>) -> Result<BooleanArray> {
        let refs: Vec<(Vec<u32>, &BooleanArray)> =
            parts.iter().map(|(r, a)| (r.clone(), a)).collect();
        Ok(scatter_bool(len, &refs))
    }
}

impl ModelFunction for Flag {
    const NAME: &'static str = "is_anomaly";
    fn output_type() -> DataType {
        DataType::Boolean
    }
    fn doc() -> &'static Documentation {
        &DOC
    }
    fn into_array(out: BooleanArray) -> Result<ArrayRef> {
        Ok(Arc::new(out))
    }
}

//! `anomaly_detect(model, feature, ...)`: `{score, is_anomaly}` per row — the scoring half of
//! `detect_anomalies`, which the rewrite rule plans as `fit_detector` joined to this.

use crate::docs::{DOC_SECTION_ANOMALY, FEATURES_ARG, MODEL_ARG};
use crate::model_column::{BatchScorer, ModelFunction, ModelScoringUdf, scatter_bool, scatter_f64};
use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::logical_expr::Documentation;
use nomaly_detectors::Model;
use std::sync::{Arc, LazyLock};

/// `Struct<score: Float64, is_anomaly: Boolean>`, the result of `detect_anomalies`/`anomaly_detect`.
pub fn detection_fields() -> Fields {
    Fields::from(vec![
        Field::new("score", DataType::Float64, true),
        Field::new("is_anomaly", DataType::Boolean, true),
    ])
}

pub fn detection_type() -> DataType {
    DataType::Struct(detection_fields())
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_ANOMALY,
        "Scores rows with a model and flags anomalies: returns a struct {score DOUBLE, is_anomaly BOOLEAN}.",
        "anomaly_detect(model, feature [, feature ...])",
    )
    .with_argument("model", MODEL_ARG)
    .with_argument("feature", FEATURES_ARG)
    .with_sql_example("```sql\nSELECT t.id, anomaly_detect(m.model, t.amount)['score'] FROM m CROSS JOIN tx t;\n```")
    .with_related_udf("detect_anomalies")
    .build()
});

/// The `anomaly_detect` function.
pub type AnomalyDetect = ModelScoringUdf<ScoreAndFlag>;

#[derive(Debug, Default)]
pub struct ScoreAndFlag;

impl BatchScorer for ScoreAndFlag {
    type Output = (Float64Array, BooleanArray);
    fn score(&self, model: &Model, features: &[ArrayRef]) -> Result<Self::Output> {
        let s = model
            .score(features)
            .map_err(|e| exec_datafusion_err!("anomaly_detect: {e}"))?;
        let f = model.flags(&s);
        Ok((s, f))
    }
    fn nulls(&self, len: usize) -> Result<Self::Output> {
        Ok((Float64Array::new_null(len), BooleanArray::new_null(len)))
    }
    fn scatter(&self, len: usize, parts: Vec<(Vec<u32>, Self::Output)>) -> Result<Self::Output> {
        let s: Vec<(Vec<u32>, &Float64Array)> =
            parts.iter().map(|(r, a)| (r.clone(), &a.0)).collect();
        let f: Vec<(Vec<u32>, &BooleanArray)> =
            parts.iter().map(|(r, a)| (r.clone(), &a.1)).collect();
        Ok((scatter_f64(len, &s), scatter_bool(len, &f)))
    }
}

impl ModelFunction for ScoreAndFlag {
    const NAME: &'static str = "anomaly_detect";
    fn output_type() -> DataType {
        detection_type()
    }
    fn doc() -> &'static Documentation {
        &DOC
    }
    fn into_array((scores, flags): Self::Output) -> Result<ArrayRef> {
        Ok(Arc::new(StructArray::new(
            detection_fields(),
            vec![Arc::new(scores) as ArrayRef, Arc::new(flags) as ArrayRef],
            None,
        )))
    }
}

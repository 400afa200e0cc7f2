//! `anomaly_score(model, feature, ...)`: the anomaly score of each row under a fitted model.

use crate::call::{coerce_model_args, lenient_coercion};
use crate::docs::{DOC_SECTION_ANOMALY, FEATURES_ARG, MODEL_ARG};
use crate::model_column::{
    BatchScorer, ModelCache, feature_arrays, resolve_models, scatter_f64, score_rows,
};
use datafusion::arrow::array::{ArrayRef, Float64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
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
        "```sql\nCREATE TABLE m AS SELECT fit_detector('iforest', amount, latency_ms) AS model FROM train;\nSELECT t.id, anomaly_score(m.model, t.amount, t.latency_ms) FROM m CROSS JOIN tx t;\n```",
    )
    .with_related_udf("fit_detector")
    .with_related_udf("is_anomaly")
    .build()
});

#[derive(Debug)]
pub struct AnomalyScore {
    signature: Signature,
    cache: ModelCache,
}

impl Default for AnomalyScore {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            cache: ModelCache::default(),
        }
    }
}

crate::identity_by_signature!(AnomalyScore);

pub(crate) struct ScoreOnly;

impl BatchScorer for ScoreOnly {
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

impl ScalarUDFImpl for AnomalyScore {
    fn name(&self) -> &str {
        "anomaly_score"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(lenient_coercion(arg_types))
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        coerce_model_args(self.name(), arg_types)?;
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let resolved = resolve_models(&args.args[0], &self.cache)?;
        let features = feature_arrays(&args.args[1..], args.number_rows)?;
        let out = score_rows(&ScoreOnly, &resolved, &features, args.number_rows)?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

//! `is_anomaly(model, feature, ...)`: whether each row's score exceeds the model's threshold.

use crate::call::{coerce_model_args, lenient_coercion};
use crate::docs::{DOC_SECTION_ANOMALY, FEATURES_ARG, MODEL_ARG};
use crate::model_column::{
    BatchScorer, ModelCache, feature_arrays, resolve_models, scatter_bool, score_rows,
};
use datafusion::arrow::array::{ArrayRef, BooleanArray};
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
        "True when the row's score is above the model's threshold (set at fit time from contamination or threshold=); NULL when a feature is NULL/NaN/±Infinity.",
        "is_anomaly(model, feature [, feature ...])",
    )
    .with_argument("model", MODEL_ARG)
    .with_argument("feature", FEATURES_ARG)
    .with_sql_example("```sql\nSELECT count(*) FROM m CROSS JOIN tx t WHERE is_anomaly(m.model, t.amount, t.latency_ms);\n```")
    .with_related_udf("anomaly_score")
    .build()
});

#[derive(Debug)]
pub struct IsAnomaly {
    signature: Signature,
    cache: ModelCache,
}

impl Default for IsAnomaly {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            cache: ModelCache::default(),
        }
    }
}

crate::identity_by_signature!(IsAnomaly);

struct FlagOnly;

impl BatchScorer for FlagOnly {
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

impl ScalarUDFImpl for IsAnomaly {
    fn name(&self) -> &str {
        "is_anomaly"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(lenient_coercion(arg_types))
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        coerce_model_args(self.name(), arg_types)?;
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let resolved = resolve_models(&args.args[0], &self.cache)?;
        let features = feature_arrays(&args.args[1..], args.number_rows)?;
        let out = score_rows(&FlagOnly, &resolved, &features, args.number_rows)?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

//! `anomaly_model_info(model)`: a readable summary of a fitted model.

use crate::call::{is_model_name_type, is_model_type};
use crate::docs::{DOC_SECTION_ANOMALY, MODEL_ARG};
use crate::model_column::{ModelCache, resolve_models};
use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use std::sync::{Arc, LazyLock};

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_ANOMALY,
        "Describes a model: algorithm, feature count, options, training rows, skipped rows, threshold and its size in bytes.",
        "anomaly_model_info(model)",
    )
    .with_argument("model", MODEL_ARG)
    .with_sql_example("```sql\nSELECT anomaly_model_info(model) FROM m;\n```")
    .build()
});

#[derive(Debug)]
pub struct AnomalyModelInfo {
    signature: Signature,
    cache: ModelCache,
}

impl Default for AnomalyModelInfo {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
            cache: ModelCache::default(),
        }
    }
}

crate::identity_by_signature!(AnomalyModelInfo);

impl ScalarUDFImpl for AnomalyModelInfo {
    fn name(&self) -> &str {
        "anomaly_model_info"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(arg_types.to_vec())
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.len() != 1
            || !(is_model_type(&arg_types[0]) || is_model_name_type(&arg_types[0]))
        {
            return plan_err!(
                "anomaly_model_info takes one argument, a model (the BINARY result of fit_detector)"
            );
        }
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let resolved = resolve_models(&args.args[0], &self.cache)?;
        // once per distinct model, not per row: describing encodes the model to report its size
        let texts: Vec<String> = resolved.models.iter().map(|m| m.describe()).collect();
        let out: StringArray = match &resolved.per_row {
            None => std::iter::repeat_n(texts.first(), args.number_rows).collect(),
            Some(per_row) => per_row
                .iter()
                .map(|s| s.map(|s| &texts[s as usize]))
                .collect(),
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

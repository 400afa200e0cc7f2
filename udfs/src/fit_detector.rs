//! `fit_detector(algorithm, feature, ... [, options])`: the fit half of every detector, as an
//! aggregate. Partial states are Nomaly fit states (exact sums, count sketches, bottom-k samples), so
//! the model is the same bits whatever the partitioning. The result is a model value
//! (`Dictionary(Int32, Binary)`: a join that repeats it per row repeats a key, not the bytes).

use crate::call::{coerce_detector_args, lenient_coercion, parse_detector_call};
use crate::docs::{ALGORITHM_ARG, DOC_SECTION_ANOMALY, FEATURES_ARG, OPTIONS_ARG};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_datafusion_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use nomaly_detectors::FitState;
use std::sync::{Arc, LazyLock};

/// The type of a model value.
pub fn model_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Binary))
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_ANOMALY,
        "Fits a detector over the rows of a group and returns the model (BINARY). Store it in a table or \
         file and score later with anomaly_score / is_anomaly / anomaly_detect / anomaly_explain.",
        "fit_detector(algorithm, feature [, feature ...] [, options])",
    )
    .with_argument("algorithm", ALGORITHM_ARG)
    .with_argument("feature", FEATURES_ARG)
    .with_argument("options", OPTIONS_ARG)
    .with_sql_example(
        "```sql\nCREATE TABLE m AS SELECT fit_detector('iforest', amount, latency_ms, 'n_trees=200, seed=7') AS model FROM train;\n```",
    )
    .with_related_udf("anomaly_score")
    .build()
});

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct FitDetector {
    signature: Signature,
}

impl Default for FitDetector {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

struct FitAccumulator {
    state: FitState,
    n_features: usize,
}

impl AggregateUDFImpl for FitDetector {
    fn name(&self) -> &str {
        "fit_detector"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        Ok(lenient_coercion(arg_types))
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        coerce_detector_args(self.name(), arg_types)?;
        Ok(model_type())
    }
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[fit_state]", args.name),
            DataType::Binary,
            true,
        ))])
    }
    fn accumulator(&self, acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let types: Vec<DataType> = acc_args
            .expr_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let scalars: Vec<Option<&ScalarValue>> = acc_args
            .exprs
            .iter()
            .map(|e| e.downcast_ref::<Literal>().map(|l| l.value()))
            .collect();
        let call = parse_detector_call(self.name(), &types, &scalars)?;
        Ok(Box::new(FitAccumulator {
            state: FitState::new(call.params, call.n_features),
            n_features: call.n_features,
        }))
    }
    fn is_nullable(&self) -> bool {
        false
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

impl std::fmt::Debug for FitAccumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FitAccumulator({}, {} rows)",
            self.state.params().algorithm,
            self.state.rows()
        )
    }
}

impl Accumulator for FitAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        if values.len() < 1 + self.n_features {
            return plan_err!("fit_detector: expected {} feature columns", self.n_features);
        }
        self.state
            .update(&values[1..1 + self.n_features])
            .map_err(|e| exec_datafusion_err!("fit_detector: {e}"))
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let model = self.state.finish();
        let bytes = model.to_bytes();
        // scoring in this process takes the model back instead of decoding it again
        crate::fitted_models::remember(&bytes, model);
        Ok(ScalarValue::Dictionary(
            Box::new(DataType::Int32),
            Box::new(ScalarValue::Binary(Some(bytes))),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.state.size_bytes()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.state.to_bytes()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let arr = states[0].as_binary::<i32>();
        for i in 0..arr.len() {
            if arr.is_null(i) {
                continue;
            }
            let other = FitState::from_bytes(arr.value(i))
                .map_err(|e| exec_datafusion_err!("fit_detector: {e}"))?;
            self.state
                .merge(&other)
                .map_err(|e| exec_datafusion_err!("fit_detector: {e}"))?;
        }
        Ok(())
    }
}

//! `anomaly_explain(model, feature, ...)`: per-feature contributions to each row's score.

use crate::docs::{DOC_SECTION_ANOMALY, FEATURES_ARG, MODEL_ARG};
use crate::model_column::{BatchScorer, ModelFunction, ModelScoringUdf};
use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, ListArray, ListBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_datafusion_err};
use datafusion::logical_expr::Documentation;
use nomaly_detectors::Model;
use std::sync::{Arc, LazyLock};

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION_ANOMALY,
        "Per-feature contributions to the score, as a list in argument order. They sum to the score for \
         hbos, ecod, copod and the z-score family with combine=sum; with combine=max (default) each entry \
         is that feature's own score and the score is the maximum; for iforest the score is split in \
         proportion to how often each feature isolates the row along its tree paths.",
        "anomaly_explain(model, feature [, feature ...])",
    )
    .with_argument("model", MODEL_ARG)
    .with_argument("feature", FEATURES_ARG)
    .with_sql_example("```sql\nSELECT t.id, anomaly_explain(m.model, t.amount, t.latency_ms) AS why FROM m CROSS JOIN tx t;\n```")
    .with_related_udf("anomaly_score")
    .build()
});

/// The `anomaly_explain` function.
pub type AnomalyExplain = ModelScoringUdf<Explain>;

fn list_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))
}

#[derive(Debug, Default)]
pub struct Explain;

impl BatchScorer for Explain {
    /// One row-major list of contributions per row (None = null row).
    type Output = Vec<Option<Vec<f64>>>;
    fn score(&self, model: &Model, features: &[ArrayRef]) -> Result<Self::Output> {
        let per_feature: Vec<Float64Array> = model
            .explain(features)
            .map_err(|e| exec_datafusion_err!("anomaly_explain: {e}"))?;
        let len = features.first().map(|f| f.len()).unwrap_or(0);
        Ok((0..len)
            .map(|i| {
                per_feature
                    .iter()
                    .map(|c| c.is_valid(i).then(|| c.value(i)))
                    .collect::<Option<Vec<f64>>>()
            })
            .collect())
    }
    fn nulls(&self, len: usize) -> Result<Self::Output> {
        Ok(vec![None; len])
    }
    fn scatter(&self, len: usize, parts: Vec<(Vec<u32>, Self::Output)>) -> Result<Self::Output> {
        let mut out = vec![None; len];
        for (rows, vals) in parts {
            for (r, v) in rows.into_iter().zip(vals) {
                out[r as usize] = v;
            }
        }
        Ok(out)
    }
}

impl ModelFunction for Explain {
    const NAME: &'static str = "anomaly_explain";
    fn output_type() -> DataType {
        list_type()
    }
    fn doc() -> &'static Documentation {
        &DOC
    }
    fn into_array(rows: Self::Output) -> Result<ArrayRef> {
        let mut builder = ListBuilder::new(Float64Builder::new());
        for row in rows {
            match row {
                Some(v) => {
                    builder.values().append_slice(&v);
                    builder.append(true);
                }
                None => builder.append(false),
            }
        }
        let list: ListArray = builder.finish();
        Ok(Arc::new(list))
    }
}

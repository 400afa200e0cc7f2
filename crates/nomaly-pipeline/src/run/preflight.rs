//! Preflight checks against the data, before anything is fitted or written: the table the run
//! scores, and that the detect columns exist, are numeric and do not clash with the columns the
//! detect step adds.

use super::{classify, quote_ident};
use crate::compile::{CompiledPipeline, Detect};
use crate::error::{PipelineError, Result};
use datafusion::prelude::SessionContext;

/// The table whose rows the run scores and writes: `[detect] input` (by default the last step,
/// else the first source); without `[detect]`, the last step, else the first source. Run, dry run,
/// explain and validate all read it from here.
pub(crate) fn scored_table(p: &CompiledPipeline) -> &str {
    match &p.detect {
        Some(d) => &d.input,
        None => p
            .steps
            .last()
            .map(|s| s.name.as_str())
            .unwrap_or(p.sources[0].name.as_str()),
    }
}

/// [`scored_table`], quoted for SQL.
pub(crate) fn scored_input(p: &CompiledPipeline) -> String {
    quote_ident(scored_table(p))
}

/// "source 'tx' (data/tx.csv)" for messages about where rows come from.
pub(crate) fn reads(p: &CompiledPipeline) -> String {
    p.sources
        .iter()
        .map(|s| format!("source '{}' ({})", s.name, s.path))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The detect columns exist in the detect input, are numeric, and the input has no column the
/// detect step adds.
pub(crate) async fn check_detect_columns(
    ctx: &SessionContext,
    d: &Detect,
    reads: &str,
    text_input: bool,
) -> Result<()> {
    let df = ctx
        .table(&d.input)
        .await
        .map_err(|e| classify(d.place.clone(), e))?;
    let schema = df.schema().clone();
    if schema.fields().is_empty() {
        return Err(empty_input(d, reads));
    }
    let available = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for c in d.columns.iter().chain(&d.partition_by) {
        let Ok(field) = schema.field_with_unqualified_name(c) else {
            return Err(PipelineError::invalid(
                &d.place,
                format!(
                    "column '{c}' is not in '{}'; its columns are: {}",
                    d.input,
                    available()
                ),
            ));
        };
        let dt = field.data_type();
        let declared_text = d.categorical.contains(c);
        if declared_text && !nomaly_detectors::features::is_categorical(dt) {
            return Err(PipelineError::invalid(
                &d.place,
                format!(
                    "column '{c}' of '{}' is {dt}, but categorical lists it as text; remove it from categorical or cast it to text in a [[step]]",
                    d.input
                ),
            ));
        }
        let takes = nomaly_detectors::features::is_numeric(dt) || declared_text;
        if d.columns.contains(c) && !takes {
            // A header-only CSV infers text columns: say what is really wrong.
            if input_is_empty(ctx, &d.input).await {
                return Err(empty_input(d, reads));
            }
            return Err(not_numeric(d, c, field.data_type(), text_input));
        }
    }
    for reserved in ["anomaly_score", "is_anomaly", "anomaly_explanation"] {
        if schema.field_with_unqualified_name(reserved).is_ok() {
            return Err(PipelineError::invalid(
                &d.place,
                format!(
                    "'{}' already has a column named {reserved}, which the detect step adds; rename it in a [[step]]",
                    d.input
                ),
            ));
        }
    }
    Ok(())
}

fn not_numeric(
    d: &Detect,
    column: &str,
    data_type: &datafusion::arrow::datatypes::DataType,
    text_input: bool,
) -> PipelineError {
    PipelineError::invalid(
        &d.place,
        format!(
            "column '{column}' of '{}' is {data_type}, not numeric; detectors take numeric columns — cast it in a [[step]] (e.g. CAST({column} AS DOUBLE)), drop it from columns, or, if it holds categories, list it in categorical = [...] (hbos, ecod, copod, iforest and eif){}",
            d.input,
            if text_input {
                "; if only a few lines hold text where numbers belong, set [run] on_bad_rows = \"quarantine\" to set those lines aside"
            } else {
                ""
            }
        ),
    )
}

async fn input_is_empty(ctx: &SessionContext, table: &str) -> bool {
    let Ok(df) = ctx
        .sql(&format!("SELECT 1 FROM {} LIMIT 1", quote_ident(table)))
        .await
    else {
        return false;
    };
    df.collect()
        .await
        .map(|b| b.iter().all(|b| b.num_rows() == 0))
        .unwrap_or(false)
}

/// The error for a detect input without rows: nothing to fit.
pub(crate) fn empty_input(d: &Detect, reads: &str) -> PipelineError {
    PipelineError::invalid(
        &d.place,
        format!(
            "'{}' has no rows (an empty or header-only input, or steps that filter everything out; it reads {reads}); there is nothing to fit — check the input path and the steps",
            d.input
        ),
    )
}

//! The run's sinks, compiled against the scored schema: each `where` as a physical expression,
//! each `partition_by` column checked, each directory checked writable.

use super::classify;
use crate::compile::{CompiledPipeline, Sink};
use crate::error::{PipelineError, Result};
use crate::sink_writer::SinkTarget;
use datafusion::common::DFSchema;
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// Where and how a sink writes, with its compiled filter (`None` when it has no `where`, or when
/// only publishing).
pub(crate) fn sink_target(s: &Sink, filter: Option<Arc<dyn PhysicalExpr>>) -> SinkTarget {
    SinkTarget {
        label: s.label.clone(),
        path: s.path.clone(),
        remote: s.remote.clone(),
        format: s.format,
        partition_by: s.partition_by.clone(),
        mode: s.mode,
        filter,
        filter_text: s.filter.clone(),
    }
}

/// Compiles each sink's `where` against the scored schema.
pub(crate) fn compile_sinks(
    ctx: &SessionContext,
    p: &CompiledPipeline,
    schema: &DFSchema,
) -> Result<Vec<Arc<SinkTarget>>> {
    p.sinks
        .iter()
        .map(|s| {
            let filter = match &s.filter {
                None => None,
                Some(text) => {
                    let place = || format!("{} where", s.label);
                    let expr = ctx
                        .parse_sql_expr(text, schema)
                        .map_err(|e| classify(place(), e))?;
                    Some(
                        ctx.create_physical_expr(expr, schema)
                            .map_err(|e| classify(place(), e))?,
                    )
                }
            };
            check_partition_columns(s, schema)?;
            let target = sink_target(s, filter);
            target.check_writable()?;
            Ok(Arc::new(target))
        })
        .collect()
}

fn check_partition_columns(s: &Sink, schema: &DFSchema) -> Result<()> {
    for c in &s.partition_by {
        if schema.field_with_unqualified_name(c).is_err() {
            let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(PipelineError::invalid(
                &s.label,
                format!(
                    "partition_by column '{c}' is not in the output; output columns are: {}",
                    columns.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

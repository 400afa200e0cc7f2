//! What both fusions share: one fit (an aggregate and its arguments over the scored rows), the
//! rebinding of its arguments by column name, and the error of a fit larger than the budget.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use std::sync::Arc;

/// One fit: the aggregate expression (for its accumulators) and its arguments bound to the
/// scored input's schema.
#[derive(Debug, Clone)]
pub struct Fit {
    pub(crate) aggregate: Arc<AggregateFunctionExpr>,
    pub(crate) args: Vec<Arc<dyn PhysicalExpr>>,
}

/// The error of a fit whose states (with the models they will grow) exceed the memory budget.
pub(crate) fn fit_too_large(bytes: usize, cause: DataFusionError) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "the detector's fit needs about {} MiB for its state and model, more than the memory \
         budget leaves ({cause}); for iforest lower n_trees or sample_size (the trees take \
         n_trees × 2·sample_size nodes), or raise the memory limit",
        bytes.div_ceil(1 << 20)
    ))
}

/// `expr` with its columns looked up by name in `to` (`None` if a name is missing or ambiguous).
pub(crate) fn rebind(
    expr: &Arc<dyn PhysicalExpr>,
    from: &SchemaRef,
    to: &SchemaRef,
) -> Result<Option<Arc<dyn PhysicalExpr>>> {
    let mut missing = false;
    let rebound = Arc::clone(expr)
        .transform(|e| {
            let Some(c) = e.as_ref().downcast_ref::<Column>() else {
                return Ok(Transformed::no(e));
            };
            let name = from.field(c.index()).name();
            let matches: Vec<usize> = to
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.name() == name)
                .map(|(i, _)| i)
                .collect();
            match matches.as_slice() {
                [i] => Ok(Transformed::yes(
                    Arc::new(Column::new(name, *i)) as Arc<dyn PhysicalExpr>
                )),
                _ => {
                    missing = true;
                    Ok(Transformed::no(e))
                }
            }
        })?
        .data;
    Ok((!missing).then_some(rebound))
}

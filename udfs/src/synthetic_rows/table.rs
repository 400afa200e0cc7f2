//! The table function and the table it returns.

use super::{NAME, SyntheticRows, SyntheticRowsExec, USAGE};
use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use std::sync::Arc;

/// `synthetic_rows(rows, features [, seed [, planted_fraction]])`.
#[derive(Debug, Default)]
pub struct SyntheticRowsFunction;

/// The table `synthetic_rows(...)` returns; a cluster's logical codec carries its spec.
#[derive(Debug)]
pub struct SyntheticRowsTable {
    spec: SyntheticRows,
    schema: SchemaRef,
}

impl SyntheticRowsTable {
    pub fn new(spec: SyntheticRows) -> Self {
        Self {
            schema: spec.schema(),
            spec,
        }
    }

    pub fn spec(&self) -> &SyntheticRows {
        &self.spec
    }
}

/// Argument `i` as a number: an integer literal, or a float one (`1e9`).
fn number(exprs: &[Expr], i: usize, what: &str) -> Result<Option<f64>> {
    let Some(e) = exprs.get(i) else {
        return Ok(None);
    };
    let value = match e {
        Expr::Literal(v, _) => match v {
            ScalarValue::Int8(Some(x)) => Some(*x as f64),
            ScalarValue::Int16(Some(x)) => Some(*x as f64),
            ScalarValue::Int32(Some(x)) => Some(*x as f64),
            ScalarValue::Int64(Some(x)) => Some(*x as f64),
            ScalarValue::UInt8(Some(x)) => Some(*x as f64),
            ScalarValue::UInt16(Some(x)) => Some(*x as f64),
            ScalarValue::UInt32(Some(x)) => Some(*x as f64),
            ScalarValue::UInt64(Some(x)) => Some(*x as f64),
            ScalarValue::Float32(Some(x)) => Some(*x as f64),
            ScalarValue::Float64(Some(x)) => Some(*x),
            _ => None,
        },
        _ => None,
    };
    match value {
        Some(v) if v.is_finite() => Ok(Some(v)),
        _ => plan_err!(
            "{NAME}: argument {} ({what}) must be a number literal, got {e}. Usage: {USAGE}",
            i + 1
        ),
    }
}

/// Argument `i` as a whole number ≥ 0 (exact up to 2^53 for a float literal).
fn count(exprs: &[Expr], i: usize, what: &str) -> Result<Option<u64>> {
    if let Some(Expr::Literal(ScalarValue::UInt64(Some(x)), _)) = exprs.get(i) {
        return Ok(Some(*x));
    }
    if let Some(Expr::Literal(ScalarValue::Int64(Some(x)), _)) = exprs.get(i)
        && *x >= 0
    {
        return Ok(Some(*x as u64));
    }
    match number(exprs, i, what)? {
        None => Ok(None),
        Some(v) if v >= 0.0 && v.fract() == 0.0 && v <= (1u64 << 53) as f64 => Ok(Some(v as u64)),
        Some(v) => plan_err!(
            "{NAME}: argument {} ({what}) must be a whole number ≥ 0, got {v}. Usage: {USAGE}",
            i + 1
        ),
    }
}

impl TableFunctionImpl for SyntheticRowsFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(2..=4).contains(&exprs.len()) {
            return plan_err!(
                "{NAME} takes 2 to 4 arguments, got {}. Usage: {USAGE}",
                exprs.len()
            );
        }
        let rows = count(exprs, 0, "rows")?.expect("checked length");
        let features = count(exprs, 1, "features")?.expect("checked length");
        let seed = count(exprs, 2, "seed")?.unwrap_or(0);
        let fraction = number(exprs, 3, "planted_fraction")?.unwrap_or(0.01);
        let features = u32::try_from(features).unwrap_or(u32::MAX);
        let spec = SyntheticRows::new(rows, features, seed, fraction)?;
        Ok(Arc::new(SyntheticRowsTable::new(spec)))
    }
}

#[async_trait]
impl TableProvider for SyntheticRowsTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let config = state.config();
        // Small tables in one partition; otherwise one per target partition, each at least a
        // batch (a cluster then gets as many tasks as the session's partitions).
        let batch = config.batch_size().max(1);
        let wanted = (self.spec.rows as usize).div_ceil(batch).max(1);
        let partitions = config.target_partitions().clamp(1, wanted);
        Ok(Arc::new(SyntheticRowsExec::try_new(
            self.spec,
            super::exec::split_rows(self.spec.rows, partitions)?,
            projection.cloned(),
            batch,
        )?))
    }
}

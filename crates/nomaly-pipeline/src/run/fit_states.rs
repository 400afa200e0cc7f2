//! Partial fit states, folded as they arrive. A fit by partition keeps every partition's state until
//! the final merge; an isolation forest's state holds each tree's sample (256 rows × 100 trees ×
//! the features: ~2 MB at 8 features), so 1,500 chunks of a 10 GB input would hold 3 GB. States are
//! merged into one, in partition order, whenever enough consecutive ones have arrived: memory
//! bounded by a few states, whatever the number of chunks.
//!
//! The merge is the aggregate's own (`Accumulator::merge_batch` then `state`), group by group, so
//! a fold is exactly what the final aggregate would have done with the same states in the same
//! order.

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// How many consecutive states wait before they are folded into one.
const FOLD_AFTER: usize = 8;

/// The states of a partial aggregate's partitions, folded in partition order.
pub(crate) struct FoldedStates {
    partial: Arc<dyn ExecutionPlan>,
    /// The fold of partitions `0..next`.
    folded: Vec<RecordBatch>,
    next: usize,
    /// States of partitions at or past `next`, waiting for the ones before them.
    waiting: BTreeMap<usize, Vec<RecordBatch>>,
}

impl FoldedStates {
    /// `partial` is the partial `AggregateExec` whose output the states are.
    pub fn new(partial: Arc<dyn ExecutionPlan>) -> Self {
        Self {
            partial,
            folded: Vec::new(),
            next: 0,
            waiting: BTreeMap::new(),
        }
    }

    /// Takes partition `i`'s state; folds the consecutive run from `next` once it is long enough.
    pub fn push(&mut self, i: usize, batches: Vec<RecordBatch>) -> Result<()> {
        self.waiting.insert(i, batches);
        let run = (self.next..)
            .take_while(|j| self.waiting.contains_key(j))
            .count();
        if run >= FOLD_AFTER {
            let mut parts = std::mem::take(&mut self.folded);
            for j in self.next..self.next + run {
                parts.extend(self.waiting.remove(&j).expect("counted above"));
            }
            self.next += run;
            self.folded = fold(&self.partial, &parts)?.into_iter().collect();
        }
        Ok(())
    }

    /// The states left, in partition order, as the final aggregate's input partitions.
    pub fn finish(self) -> Vec<Vec<RecordBatch>> {
        let mut out = vec![self.folded];
        out.extend(self.waiting.into_values());
        out
    }
}

/// One state row per group: the groups' states in `batches` merged in row order.
pub(crate) fn fold(
    partial: &Arc<dyn ExecutionPlan>,
    batches: &[RecordBatch],
) -> Result<Option<RecordBatch>> {
    let agg = partial
        .as_ref()
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| DataFusionError::Internal("fit states: not an aggregate".into()))?;
    let schema = partial.schema();
    let all = concat_batches(&schema, batches)?;
    if all.num_rows() == 0 {
        return Ok(None);
    }
    let n_groups = agg.group_expr().expr().len();
    // Rows of one group, by the group columns' row encoding, in order of first appearance.
    let group_columns = &all.columns()[..n_groups];
    let mut order: Vec<Vec<u32>> = Vec::new();
    if n_groups == 0 {
        order.push((0..all.num_rows() as u32).collect());
    } else {
        let converter = RowConverter::new(
            group_columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        let rows = converter.convert_columns(group_columns)?;
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        for r in 0..all.num_rows() {
            let g = *index.entry(rows.row(r).data()).or_insert_with(|| {
                order.push(Vec::new());
                order.len() - 1
            });
            order[g].push(r as u32);
        }
    }
    let firsts = UInt32Array::from(order.iter().map(|rows| rows[0]).collect::<Vec<_>>());
    let mut columns: Vec<ArrayRef> = group_columns
        .iter()
        .map(|c| take(c, &firsts, None))
        .collect::<std::result::Result<_, _>>()?;
    let mut at = n_groups;
    for expr in agg.aggr_expr() {
        let width = expr.state_fields()?.len();
        let states = &all.columns()[at..at + width];
        let mut merged: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(order.len()); width];
        for rows in &order {
            let rows = UInt32Array::from(rows.clone());
            let slice: Vec<ArrayRef> = states
                .iter()
                .map(|c| take(c, &rows, None))
                .collect::<std::result::Result<_, _>>()?;
            let mut acc = expr.create_accumulator()?;
            acc.merge_batch(&slice)?;
            for (k, v) in acc.state()?.into_iter().enumerate() {
                merged[k].push(v);
            }
        }
        for (k, values) in merged.into_iter().enumerate() {
            let field = schema.field(at + k);
            let array = ScalarValue::iter_to_array(values)?;
            // State scalars can come back as a looser type (a dictionary's values, say).
            columns.push(datafusion::arrow::compute::cast(&array, field.data_type())?);
        }
        at += width;
    }
    Ok(Some(RecordBatch::try_new(schema, columns)?))
}

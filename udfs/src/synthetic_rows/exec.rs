//! The operator that makes `synthetic_rows`. Its child is a small in-memory table of row ranges
//! (`start`, `end`), one batch per partition; partition `p` makes the rows of the ranges in its
//! child's partition `p`, a batch at a time, only the projected columns.
//!
//! Why the ranges are data: a Ballista scheduler hands each task a slice of a stage's partitions
//! by restricting the stage's leaves, and it can restrict an in-memory scan but not an operator
//! it does not know. A leaf of ours would be left whole, and each task would make every
//! partition's rows (seen: 4 partitions on 2 executors counted 200,000 rows of 100,000).

use super::{MAX_PARTITIONS, NAME, Reader, SyntheticRows, values};
use datafusion::arrow::array::{AsArray, RecordBatch, RecordBatchOptions, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coop::cooperative;
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::TryStreamExt;
use std::sync::Arc;

/// The largest batch a decoded plan may ask for.
const MAX_BATCH_ROWS: u32 = 1 << 20;

#[derive(Debug)]
pub struct SyntheticRowsExec {
    spec: SyntheticRows,
    /// The row ranges, one partition each.
    ranges: Arc<dyn ExecutionPlan>,
    /// Indices into the spec's schema.
    projection: Vec<usize>,
    batch_rows: usize,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

/// The schema of the ranges child.
fn ranges_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("start", DataType::UInt64, false),
        Field::new("end", DataType::UInt64, false),
    ]))
}

/// `partitions` contiguous ranges covering `0..rows`, one per partition.
pub(super) fn split_rows(rows: u64, partitions: usize) -> Result<Arc<dyn ExecutionPlan>> {
    if partitions == 0 || partitions > MAX_PARTITIONS as usize {
        return Err(DataFusionError::Internal(format!(
            "{NAME}: {partitions} partitions (1 to {MAX_PARTITIONS})"
        )));
    }
    let at = |i: usize| (rows as u128 * i as u128 / partitions as u128) as u64;
    let batches = (0..partitions)
        .map(|p| {
            RecordBatch::try_new(
                ranges_schema(),
                vec![
                    Arc::new(UInt64Array::from(vec![at(p)])),
                    Arc::new(UInt64Array::from(vec![at(p + 1)])),
                ],
            )
            .map(|b| vec![b])
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(MemorySourceConfig::try_new_exec(
        &batches,
        ranges_schema(),
        None,
    )?)
}

impl SyntheticRowsExec {
    /// `ranges`: see [`split_rows`]; `projection`: indices into `spec.schema()` (all columns if
    /// `None`).
    pub fn try_new(
        spec: SyntheticRows,
        ranges: Arc<dyn ExecutionPlan>,
        projection: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> Result<Self> {
        let full = spec.schema();
        let projection = projection.unwrap_or_else(|| (0..full.fields().len()).collect());
        if let Some(bad) = projection.iter().find(|&&i| i >= full.fields().len()) {
            return Err(DataFusionError::Internal(format!(
                "{NAME}: column {bad} of {} projected",
                full.fields().len()
            )));
        }
        if batch_rows == 0 || batch_rows > MAX_BATCH_ROWS as usize {
            return Err(DataFusionError::Internal(format!(
                "{NAME}: batches of {batch_rows} rows (1 to {MAX_BATCH_ROWS})"
            )));
        }
        if ranges.schema().fields() != ranges_schema().fields() {
            return Err(DataFusionError::Internal(format!(
                "{NAME}: the ranges input has columns {:?}",
                ranges.schema().fields()
            )));
        }
        let schema = Arc::new(full.project(&projection)?);
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(ranges.output_partitioning().partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            spec,
            ranges,
            projection,
            batch_rows,
            schema,
            properties,
        })
    }

    pub fn spec(&self) -> &SyntheticRows {
        &self.spec
    }

    /// The spec, then batch rows and the projection (u32 each, little-endian); the ranges are
    /// the child.
    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<()> {
        self.spec.encode(buf);
        buf.extend_from_slice(&(self.batch_rows as u32).to_le_bytes());
        buf.extend_from_slice(&(self.projection.len() as u32).to_le_bytes());
        for &i in &self.projection {
            buf.extend_from_slice(&(i as u32).to_le_bytes());
        }
        Ok(())
    }

    /// Reads what [`Self::encode`] wrote, checking every bound (a plan is data from the network).
    pub fn decode(buf: &[u8], inputs: &[Arc<dyn ExecutionPlan>]) -> Result<Self> {
        let (spec, rest) = SyntheticRows::decode(buf)?;
        let mut r = Reader(rest);
        let batch_rows = r.u32()? as usize;
        let n = r.u32()? as usize;
        if n > spec.features as usize + 2 {
            return Err(DataFusionError::Internal(format!(
                "decoding {NAME}: {n} projected columns of {}",
                spec.features + 2
            )));
        }
        let projection = (0..n)
            .map(|_| r.u32().map(|i| i as usize))
            .collect::<Result<Vec<_>>>()?;
        if !r.0.is_empty() {
            return Err(DataFusionError::Internal(format!(
                "decoding {NAME}: {} bytes after the plan",
                r.0.len()
            )));
        }
        let [ranges] = inputs else {
            return Err(DataFusionError::Internal(format!(
                "decoding {NAME}: one input (the ranges), got {}",
                inputs.len()
            )));
        };
        Self::try_new(spec, Arc::clone(ranges), Some(projection), batch_rows)
    }
}

/// The checked row ranges of one batch of the ranges input.
fn ranges_of(batch: &RecordBatch, rows: u64) -> Result<Vec<std::ops::Range<u64>>> {
    let starts = batch.column(0).as_primitive::<UInt64Type>();
    let ends = batch.column(1).as_primitive::<UInt64Type>();
    starts
        .values()
        .iter()
        .zip(ends.values().iter())
        .map(|(&s, &e)| {
            if s <= e && e <= rows {
                Ok(s..e)
            } else {
                Err(DataFusionError::Internal(format!(
                    "{NAME}: range {s}..{e} outside 0..{rows}"
                )))
            }
        })
        .collect()
}

impl DisplayAs for SyntheticRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "SyntheticRowsExec: rows={}, features={}, seed={}, planted_fraction={}",
            self.spec.rows, self.spec.features, self.spec.seed, self.spec.planted_fraction,
        )
    }
}

impl ExecutionPlan for SyntheticRowsExec {
    fn name(&self) -> &'static str {
        "SyntheticRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.ranges]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // One tiny batch per partition: repartitioning it would only move ranges around.
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [ranges] = children.as_slice() else {
            return Err(DataFusionError::Internal(format!(
                "{NAME} takes one child, got {}",
                children.len()
            )));
        };
        Ok(Arc::new(Self::try_new(
            self.spec,
            Arc::clone(ranges),
            Some(self.projection.clone()),
            self.batch_rows,
        )?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let spec = self.spec;
        let columns: Vec<values::Column> =
            self.projection.iter().map(|&i| spec.column(i)).collect();
        let schema = Arc::clone(&self.schema);
        let step = self.batch_rows as u64;
        let batches = self
            .ranges
            .execute(partition, context)?
            .and_then(move |ranges| futures::future::ready(ranges_of(&ranges, spec.rows)))
            .map_ok(move |ranges| {
                let columns = columns.clone();
                let schema = Arc::clone(&schema);
                let batches = ranges.into_iter().flat_map(move |range| {
                    let columns = columns.clone();
                    let schema = Arc::clone(&schema);
                    (range.start..range.end)
                        .step_by(step as usize)
                        .map(move |start| {
                            let len = (range.end - start).min(step) as usize;
                            let arrays = values::arrays(
                                spec.seed,
                                spec.planted_fraction,
                                start,
                                len,
                                &columns,
                            );
                            Ok(RecordBatch::try_new_with_options(
                                Arc::clone(&schema),
                                arrays,
                                &RecordBatchOptions::new().with_row_count(Some(len)),
                            )?)
                        })
                });
                futures::stream::iter(batches)
            })
            .try_flatten();
        let stream = RecordBatchStreamAdapter::new(Arc::clone(&self.schema), batches);
        Ok(Box::pin(cooperative(stream)))
    }
}

//! One partition of a [`SegmentFitScoreExec`]: reads rows sorted by the key, fits each segment
//! and queues its rows with the key and model columns.

use super::SegmentJoin;
use crate::fit::Fit;
use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::kernels::partition::partition;
use datafusion::arrow::compute::{cast, concat, concat_batches, take};
use datafusion::common::{Result, ScalarValue, internal_err};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;
use std::collections::VecDeque;
use std::sync::Arc;

/// One partition's progress: the segment being read and the batches ready to emit.
pub(super) struct Segments {
    pub(super) input: SendableRecordBatchStream,
    pub(super) keys: Vec<Arc<dyn PhysicalExpr>>,
    pub(super) fits: Vec<Fit>,
    pub(super) join: SegmentJoin,
    pub(super) current: Option<Segment>,
    /// Fitted segments smaller than a batch, waiting to leave together: 10,000 segments of a
    /// thousand rows make 1,250 batches, not 10,000 (each batch costs every operator above a
    /// fixed amount, and the scorer groups a batch's rows by model anyway).
    pub(super) ready: Vec<FittedSegment>,
    pub(super) ready_rows: usize,
    pub(super) ready_bytes: usize,
    pub(super) batch_size: usize,
    pub(super) pending: VecDeque<RecordBatch>,
    /// The rows held (the current segment's and the ready ones') and the ready ones' models.
    pub(super) reservation: super::held::Held,
    pub(super) done: bool,
}

/// A segment's one-row key and model arrays (the join's left columns) and its rows.
pub(super) struct FittedSegment {
    ones: Vec<ArrayRef>,
    rows: Vec<RecordBatch>,
    row_count: usize,
}

/// The rows of one key read so far, and its fits' accumulators.
pub(super) struct Segment {
    key: Vec<ScalarValue>,
    rows: Vec<RecordBatch>,
    /// Bytes of `rows` reserved in the pool.
    bytes: usize,
    accumulators: Vec<Box<dyn Accumulator>>,
}

impl Segments {
    /// Splits `batch` into runs of equal keys, finishing a segment where the key changes.
    pub(super) fn add(
        &mut self,
        batch: &RecordBatch,
        segments: &datafusion::physical_plan::metrics::Count,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = self
            .keys
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<ArrayRef>>>()?;
        for run in partition(&keys)?.ranges() {
            let key = keys
                .iter()
                .map(|k| ScalarValue::try_from_array(k, run.start))
                .collect::<Result<Vec<_>>>()?;
            if self.current.as_ref().is_some_and(|c| c.key != key) {
                self.finish_segment(segments)?;
            }
            if self.current.is_none() {
                let accumulators = self
                    .fits
                    .iter()
                    .map(|f| f.aggregate.create_accumulator())
                    .collect::<Result<Vec<_>>>()?;
                self.current = Some(Segment {
                    key,
                    rows: Vec::new(),
                    bytes: 0,
                    accumulators,
                });
            }
            let rows = batch.slice(run.start, run.len());
            let bytes = self.reserve(&rows)?;
            let segment = self.current.as_mut().expect("set above");
            segment.bytes += bytes;
            for (fit, acc) in self.fits.iter().zip(segment.accumulators.iter_mut()) {
                let values = fit
                    .args
                    .iter()
                    .map(|e| e.evaluate(&rows)?.into_array(rows.num_rows()))
                    .collect::<Result<Vec<_>>>()?;
                acc.update_batch(&values)?;
            }
            segment.rows.push(rows);
        }
        Ok(())
    }

    /// Keeps a segment's rows within the memory pool; a segment larger than the budget is an
    /// error that says so (the rows of one segment must be held until its model is fitted).
    fn reserve(&mut self, rows: &RecordBatch) -> Result<usize> {
        let bytes: usize = rows
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum();
        self.reservation.try_grow(bytes).map_err(|e| {
            let (held, held_bytes) = self.current.as_ref().map_or((0, 0), |c| {
                (c.rows.iter().map(RecordBatch::num_rows).sum::<usize>(), c.bytes)
            });
            let key = self
                .current
                .as_ref()
                .map(|c| c.key.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            let needs = (held_bytes + bytes) as f64 / 1_048_576.0;
            datafusion::common::DataFusionError::ResourcesExhausted(format!(
                "detect_anomalies(...) OVER (PARTITION BY ...): the segment ({key}) needs more than \
                 {needs:.1} MiB for its rows ({held} rows read so far), more than the memory budget \
                 leaves for one segment's rows, which are kept until its model is fitted; raise \
                 --memory-limit above what the pool holds now plus that, or split the segment with \
                 another PARTITION BY column ({e})"
            ))
        })?;
        Ok(bytes)
    }

    /// Fits the current segment's model and queues its rows with the key and model columns.
    pub(super) fn finish_segment(
        &mut self,
        segments: &datafusion::physical_plan::metrics::Count,
    ) -> Result<()> {
        let Some(segment) = self.current.take() else {
            return Ok(());
        };
        segments.add(1);
        let left = Arc::clone(&self.join.left);
        let keys = segment.key.len();
        // The model the two-pass plan fits: its Final aggregate merges the partial states into an
        // empty one, and fit states merge exactly (sums, counts, the bottom-k sample), so the one
        // partial state here gives the same bits without its round trip through bytes (which
        // cost a serialisation, a decode and a re-sampling per segment).
        // The fit states and the models they grow count against the budget while they live.
        let fitting: usize = segment.accumulators.iter().map(|a| a.size()).sum();
        self.grow_for_models(fitting)?;
        let mut models = Vec::with_capacity(segment.accumulators.len());
        for mut acc in segment.accumulators {
            models.push(acc.evaluate()?);
        }
        self.reservation.shrink(fitting);
        // One-row arrays of the left columns, in the left schema's types; each batch takes its
        // rows from them, so a dictionary-encoded model keeps one values array for the segment.
        let ones = segment
            .key
            .iter()
            .chain(&models)
            .enumerate()
            .map(|(i, v)| {
                let one = v.to_array_of_size(1)?;
                let want = left.field(i).data_type();
                if one.data_type() == want {
                    Ok(one)
                } else {
                    Ok(cast(&one, want)?)
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        if ones.len() != left.fields().len() || keys + self.fits.len() != ones.len() {
            return internal_err!("SegmentFitScoreExec: the model side has an unexpected schema");
        }
        let rows: usize = segment.rows.iter().map(RecordBatch::num_rows).sum();
        if self.ready_rows + rows > self.batch_size {
            self.flush_ready()?;
        }
        // The models wait with their rows until a batch is full: they count against the budget.
        let model_bytes: usize = ones.iter().map(|a| a.get_array_memory_size()).sum();
        self.grow_for_models(model_bytes)?;
        let held = segment.bytes + model_bytes;
        if rows < self.batch_size {
            self.ready.push(FittedSegment {
                ones,
                rows: segment.rows,
                row_count: rows,
            });
            self.ready_rows += rows;
            self.ready_bytes += held;
            return Ok(());
        }
        // A segment of a batch or more leaves in its own batches, sharing its one-row arrays.
        for rows in segment.rows {
            let zeros = UInt32Array::from(vec![0u32; rows.num_rows()]);
            let columns = ones
                .iter()
                .map(|one| Ok(take(one.as_ref(), &zeros, None)?))
                .collect::<Result<Vec<ArrayRef>>>()?;
            self.emit(columns, rows.columns())?;
        }
        self.reservation.shrink(held);
        Ok(())
    }

    /// Reserves `bytes` for fit states or models, sending the waiting segments on first when
    /// the pool is short; an error says how much one segment's fit needs.
    fn grow_for_models(&mut self, bytes: usize) -> Result<()> {
        if self.reservation.try_grow(bytes).is_err() {
            self.flush_ready()?;
            let grown = self.reservation.try_grow(bytes);
            grown.map_err(|e| crate::fit::fit_too_large(bytes, e))?;
        }
        Ok(())
    }

    /// Queues the ready segments as one batch: each left column is the segments' one-row arrays
    /// concatenated and taken per row (a model column keeps one dictionary value per segment).
    pub(super) fn flush_ready(&mut self) -> Result<()> {
        if self.ready.is_empty() {
            return Ok(());
        }
        let ready = std::mem::take(&mut self.ready);
        let mut index = Vec::with_capacity(self.ready_rows);
        for (i, segment) in ready.iter().enumerate() {
            index.extend(std::iter::repeat_n(i as u32, segment.row_count));
        }
        let index = UInt32Array::from(index);
        let left = (0..ready[0].ones.len())
            .map(|c| {
                let ones: Vec<&dyn datafusion::arrow::array::Array> =
                    ready.iter().map(|s| s.ones[c].as_ref()).collect();
                Ok(take(concat(&ones)?.as_ref(), &index, None)?)
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let batches: Vec<&RecordBatch> = ready.iter().flat_map(|s| &s.rows).collect();
        let schema = batches[0].schema();
        let right = concat_batches(&schema, batches)?;
        self.emit(left, right.columns())?;
        self.reservation.shrink(self.ready_bytes);
        self.ready_rows = 0;
        self.ready_bytes = 0;
        Ok(())
    }

    /// Queues one output batch: the left (key, model) columns, then the rows' columns, through
    /// the join's projection.
    fn emit(&mut self, mut columns: Vec<ArrayRef>, rows: &[ArrayRef]) -> Result<()> {
        columns.extend(rows.iter().cloned());
        let columns = match &self.join.projection {
            Some(p) => p.iter().map(|&i| Arc::clone(&columns[i])).collect(),
            None => columns,
        };
        self.pending.push_back(RecordBatch::try_new(
            Arc::clone(&self.join.schema),
            columns,
        )?);
        Ok(())
    }
}

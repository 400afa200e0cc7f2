//! The first pass of a [`FitScoreExec`](super::FitScoreExec): one partition's fit, keeping its
//! batches while the budget allows.

use super::KeptBatches;
use crate::fit::{Fit, fit_too_large};

use datafusion::common::{Result, ScalarValue};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::MemoryReservation;
use futures::StreamExt;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How much the first pass may keep, shared by its partitions.
pub(super) struct KeepBudget {
    pub(super) kept_total: Arc<AtomicUsize>,
    /// Set by the first partition that does not fit; then none keeps anything.
    pub(super) overflowed: Arc<AtomicBool>,
    pub(super) cap: usize,
}

/// Fits one partition, keeping its batches while all partitions' fit in the cap and the pool.
/// The fit states (and the models they will grow, as the accumulators count them) are held in
/// `fit_reservation`: a state the budget cannot hold is an error, not an allocation past it.
pub(super) async fn first_pass(
    mut stream: SendableRecordBatchStream,
    fits: Vec<Fit>,
    reservation: MemoryReservation,
    fit_reservation: MemoryReservation,
    budget: KeepBudget,
) -> Result<(Vec<Vec<ScalarValue>>, KeptBatches)> {
    let mut accumulators = fits
        .iter()
        .map(|f| f.aggregate.create_accumulator())
        .collect::<Result<Vec<_>>>()?;
    let mut kept = VecDeque::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for (fit, acc) in fits.iter().zip(accumulators.iter_mut()) {
            let values = fit
                .args
                .iter()
                .map(|e| e.evaluate(&batch)?.into_array(batch.num_rows()))
                .collect::<Result<Vec<_>>>()?;
            acc.update_batch(&values)?;
        }
        // The fit states come first: kept batches only save a second read, so they make room.
        let states: usize = accumulators.iter().map(|a| a.size()).sum();
        if fit_reservation.try_resize(states).is_err() {
            budget.overflowed.store(true, Ordering::Relaxed);
            kept.clear();
            reservation.free();
            fit_reservation
                .try_resize(states)
                .map_err(|e| fit_too_large(states, e))?;
        }
        if !budget.overflowed.load(Ordering::Relaxed) {
            let size = batch.get_array_memory_size();
            let total = budget.kept_total.fetch_add(size, Ordering::Relaxed) + size;
            if total <= budget.cap && reservation.try_grow(size).is_ok() {
                kept.push_back(batch);
                continue;
            }
            // Past overflow the total no longer matters: nothing is kept any more.
            budget.overflowed.store(true, Ordering::Relaxed);
        }
        if !kept.is_empty() {
            kept.clear();
            reservation.free();
        }
    }
    let states = accumulators
        .iter_mut()
        .map(|acc| acc.state())
        .collect::<Result<Vec<_>>>()?;
    Ok((
        states,
        KeptBatches {
            batches: kept,
            reservation,
        },
    ))
}

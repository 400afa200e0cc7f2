//! The memory pool every Nomaly session runs under: DataFusion's `FairSpillPool` (each spilling
//! operator gets a fair share), a tracking wrapper (an error names the top consumers), and one
//! change: a `RepartitionExec` keeps its batches in memory instead of spilling them.
//!
//! Why: in DataFusion 55.2 a hash `RepartitionExec` that cannot reserve a batch writes it to a
//! spill pool shared by its input tasks; when two tasks spill at once the pool has two open
//! files, its reader waits on the older one while the batch it needs is in the newer, the
//! channel gate closes and every task waits — the query neither ends nor fails
//! (apache/datafusion#24883, fixed upstream after 55.2). Nomaly's plans hit it under a budget:
//! the sort below `SegmentFitScoreExec` spills, the exchange above the scan finds the pool full.
//! A repartition's buffer is bounded by its channel gate (a batch per input while a consumer
//! lags), so its reservations grow without failing. They still count: an operator that cannot
//! spill sees that much less of the pool, and a spilling one's share is the pool over all the
//! spilling consumers, the repartition's buffers among them. Remove this wrapper once the
//! workspace's DataFusion carries the fix.

use datafusion::common::Result;
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation, TrackConsumersPool,
};
use std::num::NonZeroUsize;
use std::sync::Arc;

/// How many consumers an out-of-memory error names.
const NAMED_CONSUMERS: usize = 5;

/// A pool of `bytes` for a session or an executor (see the module docs).
pub fn budget_pool(bytes: usize) -> Arc<dyn MemoryPool> {
    Arc::new(RepartitionsKeepTheirBatches {
        inner: TrackConsumersPool::new(
            FairSpillPool::new(bytes),
            NonZeroUsize::new(NAMED_CONSUMERS).expect("non-zero"),
        ),
    })
}

/// `inner`, except that a `RepartitionExec`'s output buffers always get their reservation.
#[derive(Debug)]
struct RepartitionsKeepTheirBatches<P> {
    inner: P,
}

/// A `RepartitionExec`'s per-output reservation (`RepartitionExec[3]`); not its merge's
/// (`RepartitionExec[Merge 3]`), which never spills anyway.
fn is_repartition_buffer(consumer: &MemoryConsumer) -> bool {
    consumer
        .name()
        .strip_prefix("RepartitionExec[")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

impl<P: MemoryPool> std::fmt::Display for RepartitionsKeepTheirBatches<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

impl<P: MemoryPool> MemoryPool for RepartitionsKeepTheirBatches<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        if is_repartition_buffer(reservation.consumer()) {
            self.inner.grow(reservation, additional);
            return Ok(());
        }
        self.inner.try_grow(reservation, additional)
    }

    fn reserved(&self) -> usize {
        self.inner.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repartition_buffers_grow_past_the_budget_and_count_against_it() {
        let pool = budget_pool(1000);
        let buffer = MemoryConsumer::new("RepartitionExec[0]")
            .with_can_spill(true)
            .register(&pool);
        buffer
            .try_grow(1500)
            .expect("a repartition buffer is never refused");
        assert_eq!(pool.reserved(), 1500);
        let segments = MemoryConsumer::new("SegmentFitScoreExec[0]").register(&pool);
        let err = segments.try_grow(10).unwrap_err().to_string();
        assert!(err.contains("RepartitionExec[0]"), "{err}");
        drop(buffer);
        segments.try_grow(10).expect("the pool is free again");
        let merge = MemoryConsumer::new("RepartitionExec[Merge 0]").register(&pool);
        assert!(merge.try_grow(2000).is_err());
        assert!(matches!(pool.memory_limit(), MemoryLimit::Finite(1000)));
    }

    /// apache/datafusion#24883's query: a grouped distinct count on two partitions under 2 MB.
    /// Under DataFusion's own pool the first attempts stop for good (every task waits); under
    /// this one each ends, with the same answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spilling_exchange_cannot_stop_a_query() {
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        use datafusion::prelude::{SessionConfig, SessionContext};
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(budget_pool(2 << 20))
            .build_arc()
            .expect("runtime");
        let config = SessionConfig::new()
            .with_target_partitions(2)
            .with_batch_size(64);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.sql(
            "CREATE TABLE t AS SELECT v % 13 AS g, md5(CAST(v % 337 AS VARCHAR)) AS trace_id \
             FROM generate_series(1, 40000) AS s(v)",
        )
        .await
        .expect("table");
        for attempt in 0..8 {
            let run = async {
                use datafusion::common::DataFusionError;
                let df = ctx
                    .sql("SELECT sum(n) FROM (SELECT g, count(DISTINCT trace_id) AS n FROM t GROUP BY g)")
                    .await?;
                let batches = df.collect().await?;
                let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
                    .map_err(DataFusionError::from)?;
                Ok::<String, DataFusionError>(text.to_string())
            };
            let out = tokio::time::timeout(std::time::Duration::from_secs(20), run)
                .await
                .unwrap_or_else(|_| panic!("attempt {attempt} stopped and never ended"))
                .expect("the query runs");
            // 337 values of v % 337 fall in each of the 13 groups: 13 × 337 distinct pairs.
            assert!(out.contains("| 4381 "), "{out}");
        }
    }
}

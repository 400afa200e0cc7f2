//! [`Held`]: the per-segment operator's memory, with a floor taken before its input runs.
//!
//! The operator cannot spill (a segment's rows wait for its model), and its input is a sort that
//! can. In DataFusion's fair pool a spilling consumer may grow into everything the non-spilling
//! ones do not hold *at that moment*; an operator that asks only once the sort emits rows can
//! find the sort holding the rest of the pool (a cluster task failed so: 2.4 MB asked, 2.1 MB of
//! 192 MB left). Taking a floor when the operator starts, before the sort has read anything,
//! keeps that much out of the sort's share: the sort spills instead.

use datafusion::common::Result;
use datafusion::execution::memory_pool::{MemoryLimit, MemoryReservation};

/// The most a floor takes, per partition.
const MAX_FLOOR: usize = 32 << 20;

/// Bytes in use within a reservation that stays at least `floor` while the operator lives.
#[derive(Debug)]
pub(super) struct Held {
    reservation: MemoryReservation,
    floor: usize,
    used: usize,
}

impl Held {
    /// A floor of a quarter of `limit`'s share per partition, at most [`MAX_FLOOR`]; none when
    /// the pool is unbounded or cannot give it now.
    pub(super) fn new(
        reservation: MemoryReservation,
        limit: MemoryLimit,
        partitions: usize,
    ) -> Self {
        let wanted = match limit {
            MemoryLimit::Finite(bytes) => (bytes / (4 * partitions.max(1))).min(MAX_FLOOR),
            _ => 0,
        };
        let floor = match reservation.try_grow(wanted) {
            Ok(()) => wanted,
            Err(_) => 0,
        };
        Held {
            reservation,
            floor,
            used: 0,
        }
    }

    /// Takes `bytes` more, from the floor first, then from the pool.
    pub(super) fn try_grow(&mut self, bytes: usize) -> Result<()> {
        let needed = (self.used + bytes).saturating_sub(self.reservation.size());
        if needed > 0 {
            self.reservation.try_grow(needed)?;
        }
        self.used += bytes;
        Ok(())
    }

    /// Gives back `bytes` (at most what is in use); the pool gets back what is above the floor.
    pub(super) fn shrink(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
        let keep = self.used.max(self.floor);
        let size = self.reservation.size();
        if size > keep {
            self.reservation.shrink(size - keep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::{FairSpillPool, MemoryConsumer, MemoryPool};
    use std::sync::Arc;

    /// The floor is taken at once and kept; use beyond it comes from the pool and goes back.
    #[test]
    fn the_floor_stays_out_of_a_spilling_consumers_share() {
        let pool: Arc<dyn MemoryPool> = Arc::new(FairSpillPool::new(100 << 20));
        let r = MemoryConsumer::new("segments").register(&pool);
        let mut held = Held::new(r, pool.memory_limit(), 1);
        assert_eq!(pool.reserved(), 25 << 20);
        // A sort (spilling) cannot take the floor.
        let sort = MemoryConsumer::new("sort")
            .with_can_spill(true)
            .register(&pool);
        assert!(sort.try_grow(76 << 20).is_err());
        sort.try_grow(75 << 20).unwrap();
        // The operator's first 25 MiB come from its floor, even with the pool full.
        held.try_grow(20 << 20).unwrap();
        held.try_grow(5 << 20).unwrap();
        assert!(
            held.try_grow(1).is_err(),
            "beyond the floor, the pool decides"
        );
        sort.shrink(10 << 20);
        held.try_grow(10 << 20).unwrap();
        assert_eq!(pool.reserved(), 100 << 20);
        held.shrink(35 << 20);
        assert_eq!(pool.reserved(), 90 << 20, "back to the floor, not below");
        held.shrink(1 << 20);
        assert_eq!(pool.reserved(), 90 << 20);
    }
}

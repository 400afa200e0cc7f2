//! The queue's rules, as pure functions of the waiting runs, what is free, and the time.
//!
//! - **Order**: higher effective priority first; ties by queue time, then id. The effective
//!   priority is the run's priority plus one for every `aging` it has waited, so low-priority
//!   work climbs and never waits forever behind a stream of higher-priority submissions.
//! - **Admission**: the head of the queue starts when its memory budget fits in what the server
//!   has left and a run slot is free. When the head does not fit, nothing behind it starts
//!   (no backfilling): a large run is never passed over forever by smaller ones.
//! - **Estimated start**: the running runs' remaining times (from their ETA) free slots and memory
//!   in order; each queued run is assumed to take the mean duration of finished runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A queued run, as the queue sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub id: i64,
    pub priority: i64,
    pub queued_ms: i64,
    pub memory: u64,
}

/// What the server has free now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub free_memory: u64,
    pub free_slots: usize,
}

/// The priority a waiting run competes with at `now_ms`.
pub fn effective_priority(w: &Waiting, now_ms: i64, aging: Duration) -> i64 {
    let waited = (now_ms - w.queued_ms).max(0) as u128;
    let step = aging.as_millis().max(1);
    w.priority.saturating_add((waited / step) as i64)
}

/// The queue in the order runs start.
pub fn order(mut waiting: Vec<Waiting>, now_ms: i64, aging: Duration) -> Vec<Waiting> {
    waiting.sort_by(|a, b| {
        effective_priority(b, now_ms, aging)
            .cmp(&effective_priority(a, now_ms, aging))
            .then(a.queued_ms.cmp(&b.queued_ms))
            .then(a.id.cmp(&b.id))
    });
    waiting
}

/// The ids to start now, from the front of an ordered queue.
pub fn admit(ordered: &[Waiting], mut capacity: Capacity) -> Vec<i64> {
    let mut start = Vec::new();
    for w in ordered {
        if capacity.free_slots == 0 || w.memory > capacity.free_memory {
            break;
        }
        capacity.free_slots -= 1;
        capacity.free_memory -= w.memory;
        start.push(w.id);
    }
    start
}

/// Runs of a group (a backfill: `group_of` gives its id and how many of its runs may run at
/// once) beyond that limit, counting `running` ones and those ahead in the order, wait; they
/// hold back nothing behind them. Returns the rest, in order, and the held ids.
pub fn hold_groups(
    ordered: &[Waiting],
    running: &BTreeMap<i64, usize>,
    group_of: impl Fn(i64) -> Option<(i64, usize)>,
) -> (Vec<Waiting>, BTreeSet<i64>) {
    let mut taken = running.clone();
    let mut free = Vec::new();
    let mut held = BTreeSet::new();
    for w in ordered {
        if let Some((group, limit)) = group_of(w.id) {
            let n = taken.entry(group).or_default();
            if *n >= limit {
                held.insert(w.id);
                continue;
            }
            *n += 1;
        }
        free.push(w.clone());
    }
    (free, held)
}

/// A running run: its memory and the seconds it is expected to go on for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Busy {
    pub memory: u64,
    pub remaining_seconds: f64,
}

/// Seconds from now until each run of an ordered queue is expected to start (same order), by
/// replaying admission as the running runs finish; each queued run is assumed to take
/// `mean_seconds`. `None` for a run that can never fit (it needs more than the whole budget).
pub fn estimate_starts(
    ordered: &[Waiting],
    running: &[Busy],
    budget: u64,
    slots: usize,
    mean_seconds: f64,
) -> Vec<Option<f64>> {
    let mut busy: Vec<Busy> = running.to_vec();
    let mut now = 0.0f64;
    let mut out = Vec::with_capacity(ordered.len());
    for w in ordered {
        if w.memory > budget || slots == 0 {
            out.push(None);
            continue;
        }
        loop {
            let used: u64 = busy.iter().map(|b| b.memory).sum();
            if busy.len() < slots && used + w.memory <= budget {
                break;
            }
            // Wait for the next run to finish.
            let (i, next) = busy
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.remaining_seconds.total_cmp(&b.1.remaining_seconds))
                .map(|(i, b)| (i, b.remaining_seconds))
                .expect("a full server has a running run");
            now = now.max(next);
            busy.remove(i);
        }
        out.push(Some(now));
        busy.push(Busy {
            memory: w.memory,
            remaining_seconds: now + mean_seconds,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(id: i64, priority: i64, queued_ms: i64, memory: u64) -> Waiting {
        Waiting {
            id,
            priority,
            queued_ms,
            memory,
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn higher_priority_first_then_first_come() {
        let q = order(vec![w(1, 0, 0, 1), w(2, 5, 10, 1), w(3, 5, 5, 1)], 20, MIN);
        assert_eq!(q.iter().map(|w| w.id).collect::<Vec<_>>(), vec![3, 2, 1]);
    }

    #[test]
    fn waiting_raises_priority_so_nothing_starves() {
        // A priority-0 run queued 10 minutes ago beats a priority-9 run queued now.
        let now = 600_000;
        let q = order(vec![w(1, 0, 0, 1), w(2, 9, now, 1)], now, MIN);
        assert_eq!(q[0].id, 1);
        assert_eq!(effective_priority(&q[0], now, MIN), 10);
        // ... but not a minute after it was queued.
        let q = order(vec![w(1, 0, 0, 1), w(2, 9, 60_000, 1)], 60_000, MIN);
        assert_eq!(q[0].id, 2);
    }

    #[test]
    fn admission_stops_at_the_first_run_that_does_not_fit() {
        let q = vec![w(1, 0, 0, 6), w(2, 0, 1, 6), w(3, 0, 2, 1)];
        let free = |m, s| Capacity {
            free_memory: m,
            free_slots: s,
        };
        assert_eq!(
            admit(&q, free(10, 4)),
            vec![1],
            "2 does not fit; 3 must not pass it"
        );
        assert_eq!(admit(&q, free(13, 4)), vec![1, 2, 3]);
        assert_eq!(admit(&q, free(13, 2)), vec![1, 2]);
        assert_eq!(admit(&q, free(5, 4)), Vec::<i64>::new());
    }

    #[test]
    fn a_backfill_runs_its_limit_at_once_and_holds_back_nothing_else() {
        // Runs 1-3 belong to backfill 7 (one at a time), run 4 to nothing.
        let q = vec![w(1, 0, 0, 1), w(2, 0, 1, 1), w(4, 0, 2, 1), w(3, 0, 3, 1)];
        let group = |id| (id != 4).then_some((7, 1));
        let ids = |v: &[Waiting]| v.iter().map(|w| w.id).collect::<Vec<_>>();
        let (free, held) = hold_groups(&q, &BTreeMap::new(), group);
        assert_eq!((ids(&free), held), (vec![1, 4], BTreeSet::from([2, 3])));
        // One of its runs is running: all of its queued runs wait; run 4 does not.
        let (free, held) = hold_groups(&q, &BTreeMap::from([(7, 1)]), group);
        assert_eq!((ids(&free), held.len()), (vec![4], 3));
        // A limit of 2.
        let (free, _) = hold_groups(&q, &BTreeMap::new(), |id| (id != 4).then_some((7, 2)));
        assert_eq!(ids(&free), vec![1, 2, 4]);
    }

    #[test]
    fn estimated_starts_follow_finishing_runs() {
        let running = [
            Busy {
                memory: 6,
                remaining_seconds: 30.0,
            },
            Busy {
                memory: 2,
                remaining_seconds: 10.0,
            },
        ];
        let q = vec![w(1, 0, 0, 2), w(2, 0, 1, 6), w(3, 0, 2, 20)];
        // Budget 10, 2 slots: run 1 waits for the 10 s run; run 2 (6) needs the 30 s run gone;
        // run 3 can never fit.
        assert_eq!(
            estimate_starts(&q, &running, 10, 2, 100.0),
            vec![Some(10.0), Some(30.0), None]
        );
        assert_eq!(estimate_starts(&q[..1], &[], 10, 2, 1.0), vec![Some(0.0)]);
    }
}

//! Served runs of one output wait for each other (SECURITY.md, "One writer per output").
//!
//! Every run holds a lock on its outputs while it runs, so a second run of an output would be
//! refused. On the server it waits in the queue instead (`waiting_for: output`) and does not hold
//! back the runs behind it, which write elsewhere. A queued run's outputs are known by compiling
//! its pipeline, once per run.

use crate::queue::Waiting;
use crate::server::Server;
use crate::store::RunRecord;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

/// The outputs of queued and running runs, by run id, compiled once.
#[derive(Default)]
pub(crate) struct OutputClaims {
    by_run: Mutex<BTreeMap<i64, Vec<PathBuf>>>,
}

impl OutputClaims {
    /// Run `id`'s outputs, computed by `compile` the first time (a run whose pipeline no longer
    /// compiles claims nothing: it fails when it starts, naming why).
    pub fn of(&self, id: i64, compile: impl FnOnce() -> Option<Vec<PathBuf>>) -> Vec<PathBuf> {
        let mut map = self.by_run.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(outputs) = map.get(&id) {
            return outputs.clone();
        }
        let outputs = compile().unwrap_or_default();
        map.insert(id, outputs.clone());
        outputs
    }

    /// Forgets a run that ended (a retry compiles it again).
    pub fn forget(&self, id: i64) {
        self.by_run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Splits an ordered queue into the runs free to start and the ids that wait for an output: one
/// that a running run (`held`) or a run ahead in the queue writes.
pub(crate) fn split_by_output(
    ordered: &[Waiting],
    held: &[PathBuf],
    outputs_of: impl Fn(i64) -> Vec<PathBuf>,
) -> (Vec<Waiting>, BTreeSet<i64>) {
    let mut taken: BTreeSet<PathBuf> = held.iter().cloned().collect();
    let mut free = Vec::new();
    let mut waiting = BTreeSet::new();
    for w in ordered {
        let outputs = outputs_of(w.id);
        if outputs.iter().any(|o| taken.contains(o)) {
            waiting.insert(w.id);
        } else {
            free.push(w.clone());
        }
        taken.extend(outputs);
    }
    (free, waiting)
}

impl Server {
    /// A run's output directories (its pipeline compiled), or `None` if it does not compile.
    pub(crate) fn outputs_of(&self, run: &RunRecord) -> Option<Vec<PathBuf>> {
        let compiled = self.prepare(run).ok()?;
        Some(compiled.sinks.iter().map(|s| s.path.clone()).collect())
    }

    /// The queue's runs free to start, and those waiting for an output a running run (or one
    /// ahead of them) writes.
    pub(crate) fn split_by_output(
        &self,
        ordered: &[Waiting],
        queued: &[RunRecord],
    ) -> (Vec<Waiting>, std::collections::BTreeSet<i64>) {
        let held: Vec<PathBuf> = self
            .active()
            .values()
            .flat_map(|a| a.outputs.clone())
            .collect();
        split_by_output(ordered, &held, |id| {
            self.inner.claims.of(id, || {
                queued
                    .iter()
                    .find(|r| r.id == id)
                    .and_then(|r| self.outputs_of(r))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_a_held_output_wait_and_others_pass() {
        let w = |id| Waiting {
            id,
            priority: 0,
            queued_ms: id,
            memory: 1,
        };
        let out = |id: i64| match id {
            1 | 3 => vec![PathBuf::from("/d/a")],
            2 => vec![PathBuf::from("/d/b")],
            _ => vec![PathBuf::from("/d/c"), PathBuf::from("/d/b")],
        };
        let held = [PathBuf::from("/d/c")];
        let (free, waiting) = split_by_output(&[w(1), w(2), w(3), w(4)], &held, out);
        assert_eq!(free.iter().map(|w| w.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(waiting.into_iter().collect::<Vec<_>>(), [3, 4]);
    }
}

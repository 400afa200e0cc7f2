//! Backfills: one run per interval of a pipeline's schedule (days, without one) between two
//! days, queued together at a low priority and shown as one item.
//!
//! - Each run is an ordinary run for its interval: `${run.date}` and the rest expand to it, so a
//!   pipeline that writes `out/date=${run.date}/` gives each interval its own output, and
//!   re-running one interval replaces only that output.
//! - Runs are queued at [`BACKFILL_PRIORITY`] unless the request says otherwise, so scheduled
//!   and submitted runs go first (aging still lets the backfill through).
//! - Overlap: a pipeline that does not `allow_overlap` runs one interval at a time, oldest
//!   first; one that does, as many as the queue admits.
//! - Only intervals that have ended are run, at most [`MAX_BACKFILL_RUNS`].

use crate::error::{Result, ServerError};
use crate::queue::{self, Waiting};
use crate::server::{Server, SubmitRequest, now_ms};
use crate::store::{BackfillRecord, NewBackfill, RunRecord, RunState};
use nomaly_pipeline::run_context::{backfill_intervals, parse_day};
use nomaly_pipeline::{RunDate, RunRequest};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use utoipa::ToSchema;

/// The priority of a backfill's runs unless its request gives one.
pub const BACKFILL_PRIORITY: i64 = -10;
pub use nomaly_pipeline::run_context::MAX_BACKFILL_RUNS;

/// `POST /api/backfills`: a pipeline (as `POST /api/runs` takes it) and the days to run.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// First day (YYYY-MM-DD) whose intervals run.
    pub from: String,
    /// Last day (YYYY-MM-DD, inclusive).
    pub to: String,
    pub path: Option<String>,
    pub toml: Option<String>,
    pub base_dir: Option<String>,
    /// Priority of each run (default -10: after scheduled and submitted runs).
    pub priority: Option<i64>,
    pub memory_limit: Option<String>,
    pub timeout: Option<String>,
    pub cpus: Option<u64>,
    #[serde(default)]
    pub set: Vec<String>,
    /// `${param.NAME}` values, the same for every interval.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// One interval of a backfill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackfillRun {
    pub run: i64,
    /// `${run.date}` of its interval.
    pub date: String,
    pub state: RunState,
}

/// A backfill and how far it is, as one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackfillView {
    #[serde(flatten)]
    pub backfill: BackfillRecord,
    /// `running` while any run is queued or running; else `succeeded` when every run
    /// succeeded, `failed` when any failed or timed out, else `cancelled`.
    pub state: String,
    pub total: u64,
    /// Runs per state (`queued`, `running`, `succeeded`, ...).
    pub counts: BTreeMap<String, u64>,
    /// Oldest interval first.
    pub runs: Vec<BackfillRun>,
}

/// `GET /api/backfills`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackfillList {
    /// Newest first.
    pub backfills: Vec<BackfillView>,
}

impl BackfillView {
    fn of(backfill: BackfillRecord, runs: &[RunRecord]) -> BackfillView {
        let mut counts = BTreeMap::new();
        for r in runs {
            *counts.entry(r.state.name().to_string()).or_insert(0) += 1;
        }
        let any = |states: &[RunState]| runs.iter().any(|r| states.contains(&r.state));
        let state = if any(&[RunState::Queued, RunState::Running]) {
            "running"
        } else if runs.iter().all(|r| r.state == RunState::Succeeded) {
            "succeeded"
        } else if any(&[
            RunState::Failed,
            RunState::TimedOut,
            RunState::ValidationFailed,
        ]) {
            "failed"
        } else {
            "cancelled"
        };
        BackfillView {
            backfill,
            state: state.to_string(),
            total: runs.len() as u64,
            counts,
            runs: runs
                .iter()
                .map(|r| BackfillRun {
                    run: r.id,
                    date: r
                        .interval
                        .as_ref()
                        .map(|i| i.date.clone())
                        .unwrap_or_default(),
                    state: r.state,
                })
                .collect(),
        }
    }
}

impl Server {
    /// Checks a backfill request, and queues one run per ended interval, all or nothing.
    pub fn backfill(&self, req: BackfillRequest) -> Result<BackfillView> {
        let bad = |what: &str, e: String| ServerError::BadRequest(format!("{what}: {e}"));
        let from = parse_day(&req.from).map_err(|e| bad("from", e))?;
        let to = parse_day(&req.to).map_err(|e| bad("to", e))?;
        let submit = SubmitRequest {
            path: req.path,
            toml: req.toml,
            base_dir: req.base_dir,
            priority: Some(req.priority.unwrap_or(BACKFILL_PRIORITY)),
            memory_limit: req.memory_limit,
            timeout: req.timeout,
            cpus: req.cpus,
            set: req.set,
            date: None,
            params: req.params,
        };
        let (path, text) = self.pipeline_source(&submit)?;
        let latest = submit.run_request()?;
        let (compiled, _) = self.compile_for(&path, &text, &submit.set, &latest)?;
        let intervals = backfill_intervals(&compiled, from, to, now_ms())
            .map_err(|e| ServerError::BadRequest(format!("from/to: {e}")))?;
        let mut runs = Vec::with_capacity(intervals.len());
        for (start_ms, end_ms) in intervals {
            let request = RunRequest::new(
                RunDate::Interval { start_ms, end_ms },
                submit.params.clone(),
            );
            let run = self.new_run(&submit, path.clone(), text.clone(), &request, "backfill")?;
            runs.push(run);
        }
        let new = NewBackfill {
            pipeline: compiled.name.clone(),
            from_day: from.to_string(),
            to_day: to.to_string(),
            max_active: if compiled.trigger.allow_overlap {
                MAX_BACKFILL_RUNS as u32
            } else {
                1
            },
        };
        let (id, _) = self.inner.store.insert_backfill(&new, &runs, now_ms())?;
        self.inner.wake.notify_one();
        self.backfill_view(id)
    }

    pub fn backfill_view(&self, id: i64) -> Result<BackfillView> {
        let backfill = self
            .inner
            .store
            .backfill(id)?
            .ok_or_else(|| ServerError::NotFound(format!("no backfill {id}")))?;
        let runs = self.inner.store.runs_of_backfill(id)?;
        Ok(BackfillView::of(backfill, &runs))
    }

    pub fn backfills(&self, limit: usize) -> Result<BackfillList> {
        let mut backfills = Vec::new();
        for b in self.inner.store.backfills(limit)? {
            let runs = self.inner.store.runs_of_backfill(b.id)?;
            backfills.push(BackfillView::of(b, &runs));
        }
        Ok(BackfillList { backfills })
    }

    /// Cancels every queued or running run of a backfill.
    pub fn cancel_backfill(&self, id: i64) -> Result<BackfillView> {
        let view = self.backfill_view(id)?;
        for r in &view.runs {
            if !r.state.is_finished() {
                self.cancel(r.run)?;
            }
        }
        self.backfill_view(id)
    }

    /// The queue's runs free to start, and those held because their backfill runs as many
    /// runs at once as it may.
    pub(crate) fn hold_backfills(
        &self,
        ordered: &[Waiting],
        queued: &[RunRecord],
    ) -> (Vec<Waiting>, BTreeSet<i64>) {
        let mut running: BTreeMap<i64, usize> = BTreeMap::new();
        for b in self.active().values().filter_map(|a| a.backfill) {
            *running.entry(b).or_default() += 1;
        }
        let mut limits: BTreeMap<i64, usize> = BTreeMap::new();
        for b in queued.iter().filter_map(|r| r.backfill) {
            if let std::collections::btree_map::Entry::Vacant(e) = limits.entry(b) {
                let limit = self.inner.store.backfill(b).ok().flatten();
                e.insert(limit.map(|l| l.max_active as usize).unwrap_or(1));
            }
        }
        queue::hold_groups(ordered, &running, |id| {
            let b = queued.iter().find(|r| r.id == id)?.backfill?;
            Some((b, limits[&b]))
        })
    }
}

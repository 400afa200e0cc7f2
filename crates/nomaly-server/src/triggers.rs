//! Registered pipelines and what fires them: cron schedules (with their catch-up policy and
//! overlap rule) and `after` / `on_failure` dependencies. The rules are pure ([`crate::schedule`],
//! [`crate::deps`]); this is where they meet the store and the queue.

use crate::deps;
use crate::error::{Result, ServerError};
use crate::schedule;
use crate::server::{ScheduleView, Server, SubmitRequest, now_ms};
use crate::store::{NewRun, PipelineRecord, RunRecord, RunState};
use nomaly_pipeline::compile::parse_cron;
use nomaly_pipeline::run_context::fire_before;
use nomaly_pipeline::spec::CatchUp;
use nomaly_pipeline::{RunDate, RunRequest};
use std::collections::BTreeMap;
use std::path::PathBuf;

impl Server {
    /// Registers (or updates) a pipeline file: its schedule and dependencies. A cycle through
    /// `after` is refused, naming it.
    pub fn register(&self, path: &str, priority: Option<i64>) -> Result<ScheduleView> {
        let req = SubmitRequest {
            path: Some(path.to_string()),
            ..Default::default()
        };
        let (path, text) = self.pipeline_source(&req)?;
        let compiled = self.compile_checked(&path, &text, &[], &RunRequest::default())?;
        let t = &compiled.trigger;
        let mut graph: BTreeMap<String, Vec<String>> = self
            .inner
            .store
            .pipelines()?
            .into_iter()
            .map(|p| (p.name, p.after))
            .collect();
        graph.insert(compiled.name.clone(), t.after.clone());
        if let Some(cycle) = deps::find_cycle(&graph) {
            return Err(ServerError::BadRequest(format!(
                "`after` would make a cycle: {}; a pipeline cannot run after itself",
                cycle.join(" -> ")
            )));
        }
        let existing = self.inner.store.pipeline(&compiled.name)?;
        let now = now_ms();
        let record = PipelineRecord {
            name: compiled.name.clone(),
            file: path.to_string_lossy().to_string(),
            text,
            cron: t.schedule.as_ref().map(|s| s.expression.clone()),
            timezone: t.schedule.as_ref().map(|s| s.timezone.name().to_string()),
            catch_up: catch_up_name(t.catch_up).to_string(),
            allow_overlap: t.allow_overlap,
            after: t.after.clone(),
            on_failure: t.on_failure.clone(),
            priority: priority.unwrap_or(0),
            added_ms: existing.as_ref().map_or(now, |e| e.added_ms),
            last_fire_ms: existing.as_ref().and_then(|e| e.last_fire_ms),
            fires: existing.as_ref().map_or(0, |e| e.fires),
            skipped: existing.as_ref().map_or(0, |e| e.skipped),
        };
        self.inner.store.upsert_pipeline(&record)?;
        self.schedule_view(record)
    }

    pub fn schedules(&self) -> Result<Vec<ScheduleView>> {
        self.inner
            .store
            .pipelines()?
            .into_iter()
            .map(|p| self.schedule_view(p))
            .collect()
    }

    pub fn schedule(&self, name: &str) -> Result<ScheduleView> {
        let p = self
            .inner
            .store
            .pipeline(name)?
            .ok_or_else(|| ServerError::NotFound(format!("no registered pipeline '{name}'")))?;
        self.schedule_view(p)
    }

    pub fn unregister(&self, name: &str) -> Result<()> {
        if self.inner.store.remove_pipeline(name)? {
            Ok(())
        } else {
            Err(ServerError::NotFound(format!(
                "no registered pipeline '{name}'"
            )))
        }
    }

    fn schedule_view(&self, p: PipelineRecord) -> Result<ScheduleView> {
        let next_fires_ms = match (&p.cron, &p.timezone) {
            (Some(c), tz) => {
                let cron = parse_cron(c).map_err(ServerError::BadRequest)?;
                let tz = tz
                    .as_deref()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(chrono_tz::UTC);
                schedule::next_fires(&cron, tz, now_ms(), 5)
            }
            _ => Vec::new(),
        };
        Ok(ScheduleView {
            pipeline: p,
            next_fires_ms,
        })
    }

    /// Queues a run for every due fire of every schedule (the catch-up policy decides which).
    pub fn fire_schedules(&self, now: i64) -> Result<()> {
        for p in self.inner.store.pipelines()? {
            let Some(expr) = &p.cron else { continue };
            let Ok(cron) = parse_cron(expr) else { continue };
            let tz = p
                .timezone
                .as_deref()
                .and_then(|t| t.parse().ok())
                .unwrap_or(chrono_tz::UTC);
            let policy = match p.catch_up.as_str() {
                "none" => CatchUp::None,
                "all" => CatchUp::All,
                _ => CatchUp::Latest,
            };
            let last = p.last_fire_ms.unwrap_or(p.added_ms);
            let fires = schedule::due(&cron, tz, last, now, policy);
            let Some(newest) = fires.last else { continue };
            let mut skipped = fires.skipped as u64;
            let mut queued = 0u64;
            for fire in fires.run {
                let busy = self
                    .inner
                    .store
                    .runs_of(&p.name, 1000)?
                    .iter()
                    .any(|r| r.backfill.is_none() && !r.state.is_finished());
                if busy && !p.allow_overlap {
                    skipped += 1;
                    tracing::info!(pipeline = %p.name, fire, "fire skipped: the previous run is still going");
                    continue;
                }
                // A fire is for the interval that it ends (Airflow's data interval).
                let date = match fire_before(&cron, tz, fire) {
                    Some(start_ms) => RunDate::Interval {
                        start_ms,
                        end_ms: fire,
                    },
                    None => RunDate::Latest,
                };
                self.queue_registered(&p.name, &format!("schedule:{fire}"), date);
                queued += 1;
            }
            self.inner
                .store
                .record_fires(&p.name, newest, queued, skipped)?;
        }
        Ok(())
    }

    /// Queues a run of a registered pipeline (its file as it is now, else as registered) for
    /// `date`.
    pub(crate) fn queue_registered(&self, name: &str, trigger: &str, date: RunDate) {
        let result = (|| -> Result<RunRecord> {
            let p = self.inner.store.pipeline(name)?.ok_or_else(|| {
                ServerError::NotFound(format!(
                    "'{name}' is not a registered pipeline; register it with nomaly schedule add"
                ))
            })?;
            let text = std::fs::read_to_string(&p.file).unwrap_or(p.text.clone());
            let path = PathBuf::from(&p.file);
            let request = RunRequest::new(date, Default::default());
            let (compiled, overrides) = self.compile_for(&path, &text, &[], &request)?;
            let memory = compiled
                .memory_limit
                .map(|m| m as u64)
                .unwrap_or(self.inner.config.default_run_memory)
                .min(self.inner.config.memory_budget);
            self.enqueue(NewRun {
                pipeline: compiled.name,
                file: path,
                text,
                overrides,
                priority: p.priority,
                memory_bytes: memory,
                timeout_ms: None,
                cpus: None,
                trigger: trigger.to_string(),
                context: Some(compiled.file.context.clone()),
                backfill: None,
            })
        })();
        if let Err(e) = result {
            tracing::warn!(pipeline = name, trigger, "could not queue: {e}");
        }
    }

    /// After `pipeline` succeeded: queue the registered pipelines that run after it and whose
    /// every upstream has now succeeded.
    pub(crate) fn fire_dependents(&self, pipeline: &str, run_id: i64) {
        let Ok(registered) = self.inner.store.pipelines() else {
            return;
        };
        for p in registered
            .iter()
            .filter(|p| p.after.iter().any(|a| a == pipeline))
        {
            let mut succeeded = BTreeMap::new();
            for up in &p.after {
                let last_ok = self
                    .inner
                    .store
                    .runs_of(up, 100)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| r.state == RunState::Succeeded)
                    .filter_map(|r| r.finished_ms)
                    .max();
                if let Some(t) = last_ok {
                    succeeded.insert(up.clone(), t);
                }
            }
            let own = self
                .inner
                .store
                .runs_of(&p.name, 1)
                .unwrap_or_default()
                .first()
                .map(|r| r.submitted_ms);
            if deps::ready(&p.after, &succeeded, own) {
                // The same interval as the run it follows.
                self.queue_registered(&p.name, &format!("after:{run_id}"), self.date_of(run_id));
            }
        }
    }
}

impl Server {
    /// The interval a stored run was for, as a request for another run of the same interval
    /// (without its parameters, which belong to its pipeline).
    pub(crate) fn date_of(&self, run_id: i64) -> RunDate {
        match self
            .inner
            .store
            .run(run_id)
            .ok()
            .flatten()
            .and_then(|r| r.interval)
        {
            Some(i) => RunDate::Interval {
                start_ms: i.start_ms,
                end_ms: i.end_ms,
            },
            None => RunDate::Latest,
        }
    }
}

fn catch_up_name(c: CatchUp) -> &'static str {
    match c {
        CatchUp::None => "none",
        CatchUp::Latest => "latest",
        CatchUp::All => "all",
    }
}

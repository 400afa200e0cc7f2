//! Backfills in the job store: one row per backfill, and its runs (one per interval) carrying
//! its id, inserted together in one transaction so a backfill is never half queued.

use super::{NewRun, RUN_COLUMNS, RunRecord, Store, insert_run, run_from_row};
use crate::error::Result;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// What a new backfill needs (its runs come separately).
#[derive(Debug, Clone)]
pub struct NewBackfill {
    pub pipeline: String,
    pub from_day: String,
    pub to_day: String,
    /// How many of its runs may run at once (1 unless the pipeline allows overlap).
    pub max_active: u32,
}

/// A stored backfill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackfillRecord {
    pub id: i64,
    pub pipeline: String,
    /// First and last day (YYYY-MM-DD, inclusive) whose intervals it runs.
    pub from_day: String,
    pub to_day: String,
    pub max_active: u32,
    pub created_ms: i64,
}

fn backfill_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BackfillRecord> {
    Ok(BackfillRecord {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        from_day: r.get(2)?,
        to_day: r.get(3)?,
        max_active: r.get::<_, i64>(4)? as u32,
        created_ms: r.get(5)?,
    })
}

const BACKFILL_COLUMNS: &str = "id, pipeline, from_day, to_day, max_active, created_ms";

impl Store {
    /// Stores a backfill and queues its runs, all or nothing. Returns its id and the runs' ids.
    pub fn insert_backfill(
        &self,
        backfill: &NewBackfill,
        runs: &[NewRun],
        now_ms: i64,
    ) -> Result<(i64, Vec<i64>)> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO backfills (pipeline, from_day, to_day, max_active, created_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    backfill.pipeline,
                    backfill.from_day,
                    backfill.to_day,
                    backfill.max_active as i64,
                    now_ms
                ],
            )?;
            let id = tx.last_insert_rowid();
            let mut ids = Vec::with_capacity(runs.len());
            for run in runs {
                let run = NewRun {
                    backfill: Some(id),
                    ..run.clone()
                };
                ids.push(insert_run(&tx, &run, now_ms)?);
            }
            tx.commit()?;
            Ok((id, ids))
        })
    }

    pub fn backfill(&self, id: i64) -> Result<Option<BackfillRecord>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {BACKFILL_COLUMNS} FROM backfills WHERE id = ?1"),
                [id],
                backfill_from_row,
            )
            .optional()
        })
    }

    /// Backfills, newest first.
    pub fn backfills(&self, limit: usize) -> Result<Vec<BackfillRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {BACKFILL_COLUMNS} FROM backfills ORDER BY id DESC LIMIT ?1"
            ))?;
            stmt.query_map([limit as i64], backfill_from_row)?.collect()
        })
    }

    /// A backfill's runs, oldest interval first.
    pub fn runs_of_backfill(&self, id: i64) -> Result<Vec<RunRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE backfill = ?1 ORDER BY id"
            ))?;
            stmt.query_map([id], run_from_row)?.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RunState;

    #[test]
    fn a_backfill_and_its_runs_are_stored_together() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("jobs.db")).unwrap();
        let context = |day: i64| nomaly_pipeline::RunContext {
            start_ms: day * 86_400_000,
            end_ms: (day + 1) * 86_400_000,
            timezone: "UTC".into(),
            params: [("region".to_string(), "eu".to_string())].into(),
        };
        let run = |day| NewRun {
            pipeline: "daily".into(),
            file: "/p.toml".into(),
            text: "x".into(),
            overrides: vec![],
            priority: -10,
            memory_bytes: 1 << 20,
            timeout_ms: None,
            cpus: None,
            trigger: "backfill".into(),
            context: Some(context(day)),
            backfill: None,
        };
        let new = NewBackfill {
            pipeline: "daily".into(),
            from_day: "1970-01-01".into(),
            to_day: "1970-01-03".into(),
            max_active: 1,
        };
        let (id, runs) = store
            .insert_backfill(&new, &[run(0), run(1), run(2)], 5)
            .unwrap();
        assert_eq!(runs.len(), 3);
        let b = store.backfill(id).unwrap().unwrap();
        assert_eq!(
            (b.pipeline.as_str(), b.max_active, b.created_ms),
            ("daily", 1, 5)
        );
        let stored = store.runs_of_backfill(id).unwrap();
        let dates: Vec<String> = stored
            .iter()
            .map(|r| r.interval.as_ref().unwrap().date.clone())
            .collect();
        assert_eq!(dates, ["1970-01-01", "1970-01-02", "1970-01-03"]);
        assert!(stored.iter().all(|r| r.backfill == Some(id)
            && r.state == RunState::Queued
            && r.interval.as_ref().unwrap().params["region"] == "eu"));
        assert_eq!(
            store.source(runs[1]).unwrap().unwrap().context,
            Some(context(1))
        );
        assert_eq!(store.backfills(10).unwrap(), vec![b]);
        assert_eq!(store.backfill(id + 1).unwrap(), None);
    }
}

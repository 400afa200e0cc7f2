//! Registered pipelines in the job store: their files, schedules and dependencies.

use super::Store;
use crate::error::Result;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// A registered pipeline: its file, schedule and dependencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineRecord {
    pub name: String,
    pub file: String,
    #[serde(skip)]
    pub text: String,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub catch_up: String,
    pub allow_overlap: bool,
    pub after: Vec<String>,
    pub on_failure: Vec<String>,
    pub priority: i64,
    pub added_ms: i64,
    pub last_fire_ms: Option<i64>,
    /// Fires that queued a run, and fires skipped because the previous run was still going.
    pub fires: u64,
    pub skipped: u64,
}

fn pipeline_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PipelineRecord> {
    let list = |i: usize| -> rusqlite::Result<Vec<String>> {
        let text: String = r.get(i)?;
        Ok(serde_json::from_str(&text).unwrap_or_default())
    };
    Ok(PipelineRecord {
        name: r.get(0)?,
        file: r.get(1)?,
        text: r.get(2)?,
        cron: r.get(3)?,
        timezone: r.get(4)?,
        catch_up: r.get(5)?,
        allow_overlap: r.get::<_, i64>(6)? != 0,
        after: list(7)?,
        on_failure: list(8)?,
        priority: r.get(9)?,
        added_ms: r.get(10)?,
        last_fire_ms: r.get(11)?,
        fires: r.get::<_, i64>(12)? as u64,
        skipped: r.get::<_, i64>(13)? as u64,
    })
}

const PIPELINE_COLUMNS: &str = "name, file, text, cron, timezone, catch_up, allow_overlap, after, \
     on_failure, priority, added_ms, last_fire_ms, fires, skipped";

impl Store {
    pub fn upsert_pipeline(&self, p: &PipelineRecord) -> Result<()> {
        self.with(|c| {
            c.execute(
                &format!(
                    "INSERT INTO pipelines ({PIPELINE_COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) \
                     ON CONFLICT(name) DO UPDATE SET file = ?2, text = ?3, cron = ?4, \
                     timezone = ?5, catch_up = ?6, allow_overlap = ?7, after = ?8, \
                     on_failure = ?9, priority = ?10"
                ),
                params![
                    p.name,
                    p.file,
                    p.text,
                    p.cron,
                    p.timezone,
                    p.catch_up,
                    p.allow_overlap as i64,
                    serde_json::to_string(&p.after).unwrap_or_else(|_| "[]".into()),
                    serde_json::to_string(&p.on_failure).unwrap_or_else(|_| "[]".into()),
                    p.priority,
                    p.added_ms,
                    p.last_fire_ms,
                    p.fires as i64,
                    p.skipped as i64,
                ],
            )
            .map(|_| ())
        })
    }

    pub fn pipelines(&self) -> Result<Vec<PipelineRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {PIPELINE_COLUMNS} FROM pipelines ORDER BY name"
            ))?;
            stmt.query_map([], pipeline_from_row)?.collect()
        })
    }

    pub fn pipeline(&self, name: &str) -> Result<Option<PipelineRecord>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {PIPELINE_COLUMNS} FROM pipelines WHERE name = ?1"),
                [name],
                pipeline_from_row,
            )
            .optional()
        })
    }

    pub fn remove_pipeline(&self, name: &str) -> Result<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM pipelines WHERE name = ?1", [name])? == 1))
    }

    /// Records a schedule tick: its newest due fire, the runs it queued and the fires skipped.
    pub fn record_fires(&self, name: &str, last_ms: i64, queued: u64, skipped: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE pipelines SET last_fire_ms = ?2, fires = fires + ?3, \
                 skipped = skipped + ?4 WHERE name = ?1",
                params![name, last_ms, queued as i64, skipped as i64],
            )
            .map(|_| ())
        })
    }
}

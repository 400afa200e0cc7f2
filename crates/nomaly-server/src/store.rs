//! The job store: one SQLite file (WAL) holding runs, their chunks and events, and the registered
//! pipelines with their schedules. Versioned migrations (`PRAGMA user_version`); every write is one
//! statement or one transaction, so a server killed at any instant leaves a consistent store.

use crate::error::{Result, ServerError};
use crate::events::{Progress, RunEventBody};
pub use crate::run_state::RunState;
use crate::run_state::Transition;
use nomaly_pipeline::RunContext;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

mod backfills;
mod migrations;
mod pipelines;
pub use backfills::{BackfillRecord, NewBackfill};
use migrations::MIGRATIONS;
pub use pipelines::PipelineRecord;

/// How a run starts when admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartMode {
    /// A new run (refused if an unfinished run of the same output exists).
    Run,
    /// Continue from the run directory's committed chunks (after a server restart, or `resume`).
    Resume,
    /// Discard an unfinished run of the output and start over (`retry`).
    Restart,
}

impl StartMode {
    fn name(self) -> &'static str {
        match self {
            StartMode::Run => "run",
            StartMode::Resume => "resume",
            StartMode::Restart => "restart",
        }
    }
    fn parse(text: &str) -> StartMode {
        match text {
            "resume" => StartMode::Resume,
            "restart" => StartMode::Restart,
            _ => StartMode::Run,
        }
    }
}

/// A run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: i64,
    pub pipeline: String,
    pub file: String,
    pub priority: i64,
    /// The memory budget the run was admitted with (its pool is this size).
    pub memory_bytes: u64,
    pub timeout_ms: Option<u64>,
    pub cpus: Option<u64>,
    pub state: RunState,
    pub mode: StartMode,
    /// What queued it: `api`, `schedule`, `after:<run id>`, `on_failure:<run id>`, `retry`, ...
    pub trigger: String,
    pub submitted_ms: i64,
    /// When it last entered the queue (submission, retry, resume or a server restart).
    pub queued_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub attempts: u32,
    pub cancel_requested: bool,
    /// The latest progress sample while it runs (and its last one after).
    pub progress: Option<Progress>,
    pub error: Option<String>,
    /// The interval and parameters it is for (none for runs stored before runs had them).
    pub interval: Option<RunInterval>,
    /// The backfill it belongs to.
    pub backfill: Option<i64>,
    /// A queued retry (`[retry] run_retries`) does not start before this time.
    pub not_before_ms: Option<i64>,
}

/// The interval and parameters a run is for: what `${run.…}` and `${param.…}` expand to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunInterval {
    /// `${run.date}`: the day the interval starts, in `timezone`.
    pub date: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub timezone: String,
    pub params: BTreeMap<String, String>,
}

impl From<&RunContext> for RunInterval {
    fn from(c: &RunContext) -> Self {
        RunInterval {
            date: c.date(),
            start_ms: c.start_ms,
            end_ms: c.end_ms,
            timezone: c.timezone.clone(),
            params: c.params.clone(),
        }
    }
}

/// Which runs a list shows: each field, when given, must match.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub state: Option<RunState>,
    pub pipeline: Option<String>,
    /// Submitted at or after / before (ms since the epoch).
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// What a new run needs.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub pipeline: String,
    pub file: PathBuf,
    pub text: String,
    pub overrides: Vec<String>,
    pub priority: i64,
    pub memory_bytes: u64,
    pub timeout_ms: Option<u64>,
    pub cpus: Option<u64>,
    pub trigger: String,
    /// The interval and parameters, resolved at submission.
    pub context: Option<RunContext>,
    pub backfill: Option<i64>,
}

/// The pipeline text a run executes, as stored at submission.
#[derive(Debug, Clone)]
pub struct RunSource {
    pub file: PathBuf,
    pub text: String,
    pub overrides: Vec<String>,
    pub context: Option<RunContext>,
}

/// One chunk's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkRecord {
    pub chunk: u64,
    /// `committed` (this attempt) or `reused` (an earlier attempt's, kept by resume).
    pub state: String,
    pub rows: u64,
    pub anomalies: u64,
    pub at_ms: i64,
}

pub use crate::bodies::StoredEvent;

pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const RUN_COLUMNS: &str = "id, pipeline, file, priority, memory_bytes, timeout_ms, cpus, state, \
     mode, trigger, submitted_ms, queued_ms, started_ms, finished_ms, attempts, cancel_requested, \
     progress, error, context, backfill, not_before_ms";

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRecord> {
    let state: String = r.get(7)?;
    let mode: String = r.get(8)?;
    let progress: Option<String> = r.get(16)?;
    let context: Option<String> = r.get(18)?;
    Ok(RunRecord {
        id: r.get(0)?,
        pipeline: r.get(1)?,
        file: r.get(2)?,
        priority: r.get(3)?,
        memory_bytes: r.get::<_, i64>(4)? as u64,
        timeout_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        cpus: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
        state: RunState::parse(&state).unwrap_or(RunState::Failed),
        mode: StartMode::parse(&mode),
        trigger: r.get(9)?,
        submitted_ms: r.get(10)?,
        queued_ms: r.get(11)?,
        started_ms: r.get(12)?,
        finished_ms: r.get(13)?,
        attempts: r.get::<_, i64>(14)? as u32,
        cancel_requested: r.get::<_, i64>(15)? != 0,
        progress: progress.and_then(|p| serde_json::from_str(&p).ok()),
        error: r.get(17)?,
        interval: context
            .and_then(|c| serde_json::from_str::<RunContext>(&c).ok())
            .map(|c| RunInterval::from(&c)),
        backfill: r.get(19)?,
        not_before_ms: r.get(20)?,
    })
}

impl Store {
    /// Opens (creating if needed) the store at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| ServerError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = |source| ServerError::Store {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        // WAL: readers never wait for the writer; synchronous=FULL: a committed transition
        // survives power loss, which restart safety rests on.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        if version as usize > MIGRATIONS.len() {
            return Err(ServerError::StoreTooNew {
                path: path.to_path_buf(),
                version,
                known: MIGRATIONS.len(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.unchecked_transaction().map_err(db)?;
            tx.execute_batch(sql).map_err(db)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db)?;
            tx.commit().map_err(db)?;
        }
        Ok(Store {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| ServerError::Store {
            path: self.path.clone(),
            source,
        })
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<i64> {
        self.with(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
    }

    pub fn insert_run(&self, run: &NewRun, now_ms: i64) -> Result<i64> {
        self.with(|c| insert_run(c, run, now_ms))
    }

    pub fn run(&self, id: i64) -> Result<Option<RunRecord>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                run_from_row,
            )
            .optional()
        })
    }

    /// Runs, newest first; only those in `state` when given.
    pub fn runs(&self, state: Option<RunState>, limit: usize) -> Result<Vec<RunRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE (?1 IS NULL OR state = ?1) \
                 ORDER BY id DESC LIMIT ?2"
            ))?;
            stmt.query_map(params![state.map(|s| s.name()), limit as i64], run_from_row)?
                .collect()
        })
    }

    /// One page of the runs `filter` matches, newest first, and how many it matches in all.
    pub fn runs_page(
        &self,
        filter: &RunFilter,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<RunRecord>, u64)> {
        const WHERE: &str = "WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR pipeline = ?2) \
             AND (?3 IS NULL OR submitted_ms >= ?3) AND (?4 IS NULL OR submitted_ms < ?4)";
        let state = filter.state.map(|s| s.name());
        self.with(|c| {
            let total: i64 = c.query_row(
                &format!("SELECT COUNT(*) FROM runs {WHERE}"),
                params![state, filter.pipeline, filter.since_ms, filter.until_ms],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs {WHERE} ORDER BY id DESC LIMIT ?5 OFFSET ?6"
            ))?;
            let runs = stmt
                .query_map(
                    params![
                        state,
                        filter.pipeline,
                        filter.since_ms,
                        filter.until_ms,
                        limit as i64,
                        offset as i64
                    ],
                    run_from_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((runs, total as u64))
        })
    }

    /// Runs of one pipeline, newest first.
    pub fn runs_of(&self, pipeline: &str, limit: usize) -> Result<Vec<RunRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE pipeline = ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            stmt.query_map(params![pipeline, limit as i64], run_from_row)?
                .collect()
        })
    }

    pub fn source(&self, id: i64) -> Result<Option<RunSource>> {
        self.with(|c| {
            c.query_row(
                "SELECT file, text, overrides, context FROM runs WHERE id = ?1",
                [id],
                |r| {
                    let overrides: String = r.get(2)?;
                    let context: Option<String> = r.get(3)?;
                    Ok(RunSource {
                        file: PathBuf::from(r.get::<_, String>(0)?),
                        text: r.get(1)?,
                        overrides: serde_json::from_str(&overrides).unwrap_or_default(),
                        context: context.and_then(|c| serde_json::from_str(&c).ok()),
                    })
                },
            )
            .optional()
        })
    }

    pub fn count_by_state(&self) -> Result<Vec<(RunState, u64)>> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT state, COUNT(*) FROM runs GROUP BY state")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (s, n) = row?;
                if let Some(s) = RunState::parse(&s) {
                    out.push((s, n));
                }
            }
            Ok(out)
        })
    }

    /// Marks a queued run running (one more attempt). False when it was no longer queued.
    pub fn start(&self, id: i64, now_ms: i64) -> Result<bool> {
        let t = Transition::Start;
        self.with(|c| {
            let n = c.execute(
                &format!(
                    "UPDATE runs SET state = ?3, started_ms = ?2, finished_ms = NULL, \
                     attempts = attempts + 1, error = NULL, not_before_ms = NULL \
                     WHERE id = ?1 AND {}",
                    t.sql_guard()
                ),
                params![id, now_ms, t.to().name()],
            )?;
            Ok(n == 1)
        })
    }

    pub fn set_progress(&self, id: i64, progress: &Progress) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET progress = ?2 WHERE id = ?1",
                params![id, serde_json::to_string(progress).unwrap_or_default()],
            )
            .map(|_| ())
        })
    }

    /// Records a run's end: its state, report and error. False (nothing written) when the run
    /// was not running, or `state` is not a finished state.
    pub fn finish(
        &self,
        id: i64,
        state: RunState,
        report: Option<&str>,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool> {
        let t = Transition::End(state);
        if t.from().is_empty() {
            return Ok(false);
        }
        self.with(|c| {
            let n = c.execute(
                &format!(
                    "UPDATE runs SET state = ?2, report = COALESCE(?3, report), error = ?4, \
                     finished_ms = ?5 WHERE id = ?1 AND {}",
                    t.sql_guard()
                ),
                params![id, state.name(), report, error, now_ms],
            )?;
            Ok(n == 1)
        })
    }

    /// Puts a run back in the queue by `transition` (retry, resume, interrupt), which also says
    /// how it is to start. False when the table does not allow it from the run's state.
    pub fn requeue(&self, id: i64, transition: Transition, now_ms: i64) -> Result<bool> {
        let mode = match transition {
            Transition::Retry => StartMode::Restart,
            Transition::Resume | Transition::Interrupt => StartMode::Resume,
            _ => return Ok(false),
        };
        self.with(|c| {
            let n = c.execute(
                &format!(
                    "UPDATE runs SET state = ?4, mode = ?2, queued_ms = ?3, \
                     cancel_requested = 0, finished_ms = NULL, not_before_ms = NULL \
                     WHERE id = ?1 AND {}",
                    transition.sql_guard()
                ),
                params![id, mode.name(), now_ms, transition.to().name()],
            )?;
            Ok(n == 1)
        })
    }

    /// Queues a failed or timed-out run again to resume from its committed chunks, not before
    /// `not_before_ms` (an automatic retry). False when its state does not allow it.
    pub fn requeue_after(&self, id: i64, not_before_ms: i64, now_ms: i64) -> Result<bool> {
        let t = Transition::Resume;
        self.with(|c| {
            let n = c.execute(
                &format!(
                    "UPDATE runs SET state = ?4, mode = ?2, queued_ms = ?3, not_before_ms = ?5, \
                     cancel_requested = 0, finished_ms = NULL WHERE id = ?1 AND {}",
                    t.sql_guard()
                ),
                params![
                    id,
                    StartMode::Resume.name(),
                    now_ms,
                    t.to().name(),
                    not_before_ms
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// After a restart: runs that were running go back to the queue, to resume from their
    /// checkpoints. Returns their ids.
    pub fn requeue_interrupted(&self, now_ms: i64) -> Result<Vec<i64>> {
        self.with(|c| {
            let ids: Vec<i64> = c
                .prepare(&format!(
                    "SELECT id FROM runs WHERE {} ORDER BY id",
                    Transition::Interrupt.sql_guard()
                ))?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            // Keeps queued_ms: an interrupted run does not lose its place to later submissions.
            let t = Transition::Interrupt;
            c.execute(
                &format!(
                    "UPDATE runs SET state = ?1, mode = ?2 WHERE {}",
                    t.sql_guard()
                ),
                params![t.to().name(), StartMode::Resume.name()],
            )?;
            let _ = now_ms;
            Ok(ids)
        })
    }

    /// Cancels a queued run at once (true), or flags a running one (false; its task stops it).
    pub fn request_cancel(&self, id: i64, now_ms: i64) -> Result<Option<RunState>> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let state: Option<String> = tx
                .query_row("SELECT state FROM runs WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            let Some(state) = state.and_then(|s| RunState::parse(&s)) else {
                return Ok(None);
            };
            match state {
                RunState::Queued => {
                    let t = Transition::CancelQueued;
                    tx.execute(
                        &format!(
                            "UPDATE runs SET state = ?3, cancel_requested = 1, finished_ms = ?2, \
                             error = 'cancelled before it started' WHERE id = ?1 AND {}",
                            t.sql_guard()
                        ),
                        params![id, now_ms, t.to().name()],
                    )?;
                }
                RunState::Running => {
                    tx.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?1", [id])?;
                }
                _ => {}
            }
            tx.commit()?;
            Ok(Some(state))
        })
    }

    pub fn report(&self, id: i64) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row("SELECT report FROM runs WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map(Option::flatten)
        })
    }

    pub fn record_chunk(&self, id: i64, chunk: &ChunkRecord) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO chunks (run_id, chunk, state, rows, anomalies, at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    chunk.chunk as i64,
                    chunk.state,
                    chunk.rows as i64,
                    chunk.anomalies as i64,
                    chunk.at_ms
                ],
            )
            .map(|_| ())
        })
    }

    pub fn chunks(&self, id: i64) -> Result<Vec<ChunkRecord>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT chunk, state, rows, anomalies, at_ms FROM chunks WHERE run_id = ?1 \
                 ORDER BY chunk",
            )?;
            stmt.query_map([id], |r| {
                Ok(ChunkRecord {
                    chunk: r.get::<_, i64>(0)? as u64,
                    state: r.get(1)?,
                    rows: r.get::<_, i64>(2)? as u64,
                    anomalies: r.get::<_, i64>(3)? as u64,
                    at_ms: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    /// Appends an event; returns its sequence number within the run.
    pub fn add_event(&self, id: i64, event: &RunEventBody, now_ms: i64) -> Result<i64> {
        let (kind, data) = (event.kind(), event.data());
        self.with(|c| {
            let seq: i64 = c.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE run_id = ?1",
                [id],
                |r| r.get(0),
            )?;
            c.execute(
                "INSERT INTO events (run_id, seq, at_ms, kind, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, seq, now_ms, kind, data.to_string()],
            )?;
            Ok(seq)
        })
    }

    pub fn events(&self, id: i64) -> Result<Vec<StoredEvent>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, at_ms, kind, data FROM events WHERE run_id = ?1 ORDER BY seq",
            )?;
            stmt.query_map([id], |r| {
                let (kind, data): (String, String) = (r.get(2)?, r.get(3)?);
                let data = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
                Ok(StoredEvent {
                    seq: r.get(0)?,
                    at_ms: r.get(1)?,
                    event: RunEventBody::from_stored(&kind, data).unwrap_or_else(|| {
                        RunEventBody::Warning {
                            warning: format!("an event of kind '{kind}' this version cannot read"),
                        }
                    }),
                })
            })?
            .collect()
        })
    }
}

/// Inserts a queued run (within the caller's transaction, if any).
fn insert_run(c: &Connection, run: &NewRun, now_ms: i64) -> rusqlite::Result<i64> {
    let context = run
        .context
        .as_ref()
        .map(|c| serde_json::to_string(c).expect("a run context is JSON"));
    c.execute(
        "INSERT INTO runs (pipeline, file, text, overrides, priority, memory_bytes, timeout_ms, \
         cpus, state, mode, trigger, submitted_ms, queued_ms, context, backfill) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', 'run', ?9, ?10, ?10, ?11, ?12)",
        params![
            run.pipeline,
            run.file.to_string_lossy(),
            run.text,
            serde_json::to_string(&run.overrides).unwrap_or_else(|_| "[]".into()),
            run.priority,
            run.memory_bytes as i64,
            run.timeout_ms.map(|v| v as i64),
            run.cpus.map(|v| v as i64),
            run.trigger,
            now_ms,
            context,
            run.backfill,
        ],
    )?;
    Ok(c.last_insert_rowid())
}

#[cfg(test)]
mod tests;

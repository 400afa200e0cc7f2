//! The server's core: submit runs, admit them from the queue, run them through the pipeline
//! library, record what they do in the store and stream it to subscribers, fire schedules and
//! dependencies. The HTTP layer ([`crate::api`]) is a thin shell over [`Server`].

use crate::error::{Result, ServerError};
use crate::events::{Progress, RunEventBody};
use crate::metrics::Metrics;
use crate::queue::{self, Busy, Capacity, Waiting};
use crate::roots::AllowedRoots;
use crate::run_state::Transition;
use crate::store::{ChunkRecord, NewRun, PipelineRecord, RunRecord, RunState, StartMode, Store};
use nomaly_pipeline::faults::FaultPlan;
use nomaly_pipeline::run_context::{check_params, parse_day};
use nomaly_pipeline::{
    CompiledPipeline, Run, RunDate, RunEvent, RunMode, RunOptions, RunRequest, RunStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod execution;
mod submission;
pub use submission::SubmitRequest;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub db: PathBuf,
    /// What all running runs may reserve together (default 80% of RAM or the cgroup limit).
    pub memory_budget: u64,
    /// The most runs at once.
    pub max_concurrent: usize,
    /// The budget of a run whose pipeline sets no `[resources] memory_limit`.
    pub default_run_memory: u64,
    /// A queued run's priority rises by one per `aging` waited.
    pub aging: Duration,
    /// Where runs whose pipeline names no `[run] engine` execute (`local`, `standalone`,
    /// `ballista://host:port`).
    pub engine: Option<String>,
    pub roots: AllowedRoots,
    /// Whether `[[notify]] type = "command"` may run on the server.
    pub allow_notify_commands: bool,
    /// How often progress is sampled and streamed, schedules checked and the queue looked at.
    pub tick: Duration,
}

pub use crate::events::StreamEvent;

/// What a live run shows: its progress as counted from its events.
#[derive(Debug, Default)]
struct Live {
    phase: String,
    rows_done: u64,
    rows_total: Option<u64>,
    reused_rows: u64,
    /// Rows of chunks committed by this attempt (progress samples may lag them).
    committed_rows: u64,
    chunks_done: u64,
    chunks_total: Option<u64>,
    bytes: u64,
    pool_bytes: u64,
    retries: u64,
    errors: Vec<String>,
    scoring_started: Option<Instant>,
}

pub(crate) struct Active {
    cancel: CancellationToken,
    /// The outputs it writes (and holds the locks of).
    pub(crate) outputs: Vec<PathBuf>,
    memory: u64,
    pipeline: String,
    /// The backfill it belongs to (its runs start at most `max_active` at a time).
    pub(crate) backfill: Option<i64>,
    started: Instant,
    live: Arc<Mutex<Live>>,
}

/// A registered pipeline as the file-trigger poll last compiled it (`file_triggers.rs`).
pub(crate) struct FilePoll {
    /// The text it was compiled from: a changed file is compiled again.
    pub(crate) text: String,
    pub(crate) trigger: Option<nomaly_pipeline::compile::FilesTrigger>,
    /// When it was last listed (or compiled), ms.
    pub(crate) last_ms: i64,
}

pub(crate) struct Inner {
    pub config: ServerConfig,
    pub store: Store,
    pub stream: broadcast::Sender<StreamEvent>,
    pub metrics: Metrics,
    active: Mutex<BTreeMap<i64, Active>>,
    pub(crate) claims: crate::output_wait::OutputClaims,
    pub(crate) wake: Notify,
    /// What the file-trigger poll last found of each registered pipeline.
    pub(crate) file_polls: Mutex<BTreeMap<String, FilePoll>>,
    stop: CancellationToken,
    /// Held while the queue is looked at, so two admissions never start the same memory twice.
    admitting: tokio::sync::Mutex<()>,
}

/// The server: cheap to clone, shared by the HTTP handlers and the background loop.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
}

/// A queued run's place in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueEntry {
    pub id: i64,
    pub pipeline: String,
    /// 1 = next to start.
    pub position: usize,
    pub priority: i64,
    /// The priority after aging, which the queue orders by.
    pub effective_priority: i64,
    pub memory_bytes: u64,
    pub waiting_seconds: f64,
    /// When it is expected to start (ms since the epoch), if it can ever fit.
    pub estimated_start_ms: Option<i64>,
    /// Why it has not started: `memory` (its budget does not fit what is free), `slots` (the
    /// concurrency limit), `ahead` (runs ahead of it go first), `output` (a run ahead of it
    /// writes its output), `backfill` (its backfill runs as many runs at once as it may),
    /// `retry` (an automatic retry waiting for its delay).
    pub waiting_for: String,
}

/// The queue and what the server has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueView {
    pub memory_budget_bytes: u64,
    pub memory_reserved_bytes: u64,
    pub max_concurrent: usize,
    pub running: Vec<i64>,
    pub queued: Vec<QueueEntry>,
}

/// A registered pipeline with its next fire times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub pipeline: PipelineRecord,
    pub next_fires_ms: Vec<i64>,
}

impl Server {
    /// Opens the store, puts runs a killed server left running back in the queue (to resume from
    /// their checkpoints), and starts the background loop on the current runtime.
    pub fn start(config: ServerConfig) -> Result<Server> {
        let store = Store::open(&config.db)?;
        let (stream, _) = broadcast::channel(4096);
        let server = Server {
            inner: Arc::new(Inner {
                config,
                store,
                stream,
                metrics: Metrics::default(),
                active: Mutex::new(BTreeMap::new()),
                claims: Default::default(),
                wake: Notify::new(),
                file_polls: Mutex::new(BTreeMap::new()),
                stop: CancellationToken::new(),
                admitting: tokio::sync::Mutex::new(()),
            }),
        };
        let now = now_ms();
        for id in server.inner.store.requeue_interrupted(now)? {
            tracing::info!(
                run = id,
                "requeued after a restart; it resumes from its checkpoint"
            );
            server.event(
                id,
                RunEventBody::Requeued {
                    mode: None,
                    reason: Some(
                        "the server restarted while it ran; it resumes from its committed chunks"
                            .into(),
                    ),
                },
            );
        }
        let background = server.clone();
        tokio::spawn(async move { background.background_loop().await });
        Ok(server)
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StreamEvent> {
        self.inner.stream.subscribe()
    }

    /// Stops: running runs are cancelled (committed chunks kept) and go back to the queue as
    /// `resume`, so the next server continues them.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let tokens: Vec<CancellationToken> =
            self.active().values().map(|a| a.cancel.clone()).collect();
        for t in tokens {
            t.cancel();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.active().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn active(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Active>> {
        self.inner.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event (every kind but `progress` is stored) and sends it to subscribers.
    fn event(&self, run: i64, event: RunEventBody) {
        let at_ms = now_ms();
        if !matches!(event, RunEventBody::Progress(_))
            && let Err(e) = self.inner.store.add_event(run, &event, at_ms)
        {
            tracing::warn!(run, "could not store an event: {e}");
        }
        let _ = self.inner.stream.send(StreamEvent { run, at_ms, event });
    }

    // ---- run control ---------------------------------------------------------------------

    pub fn cancel(&self, id: i64) -> Result<RunRecord> {
        match self.inner.store.request_cancel(id, now_ms())? {
            None => return Err(ServerError::NotFound(format!("no run {id}"))),
            Some(RunState::Queued) => {
                self.event(
                    id,
                    RunEventBody::Finished {
                        state: "cancelled".into(),
                        error: Some("cancelled before it started".into()),
                    },
                );
                self.inner.metrics.finished(RunState::Cancelled);
            }
            Some(RunState::Running) => {
                if let Some(a) = self.active().get(&id) {
                    a.cancel.cancel();
                }
                self.event(id, RunEventBody::Cancelling {});
            }
            Some(state) => {
                return Err(ServerError::Conflict(format!(
                    "run {id} already ended ({}); nothing to cancel",
                    state.name()
                )));
            }
        }
        self.get(id)
    }

    /// Queues a finished run again: `retry` starts it over, `resume` continues from its
    /// committed chunks.
    pub fn requeue(&self, id: i64, mode: StartMode) -> Result<RunRecord> {
        let transition = match mode {
            StartMode::Resume => Transition::Resume,
            _ => Transition::Retry,
        };
        let run = self.get(id)?;
        if !self.inner.store.requeue(id, transition, now_ms())? {
            let verb = if mode == StartMode::Resume {
                "resumed (only failed, cancelled or timed-out runs are)"
            } else {
                "retried until it has ended"
            };
            return Err(ServerError::Conflict(format!(
                "run {id} is {}; it cannot be {verb}",
                run.state.name()
            )));
        }
        self.event(
            id,
            RunEventBody::Requeued {
                mode: Some(
                    if mode == StartMode::Resume {
                        "resume"
                    } else {
                        "retry"
                    }
                    .into(),
                ),
                reason: None,
            },
        );
        self.inner.wake.notify_one();
        self.get(id)
    }

    pub fn get(&self, id: i64) -> Result<RunRecord> {
        self.inner
            .store
            .run(id)?
            .ok_or_else(|| ServerError::NotFound(format!("no run {id}")))
    }

    // ---- the background loop -------------------------------------------------------------

    async fn background_loop(self) {
        let mut ticker = tokio::time::interval(self.inner.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.inner.stop.cancelled() => return,
                _ = ticker.tick() => {
                    self.sample_progress();
                    if let Err(e) = self.fire_schedules(now_ms()) {
                        tracing::warn!("schedules: {e}");
                    }
                    self.poll_file_triggers().await;
                }
                _ = self.inner.wake.notified() => {}
            }
            if let Err(e) = self.admit().await {
                tracing::warn!("admission: {e}");
            }
        }
    }

    /// Starts what the queue's head allows.
    async fn admit(&self) -> Result<()> {
        let _guard = self.inner.admitting.lock().await;
        if self.inner.stop.is_cancelled() {
            return Ok(());
        }
        let now = now_ms();
        let queued: Vec<RunRecord> = self
            .inner
            .store
            .runs(Some(RunState::Queued), 10_000)?
            .into_iter()
            .filter(|r| r.not_before_ms.is_none_or(|t| t <= now))
            .collect();
        if queued.is_empty() {
            return Ok(());
        }
        let (reserved, running) = {
            let active = self.active();
            (active.values().map(|a| a.memory).sum::<u64>(), active.len())
        };
        let cfg = &self.inner.config;
        let capacity = Capacity {
            free_memory: cfg.memory_budget.saturating_sub(reserved),
            free_slots: cfg.max_concurrent.saturating_sub(running),
        };
        let ordered = queue::order(waiting(&queued), now_ms(), cfg.aging);
        let (ordered, _) = self.hold_backfills(&ordered, &queued);
        let (free, _) = self.split_by_output(&ordered, &queued);
        for id in queue::admit(&free, capacity) {
            if let Some(run) = queued.iter().find(|r| r.id == id) {
                self.launch(run.clone());
            }
        }
        Ok(())
    }

    // ---- queue view ----------------------------------------------------------------------

    pub fn queue(&self) -> Result<QueueView> {
        let cfg = &self.inner.config;
        let queued = self.inner.store.runs(Some(RunState::Queued), 10_000)?;
        let now = now_ms();
        let ordered = queue::order(waiting(&queued), now, cfg.aging);
        let (busy, running, reserved) = {
            let active = self.active();
            let busy: Vec<Busy> = active
                .values()
                .map(|a| Busy {
                    memory: a.memory,
                    remaining_seconds: remaining_seconds(a),
                })
                .collect();
            let reserved = active.values().map(|a| a.memory).sum::<u64>();
            (busy, active.keys().copied().collect::<Vec<_>>(), reserved)
        };
        let mean = self.mean_run_seconds();
        let starts =
            queue::estimate_starts(&ordered, &busy, cfg.memory_budget, cfg.max_concurrent, mean);
        let free_memory = cfg.memory_budget.saturating_sub(reserved);
        let free_slots = cfg.max_concurrent.saturating_sub(running.len());
        let (_, for_output) = self.split_by_output(&ordered, &queued);
        let (_, for_backfill) = self.hold_backfills(&ordered, &queued);
        let entries = ordered
            .iter()
            .zip(starts)
            .enumerate()
            .map(|(i, (w, start))| {
                let run = queued.iter().find(|r| r.id == w.id);
                QueueEntry {
                    id: w.id,
                    pipeline: run.map(|r| r.pipeline.clone()).unwrap_or_default(),
                    position: i + 1,
                    priority: w.priority,
                    effective_priority: queue::effective_priority(w, now, cfg.aging),
                    memory_bytes: w.memory,
                    waiting_seconds: (now - w.queued_ms).max(0) as f64 / 1000.0,
                    estimated_start_ms: start.map(|s| now + (s * 1000.0) as i64),
                    waiting_for: if run.and_then(|r| r.not_before_ms).is_some_and(|t| t > now) {
                        "retry".into()
                    } else if for_output.contains(&w.id) {
                        "output".into()
                    } else if for_backfill.contains(&w.id) {
                        "backfill".into()
                    } else if i > 0 {
                        "ahead".into()
                    } else if free_slots == 0 {
                        "slots".into()
                    } else if w.memory > free_memory {
                        "memory".into()
                    } else {
                        "admission".into()
                    },
                }
            })
            .collect();
        Ok(QueueView {
            memory_budget_bytes: cfg.memory_budget,
            memory_reserved_bytes: reserved,
            max_concurrent: cfg.max_concurrent,
            running,
            queued: entries,
        })
    }

    /// The mean duration of recent finished runs (60 s when none has finished).
    fn mean_run_seconds(&self) -> f64 {
        let recent = self.inner.store.runs(None, 50).unwrap_or_default();
        let durations: Vec<f64> = recent
            .iter()
            .filter(|r| r.state.is_finished())
            .filter_map(|r| Some((r.finished_ms? - r.started_ms?) as f64 / 1000.0))
            .collect();
        if durations.is_empty() {
            60.0
        } else {
            durations.iter().sum::<f64>() / durations.len() as f64
        }
    }

    /// A run's progress now (live while it runs; its last sample after).
    pub fn progress(&self, id: i64) -> Option<Progress> {
        let active = self.active();
        active
            .get(&id)
            .map(|a| progress_of(&a.live, a.started, Some(a.memory)))
    }
}

fn waiting(queued: &[RunRecord]) -> Vec<Waiting> {
    queued
        .iter()
        .map(|r| Waiting {
            id: r.id,
            priority: r.priority,
            queued_ms: r.queued_ms,
            memory: r.memory_bytes,
        })
        .collect()
}

/// Seconds a running run is expected to go on for: from its ETA, else a minute.
fn remaining_seconds(a: &Active) -> f64 {
    progress_of(&a.live, a.started, None)
        .eta_seconds
        .unwrap_or(60.0)
}

/// A run's progress: percentage, rows/s, ETA, memory, retries, errors.
fn progress_of(live: &Mutex<Live>, started: Instant, reserved: Option<u64>) -> Progress {
    let l = live.lock().unwrap_or_else(|p| p.into_inner());
    let rows_done = l.rows_done.max(l.committed_rows + l.reused_rows);
    let percent = match (l.rows_total, l.chunks_total) {
        (Some(t), _) if t > 0 => Some((rows_done as f64 / t as f64 * 100.0).min(100.0)),
        (_, Some(c)) if c > 0 => Some(l.chunks_done as f64 / c as f64 * 100.0),
        _ => None,
    };
    let scoring = l.scoring_started.map(|s| s.elapsed().as_secs_f64());
    let worked = rows_done.saturating_sub(l.reused_rows);
    let rate = scoring
        .filter(|s| *s > 0.2)
        .map(|s| worked as f64 / s)
        .filter(|r| *r > 0.0);
    let eta = match (rate, l.rows_total) {
        (Some(r), Some(t)) => Some(t.saturating_sub(rows_done) as f64 / r),
        _ => None,
    };
    Progress {
        phase: l.phase.clone(),
        percent,
        rows_done,
        rows_total: l.rows_total,
        chunks_done: l.chunks_done,
        chunks_total: l.chunks_total,
        rows_per_second: rate,
        eta_seconds: eta,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        bytes_written: l.bytes,
        memory_bytes: l.pool_bytes,
        memory_budget_bytes: reserved,
        retries: l.retries,
        errors: l.errors.clone(),
    }
}

/// `1.5 GiB`, `512 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

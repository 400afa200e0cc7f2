//! A run's life on the server: compiled and started when admitted, its events recorded and
//! streamed, its end written to the store, its dependents and failure handlers queued.

use super::*;

/// How a run ended.
pub(super) struct RunEnd {
    pub(super) state: RunState,
    pub(super) report: Option<String>,
    pub(super) error: Option<String>,
    pub(super) on_failure: Vec<String>,
    /// A failure that is retried after this wait (`[retry] run_retries`).
    pub(super) retry_in: Option<Duration>,
}

impl Server {
    /// Compiles and starts one admitted run, and watches it to its end.
    pub(super) fn launch(&self, run: RunRecord) {
        let id = run.id;
        match self.inner.store.start(id, now_ms()) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(run = id, "could not start: {e}");
                return;
            }
        }
        let cancel = CancellationToken::new();
        let live = Arc::new(Mutex::new(Live::default()));
        let outputs = self.inner.claims.of(id, || self.outputs_of(&run));
        self.active().insert(
            id,
            Active {
                cancel: cancel.clone(),
                outputs,
                memory: run.memory_bytes,
                pipeline: run.pipeline.clone(),
                backfill: run.backfill,
                started: Instant::now(),
                live: live.clone(),
            },
        );
        let server = self.clone();
        let span = tracing::info_span!("served_run", run = id, pipeline = %run.pipeline);
        tokio::spawn(
            async move {
                let end = server.execute(&run, cancel, live).await;
                server.finish(&run, end);
            }
            .instrument(span),
        );
    }

    /// Runs a started run to its end: its state, report and error.
    pub(super) async fn execute(
        &self,
        run: &RunRecord,
        cancel: CancellationToken,
        live: Arc<Mutex<Live>>,
    ) -> RunEnd {
        let id = run.id;
        let prepared = self.prepare(run);
        let mut compiled = match prepared {
            Ok(c) => c,
            Err(e) => {
                return RunEnd {
                    state: RunState::Failed,
                    report: None,
                    error: Some(e.to_string()),
                    on_failure: Vec::new(),
                    retry_in: None,
                };
            }
        };
        compiled.memory_limit = Some(run.memory_bytes as usize);
        if let Some(ms) = run.timeout_ms {
            compiled.timeout = Some(Duration::from_millis(ms));
            compiled.timeout_text = Some(format!("{}s", ms as f64 / 1000.0));
        }
        if let Some(c) = run.cpus {
            compiled.cpus = Some(c as usize);
        }
        let on_failure = compiled.trigger.on_failure.clone();
        let faults = match FaultPlan::from_env() {
            Ok(f) => f,
            Err(e) => {
                return RunEnd {
                    state: RunState::Failed,
                    report: None,
                    error: Some(e.to_string()),
                    on_failure,
                    retry_in: None,
                };
            }
        };
        let mode = match run.mode {
            StartMode::Run => RunMode::Run,
            StartMode::Resume => RunMode::Resume { refit: false },
            StartMode::Restart => RunMode::Restart,
        };
        // A cancel that came while the run was being compiled.
        if self
            .inner
            .store
            .run(id)
            .ok()
            .flatten()
            .is_some_and(|r| r.cancel_requested)
        {
            cancel.cancel();
        }
        // `run` was read before this attempt started: this is attempt `attempts + 1`.
        let policy = compiled.retry;
        let final_attempt = run.attempts >= policy.run_retries;
        let options = RunOptions {
            mode,
            cancel,
            faults,
            holder: Some(format!("served run {id}")),
            asked_at_unix_ms: Some(run.submitted_ms as u64),
            final_attempt,
            ..RunOptions::default()
        };
        let mut handle = Run::start(compiled, options);
        while let Some(event) = handle.next_event().await {
            self.on_run_event(id, &event, &live);
        }
        let outcome = handle.wait().await;
        let (report, error) = match outcome {
            Ok(r) => (Some(Box::new(r)), None),
            Err(f) => (Some(f.report), Some(f.error.user_message())),
        };
        let state = match report.as_ref().map(|r| r.status) {
            Some(RunStatus::Succeeded | RunStatus::DryRun | RunStatus::NothingNew) => {
                RunState::Succeeded
            }
            Some(RunStatus::ValidationFailed) => RunState::ValidationFailed,
            Some(RunStatus::Cancelled) => RunState::Cancelled,
            Some(RunStatus::TimedOut) => RunState::TimedOut,
            _ => RunState::Failed,
        };
        RunEnd {
            state,
            report: report.and_then(|r| serde_json::to_string(&*r).ok()),
            error,
            on_failure,
            retry_in: (!final_attempt).then_some(policy.run_retry_delay),
        }
    }

    pub(crate) fn prepare(&self, run: &RunRecord) -> Result<CompiledPipeline> {
        let source = self
            .inner
            .store
            .source(run.id)?
            .ok_or_else(|| ServerError::NotFound(format!("run {}", run.id)))?;
        let request = match &source.context {
            Some(context) => context.request(),
            None => RunRequest::default(),
        };
        self.compile_checked(&source.file, &source.text, &source.overrides, &request)
    }

    /// Counts an event into the run's live progress, stores and streams it.
    pub(super) fn on_run_event(&self, id: i64, event: &RunEvent, live: &Mutex<Live>) {
        let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
        let metrics = &self.inner.metrics;
        let body = match event {
            RunEvent::Started { pipeline, resume } => RunEventBody::Started {
                pipeline: pipeline.clone(),
                resume: *resume,
            },
            RunEvent::Phase(p) => {
                l.phase = p.clone();
                RunEventBody::Phase { phase: p.clone() }
            }
            RunEvent::FitDone {
                input_rows,
                models,
                reused,
            } => RunEventBody::FitDone {
                input_rows: *input_rows,
                models: *models as u64,
                reused: *reused,
            },
            RunEvent::ScoringStarted { chunks, rows } => {
                l.chunks_total = Some(*chunks as u64);
                l.rows_total = *rows;
                l.scoring_started = Some(Instant::now());
                RunEventBody::ScoringStarted {
                    chunks: *chunks as u64,
                    rows: *rows,
                }
            }
            RunEvent::ChunkReused { chunk, rows } => {
                l.chunks_done += 1;
                l.reused_rows += rows;
                let record = ChunkRecord {
                    chunk: *chunk as u64,
                    state: "reused".into(),
                    rows: *rows,
                    anomalies: 0,
                    at_ms: now_ms(),
                };
                let _ = self.inner.store.record_chunk(id, &record);
                RunEventBody::ChunkReused {
                    chunk: *chunk as u64,
                    rows: *rows,
                }
            }
            RunEvent::ChunkCommitted {
                chunk,
                rows,
                anomalies,
                seconds,
                committed_at_unix_ms,
            } => {
                l.chunks_done += 1;
                l.committed_rows += rows;
                metrics.chunk_committed(*rows, *seconds);
                let record = ChunkRecord {
                    chunk: *chunk as u64,
                    state: "committed".into(),
                    rows: *rows,
                    anomalies: *anomalies,
                    at_ms: *committed_at_unix_ms as i64,
                };
                if let Err(e) = self.inner.store.record_chunk(id, &record) {
                    tracing::warn!(run = id, "could not store chunk {chunk}: {e}");
                }
                RunEventBody::ChunkCommitted {
                    chunk: *chunk as u64,
                    rows: *rows,
                    anomalies: *anomalies,
                    seconds: *seconds,
                    committed_at_ms: *committed_at_unix_ms,
                }
            }
            RunEvent::Retry {
                place,
                attempt,
                error,
                wait,
            } => {
                l.retries += 1;
                metrics.retry();
                l.errors.push(format!("{place}: {error}"));
                RunEventBody::Retry {
                    place: place.to_string(),
                    attempt: *attempt,
                    error: error.clone(),
                    wait_seconds: wait.as_secs_f64(),
                }
            }
            RunEvent::Progress {
                rows_done,
                rows_total,
                bytes,
                memory,
                ..
            } => {
                l.rows_done = *rows_done;
                if rows_total.is_some() {
                    l.rows_total = *rows_total;
                }
                l.bytes = *bytes;
                l.pool_bytes = *memory as u64;
                // Streamed by the server's own sampler (every tick), not twice per event.
                return;
            }
            RunEvent::CheckResult(c) => RunEventBody::Check {
                check: c.check.clone(),
                passed: c.passed,
                detail: c.detail.clone(),
            },
            RunEvent::Warning(w) => RunEventBody::Warning { warning: w.clone() },
            // The run's end is recorded by `finish`, with the state the server gives it.
            RunEvent::Finished { .. } => return,
        };
        drop(l);
        self.event(id, body);
    }

    /// Records a run's end, frees its memory, and fires what depends on it.
    pub(super) fn finish(&self, run: &RunRecord, end: RunEnd) {
        let id = run.id;
        let active = self.active().remove(&id);
        self.inner.claims.forget(id);
        let now = now_ms();
        let user_cancelled = self
            .inner
            .store
            .run(id)
            .ok()
            .flatten()
            .is_some_and(|r| r.cancel_requested);
        // Stopped by the server's shutdown, not by a user: queued again to resume next time.
        if self.inner.stop.is_cancelled() && end.state == RunState::Cancelled && !user_cancelled {
            let _ = self.inner.store.requeue(id, Transition::Interrupt, now);
            return;
        }
        if let Some(a) = &active {
            let snapshot = progress_of(&a.live, a.started, None);
            let _ = self.inner.store.set_progress(id, &snapshot);
        }
        if self.retry_later(run, &end, user_cancelled, now) {
            return;
        }
        match self.inner.store.finish(
            id,
            end.state,
            end.report.as_deref(),
            end.error.as_deref(),
            now,
        ) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                run = id,
                state = end.state.name(),
                "the run was no longer running: its end is not recorded"
            ),
            Err(e) => tracing::warn!(run = id, "could not record the end: {e}"),
        }
        self.inner.metrics.finished(end.state);
        self.event(
            id,
            RunEventBody::Finished {
                state: end.state.name().to_string(),
                error: end.error.clone(),
            },
        );
        self.inner.wake.notify_one();
        let pipeline = active
            .map(|a| a.pipeline)
            .unwrap_or_else(|| run.pipeline.clone());
        match end.state {
            RunState::Succeeded => self.fire_dependents(&pipeline, id),
            RunState::Failed | RunState::TimedOut => {
                for name in &end.on_failure {
                    self.queue_registered(name, &format!("on_failure:{id}"), self.date_of(id));
                }
            }
            _ => {}
        }
    }

    /// A failed or timed-out run with retries left: its end is recorded, then it is queued again
    /// to resume after its delay, without its failure handlers. True when so.
    fn retry_later(&self, run: &RunRecord, end: &RunEnd, user_cancelled: bool, now: i64) -> bool {
        let Some(wait) = end.retry_in else {
            return false;
        };
        if user_cancelled || !matches!(end.state, RunState::Failed | RunState::TimedOut) {
            return false;
        }
        let id = run.id;
        let store = &self.inner.store;
        let recorded = store.finish(
            id,
            end.state,
            end.report.as_deref(),
            end.error.as_deref(),
            now,
        );
        let retry_at = now + wait.as_millis() as i64;
        if !matches!(recorded, Ok(true))
            || !matches!(store.requeue_after(id, retry_at, now), Ok(true))
        {
            return false;
        }
        self.inner.metrics.finished(end.state);
        self.event(
            id,
            RunEventBody::Warning {
                warning: format!(
                    "attempt {} {}: {}; it is retried (resuming) in {:.0} s",
                    run.attempts + 1,
                    end.state.name(),
                    end.error.as_deref().unwrap_or("no error"),
                    wait.as_secs_f64()
                ),
            },
        );
        self.inner.wake.notify_one();
        true
    }

    /// Samples every running run's progress: stored, and streamed as a `progress` event.
    pub(super) fn sample_progress(&self) {
        let snapshots: Vec<(i64, Progress)> = {
            let active = self.active();
            active
                .iter()
                .map(|(id, a)| (*id, progress_of(&a.live, a.started, Some(a.memory))))
                .collect()
        };
        let mut in_use = 0;
        for (id, p) in snapshots {
            in_use += p.memory_bytes;
            let _ = self.inner.store.set_progress(id, &p);
            self.event(id, RunEventBody::Progress(p));
        }
        self.inner.metrics.set_memory_in_use(in_use);
    }
}

//! What every step of one run shares: the pipeline, the options, the run's own cancellation token
//! (the caller's, plus the timeout) and the counters behind `Progress` events.

use super::RunOptions;
use crate::compile::CompiledPipeline;
use crate::error::{PipelineError, Result, Resumable};
use crate::events::RunEvent;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio_util::sync::CancellationToken;

/// Rows and bytes done so far, read by the sampler for `Progress` events.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Rows scored, by chunks in flight too; a failed attempt takes its rows back.
    pub rows_done: AtomicU64,
    /// Rows to score, when known (0: unknown).
    pub rows_total: AtomicU64,
    /// Bytes of committed part files.
    pub bytes: AtomicU64,
    /// Part files of Ballista task attempts that lost (re-run or retried tasks), removed.
    pub attempts_discarded: AtomicU64,
    /// Bytes of Arrow data the chunk jobs returned to this process (their summaries).
    pub scored_bytes_received: AtomicU64,
}

pub(crate) struct RunScope<'a> {
    pub p: &'a CompiledPipeline,
    pub opts: &'a RunOptions,
    /// Cancelled by the caller's token or by the timeout.
    pub cancel: CancellationToken,
    timed_out: Arc<AtomicBool>,
    /// Set once this run wrote anything under its output (staging, work directory): only then may
    /// a failure clean up there. A run refused before that must not touch an earlier run's files.
    touched_output: AtomicBool,
    pub counters: Arc<Counters>,
}

/// Aborts the timeout task when the run ends first.
pub(crate) struct TimeoutGuard(Option<tokio::task::JoinHandle<()>>);

impl Drop for TimeoutGuard {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

impl<'a> RunScope<'a> {
    pub fn new(p: &'a CompiledPipeline, opts: &'a RunOptions) -> Self {
        RunScope {
            p,
            opts,
            cancel: opts.cancel.child_token(),
            timed_out: Arc::new(AtomicBool::new(false)),
            touched_output: AtomicBool::new(false),
            counters: Arc::new(Counters::default()),
        }
    }

    pub fn emit(&self, event: RunEvent) {
        self.opts.observer.on_event(&event);
    }

    pub fn warn(&self, warning: impl Into<String>) -> String {
        let w = warning.into();
        self.emit(RunEvent::Warning(w.clone()));
        w
    }

    /// `[resources] timeout` as a cancellation with its own error.
    pub fn start_timeout(&self) -> TimeoutGuard {
        let Some(limit) = self.p.timeout else {
            return TimeoutGuard(None);
        };
        let (token, flag) = (self.cancel.clone(), self.timed_out.clone());
        TimeoutGuard(Some(tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            flag.store(true, Ordering::SeqCst);
            token.cancel();
        })))
    }

    /// The error a cancelled run stops with (the timeout's, when that was the cause).
    pub fn cancelled_error(&self) -> PipelineError {
        if self.timed_out.load(Ordering::SeqCst) {
            PipelineError::Timeout {
                limit: self.p.timeout_text.clone().unwrap_or_default(),
                resume: Resumable::default(),
            }
        } else {
            PipelineError::Cancelled {
                resume: Resumable::default(),
            }
        }
    }

    /// Runs `work` unless the run is cancelled first (then `work` is dropped, and with it any
    /// task it owns).
    pub async fn guard<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(self.cancelled_error()),
            r = work => r,
        }
    }

    pub fn touch_output(&self) {
        self.touched_output.store(true, Ordering::SeqCst);
    }

    pub fn touched_output(&self) -> bool {
        self.touched_output.load(Ordering::SeqCst)
    }

    /// Fault injection starts once the inputs are planned, so it hits the fit and the chunks.
    pub fn arm_faults(&self) {
        if let Some(f) = &self.opts.faults {
            f.arm();
        }
    }
}

//! A run as a library: start it, watch its events, cancel it, wait for its outcome. Several runs
//! may go at once in one process; each has its own session, memory pool, fault plan and manifest.
//!
//! ```ignore
//! let mut run = Run::start(pipeline, RunOptions::default());
//! while let Some(event) = run.next_event().await {
//!     if let RunEvent::ChunkCommitted { chunk, .. } = event { println!("chunk {chunk}"); }
//! }
//! let report = run.wait().await?;
//! ```

use super::{RunFailure, RunOptions, RunOutcome, run};
use crate::compile::CompiledPipeline;
use crate::error::{ErrorKind, PipelineError, RunPlace};
use crate::events::{ChannelObserver, RunEvent, RunObserver};
use crate::report::{RunReport, RunStatus};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A started run. Dropping the handle does not stop the run; [`Run::cancel`] does.
pub struct Run {
    events: mpsc::UnboundedReceiver<RunEvent>,
    finished: bool,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<RunOutcome>,
}

/// Sends each event to the caller's observer, then into the handle's channel.
struct Both(Arc<dyn RunObserver>, ChannelObserver);

impl RunObserver for Both {
    fn on_event(&self, event: &RunEvent) {
        self.0.on_event(event);
        self.1.on_event(event);
    }
}

impl Run {
    /// Starts `pipeline` on the current tokio runtime. The options' observer (if any) still
    /// hears every event; the handle's stream gets them too.
    pub fn start(pipeline: CompiledPipeline, options: RunOptions) -> Run {
        let (tx, rx) = mpsc::unbounded_channel();
        let cancel = options.cancel.clone();
        let opts = RunOptions {
            observer: Arc::new(Both(options.observer.clone(), ChannelObserver(tx))),
            ..options
        };
        let task = tokio::spawn(async move { run(&pipeline, &opts).await });
        Run {
            events: rx,
            finished: false,
            cancel,
            task,
        }
    }

    /// Cancels the run: in-flight chunks stop (their temp files removed), committed chunks stay,
    /// and the run ends `cancelled`, resumable with `nomaly resume`.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The run's cancellation token (cancel it from anywhere: a signal handler, a timeout).
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The next event, or `None` once `Finished` has been returned.
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        if self.finished {
            return None;
        }
        let event = self.events.recv().await?;
        self.finished = matches!(event, RunEvent::Finished { .. });
        Some(event)
    }

    /// The events as a stream, ending after `Finished`.
    pub fn events(&mut self) -> impl futures::Stream<Item = RunEvent> + '_ {
        futures::stream::unfold(self, |run| async move {
            run.next_event().await.map(|e| (e, run))
        })
    }

    /// Waits for the run to end (events not read are dropped).
    pub async fn wait(self) -> RunOutcome {
        match self.task.await {
            Ok(outcome) => outcome,
            Err(join) => {
                let error = PipelineError::at(
                    RunPlace::Run,
                    ErrorKind::Permanent,
                    format!("the run's task failed: {join}"),
                );
                let report = RunReport {
                    status: RunStatus::Failed,
                    error: Some(error.to_string()),
                    ..Default::default()
                };
                Err(RunFailure {
                    error,
                    report: Box::new(report),
                })
            }
        }
    }
}

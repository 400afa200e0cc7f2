//! `[resources] deadline`: a run not finished that long after it was asked for (its queue time
//! on a server, else its start) sends its `on = "deadline"` notifications once, with a report of
//! the run so far, and says so in a warning event; the run goes on. A run that ends first sends
//! nothing (the watch is aborted with the run).

use super::{RunOptions, base_report};
use crate::compile::CompiledPipeline;
use crate::events::RunEvent;
use crate::notify::notify_all;
use crate::report::RunStatus;
use crate::run_dir::now_ms;
use std::time::Duration;

/// The watch of one run; aborted when dropped.
pub(super) struct DeadlineWatch(tokio::task::JoinHandle<()>);

impl Drop for DeadlineWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the watch of a run whose pipeline has a deadline (a dry run has none).
pub(super) fn watch(p: &CompiledPipeline, opts: &RunOptions) -> Option<DeadlineWatch> {
    let deadline = p.deadline.filter(|_| !opts.dry_run)?;
    let asked = opts.asked_at_unix_ms.unwrap_or_else(now_ms);
    let due = asked.saturating_add(deadline.as_millis() as u64);
    let wait = Duration::from_millis(due.saturating_sub(now_ms()));
    let text = p.file.spec.resources.deadline.clone().unwrap_or_default();
    let message = format!(
        "not finished {text} after it was {}: its deadline passed; it goes on",
        if opts.asked_at_unix_ms.is_some() {
            "queued"
        } else {
            "started"
        }
    );
    let mut report = base_report(p);
    report.status = RunStatus::Running;
    report.warnings.push(message.clone());
    let (specs, base, sandbox) = (
        p.notifications.clone(),
        p.file.base_dir(),
        p.sandbox.clone(),
    );
    let observer = opts.observer.clone();
    let started = std::time::Instant::now();
    Some(DeadlineWatch(tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        tracing::warn!(pipeline = %report.pipeline, "{message}");
        observer.on_event(&RunEvent::Warning(message));
        report.seconds = started.elapsed().as_secs_f64();
        for w in notify_all(&specs, &report, None, &base, &sandbox).await {
            observer.on_event(&RunEvent::Warning(w));
        }
    })))
}

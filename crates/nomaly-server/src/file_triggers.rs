//! File-arrival triggers: a registered pipeline with `trigger = "files"` has its incremental
//! source listed every `poll`; when the source holds files no run has read, the newest of them
//! unchanged for `quiet`, and no run of the pipeline is queued or running, a run is queued
//! (trigger `files:<n>`). Which files it reads is decided by the run itself, under the ledger's
//! lock (`nomaly_pipeline::incremental`), so a poll that races a run never doubles a file.

use crate::server::{FilePoll, Server, now_ms};
use nomaly_pipeline::compile::FilesTrigger;
use nomaly_pipeline::incremental::unread_files;
use nomaly_pipeline::{RunDate, RunRequest};
use std::path::PathBuf;
use std::time::Duration;

/// The longest one listing may take before the poll gives up on it (and tries at its next).
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

impl Server {
    /// Polls every registered file-triggered pipeline that is due.
    pub(crate) async fn poll_file_triggers(&self) {
        let Ok(pipelines) = self.inner.store.pipelines() else {
            return;
        };
        for p in pipelines {
            let text = std::fs::read_to_string(&p.file).unwrap_or(p.text.clone());
            let now = now_ms();
            // A pipeline is compiled when its text changed or its poll is due, not every tick.
            if !self.poll_due(&p.name, &text) {
                continue;
            }
            let path = PathBuf::from(&p.file);
            let Ok(compiled) = self.compile_checked(&path, &text, &[], &RunRequest::default())
            else {
                self.remember_trigger(&p.name, &text, None, now);
                continue;
            };
            self.remember_trigger(&p.name, &text, compiled.trigger.files, now);
            let Some(trigger) = compiled.trigger.files else {
                continue;
            };
            let busy = self
                .inner
                .store
                .runs_of(&p.name, 1000)
                .map(|runs| runs.iter().any(|r| !r.state.is_finished()))
                .unwrap_or(true);
            if busy {
                continue;
            }
            let listed =
                tokio::time::timeout(LIST_TIMEOUT.min(trigger.poll * 2), unread_files(&compiled))
                    .await;
            match listed {
                Ok(Ok((files, Some(newest))))
                    if !files.is_empty() && now - newest >= trigger.quiet.as_millis() as i64 =>
                {
                    tracing::info!(pipeline = %p.name, files = files.len(), "new files: queueing a run");
                    let trigger = format!("files:{}", files.len());
                    self.queue_registered(&p.name, &trigger, RunDate::Latest);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(pipeline = %p.name, "listing its source: {e}"),
                Err(_) => tracing::warn!(pipeline = %p.name, "listing its source took too long"),
            }
        }
    }

    /// Whether `name` is to be looked at now: its text is new or changed, or it has a files
    /// trigger whose poll interval has passed.
    fn poll_due(&self, name: &str, text: &str) -> bool {
        let polls = self
            .inner
            .file_polls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match polls.get(name) {
            Some(seen) if seen.text == text => seen
                .trigger
                .is_some_and(|t| now_ms() - seen.last_ms >= t.poll.as_millis() as i64),
            _ => true,
        }
    }

    fn remember_trigger(&self, name: &str, text: &str, trigger: Option<FilesTrigger>, now: i64) {
        let mut polls = self
            .inner
            .file_polls
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        polls.insert(
            name.to_string(),
            FilePoll {
                text: text.to_string(),
                trigger,
                last_ms: now,
            },
        );
    }
}

//! The end of a run. A run that succeeded has its reports written, is marked complete in the
//! manifest and is published (its staging directories renamed into place); one whose checks failed
//! stays unpublished with its report. A run that stopped (failed, cancelled, timed out) keeps
//! what a resume can use — its committed chunks — and is marked stopped in its manifest.
//! Notifications go out either way.

use super::sink_targets::sink_target;
use super::work_dir::WorkDir;
use super::{RunFailure, RunOutcome, RunScope, status_of};
use crate::compile::CompiledPipeline;
use crate::error::{PipelineError, Result, Resumable};
use crate::notify::notify_all;
use crate::report::{RunReport, RunStatus};
use crate::run_dir::recorded_pipeline_change;
use crate::run_dir::{ManifestEvent, RunDir, fingerprint, fingerprint_change, now_ms};
use crate::sink_writer::{REPORT_FILE, RemoteOutput, sibling_dir, staging_dir, write_atomic};
use datafusion::prelude::SessionContext;
use std::path::PathBuf;

/// Publishes or keeps what the run did, sends notifications, and returns the outcome.
pub(crate) async fn conclude(
    scope: &RunScope<'_>,
    mut report: RunReport,
    result: Result<()>,
) -> RunOutcome {
    let p = scope.p;
    let error = match result {
        Ok(()) => match publish(p, &mut report, scope.opts.faults.as_deref()).await {
            Ok(report_path) => {
                notify(scope, &mut report, report_path).await;
                return Ok(report);
            }
            Err(e) => e,
        },
        Err(e) => e,
    };
    let error = stopped(scope, &mut report, error).await;
    report.status = status_of(&error);
    report.error = Some(error.user_message());
    // Refused at once because another run holds an output: that run's outcome is the one to
    // announce, as a refused compilation announces nothing.
    // A served run that will be retried alerts only if its last attempt fails too.
    let retried = !scope.opts.final_attempt
        && matches!(report.status, RunStatus::Failed | RunStatus::TimedOut);
    if !matches!(error, PipelineError::OutputLocked { .. }) && !retried {
        notify(scope, &mut report, None).await;
    }
    Err(RunFailure {
        error,
        report: Box::new(report),
    })
}

/// A stopped run: what it leaves for a resume, said in its error, its warnings and its manifest.
async fn stopped(
    scope: &RunScope<'_>,
    report: &mut RunReport,
    mut error: PipelineError,
) -> PipelineError {
    let p = scope.p;
    // A run refused before it wrote anything (an unfinished run in the way, a bad input) must
    // not touch the output directory.
    let resumable = scope.touched_output() && discard_unless_resumable(p).await;
    let run_dir = RunDir::at(&staging_dir(&p.sinks[0].path));
    let kept = Resumable {
        committed: if resumable {
            run_dir.read_manifest().map_or(0, |m| m.commits.len())
        } else {
            0
        },
        chunks: report.chunks,
        file: p.file.path.clone(),
    };
    if resumable {
        let stop = ManifestEvent::Stopped {
            at_unix_ms: now_ms(),
            status: status_of(&error).name().into(),
            error: error.user_message(),
        };
        if let Err(e) = run_dir.append(&stop, true) {
            report
                .warnings
                .push(format!("could not mark the run stopped: {e}"));
        }
    }
    match &mut error {
        PipelineError::Cancelled { resume } | PipelineError::Timeout { resume, .. } => {
            *resume = kept;
        }
        _ if resumable => report.warnings.push(format!(
            "committed chunks are kept in {}; `nomaly resume {}` continues from them",
            staging_dir(&p.sinks[0].path).display(),
            p.file.path.display()
        )),
        _ => {}
    }
    error
}

async fn notify(scope: &RunScope<'_>, report: &mut RunReport, report_path: Option<PathBuf>) {
    let p = scope.p;
    let warnings = notify_all(
        &p.notifications,
        report,
        report_path.as_deref(),
        &p.file.base_dir(),
        &p.sandbox,
    )
    .await;
    for w in warnings {
        report.warnings.push(scope.warn(w));
    }
}

/// Publishes a succeeded run (or keeps a run whose checks failed unpublished), writes its
/// reports and uploads its remote outputs; returns where the report is.
async fn publish(
    p: &CompiledPipeline,
    report: &mut RunReport,
    faults: Option<&crate::faults::FaultPlan>,
) -> Result<Option<PathBuf>> {
    let _ = std::fs::remove_dir_all(sibling_dir(&p.sinks[0].path, "hdf5"));
    if matches!(report.status, RunStatus::DryRun | RunStatus::NothingNew) {
        return Ok(None);
    }
    // Best effort: a later run's fresh work directory removes what is left.
    let _ = WorkDir::wherever(p).remove().await;
    let body = serde_json::to_vec_pretty(report).expect("a report is JSON");
    for s in &p.sinks {
        write_atomic(&staging_dir(&s.path).join(REPORT_FILE), &body)?;
    }
    // Complete once the reports are in place: a crash from here on is finished by
    // `publish_interrupted`, not redone.
    RunDir::at(&staging_dir(&p.sinks[0].path)).append(
        &ManifestEvent::Complete {
            at_unix_ms: now_ms(),
        },
        true,
    )?;
    if report.status != RunStatus::Succeeded {
        return Ok(Some(staging_dir(&p.sinks[0].path).join(REPORT_FILE)));
    }
    // The first sink last: its staging directory holds the run directory, whose `complete`
    // tells `publish_interrupted` to finish a publish a crash cut short, so it must stay until
    // every other sink is in place.
    for (published, s) in p.sinks.iter().rev().enumerate() {
        sink_target(s, None).publish()?;
        if let Some(plan) = faults {
            plan.after_publish(published + 1);
        }
    }
    upload_published(p, faults).await?;
    Ok(Some(p.sinks[0].path.join(REPORT_FILE)))
}

/// Uploads each remote output whose mirror is published but not yet up (this run's, or one a
/// crash cut short).
async fn upload_published(
    p: &CompiledPipeline,
    faults: Option<&crate::faults::FaultPlan>,
) -> Result<()> {
    let pending: Vec<(usize, &crate::compile::Sink, &RemoteOutput)> = p
        .sinks
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s, s.remote.as_ref()?)))
        .filter(|(_, s, _)| RemoteOutput::needs_upload(&s.path))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    // The first sink's run directory (published with it) says which parts each sink committed;
    // those not in a mirror were put in the staging prefix by executors.
    let manifest = RunDir::at(&p.sinks[0].path).read_manifest()?;
    for (i, s, remote) in pending {
        let staged: Vec<String> = manifest
            .commits
            .values()
            .flat_map(|c| c.parts.iter())
            .filter(|part| part.sink == i && !s.path.join(&part.path).exists())
            .map(|part| part.path.clone())
            .collect();
        let after_put = |n: usize| {
            if let Some(plan) = faults {
                plan.after_upload(n);
            }
        };
        remote
            .upload(&s.path, &staged, &after_put)
            .await
            .map_err(|e| PipelineError::Output {
                path: PathBuf::from(&remote.url),
                reason: format!(
                    "the upload failed ({}); the run is complete in {}, and `nomaly resume {}` uploads it again",
                    e.user_message(),
                    s.path.display(),
                    p.file.path.display()
                ),
            })?;
    }
    Ok(())
}

/// Removes what a failed run wrote unless a resume can use it (some chunk is committed).
async fn discard_unless_resumable(p: &CompiledPipeline) -> bool {
    let run_dir = RunDir::at(&staging_dir(&p.sinks[0].path));
    // A manifest that cannot be read is kept for a person to look at (or --restart).
    let resumable = run_dir.exists()
        && run_dir
            .read_manifest()
            .map(|m| !m.commits.is_empty())
            .unwrap_or(true);
    if !resumable {
        for s in &p.sinks {
            let _ = std::fs::remove_dir_all(staging_dir(&s.path));
        }
        let _ = WorkDir::wherever(p).remove().await;
        let _ = std::fs::remove_dir_all(sibling_dir(&p.sinks[0].path, "hdf5"));
    }
    resumable
}

/// Finishes publishing a run that completed (its reports written, `complete` in the manifest)
/// but was killed while renaming its staging directories into place or uploading its remote
/// outputs. Returns true if it renamed.
pub async fn publish_interrupted(p: &CompiledPipeline) -> Result<bool> {
    let renamed = rename_interrupted(p)?;
    upload_published(p, None).await?;
    Ok(renamed)
}

fn rename_interrupted(p: &CompiledPipeline) -> Result<bool> {
    let Some(first) = p.sinks.first() else {
        return Ok(false);
    };
    let staging = staging_dir(&first.path);
    let run_dir = RunDir::at(&staging);
    if !run_dir.exists() || !run_dir.read_manifest().map(|m| m.complete).unwrap_or(false) {
        return Ok(false);
    }
    let succeeded = std::fs::read(staging.join(REPORT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<RunReport>(&b).ok())
        .is_some_and(|r| r.status == RunStatus::Succeeded);
    if !succeeded {
        return Ok(false);
    }
    for s in p.sinks.iter().rev() {
        if staging_dir(&s.path).is_dir() {
            sink_target(s, None).publish()?;
        }
    }
    Ok(true)
}

/// True when `run_dir` holds a recorded run that did not complete.
fn is_unfinished(run_dir: &RunDir) -> bool {
    run_dir.exists() && !run_dir.read_manifest().map(|m| m.complete).unwrap_or(false)
}

/// The report of a completed, published run of this same pipeline on this same input, if the
/// output holds one (`nomaly resume` on a finished run prints it and exits 0).
pub async fn completed_run(p: &CompiledPipeline) -> Result<Option<String>> {
    let Some(first) = p.sinks.first() else {
        return Ok(None);
    };
    publish_interrupted(p).await?;
    let run_dir = RunDir::at(&first.path);
    if !run_dir.exists() || is_unfinished(&RunDir::at(&staging_dir(&first.path))) {
        return Ok(None);
    }
    let manifest = run_dir.read_manifest()?;
    let record = run_dir.read_record()?;
    let recorded = run_dir.read_pipeline_text()?;
    if !manifest.complete
        || recorded_pipeline_change(&recorded, &record, &p.file, &p.sandbox).is_some()
    {
        return Ok(None);
    }
    let ctx = SessionContext::new();
    super::session::register_stores(&ctx, p)?;
    if fingerprint_change(&record.sources, &fingerprint(&ctx, &p.sources).await?).is_some() {
        return Ok(None);
    }
    Ok(std::fs::read_to_string(first.path.join(REPORT_FILE)).ok())
}

//! Resume decisions: whether an earlier, unfinished run of this output is refused, continued or
//! started over; the scoring plan of a continued run (its model read back, its chunking
//! unchanged); and which of its committed chunks still match the manifest.

use super::detect_plan::score_frame;
use super::fit::register_models;
use super::preflight::scored_input;
use super::scoring_plan::{
    STAGED_INPUT, ScoringPlan, chunk_materialized, existing_work_dir, is_chunk_preserving,
};
use super::{PreparedSession, RunMode, RunScope, classify};
use crate::compile::CompiledPipeline;
use crate::error::{PipelineError, Result};
use crate::events::RunEvent;
use crate::report::{ChunkingMode, RunReport};
use crate::run_dir::{
    ChunkEntry, CommitEntry, ManifestEvent, ManifestState, RunDir, RunRecord, SourceFingerprint,
    fingerprint_change, now_ms, recorded_pipeline_change, remove_orphans, verify_commit,
};
use crate::sink_writer::staging_dir;
use std::collections::{BTreeMap, BTreeSet};

/// An unfinished run this one continues.
pub(crate) struct Earlier {
    pub record: RunRecord,
    pub manifest: ManifestState,
}

/// What to do about an earlier run of this output: nothing (none, or it completed), refuse
/// (`run` over an unfinished run; `resume` of a changed pipeline or input), or continue it.
pub(crate) fn decide(
    scope: &RunScope<'_>,
    run_dir: &RunDir,
    sources_now: &[SourceFingerprint],
) -> Result<Option<Earlier>> {
    let p = scope.p;
    // The manifest of an earlier run of this output, read once; unreadable counts as unfinished.
    let earlier = run_dir.exists().then(|| run_dir.read_manifest());
    let unfinished = earlier
        .as_ref()
        .is_some_and(|m| !m.as_ref().is_ok_and(|m| m.complete));
    if !unfinished {
        return Ok(None);
    }
    let refit = match scope.opts.mode {
        RunMode::Run => {
            let committed = earlier
                .as_ref()
                .and_then(|m| m.as_ref().ok())
                .map_or(0, |m| m.commits.len());
            return Err(unfinished_run(p, run_dir, committed));
        }
        RunMode::Restart => return Ok(None),
        RunMode::Resume { refit } => refit,
    };
    let record = run_dir.read_record()?;
    let change =
        recorded_pipeline_change(&run_dir.read_pipeline_text()?, &record, &p.file, &p.sandbox)
            .map(|c| format!("the pipeline changed: {c}"))
            .or_else(|| fingerprint_change(&record.sources, sources_now));
    match change {
        Some(c) if !refit => Err(PipelineError::invalid(
            p.file.path.display().to_string(),
            format!(
                "cannot resume the unfinished run in {}: {c}. A resume continues the same pipeline on the same input; to start over, run `nomaly resume --refit {}` (or `nomaly run --restart {}`)",
                run_dir.path.display(),
                p.file.path.display(),
                p.file.path.display()
            ),
        )),
        Some(c) => {
            scope.warn(format!("{c}; --refit: starting the run over"));
            Ok(None)
        }
        None => {
            let manifest = earlier.expect("an unfinished run has a manifest")?;
            Ok(Some(Earlier { record, manifest }))
        }
    }
}

/// The refusal to start over an unfinished run.
pub(crate) fn unfinished_run(
    p: &CompiledPipeline,
    run_dir: &RunDir,
    committed: usize,
) -> PipelineError {
    let chunks = run_dir.read_record().map_or(0, |r| r.chunks.len());
    PipelineError::UnfinishedRun {
        output: p.sinks[0].path.clone(),
        run_dir: run_dir.path.clone(),
        committed,
        chunks,
        file: p.file.path.clone(),
    }
}

/// A continued run's scoring plan: the recorded model and counts, the recorded chunking, and a
/// check that the input still splits into the recorded chunks.
pub(crate) async fn scoring_plan(
    scope: &RunScope<'_>,
    session: &PreparedSession,
    run_dir: &RunDir,
    record: &RunRecord,
    report: &mut RunReport,
) -> Result<ScoringPlan> {
    let (p, ctx) = (scope.p, &session.ctx);
    scope.emit(RunEvent::Phase("resume".into()));
    let (schema, batches) = run_dir.read_models()?;
    if p.detect.is_some() {
        register_models(ctx, schema, batches)
            .map_err(|e| classify(run_dir.path.display().to_string(), e))?;
        scope.emit(RunEvent::FitDone {
            input_rows: record.input_rows,
            models: record.models,
            reused: true,
        });
    }
    report.input_rows = record.input_rows;
    report.rows_with_missing_features = record.rows_with_missing_features;
    report.models = record.models;
    // Segment buckets keep no model: each chunk fits its own segments again.
    report.recovery.model_reused = p.detect.is_some() && record.chunking != ChunkingMode::Segments;
    report.quarantined_rows = record.quarantined_rows;
    report.model = record.model.clone();
    let place = || p.file.path.display().to_string();
    let (chunks, df, plan) = match record.chunking {
        // Segment buckets: each chunk fits its own segments again (the scores are the same).
        ChunkingMode::Segments => {
            let work = existing_work_dir(ctx, p).await?;
            super::segmented::resume_plan(session, p, &work).await?
        }
        chunking => {
            let (input, chunks) = match chunking {
                ChunkingMode::Materialized => {
                    let work = existing_work_dir(ctx, p).await?;
                    let chunks = chunk_materialized(ctx, p, &work).await?;
                    (STAGED_INPUT.to_string(), chunks)
                }
                _ => (scored_input(p), session.chunks.clone()),
            };
            let df = match &p.detect {
                Some(d) => score_frame(ctx, d, &input).await,
                None => ctx.sql(&format!("SELECT * FROM {input}")).await,
            }
            .map_err(|e| classify(place(), e))?;
            let plan = df
                .clone()
                .create_physical_plan()
                .await
                .map_err(|e| classify(place(), e))?;
            (chunks, df, plan)
        }
    };
    let now: Vec<ChunkEntry> = chunks.chunks.iter().map(ChunkEntry::of).collect();
    if now != record.chunks || !is_chunk_preserving(&plan, &chunks) {
        return Err(PipelineError::invalid(
            place(),
            format!(
                "cannot resume: the input now splits into {} chunks, the unfinished run had {} (or they differ); start over with `nomaly run --restart {}`",
                now.len(),
                record.chunks.len(),
                p.file.path.display()
            ),
        ));
    }
    Ok(ScoringPlan {
        df,
        plan,
        chunks,
        chunking: record.chunking,
        models: None,
        bad_rows: None,
    })
}

/// The committed chunks of the earlier run whose files still match the manifest; removes files
/// the manifest does not vouch for and records the resume in the manifest.
pub(crate) fn keep_verified(
    scope: &RunScope<'_>,
    run_dir: &RunDir,
    state: ManifestState,
    scoring: &ScoringPlan,
    remote: &[Option<BTreeMap<String, u64>>],
    report: &mut RunReport,
) -> Result<BTreeMap<usize, CommitEntry>> {
    let staging: Vec<_> = scope.p.sinks.iter().map(|s| staging_dir(&s.path)).collect();
    let n = scoring.chunks.chunks.len();
    let mut committed = BTreeMap::new();
    let mut keep = BTreeSet::new();
    for (id, c) in state.commits {
        match verify_commit(&c, &staging, remote) {
            Ok(()) if id < n => {
                for part in &c.parts {
                    keep.insert(staging[part.sink].join(&part.path));
                }
                committed.insert(id, c);
            }
            Ok(()) => {}
            Err(why) => {
                report.recovery.chunks_invalid += 1;
                let w = scope.warn(format!("chunk {id} is redone: {why}"));
                report.warnings.push(w);
            }
        }
    }
    for dir in &staging {
        std::fs::create_dir_all(dir).map_err(|source| PipelineError::Io {
            path: dir.clone(),
            source,
        })?;
        report.recovery.orphan_files_removed += remove_orphans(dir, &keep)?;
    }
    let redone: Vec<usize> = state
        .in_flight
        .iter()
        .copied()
        .filter(|c| !committed.contains_key(c))
        .collect();
    report.recovery.resumed = true;
    report.recovery.chunks_reused = committed.len();
    report.recovery.chunks_redone = redone.len();
    if !committed.is_empty() {
        let mean = committed.values().map(|c| c.seconds).sum::<f64>() / committed.len() as f64;
        report.recovery.time_lost_seconds += mean * redone.len() as f64;
    }
    let resume = ManifestEvent::Resume {
        at_unix_ms: now_ms(),
        committed: committed.len(),
        redone,
    };
    run_dir.append(&resume, true)?;
    scope.emit(RunEvent::Phase(format!(
        "resuming: {} of {n} chunks already committed",
        committed.len()
    )));
    Ok(committed)
}

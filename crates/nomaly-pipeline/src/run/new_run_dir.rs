//! Recording a fresh run: staging directories for every sink, and the run directory with the
//! pipeline as run, the input fingerprint, the chunks, the fitted models and an empty manifest.

use super::RunScope;
use super::scoring_plan::ScoringPlan;
use crate::error::Result;
use crate::report::RunReport;
use crate::run_dir::{
    ChunkEntry, CommitEntry, RunDir, RunRecord, SourceFingerprint, write_quarantine,
};
use crate::sink_writer::SinkTarget;
use datafusion::arrow::datatypes::Schema;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Creates the staging directories and the run directory; returns the (empty) committed set.
pub(crate) fn create(
    scope: &RunScope<'_>,
    run_dir: &RunDir,
    sinks: &[Arc<SinkTarget>],
    scoring: &ScoringPlan,
    sources: Vec<SourceFingerprint>,
    report: &mut RunReport,
) -> Result<BTreeMap<usize, CommitEntry>> {
    let p = scope.p;
    for s in sinks {
        s.prepare_staging()?;
    }
    let (schema, batches) = match &scoring.models {
        Some(m) => (m.schema.clone(), m.batches.clone()),
        None => (Arc::new(Schema::empty()), vec![]),
    };
    let quarantined_rows = scoring
        .bad_rows
        .as_ref()
        .map(|all| all.values().map(|c| c.bad.len() as u64).sum())
        .unwrap_or(0);
    let record = RunRecord {
        format_version: crate::run_dir::FORMAT_VERSION,
        pipeline: p.name.clone(),
        pipeline_file: p.file.path.display().to_string(),
        started_at_unix_ms: report.started_at_unix_ms as u64,
        sources,
        chunking: scoring.chunking,
        chunks: scoring.chunks.chunks.iter().map(ChunkEntry::of).collect(),
        input_rows: report.input_rows,
        rows_with_missing_features: report.rows_with_missing_features,
        models: report.models,
        quarantined_rows,
        pipeline_digest: Some(crate::run_dir::spec_digest(&p.file.spec)),
        overrides: p.file.overrides.clone(),
        context: Some(p.file.context.clone()),
        run_id: p.sources[0].only.as_ref().map(|t| t.run_id.clone()),
        model: report.model.clone(),
    };
    run_dir.create(&record, &p.file.raw, &batches, &schema)?;
    for (chunk, found) in scoring.bad_rows.iter().flatten() {
        write_quarantine(&run_dir.path, *chunk, &found.bad)?;
    }
    report.quarantined_rows = quarantined_rows;
    Ok(BTreeMap::new())
}

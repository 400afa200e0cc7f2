//! Tallies and the end-of-run consistency check: every chunk committed, rows in = rows out in
//! total, and per chunk where the chunk's rows are known before reading.

use super::preflight::scored_table;
use super::scoring_plan::ScoringPlan;
use crate::compile::CompiledPipeline;
use crate::error::{ErrorKind, PipelineError, Result, RunPlace};
use crate::report::{ChunkingMode, RunReport, SinkReport};
use crate::run_dir::{CommitEntry, PartEntry};
use std::collections::BTreeMap;

/// Adds up the committed chunks into the report (rows, anomalies, per-sink files), then checks
/// that nothing was lost.
pub(crate) fn tally(
    p: &CompiledPipeline,
    scoring: &ScoringPlan,
    committed: &BTreeMap<usize, CommitEntry>,
    report: &mut RunReport,
) -> Result<()> {
    for c in committed.values() {
        report.output_rows += c.rows;
        report.anomalies += c.anomalies;
        report.quarantined_rows += c.quarantined;
    }
    if p.detect.is_none() {
        report.input_rows = report.output_rows;
    }
    report.anomaly_rate = if report.output_rows > 0 {
        report.anomalies as f64 / report.output_rows as f64
    } else {
        0.0
    };
    for (i, s) in p.sinks.iter().enumerate() {
        let parts: Vec<&PartEntry> = committed
            .values()
            .flat_map(|c| c.parts.iter().filter(|w| w.sink == i))
            .collect();
        report.sinks.push(SinkReport {
            path: s.location(),
            format: s.format.extension().into(),
            files: parts.len(),
            rows: parts.iter().map(|w| w.rows).sum(),
            bytes: parts.iter().map(|w| w.bytes).sum(),
        });
    }
    check_consistency(p, scoring, committed, report)
}

fn inconsistent(chunk: Option<usize>, message: String) -> PipelineError {
    PipelineError::at(
        RunPlace::Consistency { chunk },
        ErrorKind::Permanent,
        message,
    )
}

/// Every chunk committed, rows in = rows out in total, and per chunk where the chunk's rows are
/// known before reading (Parquet row groups of the detect input itself, or lines read one by one).
fn check_consistency(
    p: &CompiledPipeline,
    scoring: &ScoringPlan,
    committed: &BTreeMap<usize, CommitEntry>,
    report: &RunReport,
) -> Result<()> {
    let chunks = &scoring.chunks.chunks;
    if let Some(c) = chunks.iter().find(|c| !committed.contains_key(&c.id)) {
        return Err(inconsistent(Some(c.id), "has no committed output".into()));
    }
    if p.detect.is_some() && report.output_rows != report.input_rows {
        return Err(inconsistent(
            None,
            format!(
                "the fit read {} rows but the chunks wrote {} rows; the run is not marked complete",
                report.input_rows, report.output_rows
            ),
        ));
    }
    let reads_source_directly =
        scoring.chunking == ChunkingMode::Materialized || scored_table(p) == p.sources[0].name;
    if !reads_source_directly {
        return Ok(());
    }
    for c in committed.values() {
        if let Some(lines) = c.source_lines
            && lines != c.rows + c.quarantined
        {
            return Err(inconsistent(
                Some(c.chunk),
                format!(
                    "held {lines} lines but {} rows were written and {} quarantined",
                    c.rows, c.quarantined
                ),
            ));
        }
    }
    for c in chunks {
        if let (Some(expected), Some(got)) = (c.rows, committed.get(&c.id))
            && got.rows != expected
        {
            return Err(inconsistent(
                Some(c.id),
                format!("holds {expected} input rows but {} were written", got.rows),
            ));
        }
    }
    Ok(())
}
